r"""Physics evaluation of generated ensembles: the talk's comparison table, plots, and exactness.

* :func:`compare` - analyse training, test and generated ensemble files with
  :func:`lftml.analysis.analyze` (Gamma-method errors) and add z-scores of generated vs test,
  ``z = (g - t) / sqrt(err_g^2 + err_t^2)``.
* :func:`plot_comparison` - histograms of M and of the action density, connected two-point function.
* :func:`plot_denoising_strip` - snapshots of the backward process (noise -> configurations).
* :func:`independence_metropolis` - make generated samples *exact*: a Markov chain with proposals
  drawn independently from the model ``q`` and accepted with probability
  ``min(1, w(x') / w(x))``, ``log w = -S - log q``; its stationary distribution is ``exp(-S)/Z``
  whatever ``q`` is (as long as q covers it). :func:`reweight` is the importance-sampling
  alternative with effective sample size ``ESS = (sum w)^2 / sum w^2``.
* :func:`autocorrelation_comparison` - normalised autocorrelation of M and tau_int for the
  Metropolis chain built from generated proposals and for an HMC chain.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from lftml.errors import LftmlError

if TYPE_CHECKING:
    from lftml.stats import Estimate

__all__ = [
    "COMPARE_KEYS", "compare", "format_compare_table", "plot_comparison", "plot_denoising_strip",
    "independence_metropolis", "metropolis_acceptance", "reweight", "autocorrelation_comparison", "plot_autocorrelation_comparison",
    "z_score",
]

log = logging.getLogger(__name__)

COMPARE_KEYS = ("magnetisation", "abs_magnetisation", "susceptibility", "susceptibility_abs", "binder",
                "action_density")
_LABELS = {
    "magnetisation": "<M>", "abs_magnetisation": "<|M|>", "susceptibility": "chi_2",
    "susceptibility_abs": "chi_2 (|M|)", "binder": "U_L", "action_density": "<S>/V",
}


def z_score(a: dict, b: dict) -> float:
    """``(a - b) / sqrt(err_a^2 + err_b^2)`` for ``{"value", "error"}`` entries."""
    den = math.hypot(float(a["error"]), float(b["error"]))
    return (float(a["value"]) - float(b["value"])) / den if den > 0 else float("nan")


def compare(train: str | Path | None, test: str | Path, generated: str | Path, *, baseline: str | Path | None = None,
            check_theory: bool = True) -> dict[str, Any]:
    """``{"train": A, "test": A, "baseline": A, "generated": A, "z_generated_vs_test": {...},
    "z_baseline_vs_test": {...}}`` where each A is the :func:`lftml.analysis.analyze` result of that
    file (``None`` for a train or baseline file not given; a weighted file is reweighted) and the
    z-scores cover :data:`COMPARE_KEYS` plus ``correlator`` (a list over t). ``baseline``: an
    ensemble of ``lftml diffusion baseline`` (the Gaussian or two-Gaussian mixture fitted to the
    training data), the column every diffusion result is compared with."""
    from lftml.analysis import analyze

    res: dict[str, Any] = {}
    for name, path in (("train", train), ("test", test), ("baseline", baseline), ("generated", generated)):
        res[name] = analyze(path) if path is not None else None
    if check_theory:
        th = {k: (res[k] or {}).get("theory") for k in res}
        ref = th["test"]
        for k in ("train", "baseline", "generated"):
            if res[k] is not None and th[k] and ref and th[k] != ref:
                raise LftmlError(f"the {k} ensemble is for {th[k]} but the test ensemble for {ref}: compare like with like")
        shapes = {k: res[k]["volume"] for k in res if res[k] is not None}
        if len(set(shapes.values())) > 1:
            raise LftmlError(f"the ensembles have different lattice volumes {shapes}")
    t = res["test"]
    for name in ("generated", "baseline"):
        g = res[name]
        if g is None:
            continue
        z: dict[str, Any] = {}
        for key in COMPARE_KEYS:
            if key in g and key in t:
                z[key] = z_score(g[key], t[key])
        if "correlator" in g and "correlator" in t:
            z["correlator"] = [z_score(a, b) for a, b in zip(g["correlator"], t["correlator"])]
        res[f"z_{name}_vs_test"] = z
    return res


def format_compare_table(res: dict[str, Any]) -> str:
    """The talk's table as text: rows train/test/baseline/generated, columns <M>, <|M|>, chi_2, U_L,
    <S>/V, and the z-scores against the test set."""
    from lftml.stats import format_value_error

    cols = [k for k in ("magnetisation", "abs_magnetisation", "susceptibility", "binder", "action_density")
            if k in res["test"]]
    lines = [f"{'data set':<18}" + "".join(f"{_LABELS[c]:>18}" for c in cols) + f"{'configs':>10}"]
    for name in ("train", "test", "baseline", "generated"):
        a = res.get(name)
        if a is None:
            continue
        row = f"{name:<18}" + "".join(f"{format_value_error(a[c]['value'], a[c]['error']):>18}" for c in cols)
        lines.append(row + f"{a['n_configs'] * a['n_chains']:>10}")
    for name in ("baseline", "generated"):
        g = res.get(name) or {}
        if g.get("reweighted"):
            lines.append(f"{name}: reweighted by its stored log weights (self-normalised), ESS/N = {g['ess_fraction']:.3f}")
    for name, short in (("baseline", "base"), ("generated", "gen")):
        z = res.get(f"z_{name}_vs_test")
        if z is None:
            continue
        lines.append(f"{'z (' + short + ' vs test)':<18}" + "".join(f"{z.get(c, float('nan')):>18.2f}" for c in cols))
        if "correlator" in z:
            zc = np.asarray(z["correlator"], dtype=float)
            lines.append(f"{name} two-point function C(t), t = 0..{len(zc) - 1}: max |z| = {np.nanmax(np.abs(zc)):.2f}")
    return "\n".join(lines)


def _load_obs(path) -> dict[str, np.ndarray]:
    from lftml.ensemble import Ensemble

    with Ensemble.open(path) as ens:
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in ens.observables.items()}


def plot_comparison(paths: dict[str, str | Path | None], res: dict[str, Any] | None = None, axes=None):
    """Three panels: histogram of M, histogram of the action density S/V, and the connected
    two-point function C(t) with errors, for each labelled ensemble file. Returns the axes."""
    from lftml.plots import pyplot

    plt = pyplot()

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    styles = {"train": dict(color="0.5"), "test": dict(color="C0"), "baseline": dict(color="C2"), "generated": dict(color="C3")}
    obs = {k: _load_obs(p) for k, p in paths.items() if p is not None}
    allM = np.concatenate([o["M"] for o in obs.values()])
    binsM = np.linspace(allM.min(), allM.max(), 41)
    for k, o in obs.items():
        axes[0].hist(o["M"], bins=binsM, density=True, histtype="step", lw=1.5, label=k, **styles.get(k, {}))
    axes[0].set_xlabel("M")
    axes[0].set_ylabel("density")
    axes[0].legend(frameon=False)
    if all("action_density" in o for o in obs.values()):
        allS = np.concatenate([o["action_density"] for o in obs.values()])
        binsS = np.linspace(allS.min(), allS.max(), 41)
        for k, o in obs.items():
            axes[1].hist(o["action_density"], bins=binsS, density=True, histtype="step", lw=1.5, label=k,
                         **styles.get(k, {}))
        axes[1].set_xlabel("S / V")
    if res is not None:
        for j, k in enumerate(obs):
            a = res.get(k)
            if a and "correlator" in a:
                t = np.array([c["t"] for c in a["correlator"]]) + (j - 1) * 0.08
                v = np.array([c["value"] for c in a["correlator"]])
                e = np.array([c["error"] for c in a["correlator"]])
                axes[2].errorbar(t, v, e, fmt="o", ms=3, capsize=2, label=k, **styles.get(k, {}))
        axes[2].set_yscale("log")
        axes[2].set_xlabel("t")
        axes[2].set_ylabel("C(t) (connected)")
        axes[2].legend(frameon=False)
    return axes


def plot_denoising_strip(snapshots: Sequence[tuple[float, np.ndarray]], sde=None, axes=None, index: int = 0):
    """One configuration (``index``) of the backward process at the recorded times, left (noise,
    t = 1) to right (generated, t = eps), each panel on its own symmetric colour scale."""
    from lftml.plots import pyplot

    plt = pyplot()

    if not snapshots:
        raise LftmlError("no snapshots recorded: pass snapshot times to the sampler")
    n = len(snapshots)
    if axes is None:
        _, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.3))
    axes = np.atleast_1d(axes)
    for ax, (t, x) in zip(axes, snapshots):
        img = np.asarray(x)[index]
        lim = float(np.max(np.abs(img))) or 1.0
        ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        title = f"t = {t:.2g}"
        if sde is not None:
            import torch

            title += f"\nstd = {float(sde.std(torch.tensor(t, dtype=torch.float64))):.2g}"
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


def independence_metropolis(log_w: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Independence Metropolis over proposals in the given order: returns ``(index, acceptance)``
    where ``index[i]`` is the proposal the chain sits on at step ``i`` (step 0 = proposal 0).

    ``log_w = -S - log q`` (any additive constant cancels); acceptance of proposal j from state i
    is ``min(1, exp(log_w[j] - log_w[i]))``."""
    lw = np.asarray(log_w, dtype=np.float64)
    if lw.ndim != 1 or len(lw) < 2:
        raise LftmlError("independence Metropolis needs a 1d array of at least 2 log-weights")
    if not np.all(np.isfinite(lw)):
        raise LftmlError("log-weights contain NaN/inf: recompute log q with more probes or tighter tolerances")
    u = np.log(rng.random(len(lw)))
    idx = np.empty(len(lw), dtype=np.int64)
    cur = 0
    acc = 0
    idx[0] = 0
    for j in range(1, len(lw)):
        if u[j] < lw[j] - lw[cur]:
            cur = j
            acc += 1
        idx[j] = cur
    return idx, acc / (len(lw) - 1)


