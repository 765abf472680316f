"""One-call entry points for the CLI: build a model, run, summarise, write, diagnose.

The summary (JSON-ready) has the shape the CLI prints::

    {"model": {...}, "sampler": {...}, "seed": int, "n_chains": int, "n_steps": int,
     "langevin_time_per_chain": float, "observables": {name: {"value": [re, im], "error": [re, im],
     "exact": [re, im] | None, "tau_int_bins": [re, im]}}, "diagnostics": {... "suspicious": bool}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lftml.complex.analysis import complex_estimate
from lftml.complex.diagnostics import diagnose, plot_diagnostics
from lftml.complex.langevin import CLRun, ComplexLangevin, run_complex_langevin
from lftml.complex.models import GaussianModel, QuarticModel, U1OneLinkModel, parse_complex
from lftml.errors import LftmlError

__all__ = ["MODELS", "build_model", "summarize", "simulate", "diagnose_file", "CLInterrupted", "checkpoint_path"]

MODELS = ("gaussian", "quartic", "u1", "bose-gas")


def build_model(
    name: str,
    *,
    sigma: complex | str | None = None,
    lam: complex | str | float | None = None,
    beta: float | None = None,
    kappa: float | None = None,
    mu: float | None = None,
    m: float | None = None,
    shape: tuple[int, ...] | list[int] | None = None,
    phase_quenched: bool = False,
) -> Any:
    """The model called ``name`` (``gaussian``, ``quartic``, ``u1``, ``bose-gas``) with defaults for
    parameters not given (gaussian/quartic: sigma = 1+1j, lam = 1; u1: beta = kappa = mu = 1;
    bose-gas: shape 4 4 4 4, m = 1, lam = 0, mu = 0)."""
    name = name.replace("_", "-").lower()
    if phase_quenched and name != "bose-gas":
        raise LftmlError("--phase-quenched only applies to --model bose-gas")
    if name == "gaussian":
        if lam is not None and parse_complex(lam, "lam") != 0:
            raise LftmlError("the Gaussian model has no --lam; use --model quartic")
        return GaussianModel(sigma=parse_complex(sigma if sigma is not None else 1 + 1j, "sigma"))
    if name == "quartic":
        return QuarticModel(
            sigma=parse_complex(sigma if sigma is not None else 1 + 1j, "sigma"),
            lam=parse_complex(lam if lam is not None else 1.0, "lam"),
        )
    if name == "u1":
        return U1OneLinkModel(
            beta=1.0 if beta is None else beta, kappa=1.0 if kappa is None else kappa, mu=1.0 if mu is None else mu
        )
    if name == "bose-gas":
        from lftml.complex.bose_gas import BoseGas

        lam_value = parse_complex(lam if lam is not None else 0.0, "lam")
        if lam_value.imag != 0:
            raise LftmlError(f"the Bose gas needs a real --lam, got {lam}")
        model = BoseGas(
            shape=tuple(shape) if shape else (4, 4, 4, 4),
            m=1.0 if m is None else m,
            lam=lam_value.real,
            mu=0.0 if mu is None else mu,
        )
        return model.phase_quenched() if phase_quenched else model
    raise LftmlError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def summarize(run: CLRun, **diagnose_options: Any) -> dict[str, Any]:
    """Estimates (time-weighted, Gamma-method errors), exact values and diagnostics of a run."""
    observables = {}
    for k, v in run.bins.items():
        est = complex_estimate(v, run.weights)
        observables[k] = est.to_dict(run.exact.get(k))
    if run.model.get("model") == "gaussian" and not run.settings.get("adaptive"):
        # the discretised process is exactly solvable: give its stationary values too
        from lftml.complex.exact import gaussian_z2_discrete

        sigma = complex(*run.model["sigma"])
        z2 = gaussian_z2_discrete(sigma, float(run.settings["step_size"]), str(run.settings["scheme"]))
        for k, v in (("z2", z2), ("z4", 3 * z2 * z2)):
            if k in observables:
                observables[k]["exact_at_step_size"] = [v.real, v.imag]
    total_time = float(run.weights.sum(0).mean())
    return {
        "model": run.model,
        "sampler": run.settings,
        "seed": run.seed,
        "n_chains": run.n_chains,
        "n_steps": run.n_steps,
        "langevin_time_per_chain": total_time,
        "drift_reference": run.drift_reference,
        "observables": observables,
        "diagnostics": diagnose(run, **diagnose_options),
    }


class CLInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped a run; ``message`` says what was kept and how to continue."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def checkpoint_path(out: str | Path) -> Path:
    """Where ``cl run --out OUT`` keeps its checkpoint while running: ``OUT.ckpt`` (removed at the end)."""
    out = Path(out)
    return out.with_name(out.name + ".ckpt")


def _identity(model: Any, settings: ComplexLangevin, n_chains: int, seed: int, save_configs: bool) -> dict[str, Any]:
    return {"model": model.to_dict(), "sampler": settings.to_dict(), "n_chains": int(n_chains), "seed": int(seed),
            "save_configs": bool(save_configs)}


def write_checkpoint(path: Path, snapshot: dict[str, Any], identity: dict[str, Any]) -> None:
    """Atomically write a run's snapshot (numpy arrays and scalars) and identity (JSON) to ``path``."""
    import json

    import numpy as np

    from lftml.safeio import atomic_output

    arrays = {k: np.asarray(v) for k, v in snapshot.items()}
    arrays["identity"] = np.asarray(json.dumps(identity, sort_keys=True))
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def read_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """The snapshot in ``path``; refuses (naming them) settings that differ from ``identity``."""
    import json
    import zipfile

    import numpy as np

    from lftml.errors import FileFormatError

    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise FileFormatError(f"{path} is not a readable complex Langevin checkpoint ({type(exc).__name__}); "
                              "remove it and rerun without --resume") from None
    stored = json.loads(str(data.pop("identity")))
    diffs = []
    for key in ("model", "sampler"):
        for k in sorted(set(stored[key]) | set(identity[key])):
            if stored[key].get(k) != identity[key].get(k):
                diffs.append(f"{k} (stored {stored[key].get(k)!r}, given {identity[key].get(k)!r})")
    for k in ("n_chains", "seed", "save_configs"):
        if stored.get(k) != identity.get(k):
            diffs.append(f"{k} (stored {stored.get(k)!r}, given {identity.get(k)!r})")
    if diffs:
        raise LftmlError(f"--resume: {path} was written with other settings: {'; '.join(diffs)}; "
                         "repeat the original options (or start afresh with --overwrite)")
    return data


