"""Diagnostics that tell correct complex Langevin results from wrong ones.

Each diagnostic gives a number (in :func:`diagnose`) and a plot (functions take a matplotlib ``ax``
and return it):

1. **Correctness criteria** (Aarts, James, Seiler, Stamatescu, EPJC 71 (2011) 1756): for holomorphic
   observables ``<L_c O> = 0`` with ``L_c = sum_k (d_k + K_k) d_k``; at finite step this carries an
   O(eps^p) bias. The criterion of the discretised process ``<L_eps O>`` (see
   :mod:`lftml.complex.langevin`) vanishes at any step for a correct run. Numbers: the largest
   z-scores ``criterion_max_zscore`` (L_c) and ``step_criterion_max_zscore`` (L_eps). L_eps
   significant: wrong convergence; only L_c significant: ``step_size_bias`` (a note, not suspicious).
2. **Boundary terms** (Scherzer, Seiler, Sexty, Stamatescu, PRD 99 (2019) 014512):
   ``B_O(Y) = <L_eps O * Theta(Y - Y(z))>`` (``L_c`` for old files) with ``Y(z) = max_sites |Im z|``,
   as a function of the cut-off Y. For a correct run B(Y) -> 0 once Y encloses the distribution; a
   plateau at a non-zero value signals boundary terms. Number: ``plateau_zscore``, the smaller of the
   z-scores at the first cut-off enclosing >= 99% of the Langevin time and at the first enclosing
   >= 99.9% (same sign required, per real/imaginary part); see :func:`diagnose`.
3. **Drift magnitude** (Nagata, Nishimura, Shimasaki, PRD 94 (2016) 114515): the Langevin-time
   distribution of ``u = max_sites |K|`` must fall off exponentially or faster. Number: the local
   power-law exponent ``alpha`` of the survival function ``P(u' > u) ~ u^{-alpha}`` fitted between
   survival probabilities 1e-2 and 1e-4 (a Gaussian tail gives alpha of order 10 there); ``alpha <
   drift_tail_threshold`` (default 4) is suspicious.
4. **Distribution of Im z** (Aarts, Giudice, Seiler, Ann. Phys. 337 (2013) 238): a distribution
   localised in a strip ``|Im z| <= y_max`` guarantees correctness; power-law tails are a warning.
   Numbers: ``imag_max`` (largest ``|Im z|`` seen), ``imag_width`` (time-weighted rms of Im z) and
   ``imag_tail_exponent`` (as for the drift; None when the survival never reaches 1e-2, i.e. a strip).

``suspicious`` is true if the criterion of the discretised process or the boundary-term plateau
exceeds ``zscore_threshold`` (default 4, chosen above the 2-3 sigma excursions of correct runs with
several observables) or the drift tail exponent is below its threshold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lftml.complex.analysis import ComplexEstimate, complex_estimate, weighted_mean
from lftml.complex.langevin import DRIFT_EDGES, IMAG_EDGES, CLRun

__all__ = [
    "criterion",
    "step_criterion",
    "boundary_terms",
    "plateau_zscore",
    "tail_exponent",
    "drift_tail",
    "imag_distribution",
    "diagnose",
    "plot_criterion",
    "plot_boundary_terms",
    "plot_drift_histogram",
    "plot_imag_distribution",
    "plot_diagnostics",
]

ZSCORE_THRESHOLD = 4.0
DRIFT_TAIL_THRESHOLD = 4.0


def criterion(run: CLRun) -> dict[str, ComplexEstimate]:
    """``<L_c O>`` (time-weighted, Gamma-method errors) for every holomorphic observable of the run."""
    return {k: complex_estimate(v, run.weights) for k, v in run.criterion.items()}


def step_criterion(run: CLRun) -> dict[str, ComplexEstimate] | None:
    """``<L_eps O>``, the criterion of the discretised process (zero at any step size for a correct
    run; see :mod:`lftml.complex.langevin`), or None for files written before it was measured."""
    if not run.step_criterion or run.step_weights is None:
        return None
    return {k: complex_estimate(v, run.step_weights) for k, v in run.step_criterion.items()}


def boundary_terms(run: CLRun, observable: str, discrete: bool | None = None) -> dict[str, Any]:
    """``B(Y)`` for one observable: ``{"cutoffs", "estimates" (list of ComplexEstimate), "fraction_inside",
    "operator"}``. ``discrete`` (default: when measured) uses ``L_eps O`` instead of ``L_c O``, which
    removes the step-size bias from B(Y -> infinity)."""
    use = (run.step_boundary is not None and run.step_weights is not None) if discrete is None else discrete
    b, w = (run.step_boundary[observable], run.step_weights) if use else (run.boundary[observable], run.weights)
    ests = [complex_estimate(b[..., i], w) for i in range(b.shape[-1])]
    frac = np.asarray(weighted_mean(run.fraction_inside, run.weights)).real
    return {"cutoffs": np.asarray(run.cutoffs), "estimates": ests, "fraction_inside": frac,
            "operator": "L_eps" if use else "L_c"}


def plateau_zscore(a: ComplexEstimate, b: ComplexEstimate) -> float:
    """Significance of a plateau seen at two cut-offs: per real/imaginary part the smaller of the two
    z-scores when both values have the same sign (0 otherwise); the larger over the two parts."""
    out = 0.0
    for va, ea, vb, eb in ((a.value.real, a.error.real, b.value.real, b.error.real),
                           (a.value.imag, a.error.imag, b.value.imag, b.error.imag)):
        if va * vb <= 0:
            continue
        za = abs(va) / ea if ea > 0 else math.inf
        zb = abs(vb) / eb if eb > 0 else math.inf
        out = max(out, min(za, zb))
    return out


def tail_exponent(hist: np.ndarray, edges: np.ndarray, upper: float = 1e-2, lower: float = 1e-4) -> float | None:
    """Local power ``alpha`` of the survival ``S(u) = P(u' >= u) ~ u^{-alpha}`` between ``S = upper``
    and ``S = lower`` from a histogram with under/overflow bins (``len(hist) == len(edges) + 1``).

    Returns None when fewer than two edges lie in that range (a distribution with a hard edge, such
    as a strip in Im z, or too little statistics to resolve the tail): no power-law tail seen.
    """
    h = np.asarray(hist, dtype=float)
    total = h.sum()
    if total <= 0:
        return None
    survival = 1.0 - np.cumsum(h)[:-1] / total  # P(u >= edges[i])
    sel = (survival <= upper) & (survival >= lower) & (np.asarray(edges) > 0)
    if sel.sum() < 2:
        return None
    x, y = np.log(np.asarray(edges)[sel]), np.log(survival[sel])
    return float(-np.polyfit(x, y, 1)[0])


def drift_tail(run: CLRun) -> float | None:
    """Tail exponent of the Langevin-time distribution of ``K_max`` (see module docstring)."""
    return tail_exponent(run.drift_hist, DRIFT_EDGES)


def imag_distribution(run: CLRun) -> dict[str, float | None]:
    """``imag_max``, ``imag_width`` (rms of Im z over sites, time weighted) and ``imag_tail_exponent``."""
    h = np.asarray(run.imag_hist, dtype=float)
    n = len(IMAG_EDGES)  # histogram bins: 0 underflow, i in 1..n-1 between edges[i-1], edges[i], n overflow
    centres = np.concatenate([[IMAG_EDGES[0]], 0.5 * (IMAG_EDGES[1:] + IMAG_EDGES[:-1]), [IMAG_EDGES[-1]]])
    total = h.sum()
    width = float(np.sqrt((h * centres**2).sum() / total)) if total > 0 else None
    # fold onto |Im z|: edges are symmetric, the centre edge is 0
    mid = n // 2
    pos = h[mid + 1 :]  # bins above edge 0: [0, e1), ..., overflow
    neg = h[: mid + 1][::-1]  # mirrored
    folded = pos + neg
    folded = np.concatenate([[0.0], folded])  # underflow (nothing below 0)
    alpha = tail_exponent(folded, IMAG_EDGES[mid:])
    return {"imag_max": float(np.max(run.imag_max)), "imag_width": width, "imag_tail_exponent": alpha}


def _zscores(ests: dict[str, ComplexEstimate]) -> tuple[dict[str, Any], float]:
    out, zmax = {}, 0.0
    for k, e in ests.items():
        z = e.zscore(0j)
        zmax = max(zmax, z)
        out[k] = {"value": [e.value.real, e.value.imag], "error": [e.error.real, e.error.imag], "zscore": z}
    return out, zmax


def _boundary(run: CLRun, tail_fraction: float, deep_fraction: float) -> tuple[dict[str, Any], float]:
    """Boundary terms of every observable and the largest plateau z-score (see :func:`diagnose`)."""
    out, zmax_all = {}, 0.0
    for k in run.boundary:
        bt = boundary_terms(run, k)
        frac, ests = bt["fraction_inside"], bt["estimates"]
        tail = np.nonzero(frac >= tail_fraction)[0]
        deep = np.nonzero(frac >= deep_fraction)[0]
        i_tail = int(tail[0]) if len(tail) else len(ests) - 1
        i_deep = int(deep[0]) if len(deep) else len(ests) - 1
        zs = [e.zscore(0j) for e in ests]
        zp = plateau_zscore(ests[i_tail], ests[i_deep])
        zmax_all = max(zmax_all, zp)
        out[k] = {
            "operator": bt["operator"],
            "cutoffs": [float(y) for y in bt["cutoffs"]],
            "values": [[e.value.real, e.value.imag] for e in ests],
            "errors": [[e.error.real, e.error.imag] for e in ests],
            "fraction_inside": [float(f) for f in frac],
            "tail_cutoff": float(bt["cutoffs"][i_tail]),
            "tail_value": [ests[i_tail].value.real, ests[i_tail].value.imag],
            "tail_zscore": zs[i_tail],
            "deep_cutoff": float(bt["cutoffs"][i_deep]),
            "deep_value": [ests[i_deep].value.real, ests[i_deep].value.imag],
            "deep_zscore": zs[i_deep],
            "plateau_zscore": zp,
        }
    return out, zmax_all


def diagnose(
    run: CLRun,
    *,
    zscore_threshold: float = ZSCORE_THRESHOLD,
    drift_tail_threshold: float = DRIFT_TAIL_THRESHOLD,
    tail_fraction: float = 0.99,
    deep_fraction: float = 0.999,
) -> dict[str, Any]:
    """All diagnostics as a JSON-ready dict: ``suspicious`` (signs of wrong convergence) with its
    ``reasons``, and separately ``step_size_bias`` with its ``notes``.

    Boundary terms are judged by a *plateau*: B(Y) must be significant, with the same sign, both at the
    first cut-off enclosing >= ``tail_fraction`` of the Langevin time and at the first enclosing
    >= ``deep_fraction`` (``plateau_zscore`` is the smaller of the two z-scores). For a correct run B(Y)
    is minus the criterion over the excluded tail and falls towards zero as Y grows (at high statistics
    it is resolvable at the 1% cut-off even for Gaussian tails), whereas boundary terms give a
    non-vanishing plateau. B uses ``L_eps O`` where measured, so a step-size bias does not show as a
    plateau. The continuum criterion ``<L_c O>`` carries an O(dt^p) bias: when it is significant but
    the criterion of the discretised process ``<L_eps O>`` is not, the run is flagged ``step_size_bias``
    (dt too large for the criterion's resolution), not ``suspicious``."""
    reasons: list[str] = []
    notes: list[str] = []
    crit_out, crit_max = _zscores(criterion(run))
    step = step_criterion(run)
    step_out, step_max = _zscores(step) if step is not None else ({}, None)
    if step is None:  # an old file: only the continuum criterion
        if crit_max > zscore_threshold:
            reasons.append(f"criterion <L_c O> != 0 at {crit_max:.1f} sigma (may be step-size bias: rerun with --dt halved)")
    else:
        if step_max > zscore_threshold:
            reasons.append(f"criterion of the discretised process <L_eps O> != 0 at {step_max:.1f} sigma")
        elif crit_max > zscore_threshold:
            notes.append(
                f"step-size bias: <L_c O> != 0 at {crit_max:.1f} sigma while <L_eps O> (exact at this dt) is "
                f"{step_max:.1f} sigma: results carry an O(dt^p) bias; lower --dt or extrapolate dt -> 0"
            )
    bt_out, bt_max = _boundary(run, tail_fraction, deep_fraction)
    if bt_max > zscore_threshold:
        reasons.append(f"boundary terms: B(Y) has a plateau at {bt_max:.1f} sigma over the tail cut-offs")
    alpha = drift_tail(run)
    if alpha is not None and alpha < drift_tail_threshold:
        reasons.append(f"drift magnitudes have a power-law tail (alpha = {alpha:.2f} < {drift_tail_threshold})")
    imag = imag_distribution(run)
    return {
        "criterion": crit_out,
        "criterion_max_zscore": crit_max,
        "step_criterion": step_out,
        "step_criterion_max_zscore": step_max,
        "boundary_terms": bt_out,
        "boundary_max_zscore": bt_max,
        "drift_tail_exponent": alpha,
        **imag,
        "thresholds": {"zscore": zscore_threshold, "drift_tail_exponent": drift_tail_threshold},
        "suspicious": bool(reasons),
        "reasons": reasons,
        "step_size_bias": bool(notes),
        "notes": notes,
    }


# ----------------------------------------------------------------------------- plots


def plot_criterion(ax: Any, run: CLRun, threshold: float = ZSCORE_THRESHOLD) -> Any:
    """Significance ``<L_c O> / error`` of Re and Im for each observable (should lie within +-threshold);
    the values themselves are printed in the tick labels."""
    crit = criterion(run)
    names = list(crit)
    x = np.arange(len(names))

    def sig(v: float, e: float) -> float:
        return v / e if e > 0 else 0.0

    ax.axhspan(-threshold, threshold, color="0.9", label=f"|z| < {threshold:g}")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.plot(x - 0.1, [sig(crit[k].value.real, crit[k].error.real) for k in names], "o", label="Re")
    ax.plot(x + 0.1, [sig(crit[k].value.imag, crit[k].error.imag) for k in names], "s", label="Im")
    ax.set_xticks(x)
    ax.set_xticklabels([f"$L_c$ {k}\n{crit[k].value.real:.3g}{crit[k].value.imag:+.3g}i" for k in names])
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel(r"$\langle L_c O\rangle$ / error")
    ax.set_title("correctness criterion")
    ax.legend()
    return ax


def plot_boundary_terms(ax: Any, run: CLRun, observable: str | None = None) -> Any:
    """``B(Y)`` (Re and Im with errors) versus the cut-off Y on ``max |Im z|`` (log axis)."""
    observable = observable or next(iter(run.boundary))
    bt = boundary_terms(run, observable)
    y = bt["cutoffs"]
    ests = bt["estimates"]
    ax.axhline(0.0, color="k", lw=0.8)
    ax.errorbar(y, [e.value.real for e in ests], [e.error.real for e in ests], fmt="o-", ms=3, label="Re B(Y)")
    ax.errorbar(y, [e.value.imag for e in ests], [e.error.imag for e in ests], fmt="s-", ms=3, label="Im B(Y)")
    ax.set_xscale("log")
    ax.set_xlabel(r"cut-off $Y$ on $\max|{\rm Im}\,z|$")
    ax.set_ylabel(r"$B(Y)$")
    ax.set_title(f"boundary terms ({observable})")
    ax.legend()
    return ax


def _density(hist: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Probability density in the bins between ``edges`` of a histogram with under/overflow bins
    (normalised by the total weight, overflow included)."""
    h = np.asarray(hist[1:-1], dtype=float)
    total = hist.sum()
    return h / (total * np.diff(edges)) if total > 0 else h


def plot_drift_histogram(ax: Any, run: CLRun) -> Any:
    """Langevin-time probability density of ``u = max |K|`` on log-log axes."""
    dens = _density(run.drift_hist, DRIFT_EDGES)
    centres = np.sqrt(DRIFT_EDGES[1:] * DRIFT_EDGES[:-1])
    sel = dens > 0
    ax.loglog(centres[sel], dens[sel], ".-")
    alpha = drift_tail(run)
    ax.set_xlabel(r"drift magnitude $u = \max|K|$")
    ax.set_ylabel(r"$P(u)$")
    ax.set_title("drift magnitude" + (f" (tail exponent {alpha:.2f})" if alpha is not None else ""))
    return ax


def plot_imag_distribution(ax: Any, run: CLRun) -> Any:
    """Langevin-time probability density of Im z (all sites), log scale."""
    dens = _density(run.imag_hist, IMAG_EDGES)
    centres = 0.5 * (IMAG_EDGES[1:] + IMAG_EDGES[:-1])
    sel = dens > 0
    ax.semilogy(centres[sel], dens[sel], ".-")
    if sel.any():
        lim = max(abs(centres[sel]).max(), 1e-3) * 1.1
        ax.set_xlim(-lim, lim)
        if lim > 50:
            ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel(r"${\rm Im}\,z$")
    ax.set_ylabel(r"$P({\rm Im}\,z)$")
    ax.set_title("distribution of Im z")
    return ax


def plot_diagnostics(run: CLRun, path: str | Any, title: str | None = None) -> Any:
    """2x2 figure of all four diagnostics written to ``path`` (Agg backend); returns the path."""
    from lftml.plots import pyplot, save_figure

    fig, axes = pyplot().subplots(2, 2, figsize=(11, 8))
    plot_criterion(axes[0, 0], run)
    if run.boundary:
        plot_boundary_terms(axes[0, 1], run)
    plot_drift_histogram(axes[1, 0], run)
    plot_imag_distribution(axes[1, 1], run)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return path
