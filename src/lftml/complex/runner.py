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

__all__ = ["MODELS", "build_model", "summarize", "simulate", "diagnose_file"]

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


def simulate(
    model: Any,
    settings: ComplexLangevin,
    *,
    n_chains: int,
    seed: int,
    out: str | Path | None = None,
    plot: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run, optionally write the ensemble file (``out``) and a diagnostics figure (``plot``), summarise."""
    if out is not None:
        if not Path(out).parent.exists():
            raise LftmlError(f"directory {Path(out).parent} of --out does not exist")
        if Path(out).exists():
            raise LftmlError(f"{out} already exists; choose another --out or remove it first")
    run = run_complex_langevin(model, settings, n_chains, seed, progress=progress)
    summary = summarize(run)
    if out is not None:
        from lftml.complex.io import write_run

        write_run(out, run)
        summary["out"] = str(out)
    if plot is not None:
        plot_diagnostics(run, plot, title=_title(run))
        summary["plot"] = str(plot)
    return summary


def _title(run: CLRun) -> str:
    return ", ".join(f"{k}={v}" for k, v in run.model.items())


def diagnose_file(path: str | Path, plot: str | Path | None = None) -> dict[str, Any]:
    """Summary (estimates and diagnostics) of a run stored by ``lftml cl run --out``."""
    from lftml.complex.io import read_run

    run = read_run(path)
    summary = summarize(run)
    summary["file"] = str(path)
    if plot is not None:
        plot_diagnostics(run, plot, title=_title(run))
        summary["plot"] = str(plot)
    return summary
