"""Langevin-time-weighted estimates with Gamma-method errors for complex observables.

Input: bin means ``O_b`` (complex, ``(n_bins, n_chains)``) over bins of Langevin-time lengths
``w_b`` (see :mod:`lftml.complex.langevin`). The estimate is the time-weighted mean
``sum_b w_b O_b / sum_b w_b``. Errors: real and imaginary parts are analysed separately with
:func:`lftml.stats.gamma_method` (chains are replicas, the bin index is Monte Carlo time); when the
bin lengths are not all equal (adaptive steps) the ratio ``mean(w O) / mean(w)`` is analysed with
:func:`lftml.stats.gamma_method_derived`, which propagates the fluctuations of the bin lengths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lftml.stats import gamma_method, gamma_method_derived

__all__ = ["ComplexEstimate", "complex_estimate", "weighted_mean"]


@dataclass(frozen=True)
class ComplexEstimate:
    """``value`` and ``error`` as complex numbers (error = err_re + 1j err_im), with ``tau_int`` of
    both parts in units of bins."""

    value: complex
    error: complex
    tau_int: tuple[float, float]
    n_bins: int
    n_chains: int

    def zscore(self, target: complex) -> float:
        """max over real/imag parts of ``|value - target| / error`` (inf if an error is zero and they differ)."""
        out = 0.0
        for d, e in ((self.value.real - target.real, self.error.real), (self.value.imag - target.imag, self.error.imag)):
            if e > 0:
                out = max(out, abs(d) / e)
            elif abs(d) > 1e-12 * max(1.0, abs(target)):
                out = math.inf
        return out

    def to_dict(self, exact: complex | None = None) -> dict[str, Any]:
        return {
            "value": [self.value.real, self.value.imag],
            "error": [self.error.real, self.error.imag],
            "exact": None if exact is None else [complex(exact).real, complex(exact).imag],
            "tau_int_bins": list(self.tau_int),
        }


def weighted_mean(bins: np.ndarray, weights: np.ndarray) -> complex | np.ndarray:
    """Time-weighted mean over the first two axes (bins, chains); trailing axes are kept."""
    w = weights.reshape(weights.shape + (1,) * (bins.ndim - weights.ndim))
    return (bins * w).sum((0, 1)) / weights.sum()


def _equal(weights: np.ndarray) -> bool:
    return bool(np.ptp(weights) <= 1e-9 * np.max(np.abs(weights)))


def complex_estimate(bins: np.ndarray, weights: np.ndarray) -> ComplexEstimate:
    """Time-weighted mean of complex bin means and its Gamma-method error (module docstring)."""
    bins = np.asarray(bins)
    weights = np.asarray(weights, dtype=float)
    value = complex(weighted_mean(bins, weights))
    errs, taus = [], []
    equal = _equal(weights)
    for part in (bins.real, bins.imag):
        part = np.ascontiguousarray(part, dtype=float)
        if np.ptp(part) == 0:
            errs.append(0.0)
            taus.append(0.5)
            continue
        if equal:
            est = gamma_method(part)
        else:
            est = gamma_method_derived(lambda a, b: a / b, part * weights, weights)
        errs.append(float(est.error))
        taus.append(float(est.tau_int))
    return ComplexEstimate(
        value=value,
        error=complex(errs[0], errs[1]),
        tau_int=(taus[0], taus[1]),
        n_bins=int(bins.shape[0]),
        n_chains=int(bins.shape[1]),
    )
