"""``lftml rbm``: train scalar-field RBMs, inspect their spectra, generate ensembles.

    lftml rbm train --target free --shape 10 --m2 4 --hidden 8 --learn-mu2 global --method exact --seed 1 --out model.pt
    lftml rbm spectrum model.pt --json --plot spectrum.png
    lftml rbm sample model.pt --n 1000 --chains 4 --out ens.h5
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lftml.cli.common import JSON_OPTION, SEED_OPTION, emit_json, parse_shape, require_file

app = typer.Typer(help="Scalar-field restricted Boltzmann machines (Gaussian RBM as a lattice field theory).", no_args_is_help=True)


def _fmt_list(values: list[float] | None, n: int = 12) -> str:
    if values is None:
        return "-"
    s = " ".join(f"{v:.5g}" for v in values[:n])
    return s + (" ..." if len(values) > n else "")


def _print_spectrum(summary: dict) -> None:
    typer.echo(f"N_v = {summary['n_visible']}, N_h = {summary['n_hidden']}, mu2 ({summary['mu2_mode']}) = "
               f"{summary['mu2'] if isinstance(summary['mu2'], float) else _fmt_list(summary['mu2'])}")
    typer.echo(f"target eigenvalues: {_fmt_list(summary['target_eigenvalues'])}")
    typer.echo(f"model  eigenvalues: {_fmt_list(summary['model_eigenvalues'])}")
    typer.echo(f"singular values W : {_fmt_list(summary['singular_values'])}")
    if summary.get("loglik") is not None:
        typer.echo(f"<log p>_target = {summary['loglik']:.8g}")
    if summary.get("kl") is not None:
        typer.echo(f"KL(target || RBM) = {summary['kl']:.6g}")


@app.command()
def train(
    target: str = typer.Option("free", "--target", help="free (exact free-field target), data (--data file) or mnist (--data IDX/npz)."),
    shape: Optional[str] = typer.Option(None, "--shape", help="Lattice of the free target, e.g. --shape 10 or --shape 8 8."),
    m2: Optional[float] = typer.Option(None, "--m2", help="Mass squared of the free target."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data file (.npy/.npz (n, *shape), lftml ensemble .h5, MNIST IDX)."),
    hidden: Optional[int] = typer.Option(None, "--hidden", help="Number of hidden nodes N_h (required unless --init)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Continue from this model file (e.g. an Adam warm-up, then a PCD anneal)."),
    mu2: Optional[float] = typer.Option(None, "--mu2", help="Fixed RBM mass mu^2 (excludes --learn-mu2)."),
    learn_mu2: Optional[str] = typer.Option(None, "--learn-mu2", help="global or site (default global, from --mu0)."),
    mu0: float = typer.Option(3.0, "--mu0", help="Initial mu = sqrt(mu^2) when mu^2 is learned (reference: 3)."),
    method: str = typer.Option("exact", "--method", help="exact (closed-form ML gradient), pcd, cd, or analytic (the closed-form ML optimum, no iterations)."),
    optimizer: str = typer.Option("reference", "--optimizer", help="reference (momentum SGD of the reference code), sgd, adam or lbfgs."),
    updates: int = typer.Option(1000, "--updates", help="Number of parameter updates."),
    lr: float = typer.Option(0.5, "--lr", help="Learning rate."),
    momentum: float = typer.Option(0.8, "--momentum", help="Momentum (reference: EMA form)."),
    l2: float = typer.Option(1e-4, "--l2", help="L2 weight decay on W."),
    lr_decay: float = typer.Option(0.92, "--lr-decay", help="Learning-rate factor applied every --decay-every updates."),
    decay_every: int = typer.Option(64, "--decay-every", help="Updates between learning-rate decays."),
    mu_lr_scale: float = typer.Option(1.0, "--mu-lr-scale", help="Learning rate of mu relative to W's."),
    k: int = typer.Option(3, "--k", help="Gibbs sweeps per update (PCD/CD)."),
    chains: int = typer.Option(64, "--chains", help="Persistent chains (PCD)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Minibatch size (CD, or PCD with --data-term minibatch)."),
    data_term: str = typer.Option("auto", "--data-term", help="auto, correlator (full target correlator) or minibatch."),
    init_std: float = typer.Option(0.1, "--init-std", help="W ~ N(0, init_std^2) at initialisation."),
    sigma_h: float = typer.Option(1.0, "--sigma-h", help="Width of the hidden Gaussian (fixed)."),
    learn_eta: bool = typer.Option(False, "--learn-eta", help="Also learn the hidden bias eta (source J = W eta)."),
    log_every: int = typer.Option(1, "--log-every", help="Updates between learning-curve points."),
    seed: int = SEED_OPTION,
    out: Path = typer.Option(..., "--out", help="Model file to write (.pt)."),
    progress: bool = typer.Option(False, "--progress/--no-progress", help="Show a progress bar."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train a Gaussian RBM on a free-field target or data; writes the model with its learning curves."""
    from lftml.rbm.training import TrainConfig
    from lftml.rbm.workflows import build_target, run_training

    if init is not None:
        require_file(init, "--init model file")
    tgt = build_target(target, parse_shape(shape) if shape is not None else None, m2, data)
    config = TrainConfig(
        method=method, n_updates=updates, lr=lr, momentum=momentum, l2=l2, lr_decay=lr_decay,
        decay_every=decay_every, k=k, n_chains=chains, batch_size=batch_size, data_term=data_term,
        optimizer=optimizer, log_every=log_every, mu_lr_scale=mu_lr_scale,
    )
    _, summary = run_training(
        tgt, n_hidden=hidden, mu2=mu2, learn_mu2=learn_mu2, mu0=mu0, init_std=init_std, sigma_h=sigma_h,
        learn_eta=learn_eta, config=config, seed=seed, out=out, progress=progress, init_from=init,
    )
    if as_json:
        emit_json(summary)
        return
    typer.echo(f"trained ({method}, {updates} updates, {summary['wall_time_s']:.2f} s) -> {out}")
    _print_spectrum(summary)


