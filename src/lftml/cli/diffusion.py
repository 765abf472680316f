"""``lftml diffusion``: score-based diffusion models as stochastic quantisation.

Commands: ``train`` (ensemble file -> model.pt), ``sample`` (model -> ensemble file, with log
weights), ``baseline`` (exact Gaussian / mixture samples with exact log weights), ``likelihood``
(log q by the probability-flow ODE; S vs -log q fit), ``compare`` (the talk's table with z-scores),
``metropolis`` (exact correction of generated samples: independence Metropolis and reweighting).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lftml.cli.common import (JSON_OPTION, PROGRESS_OPTION, SEED_OPTION, check_typed_output, deprecated_option,
                              emit_json, fmt_err, parse_shape, require_file, show_progress)
from lftml.errors import LftmlError

app = typer.Typer(help="Diffusion models (VE SDE + periodic U-Net) trained on lattice ensembles.", no_args_is_help=True)

DEVICE_OPTION = typer.Option("auto", "--device", help="auto (GPU when present), cpu, cuda, cuda:N.")
THREADS_OPTION = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice).")


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="Training ensemble file (HDF5, from `lftml hmc`)."),
    out: Path = typer.Option(..., "--out", help="Model file to write (checkpoint: <out>.ckpt)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="U-Net preset: equi (default: stride 1, exactly "
                                         "translation-equivariant, Z2-odd), fast, paper, tiny, tiny-equi."),
    updates: Optional[int] = typer.Option(None, "--updates", help="Optimiser updates (default 3000)."),
    steps: Optional[int] = typer.Option(None, "--steps", hidden=True, help="Deprecated spelling of --updates."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Configurations per update (default 32)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (linear warm-up, cosine decay; default 2e-3)."),
    sigma: Optional[float] = typer.Option(None, "--sigma", help="VE SDE base sigma (g(t) = sigma^t; default 25)."),
    ema: Optional[float] = typer.Option(None, "--ema", help="EMA decay of the weights (default 0.99)."),
    z2: Optional[bool] = typer.Option(None, "--z2/--no-z2", help="Z2 (phi -> -phi) data augmentation (default on)."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment",
                                           help="Lattice reflections/rotations as augmentation (default on)."),
    t_sampling: Optional[str] = typer.Option(None, "--t-sampling", help="Noise levels: low (default: extra weight "
                                             "below the per-site width), loguniform, mixed, uniform."),
    target: Optional[str] = typer.Option(None, "--target", help="tsm (default: blend of the known force and the "
                                         "denoising target) or dsm (denoising only)."),
    weighting: Optional[str] = typer.Option(None, "--weighting", help="likelihood (default: g^2, the path-space KL), "
                                            "sigma2 (the reference) or edm (Karras)."),
    noise_draws: Optional[int] = typer.Option(None, "--noise-draws", help="(t, z) draws per configuration and update (default 2)."),
    parametrization: Optional[str] = typer.Option(None, "--parametrization",
                                                  help="auto (default: gaussian or mixture, whichever exact baseline "
                                                       "is the better proposal for exp(-S) on the data), gaussian (exact "
                                                       "Gaussian part from the data's power spectrum + U-Net), mixture "
                                                       "(broken phase: exact sign-aligned two-Gaussian part + U-Net), "
                                                       "edm, or reference (net/std)."),
    checkpoint_every: int = typer.Option(250, "--checkpoint-every", help="Updates between checkpoints."),
    thin: str = typer.Option("1", "--thin", help="Stride along Monte Carlo time, or 'auto' (2 tau_int(M))."),
    heldout: Optional[Path] = typer.Option(None, "--heldout", help="Held-out ensemble: log the likelihood gain over "
                                           "the analytic part during training."),
    monitor_every: int = typer.Option(500, "--monitor-every", help="Updates between held-out measurements."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in <out>.ckpt with its "
                                "stored settings."),
    no_resume: bool = typer.Option(False, "--no-resume", hidden=True, help="Deprecated (resume is opt-in)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out (and its checkpoint)."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on when "
                                            "stderr is a terminal)."),
    threads: Optional[int] = THREADS_OPTION,
    device: str = DEVICE_OPTION,
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of every random stream, recorded in the output (default 0)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train a score model (default: the recommended equivariant model, target score matching)."""
    from dataclasses import replace

    from lftml.diffusion.training import (TrainConfig, TrainingInterrupted, refuse_interrupted, check_resume_settings,
                                          stored_config)
    from lftml.diffusion.workflows import set_threads, train_from_file
    from lftml.safeio import check_output

    if steps is not None:
        deprecated_option("--steps", "--updates")
        if updates is not None and updates != steps:
            raise LftmlError("give --updates only (--steps is its deprecated spelling)")
        updates = steps
    if no_resume:
        deprecated_option("--no-resume", "nothing (runs start afresh unless --resume; --overwrite replaces an output)")
        if resume:
            raise LftmlError("--resume and --no-resume contradict each other; give --resume or nothing")
    require_file(data, "training ensemble")
    if heldout is not None:
        require_file(heldout, "held-out ensemble")
    check_output(out, overwrite=True, resume=resume, inputs=[data, heldout])  # inputs, folder
    refuse_interrupted(out, resume, overwrite)
    check_output(out, overwrite=overwrite, resume=resume, inputs=[data, heldout])
    if resume and overwrite:
        raise LftmlError("--resume continues a run and --overwrite starts afresh; give one of them")
    set_threads(threads)
    given = {"preset": preset, "steps": updates, "batch_size": batch_size, "lr": lr, "sigma": sigma,
             "ema_decay": ema, "z2_augment": z2, "symmetry_augment": augment, "t_sampling": t_sampling,
             "target": target, "weighting": weighting, "noise_draws": noise_draws,
             "parametrization": parametrization, "seed": seed}
    if resume:
        stored = stored_config(out)
        check_resume_settings(stored, given)
        cfg = replace(stored, checkpoint_every=checkpoint_every)
    else:
        cfg = TrainConfig(**{k: v for k, v in given.items() if v is not None}, checkpoint_every=checkpoint_every)
    show = show_progress(progress, as_json)
    try:
        res = train_from_file(data, out, cfg, thin=thin if thin == "auto" else int(thin) if thin.isdigit() else thin,
                              resume=resume, overwrite=overwrite, progress=show, device=device, heldout=heldout,
                              monitor_every=monitor_every)
    except TrainingInterrupted as exc:
        typer.echo(f"interrupted after update {exc.step} of {cfg.steps}; checkpoint {exc.checkpoint} kept. "
                   f"Continue with: lftml diffusion train --data {data} --out {out} --resume", err=True)
        raise typer.Exit(130)
    if as_json:
        emit_json(res)
        return
    gain = res.get("monitor")
    extra = ""
    if gain:
        extra = f"; held-out likelihood gain {fmt_err(gain[-1]['gain_nats'], gain[-1]['error'])} nats"
    auto = res.get("parametrization_auto")
    if auto and "binder_data" in auto:
        ess = (f"; exact-sample ESS/N gaussian {auto['ess_fraction_gaussian']:.3f}, mixture "
               f"{auto['ess_fraction_mixture']:.3f}" if "ess_fraction_gaussian" in auto else "")
        extra += (f"; analytic part {res['parametrization']} (auto: Binder cumulant of M, data "
                  f"{auto['binder_data']:.3f}, gaussian 0, mixture {auto['binder_mixture']:.3f}{ess})")
    typer.echo(f"trained {res['steps']} updates ({res['training']['wall_seconds']:.0f} s) on {res['data']['n_configs']} "
               f"configurations: final loss {res['final_loss']:.4f}{extra}; model {res['model']}, loss curve {res['loss_png']}")


