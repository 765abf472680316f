"""One library call per CLI command: file in, file/report out (the CLI only parses and prints)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.observables import measure_history
from lftml.plots import pyplot, save_figure

__all__ = ["train_from_file", "sample_to_file", "likelihood_report", "metropolis_report", "compare_report",
           "set_threads", "baseline_to_file", "weight_diagnostics"]

log = logging.getLogger(__name__)


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` when given (the process-wide CPU thread count)."""
    if threads is not None:
        if threads < 1:
            raise LftmlError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))


def train_from_file(data: str | Path, out: str | Path, config, *, thin: int | str = 1, discard: int = 0,
                    max_configs: int | None = None, resume: bool = False, overwrite: bool = False,
                    progress: bool = True, device: str = "auto", heldout: str | Path | None = None,
                    monitor_every: int = 0) -> dict[str, Any]:
    """Train on an ensemble file (optionally monitoring the likelihood gain on ``heldout``);
    returns a JSON-able summary."""
    from lftml.diffusion.data import load_configs
    from lftml.diffusion.training import train

    d = load_configs(data, discard=discard, thin=thin, max_configs=max_configs)
    ho = None
    if heldout is not None:
        h = load_configs(heldout)
        if h.lattice_shape != d.lattice_shape:
            raise LftmlError(f"--heldout {heldout} has lattice {h.lattice_shape}, the training data {d.lattice_shape}")
        if d.theory is not None and h.theory is not None and h.theory != d.theory:
            raise LftmlError(f"--heldout {heldout} is another theory than the training data; pass a held-out set of "
                             "the same theory")
        ho = h.configs
    r = train(d.configs, out, config, theory=d.theory, data_info=d.info(), resume=resume, overwrite=overwrite,
              progress=progress, device=device, heldout=ho, monitor_every=monitor_every if ho is not None else 0)
    return {
        "model": str(r.model_path), "checkpoint": str(r.checkpoint), "loss_png": str(r.loss_png) if r.loss_png else None,
        "steps": r.steps, "resumed_from": r.resumed_from, "wall_seconds": r.wall_seconds,
        "final_loss": float(np.mean(r.losses[-50:])) if len(r.losses) else None,
        "data": d.info(), "lattice_shape": list(d.lattice_shape), "scale": r.model.scaling.scale,
        "sigma_max": r.model.sde.sigma_max, "training": r.model.info.get("training"),
        "seeds": r.model.info.get("seeds"), "settings": r.model.info.get("train_config"),
        "monitor": r.model.info.get("monitor"),
        "parametrization": r.model.parametrization, "parametrization_auto": r.model.info.get("parametrization_auto"),
    }


def _lock_and_interrupts(out: str | Path):
    """Lock ``out`` for the run and raise SIGTERM as KeyboardInterrupt inside the block."""
    import contextlib

    from lftml.safeio import OutputLock, interrupts_as_keyboard_interrupt

    stack = contextlib.ExitStack()
    stack.enter_context(OutputLock(out))
    stack.enter_context(interrupts_as_keyboard_interrupt())
    return stack


