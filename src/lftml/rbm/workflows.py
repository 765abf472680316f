"""End-to-end RBM workflows behind ``lftml rbm train|spectrum|sample`` (one call each).

Seeds: one integer ``seed`` gives the model-init, sampling (Gibbs chains) and data-order streams through
:func:`lftml.samplers.rng.torch_generator` (one purpose each); the seed and the derived stream seeds
are stored in the model file / ensemble metadata.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

import lftml
from lftml.errors import LftmlError
from lftml.samplers.rng import derive_seed, torch_generator
from lftml.rbm.gaussian import GaussianRBM
from lftml.rbm.io import load_model, save_model
from lftml.rbm.spectrum import spectral_analysis
from lftml.rbm.training import Target, TrainConfig, train

__all__ = ["resume_training", "stream_generators", "build_target", "check_bounded_likelihood", "run_training", "heldout_loglik",
           "spectrum_report", "sample_to_ensemble"]


def stream_generators(seed: int, names: Sequence[str] = ("init", "sampling", "data")) -> tuple[dict[str, torch.Generator], dict[str, int]]:
    """Independent torch generators per stream from one seed (:func:`lftml.samplers.rng.torch_generator`)."""
    seeds = {n: derive_seed(seed, n) for n in names}
    return {n: torch_generator(seed, n) for n in names}, seeds


def build_target(kind: str | None, shape: Sequence[int] | None = None, m2: float | None = None,
                 data: str | os.PathLike | None = None, *, heldout: float = 0.0, split_seed: int = 0,
                 max_samples: int | None = None, center: bool = False) -> tuple[Target, Any]:
    """``free``: exact free-field target on ``shape`` with ``m2``; ``data``: samples from
    :func:`lftml.datasets.load_data` (``mnist``, ``digits`` or a file). ``kind=None`` means
    ``data`` when ``data`` is given, else ``free``. With ``heldout > 0`` that fraction of the samples
    is split off (seeded) and returned as the second element (a :class:`lftml.datasets.Dataset`,
    else None); the target is built from the rest."""
    from lftml.datasets import heldout_split, load_data

    if kind is None:
        kind = "data" if data is not None else "free"
    if kind == "free":
        from lftml.lattice import Lattice
        from lftml.theories import FreeScalar

        if shape is None or m2 is None:
            raise LftmlError("the free-field target needs --shape and --m2, e.g. --shape 10 --m2 4 (or --data mnist|digits|PATH)")
        if data is not None:
            raise LftmlError("--data selects a data target; drop --target free (or --data)")
        if heldout:
            raise LftmlError("--heldout needs data (--data); the free-field target is exact")
        return Target.from_theory(FreeScalar(Lattice(shape), float(m2))), None
    if kind in ("data", "mnist"):
        if data is None:
            raise LftmlError("a data target needs --data mnist|digits|PATH")
        if shape is not None or m2 is not None:
            raise LftmlError("--shape and --m2 only apply to --target free (a data target takes the shape from --data)")
        ds = load_data(data, max_samples=max_samples, center=center, subset_seed=split_seed)
        held = None
        if heldout:
            ds, held = heldout_split(ds, heldout, split_seed)
        t = Target.from_data(ds.x)
        t.theory = None
        return t, held
    raise LftmlError(f"unknown --target {kind!r}: use free, or give --data mnist|digits|PATH")


def check_bounded_likelihood(target: Target, n_hidden: int, mu2_mode: str) -> None:
    """Refuse a learned mass whose likelihood is unbounded: data with exact zero modes (zero
    variance directions) give ``<log p> -> +inf`` as mu^2 -> inf when every mode the hidden layer
    cannot keep has zero variance (global mu^2, N_h >= N_v - zero modes) or a site never varies
    (per-site mu^2 and a constant-zero pixel)."""
    if target.data is None or mu2_mode == "fixed":
        return
    from lftml.rbm.spectrum import count_zero_modes

    zm = count_zero_modes(target.data.numpy())
    n_v = target.n_visible
    fix = ("give a fixed mass instead (--mu2 VALUE, e.g. --mu2 100 as in the talk: it caps mu^2), or drop the "
           "constant pixels (lftml.datasets.drop_constant_pixels)")
    if mu2_mode == "global" and zm["zero_modes"] > 0 and n_hidden >= n_v - zm["zero_modes"]:
        raise LftmlError(
            f"the likelihood is unbounded: the data have {zm['zero_modes']} exact zero modes ({zm['constant_pixels']} constant "
            f"pixels + rank deficit {zm['rank_deficit']}), so with N_h = {n_hidden} >= N_v - {zm['zero_modes']} = "
            f"{n_v - zm['zero_modes']} a learned mu^2 grows without bound; use --hidden < {n_v - zm['zero_modes']}, or {fix}"
        )
    if mu2_mode == "site" and zm["constant_pixels"] > 0:
        raise LftmlError(
            f"the likelihood is unbounded: {zm['constant_pixels']} pixels never vary, and a learned per-site mu_i^2 of such a "
            f"pixel grows without bound; use --learn-mu2 global, or {fix}"
        )


def run_training(
    target: Target,
    *,
    n_hidden: int | None,
    mu2: float | None,
    learn_mu2: str | None,
    mu0: float = 3.0,
    init_std: float = 0.1,
    sigma_h: float = 1.0,
    learn_eta: bool = False,
    config: TrainConfig = TrainConfig(),
    seed: int = 0,
    out: Path | None = None,
    progress: bool = False,
    init_from: Path | None = None,
    cli_options: dict[str, Any] | None = None,
) -> tuple[GaussianRBM, dict[str, Any]]:
    """Build a GaussianRBM (fixed ``mu2`` or learned from ``mu0^2``) -- or continue from the model
    file ``init_from`` -- train it, save it to ``out``. Returns ``(model, summary)``. ``cli_options``
    (the command's option values) are stored in ``meta["cli_options"]`` so ``--resume`` can reuse them."""
    if init_from is not None:
        return _continue_training(target, init_from, n_hidden=n_hidden, mu2=mu2, learn_mu2=learn_mu2, config=config,
                                  seed=seed, out=out, progress=progress)
    if mu2 is not None and learn_mu2 is not None:
        raise LftmlError("give either --mu2 (fixed) or --learn-mu2 global|site, not both")
    if learn_mu2 is not None and learn_mu2 not in ("global", "site"):
        raise LftmlError(f"--learn-mu2 must be global or site, got {learn_mu2!r}")
    if mu2 is None and learn_mu2 is None:
        learn_mu2 = "global"
    if n_hidden is None:
        raise LftmlError("give the number of hidden nodes with --hidden")
    check_bounded_likelihood(target, int(n_hidden), "fixed" if mu2 is not None else str(learn_mu2))
    if mu0 <= 0:
        raise LftmlError(f"--mu0 must be positive (initial mu = sqrt(mu^2)), got {mu0}")
    gens, seeds = stream_generators(seed)
    model = GaussianRBM(
        target.n_visible,
        n_hidden,
        mu2=float(mu2) if mu2 is not None else mu0 * mu0,
        mu2_mode="fixed" if mu2 is not None else learn_mu2,  # type: ignore[arg-type]
        sigma_h=sigma_h,
        learn_eta=learn_eta,
        init_std=init_std,
        generator=gens["init"],
        lattice_shape=target.lattice_shape,
    )
    try:
        if config.method != "analytic":
            model.check_positive_definite()
    except LftmlError:
        raise LftmlError(
            f"the initial RBM kernel is not positive definite: mu^2 = {model.mu2_value()} is too small for W ~ N(0, {init_std}^2); "
            f"raise --mu2/--mu0 or lower --init-std"
        ) from None
    t0 = time.perf_counter()
    meta0 = {"seed": int(seed), "stream_seeds": seeds, "train_config": config_record(config),
             "init": {"mu0": mu0, "init_std": init_std, "mu2": mu2, "learn_mu2": learn_mu2}}
    if cli_options is not None:
        meta0["cli_options"] = dict(cli_options)
    history = _train_interruptible(model, target, config, gens, progress, out, meta0)
    wall = time.perf_counter() - t0
    meta = {
        "seed": int(seed),
        "stream_seeds": seeds,
        "train_config": config_record(config),
        "init": {"mu0": mu0, "init_std": init_std, "mu2": mu2, "learn_mu2": learn_mu2},
        "lftml_version": lftml.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_time_s": wall,
    }
    if out is not None:
        save_model(out, model, target=target, history=history, meta=meta)
    summary = spectral_analysis(model, target)
    summary.update({"out": None if out is None else str(out), "method": config.method, "seed": int(seed), "wall_time_s": wall},
                   **_training_outcome(history, config))
    return model, summary


def config_record(config: TrainConfig) -> dict[str, Any]:
    """The training settings stored in a model file. ``analytic`` sets the closed-form ML optimum and
    makes no updates, so none of the schedule (``n_updates``, ``lr``, ...) applies: only the method and
    ``n_updates = 0`` are recorded (a stored default of 1000 updates would report updates never made)."""
    if config.method == "analytic":
        return {"method": "analytic", "n_updates": 0}
    return config.to_dict()


def _training_outcome(history: dict, config: TrainConfig) -> dict[str, Any]:
    """``n_updates`` actually made (None for the closed-form ``analytic``), ``converged`` and the
    final ``grad_max`` for the converge recipe, and the recipe used."""
    if config.method == "analytic":
        return {"n_updates": None, "recipe": None, "converged": True}
    out: dict[str, Any] = {"n_updates": int(history.get("n_updates", config.n_updates)),
                           "recipe": config.recipe if config.method == "exact" else "reference"}
    if "converged" in history:
        out["converged"] = bool(history["converged"])
        out["grad_max"] = history["grad_max"][-1] if history.get("grad_max") else None
        out["grad_tol"] = config.grad_tol
    return out


def heldout_loglik(model: GaussianRBM, x: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Exact log-likelihood per image of samples ``x`` under the model (Gaussian RBM: closed form,
    ``log p(phi)`` normalised), its mean over the images and the standard error of the mean (images
    are independent draws, so no autocorrelation enters)."""
    xt = torch.as_tensor(np.asarray(x), dtype=model.dtype).reshape(np.shape(x)[0], -1)
    with torch.no_grad():
        lp = model.log_prob(xt).numpy()
    n = lp.size
    return {"mean": float(lp.mean()), "error": float(lp.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"), "n": int(n),
            "per_site": float(lp.mean() / model.n_visible)}


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM during training; ``message`` says what was kept and how to continue."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _train_interruptible(model: GaussianRBM, target: Target, config: TrainConfig, gens: dict, progress: bool,
                         out: Path | None, meta: dict, resume: dict | None = None) -> dict:
    """:func:`train` with a snapshot of the parameters at every learning-curve point; on an
    interrupt the last snapshot (a consistent, positive-definite model) is written to ``out``,
    marked ``meta["interrupted_at_update"]``, and :class:`TrainingInterrupted` says how to go on."""
    snap: dict[str, Any] = {"step": 0 if resume is None else int(resume["step"]), "loop": resume,
                            "state": {k: v.detach().clone() for k, v in model.trainable_parameters().items()}}
    resumable = config.method in ("pcd", "cd") or (config.method == "exact" and config.recipe == "reference")

    def keep(step: int, m: GaussianRBM) -> None:
        snap["step"] = step
        snap["state"] = {k: v.detach().clone() for k, v in m.trainable_parameters().items()}

    def keep_loop(state: dict) -> None:
        snap["loop"] = state

    try:
        return train(model, target, config, sampling_generator=gens["sampling"], data_generator=gens["data"],
                     progress=progress, callback=keep, checkpoint=keep_loop if resumable else None, resume=resume)
    except KeyboardInterrupt:
        if resumable and snap["loop"] is not None:  # the loop state is the consistent point (an interrupt may fall between the hooks)
            snap["step"], snap["state"] = int(snap["loop"]["step"]), snap["loop"]["params"]
        with torch.no_grad():
            for k, v in model.trainable_parameters().items():
                v.copy_(snap["state"][k])
        if out is None or snap["step"] == 0:
            raise TrainingInterrupted(f"interrupted at update {snap['step']}: nothing was written"
                                      + ("" if out is None else f" ({out} untouched)")) from None
        extra = {"resume_state": snap["loop"]} if resumable and snap["loop"] is not None else {}
        save_model(out, model, target=target, history={}, meta={**meta, "interrupted_at_update": snap["step"], **extra})
        how = (f"resume it bit-identically with the same command plus --resume (or start a new stage: --init {out} --out NEW.pt)"
               if extra else f"continue with: lftml rbm train ... --init {out} --out NEW.pt")
        raise TrainingInterrupted(
            f"interrupted: the model after update {snap['step']} was written to {out} (marked interrupted); {how}"
        ) from None


def resume_training(target: Target, out: Path, *, config: TrainConfig, seed: int, progress: bool = False
                    ) -> tuple[GaussianRBM, dict[str, Any]]:
    """Continue the interrupted run whose model file ``out`` holds ``meta["resume_state"]`` (same
    training options and seed required), bit-identically, and write the finished model to ``out``."""
    model, rec = load_model(out)
    meta0 = rec["meta"]
    state = meta0.get("resume_state")
    if state is None:
        raise LftmlError(f"{out} is not an interrupted resumable run (no resume state): nothing to --resume"
                         + ("" if "interrupted_at_update" in meta0 else "; it finished"))
    if meta0.get("seed") != int(seed):
        raise LftmlError(f"--resume needs the interrupted run's --seed {meta0.get('seed')}, got {seed}")
    old, new = meta0.get("train_config", {}), config.to_dict()
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise LftmlError(f"--resume needs the interrupted run's training options; these differ: {', '.join(diff)}")
    target.check_model(model)
    gens, seeds = stream_generators(seed)
    meta = {k: v for k, v in meta0.items() if k not in ("resume_state", "interrupted_at_update")}
    t0 = time.perf_counter()
    history = _train_interruptible(model, target, config, gens, progress, out, meta, resume=state)
    meta.update({"resumed_from_update": int(state["step"]), "wall_time_s": time.perf_counter() - t0,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    save_model(out, model, target=target, history=history, meta=meta)
    summary = spectral_analysis(model, target)
    summary.update({"out": str(out), "method": config.method, "seed": int(seed), "resumed_from_update": int(state["step"]),
                    "wall_time_s": meta["wall_time_s"]}, **_training_outcome(history, config))
    return model, summary


def _continue_training(
    target: Target, init_from: Path, *, n_hidden: int | None, mu2: float | None, learn_mu2: str | None,
    config: TrainConfig, seed: int, out: Path | None, progress: bool,
) -> tuple[GaussianRBM, dict[str, Any]]:
    model, rec = load_model(init_from)
    if n_hidden is not None and n_hidden != model.n_hidden:
        raise LftmlError(f"--hidden {n_hidden} differs from the --init model's N_h = {model.n_hidden}; drop --hidden")
    if mu2 is not None or learn_mu2 is not None:
        raise LftmlError("--mu2/--learn-mu2 come from the --init model; drop them")
    target.check_model(model)
    gens, seeds = stream_generators(seed)
    t0 = time.perf_counter()
    meta0 = {"seed": int(seed), "stream_seeds": seeds, "train_config": config_record(config), "init_from": str(init_from)}
    history = _train_interruptible(model, target, config, gens, progress, out, meta0)
    wall = time.perf_counter() - t0
    previous = rec["history"] or {}
    if previous:  # one learning curve across stages (update numbers continue)
        offset = previous["update"][-1] if previous.get("update") else 0
        history = {k: (list(previous.get(k, [])) + ([u + offset for u in v[1:]] if k == "update" else list(v[1:])))
                   if isinstance(v, list) else v for k, v in history.items()}
    meta = {
        "seed": int(seed), "stream_seeds": seeds, "train_config": config_record(config), "init_from": str(init_from),
        "previous_meta": rec["meta"], "lftml_version": lftml.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "wall_time_s": wall,
    }
    if out is not None:
        save_model(out, model, target=target, history=history, meta=meta)
    summary = spectral_analysis(model, target)
    summary.update({"out": None if out is None else str(out), "method": config.method,
                    "seed": int(seed), "wall_time_s": wall, "init_from": str(init_from)}, **_training_outcome(history, config))
    return model, summary


def spectrum_report(path: Path) -> tuple[GaussianRBM, Any, dict[str, Any]]:
    """Load a model file; returns ``(model, target, spectral_analysis(...))``."""
    model, rec = load_model(path)
    return model, rec["target"], spectral_analysis(model, rec["target"])


def sample_to_ensemble(
    model_path: Path,
    out: Path,
    *,
    n_configs: int,
    n_chains: int = 4,
    n_therm: int = 100,
    every: int = 1,
    method: str = "gibbs",
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate configurations from a saved model and write them as an lftml ensemble
    ``(n_configs, n_chains, *lattice_shape)`` (``method``: ``gibbs`` chains or ``exact`` i.i.d.)."""
    from lftml.ensemble import write_ensemble

    model, rec = load_model(model_path)
    if method not in ("gibbs", "exact"):
        raise LftmlError(f"--method must be gibbs or exact, got {method!r}")
    if n_configs < 1 or n_chains < 1:
        raise LftmlError(f"--n-configs and --chains must be >= 1, got {n_configs}, {n_chains}")
    model.check_positive_definite()
    gens, seeds = stream_generators(seed, ("sampling",))
    g = gens["sampling"]
    t0 = time.perf_counter()
    if method == "gibbs":
        configs = model.sample(n_configs, n_chains, g, n_therm=n_therm, every=every, progress=progress)
    else:
        configs = model.sample_exact(n_configs * n_chains, g).reshape(n_configs, n_chains, *model.lattice_shape)
    wall = time.perf_counter() - t0
    theory = None
    target = rec["target"]
    if target is not None and target.theory is not None:
        from lftml.theories import theory_from_dict

        theory = theory_from_dict(target.theory)
    metadata = {
        "kind": "rbm",
        "theory": None if theory is None else theory.to_dict(),
        "sampler": {
            "name": "rbm-gibbs" if method == "gibbs" else "rbm-exact",
            "model": os.fspath(model_path),
            "n_therm": n_therm,
            "every": every,
            "model_config": model.config(),
            "mu2": model.mu2_value(),
        },
        "seed": int(seed),
        "stream_seeds": seeds,
        "lftml_version": lftml.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_time_s": wall,
    }
    from lftml.observables import measure_history
    from lftml.safeio import atomic_output

    with atomic_output(out, suffix=".h5") as tmp:
        write_ensemble(tmp, configs.numpy(), metadata=metadata, theory=theory,
                       observables=measure_history(configs.numpy(), theory), wall_time_s=wall)
    return {"out": str(out), "n_configs": n_configs, "n_chains": n_chains, "lattice_shape": list(model.lattice_shape),
            "method": method, "seed": int(seed), "wall_time_s": wall}


def digit_grid(model_path: Path | GaussianRBM, png: Path, *, n_images: int = 36, n_sweeps: int = 1000, seed: int = 0,
               n_cols: int | None = None, method: str = "gibbs", title: str | None = None) -> dict[str, Any]:
    """Digits from a trained model: ``n_images`` independent block-Gibbs chains started from
    uniform noise in [0, 1], ``n_sweeps`` sweeps each (``method="exact"``: i.i.d. draws from
    p(phi) instead), the visible field (clipped to [0, 1] for display) tiled into one grid image
    ``png``. The model's lattice must be 2d (images). Block Gibbs relaxes a mode of kernel
    eigenvalue k with rate ~ k/mu^2 per sweep, so the infrared modes of an image model with
    mu^2 = 100 need O(mu^2/k_min) sweeps."""
    from lftml.plots import pyplot, save_figure
    from lftml.rbm.plots import plot_digit_grid

    from lftml.rbm.bernoulli import ScalarBernoulliRBM
    from lftml.rbm.io import load_any_model

    if isinstance(model_path, (GaussianRBM, ScalarBernoulliRBM)):
        model, shape = model_path, tuple(getattr(model_path, "lattice_shape", (model_path.n_visible,)))
    else:
        model, rec = load_any_model(model_path)
        shape = tuple(rec["lattice_shape"]) if rec["kind"] == "bernoulli" else model.lattice_shape
    if isinstance(model, ScalarBernoulliRBM):
        return _bernoulli_digit_grid(model, shape, png, n_images=n_images, n_sweeps=n_sweeps, seed=seed, n_cols=n_cols,
                                     method=method, title=title)
    if len(model.lattice_shape) != 2:
        raise LftmlError(f"--grid draws images: the model's lattice {model.lattice_shape} is not 2d")
    if n_images < 1 or n_sweeps < 1:
        raise LftmlError(f"--grid-size and --therm must be >= 1 for --grid, got {n_images}, {n_sweeps}")
    gens, seeds = stream_generators(seed, ("grid",))
    g = gens["grid"]
    if method == "exact":
        x = model.sample_exact(n_images, g).reshape(n_images, *model.lattice_shape).numpy()
    elif method == "gibbs":
        x0 = torch.rand((n_images, model.n_visible), generator=g, dtype=model.dtype)
        x = model.gibbs(x0, n_sweeps, g).reshape(n_images, *model.lattice_shape).numpy()
    else:
        raise LftmlError(f"--method must be gibbs or exact, got {method!r}")
    cols = n_cols or int(np.ceil(np.sqrt(n_images)))
    fig, ax = pyplot().subplots(figsize=(0.6 * cols + 0.4, 0.6 * (-(-n_images // cols)) + 0.6))
    if title is None:
        title = f"$N_h = {model.n_hidden}$, $\\mu^2 = {float(np.mean(model.mu2_value())):.4g}$"
    plot_digit_grid(ax, x, n_cols=cols, title=title)
    save_figure(fig, png)
    return {"png": str(png), "n_images": n_images, "n_sweeps": n_sweeps if method == "gibbs" else 0, "method": method, "seed": int(seed), "stream_seeds": seeds,
            "pixel_mean": float(x.mean()), "pixel_range": [float(x.min()), float(x.max())]}


def _bernoulli_digit_grid(model: Any, shape: tuple[int, ...], png: Path, *, n_images: int, n_sweeps: int, seed: int,
                          n_cols: int | None, method: str, title: str | None) -> dict[str, Any]:
    """:func:`digit_grid` for a scalar-Bernoulli RBM: block Gibbs (h = +-1 | phi, phi | h Gaussian) from noise."""
    from lftml.plots import pyplot, save_figure
    from lftml.rbm.plots import plot_digit_grid

    if len(shape) != 2:
        raise LftmlError(f"--grid draws images: the model's lattice {shape} is not 2d")
    if method != "gibbs":
        raise LftmlError("a scalar-Bernoulli RBM has no exact sampler here: use --method gibbs with --grid")
    if n_images < 1 or n_sweeps < 1:
        raise LftmlError(f"--grid-size and --therm must be >= 1 for --grid, got {n_images}, {n_sweeps}")
    gens, seeds = stream_generators(seed, ("grid",))
    g = gens["grid"]
    with torch.no_grad():
        x = torch.rand((n_images, model.n_visible), generator=g, dtype=model.W.dtype)
        for _ in range(n_sweeps):
            x = model.sample_visible(model.sample_hidden(x, g), g)
    x = x.reshape(n_images, *shape).numpy()
    cols = n_cols or int(np.ceil(np.sqrt(n_images)))
    fig, ax = pyplot().subplots(figsize=(0.6 * cols + 0.4, 0.6 * (-(-n_images // cols)) + 0.6))
    plot_digit_grid(ax, x, n_cols=cols, title=title or f"scalar-Bernoulli, $N_h = {model.n_hidden}$")
    save_figure(fig, png)
    return {"png": str(png), "n_images": n_images, "n_sweeps": n_sweeps, "method": method, "seed": int(seed),
            "stream_seeds": seeds, "hidden_units": "bernoulli",
            "pixel_mean": float(x.mean()), "pixel_range": [float(x.min()), float(x.max())]}


def bernoulli_loglik(model: Any, x: np.ndarray, *, seed: int = 0, ais_runs: int = 1000, ais_betas: int = 1000,
                     log_z: str = "auto") -> dict[str, Any]:
    """Log-likelihood per image of a scalar-Bernoulli RBM: ``-F(phi) - log Z`` with log Z exact by
    enumeration of the 2^N_h hidden states (``log_z="enumeration"``; ``"auto"``: for N_h <= 20) or by
    AIS (``"ais"``; ``"auto"`` above 20; its error reported as ``log_z_error`` and added to ``error``
    in quadrature, since it shifts every image alike)."""
    from lftml.rbm.bernoulli_training import ais_log_partition

    if log_z not in ("auto", "enumeration", "ais"):
        raise LftmlError(f"--log-z must be auto, enumeration or ais, got {log_z!r}")
    if log_z == "enumeration" and model.n_hidden > 24:
        raise LftmlError(f"--log-z enumeration sums 2^N_h hidden states: N_h = {model.n_hidden} is too many (<= 24); use ais")
    xt = torch.as_tensor(np.asarray(x), dtype=model.W.dtype).reshape(len(x), -1)
    if log_z == "enumeration" or (log_z == "auto" and model.n_hidden <= 20):
        log_z, log_z_err, how = model.log_partition(), 0.0, "enumeration"
    else:
        g = stream_generators(seed, ("ais",))[0]["ais"]
        log_z, log_z_err = ais_log_partition(model, ais_runs, ais_betas, g)
        how = "ais"
    with torch.no_grad():
        lp = (-model.free_energy(xt)).numpy() - log_z
    se = float(lp.std(ddof=1) / np.sqrt(lp.size)) if lp.size > 1 else float("nan")
    return {"mean": float(lp.mean()), "error": float(np.hypot(se, log_z_err)), "n": int(lp.size), "log_z": float(log_z),
            "log_z_error": float(log_z_err), "log_z_method": how, "per_site": float(lp.mean() / model.n_visible)}
