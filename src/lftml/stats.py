"""Monte Carlo error analysis: Gamma method, autocorrelations, jackknife and bootstrap.

Data layout (everywhere in this module): a history of one real observable is an array of
shape ``(n_configs,)`` (one chain) or ``(n_configs, n_chains)`` (independent replicas of equal
length, Monte Carlo time first, as in ``lftml`` ensembles). Complex observables are not
accepted: analyse real and imaginary parts separately.

The Gamma method follows U. Wolff, "Monte Carlo errors with less errors",
Comput. Phys. Commun. 156 (2004) 143 [hep-lat/0306017] (below: "Wolff"), including its
treatment of replica (Wolff sect. 3.3 / the ``UWerr`` reference code):

* fluctuations are taken about the GLOBAL mean over all chains, and
  ``Gamma(t) = sum_r sum_i d_r(i) d_r(i+t) / sum_r (N_r - t)`` (Wolff eq. 31), so many short
  chains do not bias the autocorrelation function the way per-chain means would;
* convention ``tau_int = 1/2 + sum_{t=1}^{W} rho(t)`` (uncorrelated data give 0.5) and
  ``error^2 = 2 tau_int Gamma(0) / N = C_F(W) / N`` with ``N`` the total number of samples;
* automatic window: the smallest ``W`` with ``g(W) = exp(-W/tau) - tau/sqrt(W N) < 0`` where
  ``tau = S / log((2 tau_int(W) + 1) / (2 tau_int(W) - 1))`` (Wolff eqs. 50-52);
* bias correction ``Gamma(t) -> Gamma(t) + C_F(W)/N`` (Wolff eq. 49), which multiplies
  ``C_F`` by ``1 + (2W + 1)/N``;
* ``d tau_int = 2 tau_int sqrt((W + 1/2 - tau_int)/N)`` (Madras-Sokal, Wolff eq. 42).

Derived quantities ``f(<A>, <B>, ...)`` are linearised about the means (Wolff sect. 3.1):
the fluctuations are projected onto the gradient of ``f`` and the projected series is
analysed as a primary observable. The O(1/N) bias of ``f`` itself is not corrected.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft

from lftml.errors import LftmlError

__all__ = [
    "Estimate",
    "gamma_method",
    "gamma_method_derived",
    "autocorrelation_function",
    "integrated_autocorrelation_time",
    "jackknife",
    "bootstrap",
    "format_value_error",
    "MIN_CONFIGS",
]

logger = logging.getLogger(__name__)

#: Fewest configurations per chain the Gamma method accepts (the window search needs W >= 2).
MIN_CONFIGS = 4

# Relative size below which the fluctuations count as round-off of a constant series.
_CONSTANT_RTOL = 1e-13


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate ``value +- error`` with its integrated autocorrelation time.

    ``tau_int`` uses the convention ``tau_int = 1/2 + sum_{t=1}^{W} rho(t)`` (0.5 for
    uncorrelated data), ``window`` is the summation window ``W`` chosen automatically and
    ``n_samples`` the total number of measurements (all chains).
    """

    value: float
    error: float
    tau_int: float
    tau_int_error: float
    window: int
    n_samples: int
    note: str = ""

    def to_dict(self) -> dict[str, float | str]:
        """``{"value", "error", "tau_int", "tau_int_error"}`` as plain floats (JSON-ready), plus
        ``"warning"`` when the estimate is flagged unreliable (see ``note``)."""
        out: dict[str, float | str] = {
            "value": float(self.value),
            "error": float(self.error),
            "tau_int": float(self.tau_int),
            "tau_int_error": float(self.tau_int_error),
        }
        if self.note:
            out["warning"] = self.note
        return out

    def __str__(self) -> str:
        return format_value_error(self.value, self.error)


def format_value_error(value: float, error: float, digits: int = 2) -> str:
    """Format as ``1.234(56)``: the error rounded to ``digits`` significant digits."""
    if not math.isfinite(value):
        return f"{value}"
    if not math.isfinite(error) or error < 0:
        return f"{value:.6g}(?)"
    if error == 0:
        return f"{value:.12g}(0)"
    decimals = digits - 1 - math.floor(math.log10(error))
    if round(error * 10.0**decimals) >= 10**digits:  # e.g. 0.0996 -> "(10)" not "(100)"
        decimals -= 1
    magnitude = max(abs(value), error)
    if decimals > 12 or magnitude >= 1e9:
        exponent = math.floor(math.log10(magnitude))
        body = format_value_error(value / 10.0**exponent, error / 10.0**exponent, digits)
        return f"{body}e{exponent:+d}"
    if decimals <= 0:
        return f"{round(value, decimals):.0f}({round(error, decimals):.0f})"
    err_digits = int(round(error * 10.0**decimals))
    return f"{value:.{decimals}f}({err_digits})"


