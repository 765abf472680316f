"""Complex Langevin dynamics: Euler and Heun schemes, adaptive step size, runaway detection.

Process (Parisi 1983; Klauder): complexify the real variables, ``x -> z = x + i y``, and integrate

    dz/dt = K(z) + eta(t),   K = -dS/dz (holomorphic drift),   <eta(t) eta(t')> = 2 delta(t - t'),

with *real* Gaussian noise. Discretised with step ``eps_n`` (``eta_n`` standard normal times sqrt(2)):

* ``euler``:  ``z_{n+1} = z_n + eps_n K(z_n) + sqrt(eps_n) eta_n`` (weak order 1);
* ``heun``:   predictor ``z' = z_n + eps_n K(z_n) + sqrt(eps_n) eta_n``, corrector
  ``z_{n+1} = z_n + eps_n (K(z_n) + K(z'))/2 + sqrt(eps_n) eta_n`` (same noise; the stochastic
  second-order Runge-Kutta scheme used by Aarts & James; for additive noise its stationary bias
  is O(eps^2), e.g. ``<z^2> = (1/sigma)(1 - eps^2 sigma^2/4 + ...)`` for the Gaussian model).

Adaptive step size (Aarts, James, Seiler, Stamatescu, PLB 687 (2010) 154): per chain
``eps_n = eps_bar <K_max> / K_max(n)`` with ``K_max(n) = max_sites |K(z_n)|``; ``<K_max>`` is the
running mean of ``K_max`` during thermalisation (then frozen, stored in the metadata) unless given;
for robustness each step contributes the median over chains, clipped at ten times the current
estimate: a plain mean over a heavy-tailed ``K_max`` (e.g. the quartic model at sigma = -1+4i) is
dominated by the excursions it is meant to tame and was seen to let the process run away. ``eps_n`` is capped at ``max_step_factor * eps_bar`` (default 1: the adaptive step only
ever *shortens* steps). A larger cap lets steps grow where the drift is small; that was measured to
bias the quartic model by several percent at eps_bar = 0.01 (state-dependent steps carry an O(eps_max)
bias), so it is opt-in. With the Heun scheme the corrector also evaluates ``K(z')`` at the predictor
point, which can be much larger than ``K(z_n)`` on the way to a runaway; the step is then shortened
further (same noise) until ``eps K_max(z') <= 2 max(eps_bar <K_max>, eps K_max(z_n), sqrt(eps_bar))``.
This makes the step depend on the noise of that step; the effect vanishes with eps_bar.

Averages are Langevin-time weighted: ``<O> = sum_n eps_n O(z_n) / sum_n eps_n`` (left-point rule).
The run is cut into *bins of equal Langevin time* ``bin_time`` per chain (a bin closes at the first
step that reaches it, so its length exceeds ``bin_time`` by less than one step). Each bin stores the
time-weighted mean of every observable and its actual length; the time-weighted total mean is the
weighted mean of the bins, and errors come from the Gamma method (:func:`lftml.stats.gamma_method`,
chains as replicas) applied to the bin means, real and imaginary parts separately. With fixed steps
the bins have identical lengths; with adaptive steps their lengths differ by less than one step,
which is negligible for ``bin_time >> eps``.

Runaways: a non-finite field or drift, ``K_max > runaway_drift`` with a fixed step, or an adaptive
step below ``1e-12 eps_bar`` raises :class:`ComplexLangevinRunaway` (an :class:`LftmlError`) naming
the chain, the Langevin time and the cure (``--adaptive`` or a smaller ``--dt``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.samplers.rng import torch_generator

__all__ = [
    "ComplexLangevin",
    "ComplexLangevinRunaway",
    "CLRun",
    "run_complex_langevin",
    "DRIFT_EDGES",
    "IMAG_EDGES",
    "default_cutoffs",
]

logger = logging.getLogger(__name__)

#: log10-spaced edges for the drift-magnitude histogram (K_max from 1e-6 to 1e14, 8 bins per decade)
DRIFT_EDGES = np.logspace(-6, 14, 161)
#: sinh-spaced (fine near 0, logarithmic far out) edges for the histogram of Im z, |Im z| <= 1e4
_IMAG_SCALE = 0.01
_IMAG_A = math.asinh(1e4 / _IMAG_SCALE)
IMAG_EDGES = np.sinh(np.linspace(-_IMAG_A, _IMAG_A, 401)) * _IMAG_SCALE


def _drift_bin(k: torch.Tensor) -> torch.Tensor:
    """Histogram index of K_max for :data:`DRIFT_EDGES` (0: underflow, len(edges): overflow)."""
    x = torch.nan_to_num((torch.log10(k) + 6.0) * 8.0, nan=1e9, posinf=1e9, neginf=-1.0)
    return (x.clamp(-1.0, 160.5) + 1.0).to(torch.long)  # truncation == floor here (x + 1 >= 0); torch.floor is slow on CPU


def _imag_bin(y: torch.Tensor) -> torch.Tensor:
    """Histogram index of Im z for :data:`IMAG_EDGES` (0: underflow, len(edges): overflow)."""
    x = (torch.asinh(y / _IMAG_SCALE) + _IMAG_A) * (400.0 / (2 * _IMAG_A))
    x = torch.nan_to_num(x, nan=1e9, posinf=1e9, neginf=-1.0)
    return (x.clamp(-1.0, 400.5) + 1.0).to(torch.long)


def default_cutoffs() -> np.ndarray:
    """Cut-offs Y on ``max_sites |Im z|`` for the boundary terms B(Y): 0.05 ... 100, logarithmic."""
    return np.geomspace(0.05, 100.0, 25)


class ComplexLangevinRunaway(LftmlError):
    """The complex Langevin process diverged (runaway trajectory)."""


@dataclass(frozen=True)
class ComplexLangevin:
    """Settings of a complex Langevin run (immutable).

    ``step_size``: eps (fixed) or eps_bar (adaptive); ``scheme``: ``"euler"`` or ``"heun"``;
    ``thermalisation_time``: Langevin time discarded per chain; ``bin_time``: Langevin time per
    stored bin; ``n_bins``: bins per chain (total measured time ``n_bins * bin_time``).
    """

    step_size: float = 0.01
    scheme: str = "euler"
    adaptive: bool = False
    max_step_factor: float = 1.0
    drift_reference: float | None = None
    thermalisation_time: float = 5.0
    bin_time: float = 0.5
    n_bins: int = 100
    runaway_drift: float = 1e10
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise LftmlError(f"step size must be positive, got {self.step_size}; e.g. --dt 0.01")
        if self.scheme not in ("euler", "heun"):
            raise LftmlError(f"unknown scheme {self.scheme!r}; choose euler or heun")
        if self.bin_time < self.step_size:
            raise LftmlError(f"bin_time {self.bin_time} is shorter than the step size {self.step_size}")
        if self.n_bins < 1:
            raise LftmlError(f"n_bins must be >= 1, got {self.n_bins}")
        if self.thermalisation_time < 0:
            raise LftmlError("thermalisation time must be >= 0")
        if self.max_step_factor < 1:
            raise LftmlError("max_step_factor must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CLRun:
    """Result of :func:`run_complex_langevin` (all arrays numpy).

    ``bins[name]``: time-weighted bin means ``(n_bins, n_chains)`` complex; ``criterion[name]``: the same
    for ``L_c O``; ``boundary[name]``: ``(n_bins, n_chains, n_Y)`` bin means of ``L_c O * Theta(Y - Y(z))``
    with ``Y(z) = max_sites |Im z|``; ``fraction_inside``: ``(n_bins, n_chains, n_Y)`` fraction of the bin's
    Langevin time with ``Y(z) <= Y``; ``weights``: bin lengths in Langevin time ``(n_bins, n_chains)``;
    ``configs``: the field at the end of each bin ``(n_bins, n_chains, *field_shape)``;
    ``drift_hist`` / ``imag_hist``: Langevin-time-weighted histograms (summed over chains; edges
    :data:`DRIFT_EDGES` for ``K_max`` and :data:`IMAG_EDGES` for Im z of every site, plus underflow
    and overflow bins at both ends); ``step_stats``: mean step size per bin, ``k_max`` mean per bin.
    """

    model: dict[str, Any]
    settings: dict[str, Any]
    seed: int
    n_chains: int
    bins: dict[str, np.ndarray]
    criterion: dict[str, np.ndarray]
    boundary: dict[str, np.ndarray]
    cutoffs: np.ndarray
    fraction_inside: np.ndarray
    weights: np.ndarray
    configs: np.ndarray | None
    drift_hist: np.ndarray
    imag_hist: np.ndarray
    mean_step: np.ndarray
    k_max: np.ndarray
    imag_max: np.ndarray
    drift_reference: float | None
    n_steps: int
    wall_time_s: float
    exact: dict[str, complex | None] = field(default_factory=dict)


def _maybe_wrap(model: Any, z: torch.Tensor) -> torch.Tensor:
    wrap = getattr(model, "wrap", None)
    return wrap(z) if wrap is not None else z


def run_complex_langevin(
    model: Any,
    settings: ComplexLangevin,
    n_chains: int,
    seed: int,
    *,
    generator: torch.Generator | None = None,
    initial: torch.Tensor | None = None,
    cutoffs: np.ndarray | None = None,
    save_configs: bool = True,
    progress: bool = False,
) -> CLRun:
    """Run ``n_chains`` complex Langevin chains of ``model`` (see module docstring for the conventions).

    ``generator``: the noise stream (default: ``torch_generator(seed, "noise")``; the seed is
    recorded in the result either way). Raises :class:`ComplexLangevinRunaway` on divergence.
    """
    if n_chains < 1:
        raise LftmlError(f"need at least one chain, got {n_chains}")
    if generator is None:
        generator = torch_generator(seed, "noise")
    s = settings
    z = (model.initial(n_chains) if initial is None else initial.clone()).to(torch.complex128)
    field_shape = tuple(z.shape[1:])
    n_sites = int(np.prod(field_shape))
    cut = torch.as_tensor(default_cutoffs() if cutoffs is None else np.asarray(cutoffs, float), dtype=torch.float64)
    n_bins = s.n_bins
    eps_bar = float(s.step_size)
    eps_cap = s.max_step_factor * eps_bar

    # outputs
    obs_names: list[str] | None = None
    crit_names: list[str] | None = None
    out_bins: dict[str, torch.Tensor] = {}
    out_crit: dict[str, torch.Tensor] = {}
    out_bound: dict[str, torch.Tensor] = {}
    acc: dict[str, torch.Tensor] = {}
    acc_crit: dict[str, torch.Tensor] = {}
    acc_bound: dict[str, torch.Tensor] = {}
    weights = torch.zeros(n_bins, n_chains, dtype=torch.float64)
    mean_step = torch.zeros(n_bins, n_chains, dtype=torch.float64)
    kmax_bins = torch.zeros(n_bins, n_chains, dtype=torch.float64)
    imag_max = torch.zeros(n_bins, n_chains, dtype=torch.float64)
    configs = torch.zeros(n_bins, n_chains, *field_shape, dtype=torch.complex128) if save_configs else None
    drift_hist = torch.zeros(len(DRIFT_EDGES) + 1, dtype=torch.float64)
    imag_hist = torch.zeros(len(IMAG_EDGES) + 1, dtype=torch.float64)
    acc_t = torch.zeros(n_chains, dtype=torch.float64)
    acc_inside = torch.zeros(n_chains, len(cut), dtype=torch.float64)
    out_inside = torch.zeros(n_bins, n_chains, len(cut), dtype=torch.float64)
    acc_steps = torch.zeros(n_chains, dtype=torch.float64)
    acc_kmax = torch.zeros(n_chains, dtype=torch.float64)
    acc_imax = torch.zeros(n_chains, dtype=torch.float64)
    bins_done = torch.zeros(n_chains, dtype=torch.long)
    t_chain = torch.zeros(n_chains, dtype=torch.float64)
    chain_index = torch.arange(n_chains)

    k_ref = s.drift_reference
    k_sum, k_count = 0.0, 0
    therm = float(s.thermalisation_time)
    nominal_steps = (therm + n_bins * s.bin_time) / eps_bar
    max_steps = s.max_steps if s.max_steps is not None else int(20 * nominal_steps + 1000)
    sqrt2 = math.sqrt(2.0)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_bins, desc=f"complex Langevin ({getattr(model, 'name', 'model')})", unit="bin")

    start = time.perf_counter()
    step = 0
    drift = model.drift(z)
    while True:
        # ---- step sizes from the drift at z_n
        kabs = drift.abs().reshape(n_chains, -1)
        kmax = kabs.amax(1)
        if not bool(torch.isfinite(kmax).all()) or not bool(torch.isfinite(z.real).all() & torch.isfinite(z.imag).all()):
            _runaway(model, s, z, kmax, t_chain, step, "the field or drift became infinite/NaN")
        if s.adaptive:
            thermalising = s.drift_reference is None and (bool((t_chain < therm).any()) or not k_ref)
            if thermalising:
                # robust running estimate: per-step median over chains, clipped at 10x the current
                # estimate (a plain mean is dominated by the heavy tails of a runaway-prone process)
                contribution = float(kmax.median())
                if k_count >= 10 and k_ref:
                    contribution = min(contribution, 10.0 * k_ref)
                k_sum += contribution
                k_count += 1
                k_ref = k_sum / k_count
            ratio = (k_ref + 1e-300) / (kmax + 1e-300)
            eps = torch.clamp(eps_bar * ratio, max=eps_cap)
            if bool((eps < 1e-12 * eps_bar).any()):
                _runaway(model, s, z, kmax, t_chain, step, "the adaptive step size fell below 1e-12 eps_bar")
        else:
            if bool((kmax > s.runaway_drift).any()):
                _runaway(model, s, z, kmax, t_chain, step, f"the drift exceeded {s.runaway_drift:g}")
            eps = torch.full((n_chains,), eps_bar, dtype=torch.float64)

        # ---- the update
        eta = torch.randn(z.shape, generator=generator, dtype=torch.float64) * sqrt2
        se = eps.sqrt().reshape(-1, *([1] * len(field_shape)))
        ee = eps.reshape(-1, *([1] * len(field_shape)))
        noise = se * eta
        if s.scheme == "euler":
            z_new = z + ee * drift + noise
        else:
            zp = _maybe_wrap(model, z + ee * drift + noise)
            kp = model.drift(zp)
            if s.adaptive:
                # the corrector uses K(z'), which can be far larger than K(z) near a runaway: shorten the
                # step (same noise) until the corrector displacement eps K_max(z') stays below
                # 2 max(eps_bar <K_max>, eps K_max(z), sqrt(eps_bar)) (the last: the size of a noise kick)
                for _ in range(8):
                    kpmax = kp.abs().reshape(n_chains, -1).amax(1)
                    limit = 2.0 * torch.clamp(eps * kmax, min=max(eps_bar * (k_ref or 0.0), math.sqrt(eps_bar)))
                    disp = eps * kpmax
                    bad = ~(disp <= limit)
                    if not bool(bad.any()):
                        break
                    factor = torch.where(bad, torch.clamp(limit / disp, min=1e-3, max=0.5), torch.ones_like(eps))
                    factor = torch.nan_to_num(factor, nan=1e-3)
                    eps = eps * factor
                    se = eps.sqrt().reshape(-1, *([1] * len(field_shape)))
                    ee = eps.reshape(-1, *([1] * len(field_shape)))
                    noise = se * eta
                    zp = _maybe_wrap(model, z + ee * drift + noise)
                    kp = model.drift(zp)
            z_new = z + ee * 0.5 * (drift + kp) + noise
            if s.adaptive and bool((eps < 1e-12 * eps_bar).any()):
                _runaway(model, s, z, kmax, t_chain, step, "the adaptive step size fell below 1e-12 eps_bar")

        measuring = (t_chain >= therm * (1 - 1e-12)) & (bins_done < n_bins)
        if bool(measuring.any()):
            w = torch.where(measuring, eps, torch.zeros_like(eps))
            obs = model.observables(z)
            crit = model.criterion(z, drift)
            ymax = z.imag.abs().reshape(n_chains, -1).amax(1)
            if obs_names is None:
                obs_names, crit_names = list(obs), list(crit)
                for k in obs_names:
                    out_bins[k] = torch.zeros(n_bins, n_chains, dtype=torch.complex128)
                    acc[k] = torch.zeros(n_chains, dtype=torch.complex128)
                for k in crit_names:
                    out_crit[k] = torch.zeros(n_bins, n_chains, dtype=torch.complex128)
                    out_bound[k] = torch.zeros(n_bins, n_chains, len(cut), dtype=torch.complex128)
                    acc_crit[k] = torch.zeros(n_chains, dtype=torch.complex128)
                    acc_bound[k] = torch.zeros(n_chains, len(cut), dtype=torch.complex128)
            inside = (ymax[:, None] <= cut[None, :]).to(torch.float64)
            for k in obs_names:
                acc[k] += w * obs[k]
            for k in crit_names:
                wl = w * crit[k]
                acc_crit[k] += wl
                acc_bound[k] += wl[:, None] * inside
            acc_t += w
            acc_inside += w[:, None] * inside
            acc_steps += measuring.to(torch.float64)
            acc_kmax += w * kmax
            acc_imax = torch.maximum(acc_imax, torch.where(measuring, ymax, torch.zeros_like(ymax)))
            drift_hist.index_add_(0, _drift_bin(kmax), w)
            im = z.imag.reshape(n_chains, -1)
            imag_hist.index_add_(
                0, _imag_bin(im.reshape(-1)), (w[:, None] / n_sites).expand_as(im).reshape(-1)
            )

        # ---- advance
        z = _maybe_wrap(model, z_new)
        t_chain += eps
        step += 1
        drift = model.drift(z)

        # ---- close bins
        if obs_names is not None:
            done = (acc_t >= s.bin_time * (1 - 1e-9)) & (bins_done < n_bins)
            if bool(done.any()):
                idx = chain_index[done]
                flat = bins_done.index_select(0, idx) * n_chains + idx
                tt = acc_t.index_select(0, idx)

                def put(out: torch.Tensor, values: torch.Tensor) -> None:
                    # index_copy_ on a flattened view: multi-dimensional advanced-index assignment is very slow on CPU
                    out.view(n_bins * n_chains, -1).index_copy_(0, flat, values.reshape(len(idx), -1).to(out.dtype))

                for k in obs_names:
                    put(out_bins[k], acc[k].index_select(0, idx) / tt)
                    acc[k].index_fill_(0, idx, 0)
                for k in crit_names:
                    put(out_crit[k], acc_crit[k].index_select(0, idx) / tt)
                    put(out_bound[k], acc_bound[k].index_select(0, idx) / tt[:, None])
                    acc_crit[k].index_fill_(0, idx, 0)
                    acc_bound[k].index_fill_(0, idx, 0)
                put(weights, tt)
                put(out_inside, acc_inside.index_select(0, idx) / tt[:, None])
                acc_inside.index_fill_(0, idx, 0)
                put(mean_step, tt / acc_steps.index_select(0, idx))
                put(kmax_bins, acc_kmax.index_select(0, idx) / tt)
                put(imag_max, acc_imax.index_select(0, idx))
                if configs is not None:
                    put(configs, z.index_select(0, idx))
                for a in (acc_t, acc_steps, acc_kmax, acc_imax):
                    a.index_fill_(0, idx, 0)
                before = int(bins_done.min())
                bins_done[idx] += 1
                if bar is not None:
                    bar.update(int(bins_done.min()) - before)
                if bool((bins_done >= n_bins).all()):
                    break
        if step >= max_steps:
            if bar is not None:
                bar.close()
            raise ComplexLangevinRunaway(
                f"complex Langevin needed more than {max_steps} steps ({int(bins_done.min())}/{n_bins} bins done): "
                f"the adaptive step size shrank persistently (mean K_max {float(kmax.mean()):.3g} vs <K_max> "
                f"{k_ref if k_ref is not None else float('nan'):.3g}); the process is running away or drifting to "
                "large |Im z|: lower --dt or check the model"
            )
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - start
    logger.info("complex Langevin: %d steps in %.1f s", step, wall)
    exact = {}
    try:
        exact = model.exact()
    except LftmlError:
        exact = {}
    return CLRun(
        model=model.to_dict(),
        settings=s.to_dict(),
        seed=int(seed),
        n_chains=n_chains,
        bins={k: v.numpy() for k, v in out_bins.items()},
        criterion={k: v.numpy() for k, v in out_crit.items()},
        boundary={k: v.numpy() for k, v in out_bound.items()},
        cutoffs=cut.numpy(),
        fraction_inside=out_inside.numpy(),
        weights=weights.numpy(),
        configs=None if configs is None else configs.numpy(),
        drift_hist=drift_hist.numpy(),
        imag_hist=imag_hist.numpy(),
        mean_step=mean_step.numpy(),
        k_max=kmax_bins.numpy(),
        imag_max=imag_max.numpy(),
        drift_reference=None if k_ref is None else float(k_ref),
        n_steps=step,
        wall_time_s=wall,
        exact=exact,
    )


def _runaway(model: Any, s: ComplexLangevin, z: torch.Tensor, kmax: torch.Tensor, t: torch.Tensor, step: int, why: str) -> None:
    bad = torch.nonzero(~torch.isfinite(kmax) | (kmax > s.runaway_drift) | ~torch.isfinite(z.abs().reshape(len(z), -1).amax(1)))
    c = int(bad[0, 0]) if len(bad) else int(torch.argmax(torch.nan_to_num(kmax, nan=float("inf"))))
    im = z.imag.reshape(len(z), -1)[c].abs().max().item()
    cure = (
        "use the adaptive step size (--adaptive) or a smaller --dt"
        if not s.adaptive
        else "use a smaller --dt; the model may have no stable complex Langevin process at these parameters"
    )
    raise ComplexLangevinRunaway(
        f"complex Langevin runaway in chain {c} at Langevin time {float(t[c]):.4g} (step {step}, "
        f"{'adaptive' if s.adaptive else 'fixed'} step {s.step_size:g}): {why} (max |Im z| = {im:.3g}); {cure}"
    )