def sample_to_file(model_path: str | Path, out: str | Path, *, n: int, sampler: str = "exp", steps: int = 200,
                   seed: int = 0, batch_size: int | None = None, schedule: str = "edm", snr: float = 0.16,
                   corrector_steps: int = 1, device: str = "auto", progress: bool = True,
                   strip_png: str | Path | None = None, strip_times: Sequence[float] | None = None,
                   weights: str = "none", probes: int = 1, overwrite: bool = True,
                   network_below: float | None = None, smc_moves: int = 0,
                   shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Generate ``n`` configurations into an engine ensemble file (and optionally a denoising strip PNG).

    ``weights`` = ``path`` (sampler ``exp``) or ``ode`` (sampler ``ode``) stores each sample's log
    weight ``-S - log q`` as ``/log_weights``, so ``lftml analyze`` reweights. ``smc_moves > 0``:
    instead, resample by the weights and apply that many HMC trajectories under exp(-S) to every
    particle (:func:`lftml.diffusion.smc.resample_move`); the file then holds an equally weighted
    ensemble in ancestor order, with the resampling record under ``smc`` in its metadata. ``shape``:
    sample on another (larger) lattice with the same network (:func:`~lftml.diffusion.model.resize_model`).
    All checks
    (output policy of :mod:`lftml.safeio`, options) run before any sampling; the file is written
    atomically."""
    from lftml.diffusion.model import load_model
    from lftml.diffusion.sampling import check_weights_option, generate, write_generated
    from lftml.safeio import atomic_output, check_output

    if n < 1:
        raise LftmlError(f"--n-configs must be >= 1, got {n}")
    check_weights_option(sampler, weights)
    if isinstance(smc_moves, bool) or int(smc_moves) != smc_moves or smc_moves < 0:
        raise LftmlError(f"--smc-moves must be a non-negative integer, got {smc_moves}")
    if smc_moves and weights == "none":
        raise LftmlError("--smc-moves resamples by the log weights: use --weights path (or ode), not none")
    check_output(out, overwrite=overwrite, inputs=[model_path], option="--out")
    if strip_png is not None:
        check_output(strip_png, overwrite=overwrite, inputs=[model_path, out], option="--plot")
    model = load_model(model_path)
    if shape is not None:
        from lftml.diffusion.model import resize_model

        model = resize_model(model, shape)
    times = None
    if strip_png is not None:
        times = list(strip_times) if strip_times else [1.0, 0.6, 0.4, 0.3, 0.2, 0.12, 0.06, 0.0]
    with _lock_and_interrupts(out):
        res = generate(model, n, sampler=sampler, steps=steps, seed=seed, batch_size=batch_size, snr=snr,
                       corrector_steps=corrector_steps, device=device, progress=progress, snapshot_times=times,
                       schedule=schedule, weights=weights, probes=probes, network_below=network_below)
        weights_summary = None if res.log_weights is None else weight_diagnostics(res.log_weights, model.volume)
        extra = None
        if smc_moves:
            from lftml.diffusion.smc import resample_move
            from lftml.theories import theory_from_dict

            configs, smc = resample_move(res.configs, res.log_weights, theory_from_dict(model.theory), moves=smc_moves,
                                         seed=seed)
            res.configs, res.log_weights = configs, None
            extra = {"smc": smc}
        with atomic_output(out, suffix=".h5") as tmp:
            write_generated(tmp, res, model, model_path=str(model_path), extra=extra)
    summary = {"out": str(out), "n": n, "wall_seconds": res.wall_seconds, **res.settings}
    if weights_summary is not None:
        summary["weights_summary"] = weights_summary
    if extra is not None:
        summary["smc"] = extra["smc"]
    if strip_png is not None:
        _write_strip(res, model, strip_png, out)
        summary["strip_png"] = str(strip_png)
    return summary


def _write_strip(res: Any, model: Any, strip_png: str | Path, out: str | Path) -> None:
    """The denoising strip PNG, after ``out`` is complete. SIGTERM while it is drawn is an interrupt
    (not a silent kill) and, like SIGINT, says that ``out`` is complete (:class:`OutputsInterrupted`)."""
    from lftml.diffusion.evaluation import plot_denoising_strip
    from lftml.safeio import interrupts_as_keyboard_interrupt

    try:
        with interrupts_as_keyboard_interrupt():
            pyplot()  # Agg backend before the figure exists
            axes = plot_denoising_strip(res.snapshots, model.sde)
            axes[0].figure.suptitle("backward process: noise (left) to configuration (right)", fontsize=9)
            save_figure(axes[0].figure, strip_png, dpi=120)
    except KeyboardInterrupt:
        raise OutputsInterrupted([str(out)]) from None


class OutputsInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped a one-shot writer; ``written`` lists the outputs already complete
    (each is written whole, atomically; the others were not written at all)."""

    def __init__(self, written: Sequence[str] = ()):
        super().__init__()
        self.written = list(written)


def weight_diagnostics(log_w: np.ndarray, volume: int) -> dict[str, Any]:
    """ESS/N (log-sum-exp safe), std of log w and its value per sqrt(site) (the number that says how
    a proposal scales: acceptance ~ 2 Phi(-sigma_lw / sqrt 2) for log-normal weights), and the
    log-mean-exp of the weights (an estimate of log Z, exact in expectation of w)."""
    from scipy.special import logsumexp

    from lftml.stats import ess_fraction

    lw = np.asarray(log_w, dtype=np.float64).reshape(-1)
    sd = float(np.std(lw, ddof=1)) if lw.size > 1 else float("nan")
    return {"n": int(lw.size), "ess_fraction": ess_fraction(lw), "log_weight_std": sd,
            "log_weight_std_per_sqrt_site": sd / math.sqrt(volume),
            "log_mean_weight": float(logsumexp(lw) - math.log(lw.size))}


def baseline_to_file(data: str | Path, out: str | Path, *, kind: str = "gaussian", n: int = 1024, seed: int = 0,
                     discard: int = 0, overwrite: bool = False, weights: bool = True) -> dict[str, Any]:
    """Fit a baseline (:mod:`lftml.diffusion.baselines`) to the ensemble ``data`` and write ``n``
    exact independent samples to ``out`` (kind ``baseline``), with exact ``log_weights = -S - log q``
    unless ``weights=False``."""
    from lftml.diffusion.baselines import fit_baseline
    from lftml.diffusion.data import load_configs
    from lftml.ensemble import write_ensemble
    from lftml.safeio import atomic_output, check_output

    if n < 1:
        raise LftmlError(f"--n-configs must be >= 1, got {n}")
    if kind not in ("gaussian", "mixture"):
        raise LftmlError(f"unknown --kind {kind!r}; choose gaussian or mixture")
    check_output(out, overwrite=overwrite, inputs=[data], option="--out")
    d = load_configs(data, discard=discard)
    if weights and d.theory is None:
        raise LftmlError(f"{data} records no theory, so S(phi) and the weights are unknown; pass --no-weights")
    with _lock_and_interrupts(out):
        t0 = time.perf_counter()
        base = fit_baseline(kind, d.configs)
        g = torch.Generator().manual_seed(int(seed))
        phi = base.sample(n, g)
        lw = None
        theory = None
        if d.theory is not None:
            from lftml.theories import theory_from_dict

            theory = theory_from_dict(d.theory)
            lw = (-theory.action(phi) - base.log_prob(phi)).numpy() if weights else None
        wall = time.perf_counter() - t0
        meta = {"kind": "baseline", "theory": d.theory, "seed": int(seed),
                "sampler": {"baseline": base.to_dict(), "data": str(data), "n_fit": int(len(d.configs)),
                            "spectrum_fit": "point-group average", "weights": "exact" if lw is not None else "none"},
                "wall_seconds": wall}
        with atomic_output(out, suffix=".h5") as tmp:
            write_ensemble(tmp, phi.numpy()[:, None], metadata=meta, theory=theory,
                           log_weights=None if lw is None else lw[:, None],
                           observables=measure_history(phi.numpy()[:, None], theory), wall_time_s=wall)
    res = {"out": str(out), "kind": kind, "n": n, "seed": seed, "wall_seconds": wall, "baseline": base.to_dict()}
    if lw is not None:
        res["weights_summary"] = weight_diagnostics(lw, int(np.prod(d.configs.shape[1:])))
    return res


def likelihood_report(model_path: str | Path, *, data: str | Path | None = None, generate_n: int | None = None,
                      settings=None, seed: int = 0, max_configs: int = 256, batch_size: int = 64,
                      png: str | Path | None = None, out_npz: str | Path | None = None, device: str = "cpu",
                      progress: bool = True) -> dict[str, Any]:
    """log q by the probability-flow ODE for configurations of ``data`` (at most ``max_configs``) or
    for ``generate_n`` fresh PF-ODE samples; fit of -log q against S (slope, R^2)."""
    from lftml.diffusion.likelihood import (LikelihoodSettings, action_vs_log_q, model_log_likelihood,
                                            model_sample_with_log_likelihood, plot_action_vs_log_q)
    from lftml.diffusion.model import load_model
    from lftml.theories import theory_from_dict

    model = load_model(model_path, device=device)
    if model.theory is None:
        raise LftmlError("the model does not record its theory, so S(phi) is unknown; train it on an ensemble file with a theory")
    theory = theory_from_dict(model.theory)
    settings = settings or LikelihoodSettings()
    t0 = time.perf_counter()
    if (data is None) == (generate_n is None):
        raise LftmlError("give exactly one of --data FILE (configurations to evaluate) or --generate N")
    if data is not None:
        from lftml.diffusion.data import load_configs

        d = load_configs(data, max_configs=max_configs)
        model.check_theory(d.theory, f"ensemble {data}")
        model.check_input(torch.as_tensor(d.configs), f"configurations of {data}")
        phi = d.configs
        log_q = model_log_likelihood(model, phi, settings=settings, seed=seed, batch_size=batch_size, device=device,
                                     progress=progress)
        source = str(data)
    else:
        if generate_n < 3:
            raise LftmlError(f"--generate must be >= 3, got {generate_n}")
        phi, log_q, _ = model_sample_with_log_likelihood(model, generate_n, settings=settings, seed=seed,
                                                        batch_size=batch_size, device=device, progress=progress)
        source = "generated (probability-flow ODE)"
    S = theory.action(torch.as_tensor(phi, dtype=torch.float64)).numpy()
    fit = action_vs_log_q(S, log_q)
    out = {"source": source, "n": int(len(S)), "fit": fit, "settings": settings.__dict__, "seed": seed,
           "wall_seconds": time.perf_counter() - t0,
           "mean_log_q": float(np.mean(log_q)), "mean_action": float(np.mean(S))}
    if png is not None:
        pyplot()  # Agg backend before the figure exists
        ax = plot_action_vs_log_q(S, log_q, fit=fit)
        ax.set_title("learned effective action vs S", fontsize=9)
        save_figure(ax.figure, png, dpi=120)
        out["png"] = str(png)
    if out_npz is not None:
        from lftml.safeio import atomic_output

        with atomic_output(out_npz, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, action=S, log_q=log_q)  # a file object: the name stays as given (no .npz appended)
        out["npz"] = str(out_npz)
    return out


def metropolis_report(model_path: str | Path, hmc: str | Path | None = None, *, n: int = 1024, weights: str = "path",
                      steps: int | None = None, probes: int = 1, settings=None, seed: int = 0, batch_size: int | None = None,
                      max_lag: int = 30, png: str | Path | None = None, out: str | Path | None = None,
                      device: str = "cpu", progress: bool = True, overwrite: bool = True,
                      schedule: str = "edm", network_below: float | None = None) -> dict[str, Any]:
    """Exactness by independence Metropolis against exp(-S) over ``n`` proposals.

    ``weights = "path"`` (default): proposals are whole reverse paths of the ``exp`` sampler with
    their exact path-space log weights, so the chain's stationary x_0-marginal is exp(-S)/Z exactly.
    ``weights = "ode"``: PF-ODE proposals with log q from the Heun ODE and ``probes`` Hutchinson
    probes (approximate). Also the reweighted (self-normalised) estimates with weight-aware errors,
    the raw (biased) i.i.d. estimates, ESS/N, sigma_lw/sqrt(V), tau_int of the chain, the
    acceptance's Gamma-method error (``acceptance_error``), and (with ``hmc``) the autocorrelation
    of M compared with an HMC chain. ``out`` receives the chain as an ensemble file (kind
    ``diffusion_metropolis``)."""
    import contextlib

    from lftml.diffusion.evaluation import autocorrelation_comparison, chain_acceptance, independence_metropolis
    from lftml.diffusion.model import load_model
    from lftml.diffusion.sampling import generate
    from lftml.theories import theory_from_dict

    _check_metropolis_outputs(n, weights, model_path, hmc, png, out, overwrite)
    if settings is not None and steps is None:  # old calling convention: LikelihoodSettings
        steps, probes = settings.steps, settings.probes
    steps = steps if steps is not None else (100 if weights == "ode" else 50)
    model = load_model(model_path, device=device)
    if model.theory is None:
        raise LftmlError("the model does not record its theory; Metropolis needs S(phi)")
    theory = theory_from_dict(model.theory)
    M_hmc, acc_hmc, every = _read_hmc_chain(model, hmc) if hmc is not None else (None, None, None)
    ctx = _lock_and_interrupts(out) if out is not None else contextlib.nullcontext()
    with ctx:
        res = generate(model, n, sampler="exp" if weights == "path" else "ode", steps=steps, seed=seed,
                       batch_size=batch_size, device=device, progress=progress, schedule=schedule, weights=weights,
                       probes=probes, network_below=network_below)
        phi, log_w = res.configs, res.log_weights
        S = theory.action(torch.as_tensor(phi, dtype=torch.float64)).numpy()
        idx, acc = independence_metropolis(log_w, np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1]))
        acc_error = chain_acceptance(idx).error  # Gamma method over the chain's accept indicator
        V = int(np.prod(model.lattice_shape))
        M_gen = phi.reshape(n, -1).mean(axis=1)
        result = {"n_proposals": n, "weights": weights, "exact": weights == "path", "acceptance": acc,
                  "acceptance_error": acc_error, "wall_seconds_proposals": res.wall_seconds, "sampler": res.settings,
                  "seed": seed, **_metropolis_estimates(M_gen, S / V, idx, log_w, V)}
        if hmc is not None:
            ac = autocorrelation_comparison(M_gen[idx], M_hmc, max_lag=max_lag, acceptance=acc, hmc_acceptance=acc_hmc)
            result.update({"autocorrelation": ac, "hmc_file": str(hmc), "hmc_every": every})
        if out is not None:
            _write_metropolis_chain(out, phi[idx], model, theory, res.settings, result, weights, seed, model_path)
            result["out"] = str(out)
    if png is not None and hmc is not None:
        _plot_metropolis_autocorrelation(result["autocorrelation"], every, png)
        result["png"] = str(png)
    return result