# ----------------------------------------------------------------------------- input checks


def _as_history(data: object, name: str = "data", min_configs: int = MIN_CONFIGS) -> np.ndarray:
    """Validate one observable history and return it as float64 ``(n_configs, n_chains)``."""
    try:
        arr = np.asarray(data)
    except Exception as exc:  # ragged lists etc.
        raise LftmlError(f"{name}: cannot convert to an array ({exc}); pass a numeric array") from None
    if np.iscomplexobj(arr):
        raise LftmlError(f"{name} is complex; analyse the real and imaginary parts separately")
    try:
        arr = arr.astype(np.float64, copy=False)
    except (TypeError, ValueError):
        raise LftmlError(f"{name} has dtype {arr.dtype}; pass a real numeric array") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    elif arr.ndim != 2:
        raise LftmlError(
            f"{name} has shape {arr.shape}; expected (n_configs,) or (n_configs, n_chains) "
            "with Monte Carlo time first"
        )
    if arr.shape[1] == 0:
        raise LftmlError(f"{name} has shape {arr.shape}: no chains")
    if arr.shape[0] < min_configs:
        raise LftmlError(
            f"{name} has {arr.shape[0]} configurations per chain; at least {min_configs} are "
            "needed (axis 0 must be Monte Carlo time)"
        )
    if not np.all(np.isfinite(arr)):
        raise LftmlError(f"{name} contains NaN or inf; remove or repair those measurements")
    return arr


def _as_histories(observables: Sequence[object], min_configs: int = MIN_CONFIGS) -> list[np.ndarray]:
    if len(observables) == 0:
        raise LftmlError("no observables given; pass at least one history array")
    arrays = [_as_history(o, f"observable {i}", min_configs) for i, o in enumerate(observables)]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise LftmlError(
            f"observables have different shapes {sorted(shapes)}; all must be measured on the "
            "same configurations, shape (n_configs,) or (n_configs, n_chains)"
        )
    return arrays


def _check_S(S: float) -> float:
    S = float(S)
    if not (math.isfinite(S) and S > 0):
        raise LftmlError(f"S={S} is invalid; the window parameter S must be positive (Wolff: 1 to 2)")
    return S


def _eval(func: Callable[..., float], args: Sequence[float], what: str) -> float:
    try:
        out = np.asarray(func(*args), dtype=np.float64)
    except LftmlError:
        raise
    except Exception as exc:
        raise LftmlError(f"func failed at the {what} ({type(exc).__name__}: {exc})") from None
    if out.size != 1:
        raise LftmlError(f"func must return one real number, got shape {out.shape}")
    value = float(out.reshape(()))
    if not math.isfinite(value):
        raise LftmlError(f"func returned {value} at the {what}; check the derived quantity")
    return value


# ------------------------------------------------------------------------ autocorrelation


def _autocovariance(deltas: np.ndarray, max_lag: int) -> np.ndarray:
    """``Gamma(t)``, t = 0..max_lag, of fluctuations ``(N, R)`` (Wolff eq. 31), via FFT.

    Lag-t products are summed within each chain and divided by the number of pairs
    ``R (N - t)``. Zero padding to ``>= N + max_lag`` removes circular wrap-around.
    """
    n, n_chains = deltas.shape
    size = scipy.fft.next_fast_len(n + max_lag + 1, real=True)
    spectrum = scipy.fft.rfft(deltas, n=size, axis=0)
    power = (spectrum.real**2 + spectrum.imag**2).sum(axis=1)
    sums = scipy.fft.irfft(power, n=size)[: max_lag + 1]
    return sums / (n_chains * (n - np.arange(max_lag + 1)))


def autocorrelation_function(data: object, max_lag: int | None = None) -> np.ndarray:
    """Normalised autocorrelation ``rho(t) = Gamma(t)/Gamma(0)``, ``t = 0..max_lag``.

    Same conventions as :func:`gamma_method` (global mean over chains, pairs counted within
    chains), without the bias correction. ``max_lag`` defaults to ``n_configs // 2`` and may
    be at most ``n_configs - 1``. FFT-based, O(N log N). Constant data give ``rho = (1, 0, ...)``.
    """
    arr = _as_history(data, "data", min_configs=2)
    n = arr.shape[0]
    if max_lag is None:
        max_lag = n // 2
    if isinstance(max_lag, bool) or not isinstance(max_lag, (int, np.integer)) or not 0 <= max_lag < n:
        raise LftmlError(f"max_lag={max_lag!r} is invalid; use an integer in [0, {n - 1}]")
    max_lag = int(max_lag)
    mean = arr.mean()
    gamma = _autocovariance(arr - mean, max_lag)
    scale = float(np.max(np.abs(arr)))
    if gamma[0] <= 0 or math.sqrt(gamma[0]) <= _CONSTANT_RTOL * scale:
        rho = np.zeros(max_lag + 1)
        rho[0] = 1.0
        return rho
    return gamma / gamma[0]