@app.command()
def spectrum(
    model: Path = typer.Argument(..., help="Model file written by lftml rbm train."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Save the spectrum figure (PNG)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Target and learned eigenvalues (ascending), singular values of W, mu^2, log-likelihood and KL."""
    from lftml.rbm.workflows import spectrum_report

    require_file(model, "model file")
    _, _, summary = spectrum_report(model)
    if plot is not None:
        from lftml.plots import pyplot, save_figure
        from lftml.rbm.plots import plot_spectrum

        fig, ax = pyplot().subplots(figsize=(5, 4))
        plot_spectrum(ax, summary["target_eigenvalues"], summary["model_eigenvalues"], summary["mu2"],
                      title=f"$N_v = {summary['n_visible']}$, $N_h = {summary['n_hidden']}$")
        save_figure(fig, plot)
        summary["plot"] = str(plot)
    if as_json:
        emit_json(summary)
        return
    _print_spectrum(summary)


@app.command()
def sample(
    model: Path = typer.Argument(..., help="Model file written by lftml rbm train."),
    n: int = typer.Option(..., "--n", help="Configurations per chain (n_configs)."),
    chains: int = typer.Option(4, "--chains", help="Independent Gibbs chains (replicas)."),
    therm: int = typer.Option(100, "--therm", help="Gibbs sweeps discarded first."),
    every: int = typer.Option(1, "--every", help="Gibbs sweeps between stored configurations."),
    method: str = typer.Option("gibbs", "--method", help="gibbs (block Gibbs chains) or exact (i.i.d., Cholesky of K)."),
    seed: int = SEED_OPTION,
    out: Path = typer.Option(..., "--out", help="Ensemble file to write (HDF5), analysable with lftml analyze."),
    progress: bool = typer.Option(False, "--progress/--no-progress", help="Show a progress bar."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Generate configurations from a trained RBM and write them as an lftml ensemble."""
    from lftml.rbm.workflows import sample_to_ensemble

    require_file(model, "model file")
    summary = sample_to_ensemble(model, out, n_configs=n, n_chains=chains, n_therm=therm, every=every, method=method,
                                 seed=seed, progress=progress)
    if as_json:
        emit_json(summary)
        return
    typer.echo(f"wrote {n} x {chains} configurations of shape {tuple(summary['lattice_shape'])} to {out} "
               f"({summary['wall_time_s']:.2f} s); analyse with: lftml analyze {out}")