def _check_metropolis_outputs(n: int, weights: str, model_path: str | Path, hmc: str | Path | None,
                              png: str | Path | None, out: str | Path | None, overwrite: bool) -> None:
    """The options and the output policy of :func:`metropolis_report`, before any work."""
    from lftml.safeio import check_output

    if n < 2:
        raise LftmlError(f"--n-configs must be >= 2 (a chain needs proposals), got {n}")
    if weights not in ("path", "ode"):
        raise LftmlError(f"unknown --weights {weights!r} for metropolis; choose path (exact) or ode (approximate)")
    inputs = [model_path, hmc]
    if out is not None:
        check_output(out, overwrite=overwrite, inputs=inputs, option="--out")
    if png is not None:
        if hmc is None:
            raise LftmlError("--plot draws the chain's autocorrelation against an HMC chain: pass --hmc FILE too")
        check_output(png, overwrite=overwrite, inputs=[*inputs, out], option="--plot")


def _read_hmc_chain(model: Any, hmc: str | Path) -> tuple[np.ndarray, float | None, Any]:
    """``(M, acceptance, every)`` of the HMC ensemble ``hmc`` (checked to be the model's theory)."""
    from lftml.ensemble import Ensemble

    with Ensemble.open(hmc) as ens:
        model.check_theory(ens.metadata.get("theory"), f"HMC ensemble {hmc}")
        M_hmc = ens.observables["M"]
        acc_hmc = float(np.mean(ens.records["accepted"])) if "accepted" in ens.records and ens.records["accepted"].size else None
        every = (ens.metadata.get("sampler") or {}).get("every")
    return M_hmc, acc_hmc, every