# ---------------------------------------------------------------------------- Gamma method


def _gamma_analysis(deltas: np.ndarray, value: float, S: float, scale: float, name: str | None = None) -> Estimate:
    """Wolff's Gamma method on fluctuations ``deltas`` ``(N, R)`` about the global mean.

    ``name`` labels the observable in warnings and in ``Estimate.note``.

    Anticorrelated data (``rho(1) < 0``, e.g. over-relaxation or ``exp(-dH)`` in a broken phase):
    Wolff's criterion then stops at ``W = 1``, where ``1/2 + rho(1)`` can be <= 0 although the true
    ``tau_int`` is positive (the alternating tail ``rho(2) + ...`` is cut off). There the window is
    completed to an even lag and extended by pairs ``rho(W+1) + rho(W+2)`` while a pair is negative:
    for alternating ``rho`` each even partial sum bounds the limit from above (conservative). If
    ``C_F`` is still not positive, the naive error (``tau_int = 1/2``) is reported and flagged.
    An error of 0 is returned only for a constant series.
    """
    n, n_chains = deltas.shape
    n_total = n * n_chains
    w_max = n // 2
    label = f" of {name}" if name else ""
    gamma = _autocovariance(deltas, w_max)
    if gamma[0] <= 0 or math.sqrt(gamma[0]) <= _CONSTANT_RTOL * scale:
        return Estimate(float(value), 0.0, 0.5, 0.0, 0, n_total)

    # Window (Wolff eqs. 50-52, UWerr): first W >= 1 with g(W) < 0, using the uncorrected rho.
    rho = gamma / gamma[0]
    windows = np.arange(1, w_max + 1)
    tau_of_w = 0.5 + np.cumsum(rho[1:])  # tau_int(W), W = 1..w_max
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tau_exp = np.where(
            tau_of_w > 0.5,
            S / np.log((2.0 * tau_of_w + 1.0) / (2.0 * tau_of_w - 1.0)),
            np.finfo(np.float64).tiny,
        )
        g = np.exp(-windows / tau_exp) - tau_exp / np.sqrt(windows * n_total)
    negative = np.flatnonzero(g < 0)
    note = ""
    if negative.size:
        window = int(windows[negative[0]])
    else:
        window = w_max
        note = "chains too short for their autocorrelation time (no window met Wolff's criterion); error unreliable"
        logger.warning(
            "Gamma method%s: no window W <= %d satisfied Wolff's criterion; using W = %d. "
            "The chains are too short for their autocorrelation time; errors are unreliable.",
            label,
            w_max,
            w_max,
        )
    if tau_of_w[window - 1] < 0.5 and w_max >= 2:  # anticorrelated: sum rho in (odd, even) pairs
        window = min(window + window % 2, w_max - w_max % 2)
        noise = 2.0 * math.sqrt(2.0 / n_total)  # ~2 sigma of a pair of estimated rho's
        while window + 2 <= w_max and rho[window + 1] + rho[window + 2] < -noise and tau_of_w[window + 1] > 0:
            window += 2

    # Bias correction (Wolff eq. 49) and final estimates.
    c_f = gamma[0] + 2.0 * gamma[1 : window + 1].sum()
    gamma = gamma + c_f / n_total
    c_f = gamma[0] + 2.0 * gamma[1 : window + 1].sum()
    # C_F / Gamma(0) = 2 tau_int has a statistical error ~ sqrt(2 (2W + 1) / N): an anticorrelated
    # sum that is not positive, or not resolved from 0, must not turn into a tiny (or zero) error
    resolution = math.sqrt(2.0 * (2 * window + 1) / n_total) * gamma[0]
    if not c_f > 0 or (c_f < resolution and rho[1] < 0):
        note = "anticorrelated and tau_int not resolved from 0 (too few data); naive error (tau_int = 0.5) reported"
        logger.warning("Gamma method%s: the autocorrelation sum is not resolved from zero; reporting the naive "
                       "error (tau_int = 0.5), which is unreliable here", label)
        c_f, window = gamma[0], 0
    tau_int = c_f / (2.0 * gamma[0])
    tau_int_error = 2.0 * tau_int * math.sqrt(abs(window + 0.5 - tau_int) / n_total)
    if not note and tau_int + 2.0 * tau_int_error < 0.5:
        note = f"anticorrelated data (tau_int = {tau_int:.3g} < 0.5): the error is below the naive one"
    error = math.sqrt(c_f / n_total)
    return Estimate(float(value), error, float(tau_int), float(tau_int_error), window, n_total, note)


