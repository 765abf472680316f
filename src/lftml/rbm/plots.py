"""Plots for RBM spectra (functions take a matplotlib ``ax`` and return it)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["plot_spectrum", "plot_learning_curve", "plot_data_spectrum"]


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
