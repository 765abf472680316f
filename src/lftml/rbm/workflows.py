"""End-to-end RBM workflows behind ``lftml rbm train|spectrum|sample`` (one call each).

Seeds: one integer ``seed`` is split with ``numpy.random.SeedSequence(seed).spawn(3)`` into the
model-init, sampling (Gibbs chains) and data-order streams; the seed and the derived stream seeds
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
from lftml.rbm.gaussian import GaussianRBM
from lftml.rbm.io import load_model, save_model
from lftml.rbm.spectrum import spectral_analysis
from lftml.rbm.training import Target, TrainConfig, train

__all__ = ["stream_generators", "build_target", "run_training", "spectrum_report", "sample_to_ensemble"]


def stream_generators(seed: int, names: Sequence[str] = ("init", "sampling", "data")) -> tuple[dict[str, torch.Generator], dict[str, int]]:
    """Independent torch generators per stream from one seed (SeedSequence.spawn)."""
    children = np.random.SeedSequence(int(seed)).spawn(len(names))
    seeds = {n: int(c.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for n, c in zip(names, children)}
    return {n: torch.Generator().manual_seed(s) for n, s in seeds.items()}, seeds


def _load_data_file(path: Path) -> np.ndarray:
    from lftml.rbm.spectrum import load_mnist

    if not path.exists():
        raise LftmlError(f"data file {path} does not exist")
    suffix = "".join(path.suffixes[-2:])
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix in (".h5", ".hdf5"):
        from lftml.ensemble import Ensemble

        with Ensemble.open(path) as ens:
            c = ens.load_configs()
        return c.reshape(-1, *c.shape[2:])
    if path.suffix == ".npz":
        with np.load(path) as z:
            for key in ("data", "configs", "x_train", "images", "arr_0"):
                if key in z.files:
                    return np.asarray(z[key])
        raise LftmlError(f"{path} has none of the arrays data/configs/x_train/images/arr_0")
    if "idx" in path.name or suffix.endswith(".gz"):
        return load_mnist(path)
    raise LftmlError(f"unknown data file type {path.name}: use .npy, .npz, an lftml ensemble .h5 or MNIST IDX")


def build_target(kind: str, shape: Sequence[int] | None = None, m2: float | None = None, data: Path | None = None) -> Target:
    """``free``: exact free-field target on ``shape`` with ``m2``; ``data``/``mnist``: samples from a file."""
    if kind == "free":
        from lftml.lattice import Lattice
        from lftml.theories import FreeScalar

        if shape is None or m2 is None:
            raise LftmlError("--target free needs --shape and --m2, e.g. --shape 10 --m2 4")
        if data is not None:
            raise LftmlError("--data is only used with --target data or mnist")
        return Target.from_theory(FreeScalar(Lattice(shape), float(m2)))
    if kind in ("data", "mnist"):
        if data is None:
            raise LftmlError(f"--target {kind} needs --data PATH (lftml does not download MNIST)")
        if shape is not None or m2 is not None:
            raise LftmlError(f"--shape and --m2 only apply to --target free (--target {kind} takes the shape from --data)")
        if kind == "mnist":
            from lftml.rbm.spectrum import load_mnist

            arr = load_mnist(data)
        else:
            arr = _load_data_file(Path(data))
        return Target.from_data(arr)
    raise LftmlError(f"unknown --target {kind!r}: use free, data or mnist")


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
) -> tuple[GaussianRBM, dict[str, Any]]:
    """Build a GaussianRBM (fixed ``mu2`` or learned from ``mu0^2``) -- or continue from the model
    file ``init_from`` -- train it, save it to ``out``. Returns ``(model, summary)``."""
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
    history = train(
        model,
        target,
        config,
        sampling_generator=gens["sampling"],
        data_generator=gens["data"],
        progress=progress,
    )
    wall = time.perf_counter() - t0
    meta = {
        "seed": int(seed),
        "stream_seeds": seeds,
        "train_config": config.to_dict(),
        "init": {"mu0": mu0, "init_std": init_std, "mu2": mu2, "learn_mu2": learn_mu2},
        "lftml_version": lftml.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_time_s": wall,
    }
    if out is not None:
        save_model(out, model, target=target, history=history, meta=meta)
    summary = spectral_analysis(model, target)
    summary.update({"out": None if out is None else str(out), "method": config.method, "n_updates": config.n_updates,
                    "seed": int(seed), "wall_time_s": wall})
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
    history = train(model, target, config, sampling_generator=gens["sampling"], data_generator=gens["data"],
                    progress=progress)
    wall = time.perf_counter() - t0
    previous = rec["history"] or {}
    if previous:  # one learning curve across stages (update numbers continue)
        offset = previous["update"][-1] if previous.get("update") else 0
        history = {k: list(previous.get(k, [])) + (
            [u + offset for u in v[1:]] if k == "update" else list(v[1:])) for k, v in history.items()}
    meta = {
        "seed": int(seed), "stream_seeds": seeds, "train_config": config.to_dict(), "init_from": str(init_from),
        "previous_meta": rec["meta"], "lftml_version": lftml.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "wall_time_s": wall,
    }
    if out is not None:
        save_model(out, model, target=target, history=history, meta=meta)
    summary = spectral_analysis(model, target)
    summary.update({"out": None if out is None else str(out), "method": config.method, "n_updates": config.n_updates,
                    "seed": int(seed), "wall_time_s": wall, "init_from": str(init_from)})
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

    if Path(out).exists():  # as the engine's samplers and `lftml cl run`: never overwrite an ensemble silently
        raise LftmlError(f"{out} already exists; choose another --out or remove it first")
    model, rec = load_model(model_path)
    if method not in ("gibbs", "exact"):
        raise LftmlError(f"--method must be gibbs or exact, got {method!r}")
    if n_configs < 1 or n_chains < 1:
        raise LftmlError(f"--n and --chains must be >= 1, got {n_configs}, {n_chains}")
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

    write_ensemble(out, configs.numpy(), metadata=metadata, theory=theory, observables=measure_history(configs.numpy(), theory))
    return {"out": str(out), "n_configs": n_configs, "n_chains": n_chains, "lattice_shape": list(model.lattice_shape),
            "method": method, "seed": int(seed), "wall_time_s": wall}
