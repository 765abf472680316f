"""One library call per CLI command: file in, file/report out (the CLI only parses and prints)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.plots import pyplot, save_figure

__all__ = ["train_from_file", "sample_to_file", "likelihood_report", "metropolis_report", "compare_report",
           "set_threads"]

log = logging.getLogger(__name__)


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` when given (the process-wide CPU thread count)."""
    if threads is not None:
        if threads < 1:
            raise LftmlError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))


def train_from_file(data: str | Path, out: str | Path, config, *, thin: int | str = 1, discard: int = 0,
                    max_configs: int | None = None, resume: bool = True, progress: bool = True,
                    device: str = "auto") -> dict[str, Any]:
    """Train on an ensemble file; returns a JSON-able summary."""
    from lftml.diffusion.data import load_configs
    from lftml.diffusion.training import train

    d = load_configs(data, discard=discard, thin=thin, max_configs=max_configs)
    r = train(d.configs, out, config, theory=d.theory, data_info=d.info(), resume=resume, progress=progress,
              device=device)
    return {
        "model": str(r.model_path), "checkpoint": str(r.checkpoint), "loss_png": str(r.loss_png) if r.loss_png else None,
        "steps": r.steps, "resumed_from": r.resumed_from, "wall_seconds": r.wall_seconds,
        "final_loss": float(np.mean(r.losses[-50:])) if len(r.losses) else None,
        "data": d.info(), "lattice_shape": list(d.lattice_shape), "scale": r.model.scaling.scale,
        "sigma_max": r.model.sde.sigma_max, "training": r.model.info.get("training"),
        "seeds": r.model.info.get("seeds"),
    }


def sample_to_file(model_path: str | Path, out: str | Path, *, n: int, sampler: str = "em", steps: int = 200,
                   seed: int = 0, batch_size: int = 64, schedule: str = "edm", snr: float = 0.16,
                   corrector_steps: int = 1, device: str = "auto", progress: bool = True,
                   strip_png: str | Path | None = None, strip_times: Sequence[float] | None = None) -> dict[str, Any]:
    """Generate ``n`` configurations into an engine ensemble file (and optionally a denoising strip PNG)."""
    from lftml.diffusion.model import load_model
    from lftml.diffusion.sampling import generate, write_generated

    model = load_model(model_path)
    times = None
    if strip_png is not None:
        times = list(strip_times) if strip_times else [1.0, 0.6, 0.4, 0.3, 0.2, 0.12, 0.06, 0.0]
    res = generate(model, n, sampler=sampler, steps=steps, seed=seed, batch_size=batch_size, snr=snr,
                   corrector_steps=corrector_steps, device=device, progress=progress, snapshot_times=times,
                   schedule=schedule)
    write_generated(out, res, model, model_path=str(model_path))
    summary = {"out": str(out), "n": n, "wall_seconds": res.wall_seconds, **res.settings}
    if strip_png is not None:
        from lftml.diffusion.evaluation import plot_denoising_strip

        pyplot()  # Agg backend before the figure exists
        axes = plot_denoising_strip(res.snapshots, model.sde)
        axes[0].figure.suptitle("backward process: noise (left) to configuration (right)", fontsize=9)
        save_figure(axes[0].figure, strip_png, dpi=120)
        summary["strip_png"] = str(strip_png)
    return summary


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
        np.savez(out_npz, action=S, log_q=log_q)
        out["npz"] = str(out_npz)
    return out