def metropolis_acceptance(log_w: np.ndarray, rng: np.random.Generator) -> "Estimate":
    """Acceptance of the independence-Metropolis chain over ``log_w`` (see
    :func:`independence_metropolis`) as a Gamma-method ``lftml.stats.Estimate``
    (:func:`chain_acceptance` of the chain it runs)."""
    idx, _ = independence_metropolis(log_w, rng)
    return chain_acceptance(idx)


def chain_acceptance(idx: np.ndarray) -> "Estimate":
    """Acceptance of an independence-Metropolis chain given by its ``index`` (as returned by
    :func:`independence_metropolis`), with its Gamma-method error: the accept indicator of step j
    (proposal j taken) is autocorrelated, rejections come in runs while the chain sits on a
    high-weight state, so its error needs tau_int, not sqrt(p(1-p)/N)."""
    from lftml.stats import gamma_method

    return gamma_method((np.diff(idx) != 0).astype(np.float64))


def reweight(log_w: np.ndarray, observables: dict[str, np.ndarray], volume: int) -> dict[str, Any]:
    """Importance reweighting of generated samples to exp(-S): ``<O> = sum w O / sum w`` with
    ``w = exp(log_w - max)``. Returns the relative ESS ``(sum w)^2 / (n sum w^2)``, the ESS, and
    reweighted <M>, chi_2, U_L with errors by linearisation of the ratio estimator
    (``var(sum w O / sum w) ~ sum w^2 (O - <O>)^2 / (sum w)^2``, propagated through the formulas)."""
    lw = np.asarray(log_w, dtype=np.float64)
    w = np.exp(lw - lw.max())
    W = w.sum()
    ess = W * W / np.sum(w * w)
    M = np.asarray(observables["M"], dtype=np.float64).reshape(-1)
    p = w / W

    def mean_var(O):
        m = np.sum(p * O)
        return m, float(np.sum(p * p * (O - m) ** 2))

    m1, _ = mean_var(M)
    m2, _ = mean_var(M * M)
    m4, _ = mean_var(M**4)
    chi = volume * (m2 - m1 * m1)
    U = 1 - m4 / (3 * m2 * m2)
    # linearised errors: per-sample influence functions of chi and U
    infl_chi = volume * ((M * M - m2) - 2 * m1 * (M - m1))
    infl_U = -(M**4 - m4) / (3 * m2 * m2) + 2 * m4 * (M * M - m2) / (3 * m2**3)
    err = lambda f: float(np.sqrt(np.sum(p * p * f * f)))  # noqa: E731
    return {
        "ess": float(ess), "ess_fraction": float(ess / len(w)), "n": int(len(w)),
        "magnetisation": {"value": float(m1), "error": err(M - m1)},
        "susceptibility": {"value": float(chi), "error": err(infl_chi)},
        "binder": {"value": float(U), "error": err(infl_U)},
    }