def _metropolis_estimates(M_gen: np.ndarray, s: np.ndarray, idx: np.ndarray, log_w: np.ndarray,
                          V: int) -> dict[str, Any]:
    """Chain, raw i.i.d. and reweighted estimates from the proposals' magnetisation ``M_gen`` and
    action density ``s``, the weight diagnostics and the chain's tau_int."""
    from lftml.analysis import summarize

    n = len(M_gen)
    keys = ("magnetisation", "abs_magnetisation", "susceptibility", "binder", "action_density")
    chain = summarize(M_gen[idx][:, None], V, action_density=s[idx][:, None])
    iid = summarize(M_gen[:, None], V, action_density=s[:, None])
    rw = summarize(M_gen[:, None], V, action_density=s[:, None], log_weights=log_w[:, None])
    return {
        "metropolis_chain": {k: chain[k] for k in keys},
        "generated_iid": {k: iid[k] for k in keys},
        "reweighted": {**{k: rw[k] for k in keys}, "ess_fraction": rw["ess_fraction"],
                       "ess": rw["ess_fraction"] * n, "n": n},
        "weights_summary": weight_diagnostics(log_w, V),
        "tau_int_chain": {"M": chain["magnetisation"]["tau_int"], "abs_M": chain["abs_magnetisation"]["tau_int"],
                          "action_density": chain["action_density"]["tau_int"]},
        "tau_int_chain_error": {"M": chain["magnetisation"]["tau_int_error"],
                                "abs_M": chain["abs_magnetisation"]["tau_int_error"],
                                "action_density": chain["action_density"]["tau_int_error"]},
        "log_w_std": float(np.std(log_w)),
    }