def gamma_method(data: object, S: float = 2.0, *, name: str | None = None) -> Estimate:
    """Mean of a primary observable with its error by Wolff's Gamma method.

    ``data``: ``(n_configs,)`` or ``(n_configs, n_chains)`` (replicas of equal length).
    Fluctuations are taken about the global mean of all chains; ``Gamma(t)`` sums lag-t
    products within each chain over ``sum_r (N_r - t)`` pairs; the window uses Wolff's
    criterion with parameter ``S``; ``Gamma`` is bias-corrected (Wolff eq. 49).
    Returns ``Estimate`` with ``tau_int = 1/2 + sum_{t=1}^W rho(t)``,
    ``error = sqrt(2 tau_int Gamma(0) / N)`` and the Madras-Sokal ``tau_int_error``.
    Constant data give error 0 and ``tau_int = 0.5``; ``name`` labels the observable in warnings.
    """
    S = _check_S(S)
    arr = _as_history(data, name or "data")
    mean = float(arr.flat[0]) if np.ptp(arr) == 0 else float(arr.mean())
    return _gamma_analysis(arr - mean, mean, S, float(np.max(np.abs(arr))), name)


def _numerical_gradient(
    func: Callable[..., float], means: np.ndarray, steps: np.ndarray
) -> np.ndarray:
    """Central differences ``(f(a + h e_i) - f(a - h e_i)) / 2h``; zero where ``h == 0``."""
    grad = np.zeros(means.size)
    for i, h in enumerate(steps):
        if h == 0:
            continue
        up, down = means.copy(), means.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (_eval(func, up, "shifted means") - _eval(func, down, "shifted means")) / (2 * h)
    return grad


def gamma_method_derived(
    func: Callable[..., float],
    *observables: object,
    S: float = 2.0,
    gradient: Callable[..., Sequence[float]] | None = None,
    name: str | None = None,
) -> Estimate:
    """Derived quantity ``f(<A>, <B>, ...)`` with its Gamma-method error (Wolff sect. 3.1).

    ``func(mean_A, mean_B, ...)`` maps the means to one number, e.g. the susceptibility
    ``lambda m, m2: V * (m2 - m**2)`` or the Binder cumulant
    ``lambda m2, m4: 1 - m4 / (3 * m2**2)``. Each observable has the same shape as for
    :func:`gamma_method`. The fluctuations are projected onto ``grad f`` at the means,
    ``delta_f = sum_a f_a (a - <a>)``, and the projected series is analysed like a primary
    observable. ``gradient(*means)`` may supply ``grad f`` exactly; otherwise central finite
    differences with step ``h_a = sigma_a / 2`` (``sigma_a`` the naive error of ``<a>``, as in
    Wolff's UWerr) are used. ``value = f(means)``: its O(1/N) bias is not corrected.
    """
    S = _check_S(S)
    arrays = _as_histories(observables)
    means = np.array([a.mean() for a in arrays])
    value = _eval(func, means, "means")
    if gradient is not None:
        try:
            grad = np.asarray(gradient(*means), dtype=np.float64).reshape(-1)
        except Exception as exc:
            raise LftmlError(f"gradient failed at the means ({type(exc).__name__}: {exc})") from None
        if grad.size != len(arrays) or not np.all(np.isfinite(grad)):
            raise LftmlError(
                f"gradient must return {len(arrays)} finite numbers (one per observable), got {grad}"
            )
    else:
        n_total = arrays[0].size
        naive = np.array([a.std() for a in arrays]) / math.sqrt(n_total)
        floor = 1e-8 * np.maximum(np.abs(means), np.finfo(np.float64).tiny)
        steps = np.where(naive > 0, np.maximum(naive / 2.0, floor), 0.0)
        grad = _numerical_gradient(func, means, steps)
    deltas = np.zeros_like(arrays[0])
    scale = 0.0
    for g, a, m in zip(grad, arrays, means):
        if g != 0:
            deltas += g * (a - m)
            scale += abs(g) * float(np.max(np.abs(a)))
    return _gamma_analysis(deltas, value, S, scale, name)