def simulate(
    model: Any,
    settings: ComplexLangevin,
    *,
    n_chains: int,
    seed: int,
    out: str | Path | None = None,
    plot: str | Path | None = None,
    progress: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    device: str = "cpu",
    checkpoint_every: int = 10,
) -> dict[str, Any]:
    """Run, optionally write the ensemble file (``out``) and a diagnostics figure (``plot``), summarise.

    Output policy (:mod:`lftml.safeio`): outputs are checked before any work (existing files refused
    unless ``overwrite``), ``out`` is locked for the run's lifetime, a checkpoint ``OUT.ckpt`` is
    written atomically every ``checkpoint_every`` bins and ``resume`` continues from it bit-identically;
    the ensemble is written atomically at the end and the checkpoint removed. SIGINT/SIGTERM raise
    :class:`CLInterrupted` naming what was kept.
    """
    import contextlib

    from lftml.safeio import OutputLock, check_output, interrupts_as_keyboard_interrupt

    if resume and out is None:
        raise LftmlError("--resume needs --out (the run to continue)")
    if out is not None:
        out = check_output(out, overwrite=overwrite)
    if plot is not None:
        plot = check_output(plot, overwrite=overwrite, inputs=[out], option="--plot")
    lock = OutputLock(out, "complex Langevin run") if out is not None else contextlib.nullcontext()
    with lock:
        ck = checkpoint_path(out) if out is not None else None
        identity = _identity(model, settings, n_chains, seed, True)
        state = None
        if ck is not None and resume:
            if not ck.exists():
                raise LftmlError(f"--resume: no checkpoint {ck} to continue from; rerun without --resume")
            state = read_checkpoint(ck, identity)
        elif ck is not None and ck.exists() and not overwrite:
            raise LftmlError(f"{ck} holds an interrupted run: continue it with --resume, or pass --overwrite to start afresh")

        def save(snapshot: dict[str, Any]) -> None:
            write_checkpoint(ck, snapshot, identity)

        try:
            with interrupts_as_keyboard_interrupt():
                run = run_complex_langevin(model, settings, n_chains, seed, progress=progress, device=device,
                                           checkpoint=save if ck is not None else None,
                                           checkpoint_every=checkpoint_every, resume=state)
        except KeyboardInterrupt:
            raise CLInterrupted(_interrupt_message(ck, settings.n_bins)) from None
        summary = summarize(run)
        if out is not None:
            from lftml.complex.io import write_run

            write_run(out, run)
            with contextlib.suppress(OSError):
                ck.unlink()
            summary["out"] = str(out)
    if plot is not None:
        plot_diagnostics(run, plot, title=_title(run))
        summary["plot"] = str(plot)
    return summary


def _interrupt_message(ck: Path | None, n_bins: int) -> str:
    if ck is None or not ck.exists():
        kept = "nothing was kept" if ck is None else f"no checkpoint was written yet ({ck.name} comes every --checkpoint-every bins)"
        return f"interrupted: {kept}; with --out a run keeps checkpoints that --resume continues"
    import numpy as np

    try:
        with np.load(ck, allow_pickle=False) as f:
            held = f"{int(np.min(f['done']))}/{n_bins} bins per chain"
    except Exception:  # the message must not fail; the checkpoint itself is checked on --resume
        held = "the last checkpoint"
    return f"interrupted: {ck} holds {held}; rerun the same command with --resume to continue"


def _title(run: CLRun) -> str:
    return ", ".join(f"{k}={v}" for k, v in run.model.items())


def diagnose_file(path: str | Path, plot: str | Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Summary (estimates and diagnostics) of a run stored by ``lftml cl run --out``."""
    from lftml.complex.io import read_run
    from lftml.safeio import check_output

    if plot is not None:
        plot = check_output(plot, overwrite=overwrite, inputs=[path], option="--plot")
    run = read_run(path)
    summary = summarize(run)
    summary["file"] = str(path)
    if plot is not None:
        plot_diagnostics(run, plot, title=_title(run))
        summary["plot"] = str(plot)
    return summary