def metropolis_report(model_path: str | Path, hmc: str | Path, *, n: int = 1024, settings=None, seed: int = 0,
                      batch_size: int = 64, max_lag: int = 30, png: str | Path | None = None,
                      out: str | Path | None = None, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Exactness: ``n`` PF-ODE proposals with log q, independence Metropolis against exp(-S) and
    importance reweighting; autocorrelation of M compared with the HMC chain in ``hmc``.
    ``out`` (optional) receives the Metropolis chain as an ensemble file (kind ``diffusion_metropolis``)."""
    from lftml.analysis import summarize
    from lftml.diffusion.evaluation import (autocorrelation_comparison, independence_metropolis, plot_autocorrelation,
                                            reweight)
    from lftml.diffusion.likelihood import LikelihoodSettings, model_sample_with_log_likelihood
    from lftml.diffusion.model import load_model
    from lftml.ensemble import Ensemble
    from lftml.theories import theory_from_dict

    model = load_model(model_path, device=device)
    if model.theory is None:
        raise LftmlError("the model does not record its theory; Metropolis needs S(phi)")
    theory = theory_from_dict(model.theory)
    with Ensemble.open(hmc) as ens:
        model.check_theory(ens.metadata.get("theory"), f"HMC ensemble {hmc}")
        M_hmc = ens.observables["M"]
        acc_hmc = float(np.mean(ens.records["accepted"])) if "accepted" in ens.records and ens.records["accepted"].size else None
        every = (ens.metadata.get("sampler") or {}).get("every")
    settings = settings or LikelihoodSettings(solver="heun", steps=100, probes=1, probe="rademacher")
    phi, log_q, wall = model_sample_with_log_likelihood(model, n, settings=settings, seed=seed, batch_size=batch_size,
                                                       device=device, progress=progress)
    S = theory.action(torch.as_tensor(phi, dtype=torch.float64)).numpy()
    log_w = -S - log_q
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
    idx, acc = independence_metropolis(log_w, rng)
    V = int(np.prod(model.lattice_shape))
    M_gen = phi.reshape(n, -1).mean(axis=1)
    M_chain = M_gen[idx]
    chain_summary = summarize(M_chain[:, None], V)
    iid_summary = summarize(M_gen[:, None], V)
    rw = reweight(log_w, {"M": M_gen}, V)
    ac = autocorrelation_comparison(M_chain, M_hmc, max_lag=max_lag, acceptance=acc, hmc_acceptance=acc_hmc)
    result = {
        "n_proposals": n, "acceptance": acc, "wall_seconds_proposals": wall, "settings": settings.__dict__,
        "metropolis_chain": {k: chain_summary[k] for k in ("magnetisation", "susceptibility", "binder")},
        "generated_iid": {k: iid_summary[k] for k in ("magnetisation", "susceptibility", "binder")},
        "reweighted": rw, "autocorrelation": ac, "hmc_file": str(hmc), "hmc_every": every, "seed": seed,
        "log_w_std": float(np.std(log_w)),
    }
    if png is not None:
        pyplot()  # Agg backend before the figure exists
        ax = plot_autocorrelation(ac, hmc_label=f"HMC (every {every} traj.)" if every else "HMC")
        ax.set_title("normalised autocorrelation of M", fontsize=9)
        save_figure(ax.figure, png, dpi=120)
        result["png"] = str(png)
    if out is not None:
        from lftml.ensemble import write_ensemble

        meta = {"kind": "diffusion_metropolis", "theory": model.theory, "seed": seed,
                "sampler": {"proposals": "probability-flow ODE", **settings.__dict__, "acceptance": acc},
                "model": {"path": str(model_path)}}
        from lftml.observables import measure_history

        write_ensemble(out, phi[idx][:, None], metadata=meta, theory=theory, observables=measure_history(phi[idx][:, None], theory))
        result["out"] = str(out)
    return result


def compare_report(train: str | Path | None, test: str | Path, generated: str | Path,
                   png: str | Path | None = None) -> dict[str, Any]:
    """:func:`lftml.diffusion.evaluation.compare` plus the comparison PNG."""
    from lftml.diffusion.evaluation import compare, plot_comparison

    res = compare(train, test, generated)
    if png is not None:
        pyplot()  # Agg backend before the figure exists
        axes = plot_comparison({"train": train, "test": test, "generated": generated}, res)
        save_figure(axes[0].figure, png, dpi=110)
    return res