def integrated_autocorrelation_time(data: object, S: float = 2.0) -> tuple[float, float]:
    """``(tau_int, tau_int_error)`` of a primary observable from :func:`gamma_method`."""
    est = gamma_method(data, S=S)
    return est.tau_int, est.tau_int_error


# ------------------------------------------------------------------- jackknife and bootstrap


def _bin_means(arrays: list[np.ndarray], bin_size: int) -> tuple[np.ndarray, int]:
    """Means over time slabs of ``bin_size`` configurations across ALL chains.

    Returns ``(n_obs, n_bins)`` and ``n_bins``; trailing ``n_configs % bin_size``
    configurations are left out of the bins.
    """
    n, n_chains = arrays[0].shape
    n_bins = n // bin_size
    used = n_bins * bin_size
    stacked = np.stack([a[:used] for a in arrays])  # (n_obs, used, R)
    return stacked.reshape(len(arrays), n_bins, bin_size * n_chains).mean(axis=2), n_bins


def jackknife(func: Callable[..., float], *observables: object, n_bins: int = 20) -> tuple[float, float]:
    """Binned jackknife ``(value, error)`` of ``func(<A>, <B>, ...)``.

    Monte Carlo time is cut into ``n_bins`` equal slabs (trailing ``n_configs % n_bins``
    configurations are dropped from the bins); a slab spans all chains, and the same slab is
    removed from every chain and every observable. ``error^2 = (n-1)/n sum_b (f_b - mean f)^2``.
    ``value = func`` of the means of all data (not bias-corrected). Bins must be longer than
    the autocorrelation time for the error to be reliable.
    """
    arrays = _as_histories(observables, min_configs=2)
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or not 2 <= n_bins <= arrays[0].shape[0]:
        raise LftmlError(f"n_bins={n_bins!r} is invalid; use an integer in [2, n_configs={arrays[0].shape[0]}]")
    n_bins = int(n_bins)
    means = np.array([a.mean() for a in arrays])
    value = _eval(func, means, "means")
    binned, _ = _bin_means(arrays, arrays[0].shape[0] // n_bins)
    binned = binned[:, :n_bins]
    total = binned.sum(axis=1, keepdims=True)
    leave_one_out = (total - binned) / (n_bins - 1)  # (n_obs, n_bins)
    samples = np.array([_eval(func, leave_one_out[:, b], "jackknife means") for b in range(n_bins)])
    error = math.sqrt((n_bins - 1) / n_bins * float(np.sum((samples - samples.mean()) ** 2)))
    return value, error


def bootstrap(
    func: Callable[..., float],
    *observables: object,
    n_boot: int = 1000,
    rng: np.random.Generator,
    bin_size: int = 1,
) -> tuple[float, float]:
    """Binned (block) bootstrap ``(value, error)`` of ``func(<A>, <B>, ...)``.

    Monte Carlo time is cut into slabs of ``bin_size`` configurations spanning all chains
    (trailing remainder dropped); each bootstrap sample draws ``n_bins`` slabs with
    replacement (the same draw for every observable) and evaluates ``func`` on their means.
    ``error`` is the standard deviation (ddof=1) of the ``n_boot`` samples; ``value = func``
    of the means of all data. ``rng`` is required: no global random state is used.
    """
    if not isinstance(rng, np.random.Generator):
        raise LftmlError("rng must be a numpy.random.Generator, e.g. np.random.default_rng(seed)")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise LftmlError(f"n_boot={n_boot!r} is invalid; use an integer >= 2 (typically 1000)")
    arrays = _as_histories(observables, min_configs=2)
    n = arrays[0].shape[0]
    if isinstance(bin_size, bool) or not isinstance(bin_size, (int, np.integer)) or not 1 <= bin_size <= n // 2:
        raise LftmlError(f"bin_size={bin_size!r} is invalid; use an integer in [1, n_configs // 2 = {n // 2}]")
    means = np.array([a.mean() for a in arrays])
    value = _eval(func, means, "means")
    binned, n_bins = _bin_means(arrays, int(bin_size))
    samples = np.empty(int(n_boot))
    chunk = max(1, 4_000_000 // n_bins)
    for start in range(0, int(n_boot), chunk):
        stop = min(start + chunk, int(n_boot))
        idx = rng.integers(0, n_bins, size=(stop - start, n_bins))
        boot_means = binned[:, idx].mean(axis=2)  # (n_obs, stop - start)
        for k in range(stop - start):
            samples[start + k] = _eval(func, boot_means[:, k], "bootstrap means")
    return value, float(np.std(samples, ddof=1))