def _interrupted(out: Optional[Path]) -> None:
    """The one line for SIGINT/SIGTERM in a one-shot writer (exit 130), called in its ``except
    KeyboardInterrupt``: names what was completed (:class:`~lftml.diffusion.workflows.OutputsInterrupted`)."""
    import sys

    written = list(getattr(sys.exc_info()[1], "written", []) or [])
    if written:
        typer.echo(f"interrupted: {', '.join(written)} was written completely, the --plot figure was not; "
                   "rerun with --overwrite to make both", err=True)
        raise typer.Exit(130)
    where = f"nothing was written to {out}" if out is not None else "nothing was written"
    typer.echo(f"interrupted: {where} (the file is written whole at the end); rerun the command to sample again",
               err=True)
    raise typer.Exit(130)


OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Replace an existing --out file.")
NETWORK_BELOW_OPTION = typer.Option(None, "--network-below",
                                    help="exp sampler: evaluate the network only at noise std <= K x the data's per-site "
                                         "width (default 4; inf: every step); above, the exact Gaussian step. The "
                                         "path weights stay exact.")


@app.command()
def sample(
    model: Path = typer.Option(..., "--model", help="Model file from `lftml diffusion train`."),
    n_configs: Optional[int] = typer.Option(None, "--n-configs", help="Number of configurations (total; default 1024)."),
    n: Optional[int] = typer.Option(None, "--n", hidden=True, help="Deprecated: use --n-configs."),
    sampler: str = typer.Option("exp", "--sampler",
                                help="exp (default: exact-posterior steps for the Gaussian part, exact path weights), "
                                     "em (Euler-Maruyama), pc (predictor-corrector), ode (probability flow)."),
    steps: int = typer.Option(50, "--steps", help="Time steps from t=1 to the data (network evaluations for exp/em)."),
    weights: Optional[str] = typer.Option(None, "--weights",
                                          help="path (exact path-space weights; default with --sampler exp), "
                                               "ode (PF-ODE log q, approximate; with --sampler ode), none."),
    probes: int = typer.Option(1, "--probes", help="Hutchinson probes for --weights ode."),
    schedule: str = typer.Option("edm", "--schedule", help="Time grid: edm (dense at small noise) or uniform (reference)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size",
                                             help="Configurations per batch (default: cache-sized for the network, "
                                                  "e.g. 16 for equi at 32x32; recorded, the samples depend on it)."),
    snr: float = typer.Option(0.16, "--snr", help="Signal-to-noise ratio of the pc corrector."),
    network_below: Optional[float] = NETWORK_BELOW_OPTION,
    shape: Optional[str] = typer.Option(None, "--shape",
                                        help="Sample on this lattice instead of the training one (at least as large; "
                                             "the equivariant network as is, the analytic part's two-point function "
                                             "embedded; exact by the path weights), e.g. --shape 32 32."),
    smc_moves: int = typer.Option(0, "--smc-moves",
                                  help="Resample by the weights, then this many HMC trajectories under exp(-S) per "
                                       "particle: an equally weighted ensemble (default 0: keep the weights)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG strip of the backward process."),
    strip: Optional[Path] = typer.Option(None, "--strip", hidden=True, help="Deprecated: use --plot."),
    out: Path = typer.Option(..., "--out", help="Ensemble file to write (HDF5, engine format)."),
    overwrite: bool = OVERWRITE_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    device: str = DEVICE_OPTION,
    progress: Optional[bool] = PROGRESS_OPTION,
    seed: int = SEED_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Generate configurations into an ensemble file (analyse it with `lftml analyze`, which
    reweights when the file carries log weights)."""
    from lftml.diffusion.workflows import sample_to_file, set_threads
    from lftml.errors import LftmlError

    if n is not None:
        deprecated_option("--n", "--n-configs")
        if n_configs is not None and n_configs != n:
            raise LftmlError(f"--n {n} contradicts --n-configs {n_configs}; give --n-configs only")
        n_configs = n
    if strip is not None:
        deprecated_option("--strip", "--plot")
        plot = plot or strip
    n_configs = 1024 if n_configs is None else n_configs
    if n_configs < 1:
        raise LftmlError(f"--n-configs must be >= 1, got {n_configs}")
    if seed < 0:
        raise LftmlError(f"--seed must be a non-negative integer, got {seed}")
    if weights is None:
        weights = "path" if sampler == "exp" else "none"
    require_file(model, "model file")
    set_threads(threads)
    try:
        res = sample_to_file(model, out, n=n_configs, sampler=sampler, steps=steps, seed=seed, batch_size=batch_size,
                             schedule=schedule, snr=snr, device=device, progress=show_progress(progress, as_json),
                             strip_png=plot, weights=weights, probes=probes, overwrite=overwrite,
                             network_below=network_below, smc_moves=smc_moves,
                             shape=parse_shape(shape) if shape is not None else None)
    except KeyboardInterrupt:
        _interrupted(out)
    if as_json:
        emit_json(res)
        return
    nfe = res.get("network_evaluations_per_sample")
    nfe_txt = f", {nfe} network evaluations" if nfe is not None else ""
    msg = (f"wrote {n_configs} configurations ({sampler}, {steps} steps{nfe_txt}, {schedule} grid) to {out} "
           f"in {res['wall_seconds']:.1f} s")
    if "weights_summary" in res:
        w = res["weights_summary"]
        msg += (f"; {weights} log weights {'used for resampling' if 'smc' in res else 'stored'}: "
                f"ESS/N = {w['ess_fraction']:.3f}, sigma_lw/sqrt(V) = {w['log_weight_std_per_sqrt_site']:.4f}")
    if "smc" in res:
        smc = res["smc"]
        msg += (f"; resampled ({smc['distinct_ancestors']} distinct ancestors) and moved by {smc['moves']} HMC "
                f"trajectories (acceptance {smc['hmc_acceptance']:.3f}): equally weighted")
    typer.echo(msg)


@app.command()
def baseline(
    data: Path = typer.Option(..., "--data", help="Ensemble to fit (HDF5)."),
    kind: str = typer.Option("gaussian", "--kind", help="gaussian (symmetric phase) or mixture (broken phase: 1/2 N(mu,C) + 1/2 N(-mu,C))."),
    n_configs: int = typer.Option(1024, "--n-configs", help="Number of exact independent samples."),
    discard: int = typer.Option(0, "--discard", help="Leading configurations of --data to drop."),
    weights: str = typer.Option("exact", "--weights", help="exact (store the exact log weights -S - log q) or none."),
    out: Path = typer.Option(..., "--out", help="Ensemble file to write."),
    overwrite: bool = OVERWRITE_OPTION,
    seed: int = SEED_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Exact samples (and exact log q) of the data-fitted Gaussian or sign-aligned Gaussian mixture."""
    from lftml.diffusion.workflows import baseline_to_file
    from lftml.errors import LftmlError

    if n_configs < 1:
        raise LftmlError(f"--n-configs must be >= 1, got {n_configs}")
    if seed < 0:
        raise LftmlError(f"--seed must be a non-negative integer, got {seed}")
    if discard < 0:
        raise LftmlError(f"--discard must be >= 0, got {discard}")
    if weights not in ("exact", "none"):
        raise LftmlError(f"unknown --weights {weights!r} for a baseline; choose exact or none")
    require_file(data, "ensemble")
    try:
        res = baseline_to_file(data, out, kind=kind, n=n_configs, seed=seed, discard=discard, overwrite=overwrite,
                               weights=weights == "exact")
    except KeyboardInterrupt:
        _interrupted(out)
    if as_json:
        emit_json(res)
        return
    msg = f"wrote {n_configs} exact {kind}-baseline configurations to {out}"
    if "weights_summary" in res:
        w = res["weights_summary"]
        msg += f"; ESS/N = {w['ess_fraction']:.3f}, sigma_lw/sqrt(V) = {w['log_weight_std_per_sqrt_site']:.4f}"
    typer.echo(msg)


@app.command()
def likelihood(
    model: Path = typer.Option(..., "--model", help="Trained model (`lftml diffusion train`)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Ensemble whose configurations to evaluate."),
    generate: Optional[int] = typer.Option(None, "--generate", help="Instead: N fresh PF-ODE samples with their log q."),
    max_configs: int = typer.Option(256, "--max-configs", help="Evaluate at most this many configurations of --data."),
    probes: int = typer.Option(1, "--probes", help="Hutchinson probe vectors per configuration."),
    probe: str = typer.Option("rademacher", "--probe", help="rademacher, gaussian, or exact (small lattices)."),
    solver: str = typer.Option("rk45", "--solver", help="rk45 (adaptive, --rtol/--atol) or heun (--steps)."),
    rtol: float = typer.Option(1e-5, "--rtol", help="Relative tolerance of the rk45 solver."),
    atol: float = typer.Option(1e-5, "--atol", help="Absolute tolerance of the rk45 solver."),
    steps: int = typer.Option(100, "--steps", help="Fixed steps of the heun solver."),
    batch_size: int = typer.Option(64, "--batch-size", help="Configurations per ODE solve."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Scatter plot of -log q against S (PNG)."),
    png: Optional[Path] = typer.Option(None, "--png", hidden=True, help="Deprecated: use --plot."),
    out: Optional[Path] = typer.Option(None, "--out", help="npz file (name ending in .npz) with arrays action and log_q."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out or --plot file."),
    progress: Optional[bool] = PROGRESS_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    device: str = typer.Option("auto", "--device", help="auto (GPU when present), cpu, cuda, cuda:N (the rk45 "
                               "solver itself is scipy's, on the CPU)."),
    seed: int = SEED_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """log q(phi) by the probability-flow ODE (a diagnostic: approximate unless --probe exact), and the
    fit -log q = slope * S + c (R^2)."""
    from lftml.diffusion.likelihood import LikelihoodSettings
    from lftml.diffusion.training import resolve_device
    from lftml.diffusion.workflows import likelihood_report, set_threads

    if png is not None:
        deprecated_option("--png", "--plot")
        plot = plot or png
    png = plot
    require_file(model, "model file")
    if data is not None:
        require_file(data, "ensemble")
    if out is not None:
        check_typed_output(out, ".npz", "the arrays are written as an npz file", option="--out", overwrite=overwrite,
                           inputs=(model, data))
    if png is not None:
        check_typed_output(png, ".png", "figures are PNG files", option="--plot", overwrite=overwrite, inputs=(model, data))
    set_threads(threads)
    settings = LikelihoodSettings(probes=probes, probe=probe, solver=solver, rtol=rtol, atol=atol, steps=steps)
    res = likelihood_report(model, data=data, generate_n=generate, settings=settings, seed=seed,
                            max_configs=max_configs, batch_size=batch_size, png=png, out_npz=out,
                            device=str(resolve_device(device)), progress=show_progress(progress, as_json))
    if as_json:
        emit_json(res)
        return
    f = res["fit"]
    typer.echo(f"{res['n']} configurations ({res['source']}): -log q = {f['slope']:.4f} S + {f['intercept']:.2f}, "
               f"R^2 = {f['r2']:.4f}; <log q> = {res['mean_log_q']:.2f}, <S> = {res['mean_action']:.2f}")


@app.command()
def compare(
    train: Optional[Path] = typer.Option(None, "--train", help="Training ensemble (optional)."),
    test: Path = typer.Option(..., "--test", help="Independent HMC test ensemble."),
    generated: Path = typer.Option(..., "--generated", help="Generated ensemble (`lftml diffusion sample`); reweighted when it carries log weights."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Baseline ensemble (`lftml diffusion baseline`): its own row and z-scores."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Histograms of M and S/V and the two-point function (PNG)."),
    png: Optional[Path] = typer.Option(None, "--png", hidden=True, help="Deprecated: use --plot."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --plot file."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The talk's table: <M>, <|M|>, chi_2, U_L, <S>/V, two-point function, with z-scores of generated (and
    --baseline) vs test."""
    from lftml.diffusion.evaluation import format_compare_table
    from lftml.diffusion.workflows import compare_report

    if png is not None:
        deprecated_option("--png", "--plot")
        plot = plot or png
    for p, what in ((train, "training ensemble"), (test, "test ensemble"), (generated, "generated ensemble"),
                    (baseline, "baseline ensemble")):
        if p is not None:
            require_file(p, what)
    res = compare_report(train, test, generated, png=plot, overwrite=overwrite, baseline=baseline)
    if as_json:
        emit_json(res)
        return
    typer.echo(format_compare_table(res))


@app.command()
def metropolis(
    model: Path = typer.Option(..., "--model", help="Trained model (`lftml diffusion train`)."),
    hmc: Optional[Path] = typer.Option(None, "--hmc", help="HMC ensemble to compare autocorrelations with (optional)."),
    n_configs: Optional[int] = typer.Option(None, "--n-configs", help="Number of proposals (default 1024)."),
    n: Optional[int] = typer.Option(None, "--n", hidden=True, help="Deprecated: use --n-configs."),
    weights: str = typer.Option("path", "--weights", help="path (exact path-space weights, exp sampler) or ode (PF-ODE log q, approximate)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Reverse steps (path: default 50) or Heun steps (ode: default 100)."),
    probes: int = typer.Option(1, "--probes", help="Hutchinson probes (--weights ode)."),
    probe: str = typer.Option("rademacher", "--probe", hidden=True),
    max_lag: int = typer.Option(30, "--max-lag", help="Largest lag of the autocorrelation functions reported and plotted."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Proposals per batch (default: cache-sized)."),
    network_below: Optional[float] = NETWORK_BELOW_OPTION,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Autocorrelation plot (needs --hmc)."),
    png: Optional[Path] = typer.Option(None, "--png", hidden=True, help="Deprecated: use --plot."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the Metropolis chain as an ensemble file."),
    overwrite: bool = OVERWRITE_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    device: str = DEVICE_OPTION,
    progress: Optional[bool] = PROGRESS_OPTION,
    seed: int = SEED_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Make generated samples exact: independence Metropolis against exp(-S) in path space (and reweighting)."""
    from lftml.diffusion.training import resolve_device
    from lftml.diffusion.workflows import metropolis_report, set_threads
    from lftml.errors import LftmlError

    if n is not None:
        deprecated_option("--n", "--n-configs")
        if n_configs is not None and n_configs != n:
            raise LftmlError(f"--n {n} contradicts --n-configs {n_configs}; give --n-configs only")
        n_configs = n
    if png is not None:
        deprecated_option("--png", "--plot")
        plot = plot or png
    n_configs = 1024 if n_configs is None else n_configs
    if n_configs < 2:
        raise LftmlError(f"--n-configs must be >= 2 (a chain needs proposals), got {n_configs}")
    if seed < 0:
        raise LftmlError(f"--seed must be a non-negative integer, got {seed}")
    require_file(model, "model file")
    if hmc is not None:
        require_file(hmc, "HMC ensemble")
    set_threads(threads)
    try:
        res = metropolis_report(model, hmc, n=n_configs, weights=weights, steps=steps, probes=probes, seed=seed,
                                batch_size=batch_size, max_lag=max_lag, png=plot, out=out,
                                device=str(resolve_device(device)), progress=show_progress(progress, as_json),
                                overwrite=overwrite, network_below=network_below)
    except KeyboardInterrupt:
        _interrupted(out)
    if as_json:
        emit_json(res)
        return
    w = res["weights_summary"]
    typer.echo(f"independence Metropolis ({'exact path weights' if res['exact'] else 'PF-ODE log q, approximate'}): "
               f"acceptance {fmt_err(res['acceptance'], res['acceptance_error'])}, "
               f"tau_int(M) {res['tau_int_chain']['M']:.2f}({res['tau_int_chain_error']['M']:.2f}), "
               f"tau_int(S) {res['tau_int_chain']['action_density']:.2f}({res['tau_int_chain_error']['action_density']:.2f})"
               + (f" (HMC tau_int(M) {res['autocorrelation']['hmc']['tau_int']:.2f}"
                  f"({res['autocorrelation']['hmc']['tau_int_error']:.2f}))" if "autocorrelation" in res else ""))
    rw = res["reweighted"]
    for k, label in (("susceptibility", "chi_2"), ("binder", "U_L"), ("action_density", "<S>/V")):
        typer.echo(f"{label:>6}: chain {fmt_err(res['metropolis_chain'][k]['value'], res['metropolis_chain'][k]['error'])}, "
                   f"reweighted {fmt_err(rw[k]['value'], rw[k]['error'])}, raw {fmt_err(res['generated_iid'][k]['value'], res['generated_iid'][k]['error'])}")
    typer.echo(f"ESS/N {w['ess_fraction']:.3f} of {w['n']}, sigma_lw/sqrt(V) {w['log_weight_std_per_sqrt_site']:.4f}")
