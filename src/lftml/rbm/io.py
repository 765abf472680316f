"""Saving and loading Gaussian RBMs (``.pt`` files, torch.save of plain containers).

The file is a dict ``{"format": "lftml.rbm.GaussianRBM", "format_version": 1, "config": {...},
"state": {"W", "eta", "mu" | "mu2_fixed"}, "target": {...} | None, "history": {...}, "meta": {...}}``;
tensors are stored as they are (float64), so a round trip is bit-identical. Loading uses
``torch.load(weights_only=True)`` (no arbitrary code) and raises :class:`FileFormatError` for a
missing, damaged or foreign file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from lftml.errors import FileFormatError, LftmlError
from lftml.rbm.gaussian import GaussianRBM

__all__ = ["save_model", "load_model", "save_bernoulli_model", "save_phi4_model", "load_any_model", "FORMAT", "FORMAT_VERSION"]

FORMAT = "lftml.rbm.GaussianRBM"
FORMAT_VERSION = 1


def _target_record(target: Any) -> dict[str, Any] | None:
    if target is None:
        return None
    rec: dict[str, Any] = {
        "second_moment": target.second_moment.detach().clone(),
        "mean": target.mean.detach().clone(),
        "lattice_shape": list(target.lattice_shape),
        "kernel": None if target.kernel is None else target.kernel.detach().clone(),
        "theory": target.theory,
    }
    return rec


def save_model(
    path: str | os.PathLike,
    model: GaussianRBM,
    *,
    target: Any = None,
    history: dict[str, list] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (with its training target, learning curves and metadata such as seeds and
    the training configuration) atomically to ``path``."""
    path = Path(path)
    state: dict[str, torch.Tensor] = {"W": model.W.detach().clone(), "eta": model.eta.detach().clone()}
    if model.mu is not None:
        state["mu"] = model.mu.detach().clone()
    else:
        state["mu2_fixed"] = model._mu2_fixed.detach().clone()
    obj = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config(),
        "state": state,
        "target": _target_record(target),
        "history": history or {},
        "meta": meta or {},
    }
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.exists():
        raise LftmlError(f"directory {directory} does not exist; create it or choose another --out")
    from lftml.safeio import atomic_output

    with atomic_output(path, suffix=".pt.tmp") as tmp:
        torch.save(obj, tmp)
    return path


def load_model(path: str | os.PathLike) -> tuple[GaussianRBM, dict[str, Any]]:
    """Load a model written by :func:`save_model`. Returns ``(model, record)`` where ``record``
    has keys ``target`` (a :class:`lftml.rbm.Target` or None), ``history``, ``meta``."""
    from lftml.rbm.training import Target

    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"model file {path} does not exist")
    if path.is_dir():
        raise FileFormatError(f"model file {path} is a directory")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # foreign pickles trigger torch's protocol warnings
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged zip, pickle, text file, ...
        raise FileFormatError(f"{path} is not a readable lftml RBM model file (damaged or foreign: {type(exc).__name__})") from None
    if isinstance(obj, dict) and obj.get("format") == "lftml.rbm.Phi4VisibleRBM":
        raise FileFormatError(f"{path} is a phi^4-visible RBM (lftml rbm train --visible-phi4): its marginal is not Gaussian, "
                              f"and this command handles Gaussian RBMs")
    if isinstance(obj, dict) and obj.get("format") == "lftml.rbm.ScalarBernoulliRBM":
        raise FileFormatError(f"{path} is a scalar-Bernoulli RBM: this command handles Gaussian RBMs (use lftml rbm likelihood)")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise FileFormatError(f"{path} is not an lftml RBM model file (expected format {FORMAT!r})")
    if obj.get("format_version") != FORMAT_VERSION:
        raise FileFormatError(f"{path} has model format version {obj.get('format_version')}, this lftml reads {FORMAT_VERSION}")
    try:
        cfg = obj["config"]
        state = obj["state"]
        fixed = "mu2_fixed" in state
        mu2 = state["mu2_fixed"] if fixed else state["mu"] * state["mu"]
        model = GaussianRBM(
            cfg["n_visible"],
            cfg["n_hidden"],
            mu2=mu2,
            mu2_mode=cfg["mu2_mode"],
            sigma_h=cfg["sigma_h"],
            weights=state["W"],
            eta=state["eta"],
            learn_eta=cfg["learn_eta"],
            lattice_shape=cfg["lattice_shape"],
            dtype=state["W"].dtype,
        )
        with torch.no_grad():
            if not fixed:
                model.mu.copy_(state["mu"])  # exact bits (no sqrt(mu^2) round trip)
        t = obj.get("target")
        target = None
        if t is not None:
            target = Target(
                second_moment=t["second_moment"],
                mean=t["mean"],
                lattice_shape=tuple(t["lattice_shape"]),
                kernel=t["kernel"],
                theory=t["theory"],
            )
    except (KeyError, TypeError, LftmlError) as exc:
        raise FileFormatError(f"{path} is a damaged lftml RBM model file ({exc})") from None
    return model, {"target": target, "history": obj.get("history", {}), "meta": obj.get("meta", {})}


