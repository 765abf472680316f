"""``lftml rbm``: train scalar-field RBMs, inspect spectra, generate ensembles and digits, likelihoods.

    lftml rbm train --shape 10 --m2 4 --hidden 8 --seed 1 --out model.pt
    lftml rbm train --data mnist --hidden 64 --heldout 0.2 --out mnist64.pt
    lftml rbm spectrum model.pt --json --plot spectrum.png
    lftml rbm spectrum --data mnist --json --plot mnist_spectrum.png
    lftml rbm sample model.pt --n-configs 1000 --chains 4 --out ens.h5
    lftml rbm sample mnist64.pt --grid digits.png
    lftml rbm likelihood mnist64.pt --data mnist
"""

from __future__ import annotations

import math

from pathlib import Path
from typing import Optional

import typer

from lftml.cli.common import (JSON_OPTION, PROGRESS_OPTION, SEED_OPTION, check_seed, deprecated_option, emit_json,
                              fmt_err, parse_shape, require_file, show_progress)
from lftml.errors import LftmlError

app = typer.Typer(help="Scalar-field restricted Boltzmann machines (Gaussian RBM as a lattice field theory).", no_args_is_help=True)

#: Reference-recipe defaults (the paper's code); used when --recipe reference or --method pcd|cd.
REFERENCE = dict(optimizer="reference", lr=0.5, momentum=0.8, l2=1e-4, lr_decay=0.92, decay_every=64)


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


def _device(device: str) -> str:
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise LftmlError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        raise LftmlError("--device: the RBM commands run in float64 on the CPU (the matrices are small); use --device auto or cpu")
    return "cpu"