def autocorrelation_comparison(M_generated_chain: np.ndarray, M_hmc: np.ndarray, max_lag: int = 50,
                               acceptance: float | None = None, hmc_acceptance: float | None = None) -> dict[str, Any]:
    """Normalised autocorrelation functions ``rho(t)`` of M and tau_int (Gamma method) for the
    independence-Metropolis chain (``(n,)``) and the HMC chain (``(n_configs, n_chains)``)."""
    from lftml.stats import autocorrelation_function, gamma_method

    out = {}
    for name, M, acc in (("metropolis", M_generated_chain, acceptance), ("hmc", M_hmc, hmc_acceptance)):
        M = np.asarray(M, dtype=np.float64)
        lag = min(max_lag, M.shape[0] - 1)
        rho = autocorrelation_function(M, max_lag=lag)
        e = gamma_method(M)
        out[name] = {"rho": rho.tolist(), "tau_int": e.tau_int, "tau_int_error": e.tau_int_error,
                     "acceptance": acc, "n": int(M.size)}
    return out


def plot_autocorrelation_comparison(ac: dict[str, Any], ax=None, hmc_label: str = "HMC", gen_label: str = "diffusion + Metropolis"):
    """Normalised autocorrelation of M for both chains (tau_int in the legend); returns ``ax``."""
    from lftml.plots import pyplot

    plt = pyplot()

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.6))
    for key, label, c in (("hmc", hmc_label, "C0"), ("metropolis", gen_label, "C3")):
        a = ac[key]
        rho = np.asarray(a["rho"])
        extra = f", acc. {a['acceptance']:.2f}" if a.get("acceptance") is not None else ""
        ax.plot(np.arange(len(rho)), rho, "o-", ms=3, color=c,
                label=f"{label}: $\\tau_{{int}}$ = {a['tau_int']:.2f}({a['tau_int_error']:.2f}){extra}")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("Monte Carlo time")
    ax.set_ylabel(r"$\rho_M(t)$")
    ax.legend(frameon=False, fontsize=8)
    return ax