def _write_metropolis_chain(out: str | Path, chain: np.ndarray, model: Any, theory: Any, sampler: dict[str, Any],
                            result: dict[str, Any], weights: str, seed: int, model_path: str | Path) -> None:
    """The chain's configurations as an ensemble file (kind ``diffusion_metropolis``), atomically, with the
    sampler statistics of ``result`` (acceptance with its Gamma-method error, proposals, ESS/N, the
    spread of log w, the chain's tau_int) in its metadata."""
    from lftml.ensemble import write_ensemble
    from lftml.safeio import atomic_output

    stats = {"acceptance": result["acceptance"], "acceptance_error": result["acceptance_error"],
             "n_proposals": result["n_proposals"], "ess_fraction": result["reweighted"]["ess_fraction"],
             "log_w_std": result["log_w_std"], "tau_int_chain": result["tau_int_chain"],
             "wall_seconds_proposals": result["wall_seconds_proposals"]}
    meta = {"kind": "diffusion_metropolis", "theory": model.theory, "seed": seed,
            "sampler": {**sampler, **stats,
                        "proposals": "exp sampler paths (exact weights)" if weights == "path"
                        else "probability-flow ODE (approximate log q)"},
            "model": {"path": str(model_path)}}
    with atomic_output(out, suffix=".h5") as tmp:
        write_ensemble(tmp, chain[:, None], metadata=meta, theory=theory,
                       observables=measure_history(chain[:, None], theory), wall_time_s=result["wall_seconds_proposals"])


