"""Figures from results. Every plotting function takes a matplotlib ``ax`` and returns it;
:func:`ensemble_overview` composes them into a PNG. Matplotlib's Agg backend is used for files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only; no display is needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """``tight_layout``, write ``fig`` to ``path`` atomically (a temporary beside it, then a rename:
    a full disk or an interrupt leaves no half-written image) and close it (also when writing fails).
    A path that cannot be written is a one-line :class:`~lftml.errors.LftmlError`."""
    from lftml.errors import LftmlError
    from lftml.safeio import atomic_output

    plt = pyplot()
    path = Path(path)
    try:
        fig.tight_layout()
        with atomic_output(path, suffix=path.suffix or ".png") as tmp:
            fig.savefig(tmp, dpi=dpi, format=(path.suffix.lstrip(".") or "png").lower())
    except OSError as exc:
        raise LftmlError(f"cannot write {path}: {exc}") from None
    finally:
        plt.close(fig)
    return path


def plot_history(ax, M: np.ndarray, max_chains: int = 4, label: str = "M"):
    """Monte Carlo history of ``M`` ``(n_configs, n_chains)`` for the first chains."""
    for c in range(min(max_chains, M.shape[1])):
        ax.plot(M[:, c], lw=0.7, label=f"chain {c}")
    ax.set_xlabel("configuration")
    ax.set_ylabel(label)
    ax.legend(fontsize=7, loc="upper right")
    return ax


def plot_histogram(ax, x: np.ndarray, label: str = "M", bins: int = 50, **kwargs: Any):
    ax.hist(np.ravel(x), bins=bins, density=True, histtype="step", **kwargs)
    ax.set_xlabel(label)
    ax.set_ylabel("density")
    return ax


def plot_autocorrelation(ax, M: np.ndarray, max_lag: int | None = None, label: str | None = None):
    """Normalised autocorrelation function rho(t) (Gamma-method convention, global mean)."""
    from lftml.stats import autocorrelation_function

    rho = autocorrelation_function(M)
    max_lag = min(len(rho), max_lag or len(rho))
    ax.plot(np.arange(max_lag), rho[:max_lag], marker=".", lw=0.8, label=label)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("t (configurations)")
    ax.set_ylabel(r"$\rho(t)$")
    return ax


def plot_correlator(ax, corr: list[dict], exact: list[float] | None = None, label: str = "measured"):
    """Connected zero-momentum correlator C(t) with errors (log scale), and the exact curve if given."""
    t = np.array([c["t"] for c in corr])
    v = np.array([c["value"] for c in corr])
    e = np.array([c["error"] for c in corr])
    ax.errorbar(t, v, yerr=e, fmt="o", ms=3, capsize=2, label=label)
    if exact is not None:
        ax.plot(np.arange(len(exact)), exact, "k-", lw=0.8, label="exact")
    if np.all(v > 0):
        ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("C(t)")
    ax.legend(fontsize=7)
    return ax


def ensemble_overview(path: str | Path, png: str | Path, discard: int = 0) -> Path:
    """Four panels: history of M, histogram of M, rho(t) of M and |M|, connected correlator."""
    from lftml.analysis import analyze
    from lftml.ensemble import Ensemble

    plt = pyplot()
    with Ensemble.open(path) as ens:
        M = ens.observables["M"][discard:]
        result = analyze(ens, discard=discard)
    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    plot_history(axes[0, 0], M)
    plot_histogram(axes[0, 1], M)
    plot_autocorrelation(axes[1, 0], M, max_lag=50, label="M")
    plot_autocorrelation(axes[1, 0], np.abs(M), max_lag=50, label="|M|")
    axes[1, 0].legend(fontsize=7)
    if result.get("correlator"):
        exact = result.get("exact", result.get("target", {})).get("correlator")
        plot_correlator(axes[1, 1], result["correlator"], exact)
    fig.suptitle(f"{Path(path).name}: {result.get('kind')} {result.get('theory')}", fontsize=8)
    return save_figure(fig, png)