BERNOULLI_FORMAT = "lftml.rbm.ScalarBernoulliRBM"


def save_bernoulli_model(path: str | os.PathLike, model: Any, *, lattice_shape: tuple[int, ...] | None = None,
                         history: dict | None = None, meta: dict | None = None) -> Path:
    """Write a :class:`~lftml.rbm.bernoulli.ScalarBernoulliRBM` (W, mu^2, eta, lattice shape) atomically."""
    from lftml.safeio import atomic_output

    path = Path(path)
    obj = {"format": BERNOULLI_FORMAT, "format_version": 1,
           "state": {"W": model.W.clone(), "mu2": model.mu2.clone(), "eta": model.eta.clone()},
           "lattice_shape": list(lattice_shape or (model.n_visible,)), "history": history or {}, "meta": meta or {}}
    with atomic_output(path, suffix=".pt.tmp") as tmp:
        torch.save(obj, tmp)
    return path


def load_any_model(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """A Gaussian RBM (:func:`load_model`) or a scalar-Bernoulli RBM file; ``record["kind"]`` is
    ``"gaussian"`` or ``"bernoulli"`` (the latter with ``lattice_shape``)."""
    from lftml.rbm.bernoulli import ScalarBernoulliRBM

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        obj = None
    if isinstance(obj, dict) and obj.get("format") == BERNOULLI_FORMAT:
        try:
            st = obj["state"]
            m = ScalarBernoulliRBM(st["W"], mu2=st["mu2"], eta=st["eta"])
        except (KeyError, TypeError, LftmlError) as exc:
            raise FileFormatError(f"{path} is a damaged lftml Bernoulli RBM file ({exc})") from None
        return m, {"kind": "bernoulli", "lattice_shape": tuple(obj.get("lattice_shape", [m.n_visible])),
                   "history": obj.get("history", {}), "meta": obj.get("meta", {})}
    model, rec = load_model(path)
    rec["kind"] = "gaussian"
    return model, rec


PHI4_FORMAT = "lftml.rbm.Phi4VisibleRBM"


def save_phi4_model(path: str | os.PathLike, model: Any, *, history: dict | None = None, meta: dict | None = None) -> Path:
    """Write a :class:`~lftml.rbm.phi4.Phi4VisibleRBM` (W, mu, eta, g = lam, lattice shape) atomically."""
    from lftml.safeio import atomic_output

    path = Path(path)
    obj = {"format": PHI4_FORMAT, "format_version": 1, "config": model.config(), "lam": float(model.lam),
           "state": {"W": model.W.detach().clone(), "eta": model.eta.detach().clone(),
                     "mu2": model.mu2_vector().detach().clone()},
           "history": history or {}, "meta": meta or {}}
    with atomic_output(path, suffix=".pt.tmp") as tmp:
        torch.save(obj, tmp)
    return path