def _plot_metropolis_autocorrelation(ac: dict[str, Any], every: Any, png: str | Path) -> None:
    """The chain's autocorrelation of M against the HMC chain's, as a PNG."""
    from lftml.diffusion.evaluation import plot_autocorrelation_comparison

    pyplot()  # Agg backend before the figure exists
    ax = plot_autocorrelation_comparison(ac, hmc_label=f"HMC (every {every} traj.)" if every else "HMC")
    ax.set_title("normalised autocorrelation of M", fontsize=9)
    save_figure(ax.figure, png, dpi=120)


def compare_report(train: str | Path | None, test: str | Path, generated: str | Path,
                   png: str | Path | None = None, overwrite: bool = True,
                   baseline: str | Path | None = None) -> dict[str, Any]:
    """:func:`lftml.diffusion.evaluation.compare` plus the comparison PNG."""
    from lftml.diffusion.evaluation import compare, plot_comparison
    from lftml.safeio import check_output

    if png is not None:
        check_output(png, overwrite=overwrite, inputs=[train, test, generated, baseline], option="--plot")
    res = compare(train, test, generated, baseline=baseline)
    if png is not None:
        pyplot()  # Agg backend before the figure exists
        axes = plot_comparison({"train": train, "test": test, "baseline": baseline, "generated": generated}, res)
        save_figure(axes[0].figure, png, dpi=110)
    return res
