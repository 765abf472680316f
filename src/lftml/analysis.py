"""Ensemble analysis: the standard observables with Gamma-method errors and tau_int.

Definitions (M = site average of phi per configuration, V = volume, <.> = ensemble average):

* ``magnetisation`` <M>; ``abs_magnetisation`` <|M|>;
* ``susceptibility`` chi_2 = V (<M^2> - <M>^2) (the talk's definition);
* ``susceptibility_abs`` = V (<M^2> - <|M|>^2) (the broken-phase variant, finite-volume safe);
* ``binder`` U_L = 1 - <M^4> / (3 <M^2>^2) (0 for a Gaussian, 2/3 deep in the broken phase);
* ``action_density`` <S>/V; ``correlator`` C(t) = V_s (<s(t0+t) s(t0)> - <M>^2) averaged over t0
  (s = time-slice mean, V_s = V/T) and ``effective_mass`` arccosh((C(t-1) + C(t+1)) / (2 C(t))).

Errors of derived quantities come from linearisation (:func:`lftml.stats.gamma_method_derived`);
tau_int is in units of the measurement spacing of the file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lftml.ensemble import Ensemble
from lftml.errors import LftmlError
from lftml.stats import (Estimate, ess_fraction, gamma_method, gamma_method_derived, weighted_gamma_method,
                         weighted_gamma_method_derived)

class _OncePerMessage(logging.Filter):
    """Let each warning template of :mod:`lftml.stats` through once per analysis (not once per observable)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple) and str(record.args[0]).startswith(" of "):
            return False  # a named observable's warning: collected in result["warnings"] and logged there
        key = str(record.msg)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # noqa: ARG002
        return False


@contextmanager
def _warn_once() -> Iterator[None]:
    stats_log = logging.getLogger("lftml.stats")
    flt = _OncePerMessage()
    stats_log.addFilter(flt)
    try:
        yield
    finally:
        stats_log.removeFilter(flt)


log = logging.getLogger(__name__)

#: Where the free field's closed forms go, by ensemble kind: "exact" for exact samplers, "dt0_limit"
#: for Langevin (which carries a step-size bias), "target" for generative models.
REFERENCE_KEYS = {"hmc": "exact", None: "exact", "langevin": "dt0_limit"}

#: How the CLI labels each reference key.
REFERENCE_LABELS = {
    "exact": "exact",
    "dt0_limit": "dt = 0 limit (this ensemble has O(dt) bias)",
    "target": "target",
}


def reference_label(key: str | None, result: dict[str, Any]) -> str:
    """How a table labels the closed forms under ``key``: for Langevin the step-size bias's order
    is the scheme's (``result["sampler"]["order"]``: 1 Euler, 2 Heun)."""
    if key == "dt0_limit":
        order = int((result.get("sampler") or {}).get("order", 1))
        return f"dt = 0 limit (this ensemble has O(dt{'^' + str(order) if order > 1 else ''}) bias)"
    return REFERENCE_LABELS.get(key, "") if key else ""


PRIMARY_KEYS = ("magnetisation", "abs_magnetisation", "susceptibility", "susceptibility_abs", "binder")


def _entry(e: Estimate) -> dict[str, float]:
    return e.to_dict()


def _list_entry(t: int, e: Estimate) -> dict[str, Any]:
    """``{"t", "value", "error"}`` of a correlator/effective-mass point, plus ``"warning"`` when flagged."""
    out: dict[str, Any] = {"t": t, "value": e.value, "error": e.error}
    if e.note:
        out["warning"] = e.note
    return out


def collect_warnings(result: dict[str, Any]) -> list[str]:
    """``"observable: note"`` for every flagged estimate in an analysis result (entries that are dicts
    with a ``"warning"``, and points ``{"t", ..., "warning"}`` of its lists, as ``"name(t=...)"``)."""
    out = []
    for k, v in result.items():
        if isinstance(v, dict) and v.get("warning"):
            out.append(f"{k}: {v['warning']}")
        elif isinstance(v, list):
            out.extend(f"{k}(t={d['t']}): {d['warning']}" for d in v if isinstance(d, dict) and d.get("warning"))
    return out


