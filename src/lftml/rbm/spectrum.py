r"""Spectral analysis: the RBM as an ultraviolet regulator.

The Gaussian RBM kernel has the SVD form ``K = U [mu^2 1 - sigma_h^2 Xi Xi^T] U^T`` (uniform mu^2),
eigenvalues ``mu^2 - sigma_h^2 xi_a^2`` (a = 1..N_h) and ``mu^2`` (N_v - N_h times). Both N_h and
mu^2 cut the spectrum off in the ultraviolet: modes above mu^2, and all but the N_h lowest, end up
at mu^2.

For data (MNIST or anything ``(n_samples, N_v)``) the talk's diagnostic is the spectrum of the
two-point correlator ``<phi_i phi_j>_data = (K^{-1})_ij``: its eigenvalues ``1/kappa`` are infrared
safe (bounded) but the inverse spectrum kappa is ultraviolet divergent (tiny correlator
eigenvalues, e.g. MNIST border pixels that never light up, give kappa -> infinity). An RBM with
mass mu^2 reproduces ``min(kappa, mu^2)``: the regulated spectrum.

Data files are read by :mod:`lftml.datasets` (built-in real MNIST and sklearn digits, IDX, npz,
arrays, ensembles); :func:`synthetic_digits` makes a small digits-like stand-in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.rbm.gaussian import GaussianRBM

__all__ = [
    "spectral_analysis",
    "data_correlator_spectrum",
    "count_zero_modes",
    "regulated_spectrum",
    "load_mnist",
    "synthetic_digits",
]


def spectral_analysis(model: GaussianRBM, target: Any = None) -> dict[str, Any]:
    """Numbers for the UV-regulator story: ``target_eigenvalues`` and ``model_eigenvalues``
    (ascending lists), ``singular_values`` of W (descending), ``mu2`` (number or per-site list),
    ``loglik`` (exact <log p>_target) and ``kl`` (KL(target || model), None unless the target
    kernel is exact). Target-dependent entries are None without a target."""
    from lftml.rbm.training import kl_and_loglik

    out: dict[str, Any] = {
        "n_visible": model.n_visible,
        "n_hidden": model.n_hidden,
        "mu2_mode": model.mu2_mode,
        "mu2": model.mu2_value(),
        "sigma_h": model.sigma_h,
        "model_eigenvalues": [float(v) for v in model.eigenvalues()],
        "singular_values": [float(v) for v in model.singular_values()],
        "target_eigenvalues": None,
        "loglik": None,
        "kl": None,
        "positive_definite": True,
    }
    try:
        model.check_positive_definite()
    except LftmlError:
        out["positive_definite"] = False
    if target is not None:
        out["target_eigenvalues"] = [float(v) for v in target.eigenvalues()]
        if out["positive_definite"]:
            ll, kl = kl_and_loglik(model, target)
            out["loglik"], out["kl"] = ll, kl
    return out


def count_zero_modes(data: np.ndarray, connected: bool = False) -> dict[str, int]:
    """Exact zero modes of the data correlator, counted without eigenvalues: ``constant_pixels``
    (identically zero for ``<phi phi^T>``; constant at any value for the connected correlator) plus
    the ``rank_deficit`` of the remaining columns (``n_free - rank``, rank from an SVD of the
    data matrix, which also catches ``n_samples < N_v``). ``zero_modes`` is their sum."""
    x = np.asarray(data, dtype=np.float64).reshape(np.shape(data)[0], -1)
    const = np.ptp(x, axis=0) == 0 if connected else np.all(x == 0, axis=0)
    free = x[:, ~const]
    if connected:
        free = free - free.mean(0)
    rank = int(np.linalg.matrix_rank(free)) if free.size else 0
    n_free = int(free.shape[1])
    return {"constant_pixels": int(const.sum()), "rank_deficit": n_free - rank, "zero_modes": int(const.sum()) + n_free - rank,
            "rank": rank}


def data_correlator_spectrum(data: np.ndarray | torch.Tensor, connected: bool = False) -> dict[str, Any]:
    """Spectrum of the data two-point function ``C_ij = <phi_i phi_j>`` (``connected=True``
    subtracts <phi_i><phi_j>) for data ``(n_samples, N_v)`` or ``(n_samples, *shape)``.

    Returns ``correlator_eigenvalues`` (1/kappa, descending, >= 0; the exact zero modes set to 0),
    ``kappa`` (ascending, ``inf`` for the exact zero modes: the UV divergence) and the zero-mode
    count of :func:`count_zero_modes` (``zero_modes``, ``constant_pixels``, ``rank_deficit``).
    The zero modes are counted exactly (constant pixels + rank of the data matrix), not by an
    eigenvalue threshold; the eigenvalues set to zero are the ``zero_modes`` smallest, which
    numerically are at rounding level (~1e-16 relative)."""
    x = np.asarray(data.detach().numpy() if isinstance(data, torch.Tensor) else data, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] < 2:
        raise LftmlError(f"data must be (n_samples, N_v) with n_samples >= 2, got shape {x.shape}")
    x = x.reshape(x.shape[0], -1)
    if not np.all(np.isfinite(x)):
        raise LftmlError("data contain NaN or infinite values")
    zm = count_zero_modes(x, connected)
    if connected:
        x = x - x.mean(0)
    C = x.T @ x / x.shape[0]
    ev = np.clip(np.linalg.eigvalsh(C)[::-1], 0.0, None)
    nz = zm["zero_modes"]
    if nz:
        ev[ev.size - nz:] = 0.0
    with np.errstate(divide="ignore"):
        kappa = np.where(ev > 0, 1.0 / np.where(ev > 0, ev, 1.0), np.inf)
    return {"correlator_eigenvalues": ev, "kappa": np.sort(kappa), **zm}


def regulated_spectrum(kappa: np.ndarray, n_hidden: int, mu2: float) -> np.ndarray:
    """Spectrum an ML-trained RBM with N_h hidden nodes and fixed mass mu^2 reproduces for a
    target with spectrum ``kappa``: the N_h lowest kept up to mu^2, the rest at mu^2 (ascending)."""
    from lftml.rbm.constructions import optimal_spectrum

    k = np.asarray(kappa, dtype=np.float64)
    k = np.where(np.isfinite(k), k, np.finfo(np.float64).max)
    return optimal_spectrum(k, n_hidden, mu2)[0]


# ---------------------------------------------------------------------------------- data files
# The MNIST loader moved to lftml.datasets (one module for every data set); kept importable here.
from lftml.datasets import load_mnist  # noqa: E402,F401


def synthetic_digits(n: int, generator: np.random.Generator, size: int = 28) -> np.ndarray:
    """``n`` digits-like images ``(n, size, size)`` in [0, 1]: one to three random thick strokes
    (segments and arcs) drawn in the central region, blurred, empty borders -- a stand-in with
    MNIST's qualitative correlator spectrum (IR safe, UV divergent), not MNIST itself."""
    if n < 1 or size < 8:
        raise LftmlError(f"need n >= 1 and size >= 8, got {n}, {size}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    lo, hi = 0.22 * size, 0.78 * size
    out = np.zeros((n, size, size))
    width = 0.05 * size
    t = np.linspace(0.0, 1.0, 24)
    for s in range(n):
        img = np.zeros((size, size))
        for _ in range(int(generator.integers(1, 4))):
            if generator.random() < 0.5:
                p0, p1 = generator.uniform(lo, hi, 2), generator.uniform(lo, hi, 2)
                pts = p0[None, :] + t[:, None] * (p1 - p0)[None, :]
            else:
                c = generator.uniform(0.4 * size, 0.6 * size, 2)
                r = generator.uniform(0.1 * size, 0.22 * size)
                a0 = generator.uniform(0, 2 * np.pi)
                ang = a0 + t * generator.uniform(np.pi, 2 * np.pi)
                pts = c[None, :] + r * np.stack([np.cos(ang), np.sin(ang)], 1)
            for py, px in pts:
                img = np.maximum(img, np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * width**2)))
        out[s] = img
    out[out < 0.05] = 0.0
    return out