@app.command()
def train(
    data: Optional[str] = typer.Option(None, "--data", help="Training data: mnist (5,000 real MNIST images), digits (1,797 8x8 digits), or a file (.npy/.npz/ensemble .h5/MNIST IDX). Selects a data target alone."),
    shape: Optional[str] = typer.Option(None, "--shape", help="Lattice of the free-field target, e.g. --shape 10 or --shape 8 8."),
    m2: Optional[float] = typer.Option(None, "--m2", help="Mass squared of the free-field target."),
    target: Optional[str] = typer.Option(None, "--target", help="free or data; implied by --shape/--m2 or --data (deprecated spelling: mnist)."),
    hidden: Optional[int] = typer.Option(None, "--hidden", help="Number of hidden nodes N_h (required unless --init)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Continue from this model file (e.g. an interrupted run, or a warm-up before PCD)."),
    mu2: Optional[float] = typer.Option(None, "--mu2", help="Fixed RBM mass mu^2 (excludes --learn-mu2)."),
    learn_mu2: Optional[str] = typer.Option(None, "--learn-mu2", help="global or site (default global, from --mu0)."),
    mu0: float = typer.Option(3.0, "--mu0", help="Initial mu = sqrt(mu^2) when mu^2 is learned (reference: 3)."),
    method: Optional[str] = typer.Option(None, "--method", help="exact (closed-form ML gradient; the default), pcd, cd, or analytic (the closed-form ML optimum, no updates); Bernoulli hidden units: pcd (default) or cd."),
    visible_phi4: bool = typer.Option(False, "--visible-phi4", help="Add a learned g phi_i^4/4! on every visible node (interacting RBM; PCD with the exact conditional sampler, learned global mu^2); trains on an ensemble (--data ens.h5) and compares <|M|>, chi_2, U_L of its samples with the ensemble's."),
    g0: float = typer.Option(1.0, "--g0", help="--visible-phi4: initial quartic coupling g (learned; g phi^4/4! as in lftml hmc --g)."),
    hidden_units: str = typer.Option("gaussian", "--hidden-units", help="gaussian (Gaussian RBM) or bernoulli (hidden h = +-1: a scalar-Bernoulli RBM, trained by PCD/CD on data, fixed --mu2)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="converge (default for exact: L-BFGS until max|grad <log p>| < --tol) or reference (the paper's fixed momentum-SGD schedule)."),
    tol: float = typer.Option(1e-6, "--tol", help="converge recipe: stop when the largest gradient component of <log p> is below this."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="reference (momentum SGD of the reference code), sgd, adam or lbfgs (for the reference recipe, pcd and cd)."),
    updates: int = typer.Option(1000, "--updates", help="Parameter updates (converge recipe: the maximum)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (for the reference recipe, pcd and cd; default 0.5)."),
    momentum: Optional[float] = typer.Option(None, "--momentum", help="Momentum (reference: EMA form; default 0.8)."),
    l2: Optional[float] = typer.Option(None, "--l2", help="L2 weight decay on W (default 1e-4)."),
    lr_decay: Optional[float] = typer.Option(None, "--lr-decay", help="Learning-rate factor every --decay-every updates (default 0.92)."),
    decay_every: Optional[int] = typer.Option(None, "--decay-every", help="Updates between learning-rate decays (default 64)."),
    mu_lr_scale: float = typer.Option(1.0, "--mu-lr-scale", help="Learning rate of mu relative to W's."),
    k: int = typer.Option(3, "--k", help="Gibbs sweeps per update (PCD/CD)."),
    pcd_chains: Optional[int] = typer.Option(None, "--pcd-chains", help="Persistent chains (PCD; default 64)."),
    chains: Optional[int] = typer.Option(None, "--chains", hidden=True, help="Deprecated: use --pcd-chains."),
    batch_size: int = typer.Option(64, "--batch-size", help="Minibatch size (CD, or PCD with --data-term minibatch)."),
    data_term: str = typer.Option("auto", "--data-term", help="auto, correlator (full target correlator) or minibatch."),
    init_std: float = typer.Option(0.1, "--init-std", help="W ~ N(0, init_std^2) at initialisation."),
    sigma_h: float = typer.Option(1.0, "--sigma-h", help="Width of the hidden Gaussian (fixed)."),
    learn_eta: bool = typer.Option(False, "--learn-eta", help="Also learn the hidden bias eta (source J = W eta)."),
    heldout: float = typer.Option(0.0, "--heldout", help="Fraction of the data held out (seeded split); its exact log-likelihood per image is reported."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="Use a random subset of this many samples (seeded)."),
    center: bool = typer.Option(False, "--center", help="Subtract the per-site mean of the data (off by default, as in the talk)."),
    log_every: int = typer.Option(1, "--log-every", help="Updates between learning-curve points."),
    seed: int = SEED_OPTION,
    out: Path = typer.Option(..., "--out", help="Model file to write (.pt)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out (pcd, cd or --recipe reference) bit-identically; options not given are taken from the file, given ones must agree."),
    device: str = typer.Option("auto", "--device", help="auto or cpu (the RBM runs in float64 on the CPU)."),
    progress: Optional[bool] = PROGRESS_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Train a Gaussian RBM on a free-field target or data; writes the model with its learning curves."""
    loc = locals()
    raw = {n: loc[n] for n in RESUME_OPTIONS}
    if raw["pcd_chains"] is None:
        raw["pcd_chains"] = chains
    if resume and Path(out).is_file():
        vals = _with_stored_train_options(out, raw)
        (data, shape, m2, target, hidden, mu2, learn_mu2, mu0, method, hidden_units, recipe, tol, optimizer, updates, lr,
         momentum, l2, lr_decay, decay_every, mu_lr_scale, k, pcd_chains, batch_size, data_term, init_std, sigma_h,
         learn_eta, heldout, max_samples, center, log_every, seed) = (vals[n] for n in RESUME_OPTIONS)
        raw, chains = vals, None
    from lftml.rbm.training import TrainConfig
    from lftml.rbm.workflows import build_target, heldout_loglik
    from lftml.safeio import check_output

    _device(device)
    if hidden_units not in ("gaussian", "bernoulli"):
        raise LftmlError(f"--hidden-units must be gaussian or bernoulli, got {hidden_units!r}")
    if visible_phi4:
        if hidden_units != "gaussian":
            raise LftmlError("--visible-phi4 has Gaussian hidden units: drop --hidden-units bernoulli")
        _train_phi4(data=data, shape=shape, hidden=hidden, mu2=mu2, learn_mu2=learn_mu2, mu0=mu0, g0=g0, method=method,
                    updates=updates, lr=lr, k=k, pcd_chains=pcd_chains if pcd_chains is not None else chains,
                    batch_size=batch_size, init=init, seed=seed, out=out, overwrite=overwrite, as_json=as_json)
        return
    if hidden_units == "bernoulli":
        _train_bernoulli(data=data, hidden=hidden, mu2=mu2, method=method or "pcd", updates=updates, lr=lr, momentum=momentum,
                         k=k, pcd_chains=pcd_chains if pcd_chains is not None else chains, batch_size=batch_size,
                         heldout=heldout, max_samples=max_samples, center=center, seed=seed, out=out,
                         overwrite=overwrite, as_json=as_json, learn_mu2=learn_mu2, shape=shape, init=init)
        return
    method = method or "exact"
    if chains is not None:
        deprecated_option("--chains", "--pcd-chains")
        if pcd_chains is None:
            pcd_chains = chains
    if target == "mnist":
        deprecated_option("--target mnist", "--data mnist (or --data PATH)")
        target = "data"
    check_seed(seed)
    data_path = Path(data) if data is not None and Path(data).exists() else None
    if resume:
        if init is not None or overwrite:
            raise LftmlError("--resume continues --out in place: drop --init/--overwrite")
        require_file(out, "--out model file to resume")
    else:
        check_output(out, overwrite=overwrite, inputs=[data_path, init])
    explicit = {n: v for n, v in dict(optimizer=optimizer, lr=lr, momentum=momentum, l2=l2, lr_decay=lr_decay,
                                      decay_every=decay_every).items() if v is not None}
    recipe = _resolve_recipe(method, recipe, explicit)
    if init is not None:
        require_file(init, "--init model file")
    tgt, held = build_target(target, parse_shape(shape) if shape is not None else None, m2, data, heldout=heldout,
                             split_seed=seed, max_samples=max_samples, center=center)
    config = TrainConfig(method=method, n_updates=updates, k=k, n_chains=64 if pcd_chains is None else pcd_chains,
                         batch_size=batch_size, data_term=data_term, log_every=log_every, mu_lr_scale=mu_lr_scale,
                         recipe=recipe, grad_tol=tol, **{**REFERENCE, **explicit})
    model, summary = _fit(tgt, config, resume=resume, out=out, seed=seed, progress=show_progress(progress, as_json),
                          init=init, cli_options=raw,
                          n_hidden=hidden, mu2=mu2, learn_mu2=learn_mu2, mu0=mu0, init_std=init_std, sigma_h=sigma_h,
                          learn_eta=learn_eta)
    if tgt.data is not None:
        summary["train_loglik_per_image"] = heldout_loglik(model, tgt.data)
    if held is not None:
        summary["heldout_loglik_per_image"] = heldout_loglik(model, held.x)
        summary["heldout_gap"] = summary["train_loglik_per_image"]["mean"] - summary["heldout_loglik_per_image"]["mean"]
    _report_trained(summary, method=method, out=out, as_json=as_json)


def _resolve_recipe(method: str, recipe: Optional[str], explicit: dict) -> str:
    """The training recipe: explicit schedule options (``--lr`` ...) select ``reference`` for exact training."""
    names = ", ".join("--" + n.replace("_", "-") for n in explicit)
    if method == "exact" and recipe == "converge" and explicit:
        raise LftmlError(f"{names} set the fixed schedule of --recipe reference (or pcd/cd); --recipe converge "
                         f"(L-BFGS to --tol) takes none: drop them or use --recipe reference")
    lr = explicit.get("lr")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise LftmlError(f"--lr must be a positive finite number, got {lr}")  # before the recipe warning below
    if method == "exact" and recipe is None and explicit:
        typer.echo(f"warning: {names} set a fixed schedule, so --recipe reference is used; the default exact recipe "
                   f"converges by itself (drop them)", err=True)
        recipe = "reference"
    return recipe or "converge"


def _fit(tgt, config, *, resume: bool, out: Path, seed: int, progress: bool, init: Optional[Path], cli_options: dict,
         **model_options):
    """Train (or resume) under the output lock; an interrupt leaves a resumable file and exits 130."""
    from lftml.rbm.workflows import TrainingInterrupted, run_training
    from lftml.safeio import OutputLock, interrupts_as_keyboard_interrupt

    before = _file_identity(out)
    try:
        with OutputLock(out, "model"), interrupts_as_keyboard_interrupt():
            if resume:
                from lftml.rbm.workflows import resume_training

                model, summary = resume_training(tgt, out, config=config, seed=seed, progress=progress)
            else:
                model, summary = run_training(tgt, **model_options, config=config, seed=seed, out=out,
                                              progress=progress, init_from=init, cli_options=cli_options)
    except TrainingInterrupted as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:  # outside the training loop: while setting up, or after the model was saved
        if _file_identity(out) == before:
            typer.echo(f"interrupted before training: nothing was written ({out} untouched); rerun the command", err=True)
        else:
            typer.echo(f"interrupted after training: the complete model was written to {out}", err=True)
        raise typer.Exit(130) from None
    return model, summary


def _file_identity(path: Path) -> Optional[tuple[int, int, int]]:
    """(inode, size, mtime) of ``path``, None if absent: an atomic save always changes it."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _report_trained(summary: dict, *, method: str, out: Path, as_json: bool) -> None:
    """Print the trained model's summary (or emit it as JSON); warn of options --method analytic ignored."""
    if method == "analytic":
        from lftml.cli.common import given_on_command_line

        unused = sorted(given_on_command_line() & ANALYTIC_UNUSED)
        if unused:
            names = ", ".join("--" + n.replace("_", "-") for n in unused)
            typer.echo(f"warning: {names} not used: --method analytic sets the closed-form ML optimum directly "
                       "(no updates were made)", err=True)
    if as_json:
        emit_json(summary)
        return
    if method == "analytic":
        how = "set to the closed-form ML optimum, no updates"
    elif summary.get("converged") is not None:
        how = (f"{'converged' if summary['converged'] else 'NOT converged'} after {summary['n_updates']} L-BFGS iterations, "
               f"max|grad| = {summary['grad_max']:.2g} {'<' if summary['converged'] else '>='} {summary['grad_tol']:g}")
    else:
        how = f"{summary['n_updates']} updates"
    typer.echo(f"trained ({method}, {how}, {summary['wall_time_s']:.2f} s) -> {out}")
    _print_spectrum(summary)
    for key, label in (("train_loglik_per_image", "train"), ("heldout_loglik_per_image", "held-out")):
        if key in summary:
            v = summary[key]
            typer.echo(f"log-likelihood per image ({label}, {v['n']} images, exact closed form): {fmt_err(v['mean'], v['error'])}")
    if "heldout_gap" in summary:
        typer.echo(f"train - held-out gap: {summary['heldout_gap']:.4g}")


#: ``rbm train`` options of the iterative methods: typed with ``--method analytic`` they have no effect (warned).
ANALYTIC_UNUSED = frozenset({"recipe", "tol", "optimizer", "updates", "lr", "momentum", "l2", "lr_decay", "decay_every",
                             "mu_lr_scale", "k", "pcd_chains", "chains", "batch_size", "data_term", "log_every"})


#: ``rbm train`` options stored in an interrupted model file (``meta["cli_options"]``) and taken from
#: it by ``--resume`` when not given; given ones must agree (docs/cli.md, as ``lftml hmc --resume``).
RESUME_OPTIONS = ("data", "shape", "m2", "target", "hidden", "mu2", "learn_mu2", "mu0", "method", "hidden_units", "recipe",
                  "tol", "optimizer", "updates", "lr", "momentum", "l2", "lr_decay", "decay_every", "mu_lr_scale", "k",
                  "pcd_chains", "batch_size", "data_term", "init_std", "sigma_h", "learn_eta", "heldout", "max_samples",
                  "center", "log_every", "seed")


def _with_stored_train_options(out: Path, values: dict) -> dict:
    """``--resume``: options not typed are taken from ``out``'s stored ``cli_options``; typed ones that
    contradict them are refused by name. Files without stored options (older runs) keep ``values``."""
    from lftml.cli.common import given_on_command_line
    from lftml.rbm.io import load_model

    try:
        stored = (load_model(out)[1].get("meta") or {}).get("cli_options")
    except LftmlError:
        raise
    except Exception:  # not a model file: resume_training names the problem
        return values
    if not stored:
        return values
    given = given_on_command_line() | ({"pcd_chains"} if "chains" in given_on_command_line() else set())
    vals = dict(values)
    for name in RESUME_OPTIONS:
        if name not in stored:
            continue
        if name in given and values[name] != stored[name]:
            opt = "--" + name.replace("_", "-")
            raise LftmlError(f"--resume: {opt} {values[name]} differs from the interrupted run's {opt} {stored[name]} "
                             f"(drop {opt} to take it from {out})")
        vals[name] = stored[name]
    return vals


def _train_phi4(*, data, shape, hidden, mu2, learn_mu2, mu0, g0, method, updates, lr, k, pcd_chains, batch_size, init,
                seed, out, overwrite, as_json) -> None:
    """``--visible-phi4``: PCD training of :class:`lftml.rbm.phi4.Phi4VisibleRBM` on an ensemble, W initialised at
    the Gaussian ML optimum (mu^2 = mu0^2), then the comparison of its samples' observables with the ensemble's."""
    import numpy as np

    from lftml.rbm.constructions import optimal_weights_from_correlator
    from lftml.rbm.io import save_phi4_model
    from lftml.rbm.phi4 import Phi4TrainConfig, Phi4VisibleRBM, compare_observables, sample_chains, train_phi4
    from lftml.rbm.workflows import stream_generators
    from lftml.safeio import OutputLock, check_output, interrupts_as_keyboard_interrupt

    if data is None or shape is not None:
        raise LftmlError("--visible-phi4 trains on an ensemble: give --data ENS.h5 (from lftml hmc; no --shape/--m2)")
    if mu2 is not None or learn_mu2 not in (None, "global") or init is not None:
        raise LftmlError("--visible-phi4 learns a global mu^2 from --mu0 (no --mu2, --learn-mu2 site or --init)")
    if hidden is None:
        raise LftmlError("give the number of hidden nodes with --hidden")
    if method not in (None, "pcd"):
        raise LftmlError(f"--visible-phi4 trains with --method pcd (the default), got {method!r}")
    if not (g0 >= 0 and np.isfinite(g0)):
        raise LftmlError(f"--g0 must be a finite number >= 0, got {g0}")
    if mu0 <= 0:
        raise LftmlError(f"--mu0 must be positive, got {mu0}")
    path = Path(data)
    if path.suffix.lower() not in (".h5", ".hdf5"):
        raise LftmlError(f"--visible-phi4 compares with the ensemble's observables: --data must be an lftml ensemble .h5, got {data!r}")
    require_file(path, "ensemble")
    check_output(out, overwrite=overwrite, inputs=[path])
    from lftml.datasets import load_ensemble_history

    hist_arr = load_ensemble_history(path)  # (n_configs, n_chains, *shape)
    lattice = tuple(hist_arr.shape[2:])
    x = hist_arr.reshape(-1, int(np.prod(lattice)))
    cfg = Phi4TrainConfig(n_updates=updates, lr=0.05 if lr is None else lr, k=1 if k is None else k,
                          n_chains=256 if pcd_chains is None else pcd_chains, batch_size=batch_size)
    gens, seeds = stream_generators(seed, ("sampling", "data", "compare"))
    try:
        W0, _ = optimal_weights_from_correlator(x.T @ x / len(x), hidden, mu2=mu0 * mu0)
    except LftmlError as exc:
        raise LftmlError(f"--visible-phi4 starts from the Gaussian ML optimum at mu^2 = --mu0^2 = {mu0 * mu0:g}: {exc}; raise --mu0") from None
    model = Phi4VisibleRBM(x.shape[1], hidden, mu2=mu0 * mu0, mu2_mode="global", lam=g0, weights=W0, lattice_shape=lattice)
    n_cfg, n_ch = hist_arr.shape[0], hist_arr.shape[1]
    try:
        with OutputLock(out, "model"), interrupts_as_keyboard_interrupt():
            h = train_phi4(model, x, cfg, sampling_generator=gens["sampling"], data_generator=gens["data"])
            samples = sample_chains(model, n_cfg, n_ch, 100, gens["compare"], every=2)
            acc_compare = model.last_acceptance
            cmp_ = compare_observables(samples, hist_arr.reshape(n_cfg, n_ch, -1))
            save_phi4_model(out, model, history=h, meta={"seed": seed, "stream_seeds": seeds, "train_config": cfg.__dict__,
                                                         "data": str(path), "comparison": cmp_})
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing was written; rerun the command", err=True)
        raise typer.Exit(130) from None
    summary = {"visible_phi4": True, "n_visible": model.n_visible, "n_hidden": hidden, "g": model.lam,
               "mu2": float(model.mu2_vector().detach().mean()), "n_updates": updates, "acceptance": h["mean_acceptance"],
               "sample_acceptance": acc_compare, "comparison": cmp_, "out": str(out), "seed": seed}
    if as_json:
        emit_json(summary)
        return
    typer.echo(f"trained phi^4 RBM (PCD, {updates} updates; exact visible sampler, acceptance {h['mean_acceptance']:.3f}) -> {out}")
    typer.echo(f"learned g = {model.lam:.5g}, mu^2 = {summary['mu2']:.5g}")
    for name, c in cmp_.items():
        typer.echo(f"{name:5s} model {fmt_err(c['model'], c['model_error'])}  ensemble {fmt_err(c['ensemble'], c['ensemble_error'])}  z = {c['z']:+.2f}")


def _train_bernoulli(*, data, hidden, mu2, method, updates, lr, momentum, k, pcd_chains, batch_size, heldout, max_samples,
                     center, seed, out, overwrite, as_json, learn_mu2, shape, init) -> None:
    """``rbm train --hidden-units bernoulli``: PCD/CD on data with a fixed mass; reports the
    log-likelihood per image (exact log Z by enumeration for N_h <= 20, AIS with its error above)."""
    import numpy as np
    import torch

    from lftml.rbm.bernoulli import ScalarBernoulliRBM
    from lftml.rbm.bernoulli_training import BernoulliTrainConfig, induced_couplings, train_bernoulli
    from lftml.rbm.io import save_bernoulli_model
    from lftml.rbm.workflows import bernoulli_loglik, build_target, stream_generators
    from lftml.safeio import OutputLock, check_output, interrupts_as_keyboard_interrupt

    if data is None or shape is not None:
        raise LftmlError("--hidden-units bernoulli trains on data: give --data mnist|digits|PATH (no --shape/--m2)")
    if mu2 is None or learn_mu2 is not None or init is not None:
        raise LftmlError("--hidden-units bernoulli needs a fixed --mu2 (no --learn-mu2, no --init)")
    if hidden is None:
        raise LftmlError("give the number of hidden nodes with --hidden")
    if method not in ("pcd", "cd"):
        raise LftmlError(f"--hidden-units bernoulli trains with --method pcd or cd, got {method!r}")
    data_path = Path(data) if Path(data).exists() else None
    check_output(out, overwrite=overwrite, inputs=[data_path])
    tgt, held = build_target("data", None, None, data, heldout=heldout, split_seed=seed, max_samples=max_samples, center=center)
    cfg = BernoulliTrainConfig(method=method, n_updates=updates, lr=0.01 if lr is None else lr,
                               momentum=0.5 if momentum is None else momentum, k=k,
                               n_chains=100 if pcd_chains is None else pcd_chains, batch_size=batch_size)
    gens, seeds = stream_generators(seed)
    W0 = 0.01 * torch.randn((tgt.n_visible, hidden), generator=gens["init"], dtype=torch.float64)
    model = ScalarBernoulliRBM(W0, mu2=mu2)
    try:
        with OutputLock(out, "model"), interrupts_as_keyboard_interrupt():
            hist = train_bernoulli(model, tgt.data, cfg, sampling_generator=gens["sampling"], data_generator=gens["data"])
            save_bernoulli_model(out, model, lattice_shape=tgt.lattice_shape, history=hist,
                                 meta={"seed": seed, "stream_seeds": seeds, "train_config": cfg.__dict__})
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing was written (Bernoulli training keeps no checkpoint); rerun the command", err=True)
        raise typer.Exit(130) from None
    c = induced_couplings(ScalarBernoulliRBM(model.W, mu2=model.mu2))
    summary = {"hidden_units": "bernoulli", "n_visible": model.n_visible, "n_hidden": model.n_hidden, "mu2": float(mu2),
               "method": method, "n_updates": updates, "out": str(out), "seed": seed,
               "coupling_two_max": c["norm_two"], "coupling_four_max": c["norm_four"],
               "train_loglik_per_image": bernoulli_loglik(model, tgt.data.numpy(), seed=seed)}
    if held is not None:
        summary["heldout_loglik_per_image"] = bernoulli_loglik(model, np.asarray(held.x), seed=seed)
        summary["heldout_gap"] = summary["train_loglik_per_image"]["mean"] - summary["heldout_loglik_per_image"]["mean"]
    if as_json:
        emit_json(summary)
        return
    typer.echo(f"trained scalar-Bernoulli RBM ({method}, {updates} updates) -> {out}")
    typer.echo(f"induced couplings: max |(W W^T)_ij| = {c['norm_two']:.4g} (2-point, next to mu^2 = {mu2:g}), "
               f"max_i |2 sum_a W_ia^4| = {c['norm_four']:.4g} (4-point)")
    for key, label in (("train_loglik_per_image", "train"), ("heldout_loglik_per_image", "held-out")):
        if key in summary:
            v = summary[key]
            typer.echo(f"log-likelihood per image ({label}, {v['n']} images, log Z by {v['log_z_method']}): "
                       f"{fmt_err(v['mean'], v['error'])}")


@app.command()
def spectrum(
    model: Optional[Path] = typer.Argument(None, help="Model file written by lftml rbm train (or give --data)."),
    data: Optional[str] = typer.Option(None, "--data", help="Spectrum of a data set's correlator instead: mnist, digits or a file."),
    center: bool = typer.Option(False, "--center", help="With --data: the connected (centred) correlator."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="With --data: a random subset (seeded by --seed)."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random stream (nothing is written)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Save the spectrum figure (PNG)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --plot."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Model: target and learned eigenvalues, singular values of W, mu^2, log-likelihood, KL.
    Data (--data): eigenvalues 1/kappa of <phi_i phi_j> (descending), kappa, exact zero modes."""
    if (model is None) == (data is None):
        raise LftmlError("give a model file or --data mnist|digits|PATH (one of them)")
    if plot is not None:
        from lftml.safeio import check_output

        check_output(plot, overwrite=overwrite, inputs=[model], option="--plot")
    if data is not None:
        _data_spectrum(data, center, max_samples, seed, plot, as_json)
        return
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


def _data_spectrum(data: str, center: bool, max_samples: int | None, seed: int, plot: Path | None, as_json: bool) -> None:
    from lftml.datasets import load_data
    from lftml.rbm.spectrum import data_correlator_spectrum

    ds = load_data(data, max_samples=max_samples, subset_seed=seed)
    spec = data_correlator_spectrum(ds.x, connected=center)
    summary = {
        "data": data, "source": ds.source, "n_samples": ds.n_samples, "shape": list(ds.shape), "connected": center,
        "eigenvalues": spec["correlator_eigenvalues"], "kappa": spec["kappa"], "zero_modes": spec["zero_modes"],
        "constant_pixels": spec["constant_pixels"], "rank_deficit": spec["rank_deficit"],
    }
    if plot is not None:
        from lftml.plots import pyplot, save_figure
        from lftml.rbm.plots import plot_correlator_spectrum, plot_kappa

        fig, (a1, a2) = pyplot().subplots(1, 2, figsize=(10, 4))
        what = "connected" if center else "uncentred"
        plot_correlator_spectrum(a1, spec["correlator_eigenvalues"], spec["zero_modes"], title=f"{data}: {what} correlator")
        plot_kappa(a2, spec["kappa"], title=r"$\kappa$ = 1/eigenvalue (UV divergent)")
        save_figure(fig, plot)
        summary["plot"] = str(plot)
    if as_json:
        emit_json(summary)
        return
    ev = spec["correlator_eigenvalues"]
    typer.echo(f"{data}: {ds.n_samples} samples of shape {ds.shape}, {'connected' if center else 'uncentred'} correlator")
    typer.echo(f"eigenvalues (1/kappa, descending): {_fmt_list(list(ev))}")
    typer.echo(f"largest {ev[0]:.6g}, smallest non-zero {ev[ev > 0][-1]:.6g}")
    typer.echo(f"exact zero modes: {spec['zero_modes']} = {spec['constant_pixels']} constant pixels + rank deficit {spec['rank_deficit']}")


@app.command()
def sample(
    model: Path = typer.Argument(..., help="Model file written by lftml rbm train."),
    n_configs: Optional[int] = typer.Option(None, "--n-configs", help="Configurations per chain."),
    n: Optional[int] = typer.Option(None, "--n", hidden=True, help="Deprecated: use --n-configs."),
    chains: int = typer.Option(4, "--chains", help="Independent Gibbs chains (replicas)."),
    therm: int = typer.Option(100, "--therm", help="Gibbs sweeps discarded first (with --grid: sweeps from noise)."),
    every: int = typer.Option(1, "--every", help="Gibbs sweeps between stored configurations."),
    method: str = typer.Option("gibbs", "--method", help="gibbs (block Gibbs chains) or exact (i.i.d., Cholesky of K)."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="Draw digits (Gibbs from uniform noise, --therm sweeps) into one grid image (PNG)."),
    grid_size: int = typer.Option(36, "--grid-size", help="Number of digits in the --grid image."),
    seed: int = SEED_OPTION,
    out: Optional[Path] = typer.Option(None, "--out", help="Ensemble file to write (HDF5), analysable with lftml analyze."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out / --grid."),
    progress: Optional[bool] = PROGRESS_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Generate configurations from a trained RBM (an lftml ensemble) and/or a grid of digits."""
    from lftml.rbm.workflows import digit_grid, sample_to_ensemble
    from lftml.safeio import OutputLock, check_output, interrupts_as_keyboard_interrupt

    if n is not None:
        deprecated_option("--n", "--n-configs")
        if n_configs is None:
            n_configs = n
    if out is None and grid is None:
        raise LftmlError("give --out ENS.h5 (configurations) and/or --grid PNG (digits)")
    if out is not None and n_configs is None:
        raise LftmlError("--out needs --n-configs N (configurations per chain)")
    check_seed(seed)
    require_file(model, "model file")
    if out is not None:
        check_output(out, overwrite=overwrite, inputs=[model])
    if grid is not None:
        check_output(grid, overwrite=overwrite, inputs=[model, out], option="--grid")
    summary: dict = {}
    try:
        with interrupts_as_keyboard_interrupt():
            if out is not None:
                with OutputLock(out, "ensemble"):
                    summary = sample_to_ensemble(model, out, n_configs=n_configs, n_chains=chains, n_therm=therm, every=every,
                                                 method=method, seed=seed, progress=show_progress(progress, as_json))
            if grid is not None:
                summary["grid"] = digit_grid(model, grid, n_images=grid_size, n_sweeps=therm, seed=seed, method=method)
    except KeyboardInterrupt:
        if out is not None and summary:  # the ensemble was complete (written atomically); the grid was not
            typer.echo(f"interrupted: {out} was written completely, the --grid image was not; rerun with --overwrite "
                       "to make both", err=True)
        else:
            typer.echo("interrupted: nothing was written (each output is written whole at the end); rerun the command",
                       err=True)
        raise typer.Exit(130) from None
    if as_json:
        emit_json(summary)
        return
    if out is not None:
        typer.echo(f"wrote {n_configs} x {chains} configurations of shape {tuple(summary['lattice_shape'])} to {out} "
                   f"({summary['wall_time_s']:.2f} s); analyse with: lftml analyze {out}")
    if grid is not None:
        how = f"{therm} Gibbs sweeps from noise" if method == "gibbs" else "exact i.i.d. draws"
        typer.echo(f"wrote {grid_size} digits ({how}) to {grid}")


@app.command()
def likelihood(
    model: Path = typer.Argument(..., help="Model file written by lftml rbm train."),
    data: str = typer.Option(..., "--data", help="Images/configurations to score: mnist, digits or a file."),
    heldout: float = typer.Option(0.0, "--heldout", help="Score only the held-out part of this split (same --seed as training)."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="A random subset (seeded by --seed), as in training."),
    center: bool = typer.Option(False, "--center", help="Centre the data (as in training with --center)."),
    log_z: str = typer.Option("auto", "--log-z", help="Scalar-Bernoulli RBM: log Z by enumeration (2^N_h states), ais, or auto (enumeration for N_h <= 20)."),
    ais_runs: int = typer.Option(1000, "--ais-runs", help="AIS: independent annealing runs (the error is their spread)."),
    ais_betas: int = typer.Option(1000, "--ais-betas", help="AIS: number of inverse temperatures from 0 to 1."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random stream (nothing is written)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Log-likelihood per image log p(phi) of data: Gaussian RBM in closed form; scalar-Bernoulli RBM
    with log Z by enumeration (N_h <= 20) or AIS (its error included)."""
    from lftml.rbm.workflows import bernoulli_loglik, build_target, heldout_loglik
    from lftml.rbm.io import load_any_model

    require_file(model, "model file")
    m, rec = load_any_model(model)
    tgt, held = build_target("data", None, None, data, heldout=heldout, split_seed=seed, max_samples=max_samples, center=center)
    x = held.x if held is not None else tgt.data.numpy()
    if int(x.reshape(x.shape[0], -1).shape[1]) != m.n_visible:
        raise LftmlError(f"--data has {x.reshape(x.shape[0], -1).shape[1]} sites per sample but the model has N_v = {m.n_visible}")
    if rec["kind"] == "bernoulli":
        res = bernoulli_loglik(m, x, seed=seed, log_z=log_z, ais_runs=ais_runs, ais_betas=ais_betas)
        res.update({"model": str(model), "data": data, "part": "held-out" if held is not None else "all",
                    "n_hidden": m.n_hidden, "hidden_units": "bernoulli"})
    else:
        res = heldout_loglik(m, x)
        res.update({"model": str(model), "data": data, "part": "held-out" if held is not None else "all",
                    "n_hidden": m.n_hidden, "mu2": m.mu2_value(), "hidden_units": "gaussian"})
    if as_json:
        emit_json(res)
        return
    how = "exact closed form" if rec["kind"] == "gaussian" else f"log Z by {res['log_z_method']}"
    typer.echo(f"log p per image ({res['part']}, {res['n']} samples, {how}): {fmt_err(res['mean'], res['error'])} "
               f"({res['per_site']:.5g} per site)")