def summarize(
    M: np.ndarray,
    volume: int,
    *,
    action_density: np.ndarray | None = None,
    slice_mean: np.ndarray | None = None,
    S: float = 2.0,
    log_weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """Analyse magnetisation histories ``M`` of shape ``(n_configs, n_chains)`` (or ``(n_configs,)``).

    Returns the keys of :data:`PRIMARY_KEYS` (each ``{"value","error","tau_int","tau_int_error"}``),
    ``action_density`` if given, ``correlator``/``effective_mass`` lists if ``slice_mean``
    ``(n_configs, n_chains, T)`` is given, and ``n_configs``, ``n_chains``, ``volume``.
    With ``log_weights`` (shape of ``M``) every estimate is self-normalised reweighted,
    ``<O> = sum w O / sum w``, with errors that include the weights
    (:func:`lftml.stats.weighted_gamma_method_derived`), and ``ess_fraction`` is added.
    """
    M = np.asarray(M, dtype=np.float64)
    if M.ndim == 1:
        M = M[:, None]
    if M.ndim != 2:
        raise LftmlError(f"magnetisation history must be (n_configs, n_chains), got shape {M.shape}")
    V = float(volume)
    mean, derived = _estimators(S, log_weights, M.shape)
    M2, M4, absM = M * M, M**4, np.abs(M)
    out: dict[str, Any] = {
        "magnetisation": _entry(mean(M, name="magnetisation")),
        "abs_magnetisation": _entry(mean(absM, name="abs_magnetisation")),
        "susceptibility": _entry(derived(lambda m2, m: V * (m2 - m * m), M2, M, name="susceptibility")),
        "susceptibility_abs": _entry(derived(lambda m2, a: V * (m2 - a * a), M2, absM, name="susceptibility_abs")),
        "binder": _entry(derived(lambda m4, m2: 1.0 - m4 / (3.0 * m2 * m2), M4, M2, name="binder")),
    }
    if action_density is not None:
        out["action_density"] = _entry(mean(np.asarray(action_density, dtype=np.float64).reshape(M.shape),
                                            name="action_density"))
    if slice_mean is not None:
        out.update(correlator(slice_mean, M, volume, S=S, log_weights=log_weights))
    if log_weights is not None:
        out["ess_fraction"] = ess_fraction(np.asarray(log_weights, dtype=np.float64).reshape(M.shape))
    out.update({"n_configs": int(M.shape[0]), "n_chains": int(M.shape[1]), "volume": int(volume)})
    return out


def _estimators(S: float, log_weights: np.ndarray | None, shape: tuple[int, ...]):
    """``(mean, derived)`` estimator functions: plain Gamma method, or reweighted with ``log_weights``."""
    if log_weights is None:
        return ((lambda x, name=None: gamma_method(x, S=S, name=name)),
                (lambda f, *xs, name=None: gamma_method_derived(f, *xs, S=S, name=name)))
    lw = np.asarray(log_weights, dtype=np.float64).reshape(shape)
    return ((lambda x, name=None: weighted_gamma_method(x, lw, S=S, name=name)),
            (lambda f, *xs, name=None: weighted_gamma_method_derived(f, *xs, log_weights=lw, S=S, name=name)))


def correlator(slice_mean: np.ndarray, M: np.ndarray, volume: int, S: float = 2.0,
               log_weights: np.ndarray | None = None) -> dict[str, Any]:
    """Connected zero-momentum correlator and cosh effective mass from time-slice means.

    ``slice_mean``: ``(n_configs, n_chains, T)``. Returns ``{"correlator": [...], "effective_mass": [...]}``,
    entries ``{"t", "value", "error"}``; effective masses where the argument of arccosh is > 1.
    """
    s = np.asarray(slice_mean, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64).reshape(s.shape[:-1])
    _, derived = _estimators(S, log_weights, M.shape)
    T = s.shape[-1]
    Vs = volume / T
    # per-configuration products averaged over the source time t0
    prods = [np.mean(s * np.roll(s, -t, axis=-1), axis=-1) for t in range(T // 2 + 1)]
    corr = []
    for t, A in enumerate(prods):
        e = derived(lambda a, m: Vs * (a - m * m), A, M, name=f"correlator(t={t})")
        corr.append(_list_entry(t, e))
    meff = []
    for t in range(1, T // 2):
        def f(a_m, a_0, a_p, m):
            c_m, c_0, c_p = (Vs * (a - m * m) for a in (a_m, a_0, a_p))
            x = (c_m + c_p) / (2.0 * c_0)
            return math.acosh(x) if x > 1.0 else float("nan")

        try:
            e = derived(f, prods[t - 1], prods[t], prods[t + 1], M, name=f"effective_mass(t={t})")
        except LftmlError:
            continue
        if math.isfinite(e.value):
            meff.append(_list_entry(t, e))
    return {"correlator": corr, "effective_mass": meff}


def analyze(source: str | Path | Ensemble, discard: int = 0, S: float = 2.0, correlators: bool = True,
            log_warnings: bool = True) -> dict[str, Any]:
    """Analyse an ensemble file: :func:`summarize` plus sampler statistics and provenance.

    ``discard`` drops that many leading configurations (extra thermalisation). Adds
    ``acceptance`` (mean over all recorded updates, or None), ``exp_minus_dH`` (<exp(-dH)>, which is
    1 for a correct HMC), ``theory``, ``kind``, ``wall_time_s`` and, when timing is recorded,
    ``cost_per_independent_config_s`` = wall time x 2 tau_int(|M|) / (n_configs n_chains).
    For the free field the exact values are added under ``exact`` (under ``target`` for ensembles of
    generative models, whose stored theory is the one they were trained on).
    The reliability warnings are in ``result["warnings"]`` and, unless ``log_warnings=False`` (a caller
    that prints them itself, e.g. the CLI's table), also logged once each.
    """
    ens = source if isinstance(source, Ensemble) else Ensemble.open(source)
    quiet = _DropAll()
    try:
        with _warn_once():
            if not log_warnings:
                log.addFilter(quiet)  # the per-result warnings this module logs (they stay in result["warnings"])
            return _analyze(ens, discard, S, correlators)
    finally:
        log.removeFilter(quiet)
        if not isinstance(source, Ensemble):
            ens.close()


def _analyze(ens: Ensemble, discard: int, S: float, correlators: bool) -> dict[str, Any]:
    if ens.n_configs - discard < 4:
        raise LftmlError(
            f"{ens.path} holds {ens.n_configs} configurations"
            + (f" ({discard} discarded)" if discard else "")
            + "; the error analysis needs at least 4"
        )
    obs = ens.observables
    if "M" not in obs:
        if ens.metadata.get("kind") == "complex_langevin":
            raise LftmlError(f"{ens.path} is a complex Langevin run; analyse it with `lftml cl diagnose {ens.path}`")
        raise LftmlError(f"{ens.path} has no magnetisation observable (is it a complex-field ensemble?)")
    sl = slice(discard, None)
    result = summarize(
        obs["M"][sl],
        ens.volume,
        action_density=obs["action_density"][sl] if "action_density" in obs else None,
        slice_mean=obs["slice_mean"][sl] if (correlators and "slice_mean" in obs) else None,
        S=S,
        log_weights=ens.log_weights[sl] if ens.log_weights is not None else None,
    )
    result["reweighted"] = ens.log_weights is not None
    rec = ens.records
    result["acceptance"] = result["acceptance_error"] = None  # error None: too few records, or one outcome only
    if "accepted" in rec and rec["accepted"].size:
        acc = np.asarray(rec["accepted"], dtype=np.float64)
        acc = acc.reshape(acc.shape[0], -1)
        result["acceptance"] = float(acc.mean())
        if acc.shape[0] >= 4 and np.ptp(acc) > 0:  # Gamma method over records x chains: correlated outcomes
            result["acceptance_error"] = gamma_method(acc, S=S, name="acceptance").error
    if "exp_minus_dH" in rec and rec["exp_minus_dH"].size:
        x = rec["exp_minus_dH"]
        e = gamma_method(x, S=S, name="exp_minus_dH") if x.shape[0] >= 4 else None
        if e is not None and e.note.startswith("anticorrelated data"):
            # common for exp(-dH) of an HMC chain and harmless (the Gamma method resolves it, and
            # the error is only smaller than the naive one); printed on every default run it told
            # the user nothing to act on. It stays a warning for the physics observables.
            e = dataclasses.replace(e, note="")
        result["exp_minus_dH"] = _entry(e) if e else None
    result["kind"] = ens.metadata.get("kind")
    result["theory"] = ens.metadata.get("theory")
    result["sampler"] = ens.metadata.get("sampler")
    result["seed"] = ens.metadata.get("seed")
    result["wall_time_s"] = ens.wall_time_s
    tau = result["abs_magnetisation"]["tau_int"]
    n_tot = result["n_configs"] * result["n_chains"]
    result["cost_per_independent_config_s"] = (
        ens.wall_time_s * 2.0 * tau / (n_tot * result.get("ess_fraction", 1.0)) if ens.wall_time_s > 0 else None
    )
    result["cost_per_independent_config_s_error"] = (  # from tau_int's error (the wall time is exact)
        result["cost_per_independent_config_s"] * result["abs_magnetisation"]["tau_int_error"] / tau
        if result["cost_per_independent_config_s"] is not None and tau > 0 else None
    )
    result["warnings"] = collect_warnings(result)
    for w in result["warnings"]:
        log.warning("%s: %s", ens.path, w)
    theory = ens.theory
    if theory is not None and theory.to_dict().get("name") == "free":
        # the closed forms are the exact answers for exact samplers (HMC); a Langevin ensemble
        # approaches them only as dt -> 0 (O(dt) bias, O(dt^2) for Heun); for generative models
        # (rbm, diffusion) the stored theory is their training target, which they need not reproduce
        key = REFERENCE_KEYS.get(result["kind"], "target")
        result[key] = {
            "magnetisation": 0.0,
            "susceptibility": theory.susceptibility(),
            "binder": 0.0,
            "phi2": theory.phi2(),
            "correlator": theory.zero_momentum_correlator()[: ens.lattice_shape[0] // 2 + 1].tolist(),
            "effective_mass": theory.effective_mass(),
        }
    return result
