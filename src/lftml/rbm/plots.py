"""Plots for RBM spectra (functions take a matplotlib ``ax`` and return it)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["plot_spectrum", "plot_learning_curve", "plot_data_spectrum", "plot_correlator_spectrum", "plot_kappa", "plot_digit_grid"]


def plot_spectrum(
    ax: Any,
    target_eigenvalues: Sequence[float] | None,
    model_eigenvalues: Sequence[float],
    mu2: float | Sequence[float] | None = None,
    title: str | None = None,
) -> Any:
    """The talk's panel: exact target spectrum kappa (ascending, by mode index), RBM spectrum
    lambda, and the mass line mu^2 (mean of mu_i^2 if per site)."""
    n = len(model_eigenvalues)
    idx = np.arange(n)
    if target_eigenvalues is not None:
        ax.plot(idx, np.sort(target_eigenvalues), "o-", color="C0", ms=7, mfc="none", label=r"exact $\kappa$")
    ax.plot(idx, np.sort(model_eigenvalues), "x", color="C3", ms=8, mew=2, label=r"RBM $\lambda$")
    if mu2 is not None:
        m = float(np.mean(mu2))
        ax.axhline(m, color="k", ls="--", lw=1, label=rf"$\mu^2 = {m:.3g}$")
    ax.set_xlabel("mode (ascending)")
    ax.set_ylabel("eigenvalue of $K$")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return ax


def plot_learning_curve(ax: Any, history: dict[str, list], key: str = "kl") -> Any:
    """KL (or ``loglik``) against the update number, log scale for KL."""
    x = np.asarray(history["update"])
    y = np.asarray([np.nan if v is None else v for v in history[key]], dtype=float)
    ax.plot(x, y, "-", color="C0")
    if key == "kl" and np.nanmin(y) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("update")
    ax.set_ylabel(key)
    return ax


def plot_data_spectrum(
    ax: Any,
    kappa: np.ndarray,
    regulated: dict[str, np.ndarray] | None = None,
    title: str | None = None,
) -> Any:
    """Inverse correlator spectrum kappa of data (log scale, UV divergent) and, optionally,
    regulated RBM spectra keyed by a label."""
    k = np.asarray(kappa, dtype=float)
    finite = np.isfinite(k)
    ax.semilogy(np.arange(k.size)[finite], k[finite], ".", color="C0", ms=3, label=r"data $\kappa$ (1/eig $\langle\phi\phi\rangle$)")
    for i, (label, spec) in enumerate((regulated or {}).items()):
        ax.semilogy(np.arange(len(spec)), np.sort(spec), "-", color=f"C{i + 1}", lw=1.5, label=label)
    ax.set_xlabel("mode (ascending)")
    ax.set_ylabel(r"$\kappa$")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_correlator_spectrum(ax: Any, eigenvalues: Sequence[float], zero_modes: int = 0, title: str | None = None,
                             label: str = "data") -> Any:
    """The talk's first data plot: eigenvalues 1/kappa of <phi_i phi_j>, sorted descending, log
    scale (infrared safe: bounded above); the ``zero_modes`` exact zeros are marked by a line."""
    ev = np.sort(np.asarray(eigenvalues, dtype=float))[::-1]
    pos = ev > 0
    ax.semilogy(np.arange(ev.size)[pos], ev[pos], ".", ms=3, label=label)
    if zero_modes:
        ax.axvline(ev.size - zero_modes - 0.5, color="k", ls=":", lw=1, label=f"{zero_modes} exact zero modes")
    ax.set_xlabel("mode (sorted)")
    ax.set_ylabel(r"eigenvalue $1/\kappa$ of $\langle\phi_i\phi_j\rangle$")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_kappa(ax: Any, kappa: Sequence[float], mu2: float | None = None, title: str | None = None, label: str = "data") -> Any:
    """The talk's second data plot: kappa = 1/eigenvalue, ascending, log scale (ultraviolet
    divergent; exact zero modes have kappa = inf and are left out); optional line at mu^2."""
    k = np.sort(np.asarray(kappa, dtype=float))
    fin = np.isfinite(k)
    ax.semilogy(np.arange(k.size)[fin], k[fin], ".", ms=3, label=label)
    if mu2 is not None:
        ax.axhline(mu2, color="k", ls="--", lw=1, label=rf"$\mu^2 = {mu2:g}$")
    ax.set_xlabel("mode (ascending)")
    ax.set_ylabel(r"$\kappa$")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_digit_grid(ax: Any, images: np.ndarray, n_cols: int = 8, title: str | None = None) -> Any:
    """Images ``(n, H, W)`` tiled into one grey-scale grid (one pixel gap), values clipped to [0, 1]."""
    x = np.clip(np.asarray(images, dtype=float), 0.0, 1.0)
    n, h, w = x.shape
    n_cols = max(1, min(n_cols, n))
    n_rows = -(-n // n_cols)
    grid = np.ones((n_rows * (h + 1) - 1, n_cols * (w + 1) - 1))
    for i in range(n):
        r, c = divmod(i, n_cols)
        grid[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = x[i]
    ax.imshow(grid, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax
