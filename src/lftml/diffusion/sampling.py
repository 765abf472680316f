r"""Generating configurations by running the VE SDE backwards.

All samplers integrate from ``t = 1`` down to ``t = eps`` on :func:`time_grid` (``edm`` by default,
``uniform`` as the reference implementation). The prior is ``N(0, C + sigma_max^2)`` when the score
has an analytic Gaussian part of per-mode variance ``c_p`` (exact for that part), else
``N(0, sigma_max^2 I)``. They use a score function ``score_fn(x, t) = grad_x log p_t(x)`` in model units
(a :class:`~lftml.diffusion.model.ScoreModel` or an exact score such as
:class:`~lftml.diffusion.gaussian.GaussianScore`).

* ``exp`` (default of ``lftml diffusion sample``): the reverse process as Gaussian transitions
  that are the exact posterior ``p(x_{k-1} | x_k)`` of the score's analytic Gaussian part
  (exponential integrator; prior ``N(0, C + sigma_max^2)``), the network correction entering the
  mean as an Euler step; every transition density is known, so each sample carries an exact
  path-space importance weight (:func:`sample_path_weighted`). ``steps`` evaluations, the last
  step lands on the data level ``std = 0``.
* ``em``: Euler-Maruyama for the reverse SDE ``dx = -g^2 s dt + g dw_bar``:
  ``x <- x + g^2 s dt + g sqrt(dt) z``; the last step (from ``t = eps``) is Tweedie's denoiser
  ``x + std(eps)^2 s``. EM keeps an O(dt) bias on the stiff UV modes (with the exact Gaussian
  score on 8x8: +13% in the (pi, pi) mode's variance at 100 edm steps, +19% at 100 uniform steps). ``steps``
  score evaluations.
* ``pc``: predictor-corrector (Song et al. 2021): before each EM predictor step, ``corrector_steps``
  Langevin corrector steps with step size ``2 (snr |z| / |s|)^2``. ``(1 + corrector_steps) steps``
  evaluations.
* ``ode``: probability-flow ODE ``dx/dt = -g^2 s / 2`` with Heun's method (second order), a
  deterministic map from prior noise to configurations, by the package's one Heun integrator
  (:func:`lftml.diffusion.likelihood.integrate_pf_ode`). ``2 (steps - 1)`` evaluations.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.samplers.rng import torch_generator
from lftml.diffusion.sde import VESDE

__all__ = ["SAMPLERS", "SampleResult", "ExpSampler", "ExpState", "SDESampler", "SDEState", "time_grid", "sample", "sample_path_weighted", "generate",
           "write_generated", "auto_batch_size"]

log = logging.getLogger(__name__)
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SAMPLERS = ("exp", "em", "pc", "ode")
WEIGHTS = ("path", "ode", "none")


SCHEDULES = ("uniform", "edm")
#: default of ``--network-below``: the ``exp`` sampler evaluates the network only at noise levels up to
#: 4 per-site data widths (above, the diffused density is Gaussian to the accuracy that matters:
#: measured equal acceptance at 32x32, kappa = 0.21, with 11 of 20 evaluations; docs/diffusion.md, "Speed")
NETWORK_BELOW = 4.0


def time_grid(sde: VESDE, steps: int, schedule: str = "edm", rho: float = 7.0, dtype=torch.float32,
              device="cpu") -> torch.Tensor:
    """``steps`` times from 1 down to ``sde.eps`` (inclusive).

    ``uniform``: equally spaced in t (the reference implementation). ``edm``: equally spaced in
    ``std^(1/rho)`` (Karras et al. 2022, rho = 7), which concentrates steps at small noise where the
    reverse dynamics of the short-wavelength modes is fast; far smaller discretisation bias for
    the same number of steps."""
    if steps < 2:
        raise LftmlError(f"the samplers need --steps >= 2, got {steps}")
    if schedule == "uniform":
        return torch.linspace(1.0, sde.eps, steps, dtype=torch.float64).to(dtype=dtype, device=device)
    if schedule != "edm":
        raise LftmlError(f"unknown time schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    smax = sde.sigma_max
    smin = float(sde.std(torch.tensor(sde.eps, dtype=torch.float64)))
    i = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    s = (smax ** (1 / rho) + i * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    t = torch.log1p(2.0 * sde.log_sigma * s * s) / (2.0 * sde.log_sigma)
    t[0], t[-1] = 1.0, sde.eps
    return t.to(dtype=dtype, device=device)


def _noise(shape, generator, dtype, device):
    return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


@torch.no_grad()
def sample(
    score_fn: ScoreFn,
    sde: VESDE,
    shape: tuple[int, ...],
    *,
    sampler: str = "em",
    steps: int = 200,
    generator: torch.Generator,
    snr: float = 0.16,
    corrector_steps: int = 1,
    snapshot_times: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    x_init: torch.Tensor | None = None,
    schedule: str = "edm",
    network_max_std: float | None = None,
) -> tuple[torch.Tensor, list[tuple[float, torch.Tensor]]]:
    """Draw ``shape[0]`` configurations of shape ``shape[1:]`` (model units).

    Returns ``(x, snapshots)`` where ``snapshots`` holds ``(t, x_t)`` (cpu copies) at the first grid
    time <= each requested ``snapshot_times`` entry (for the denoising strip). ``network_max_std``:
    ``exp`` only, see :func:`sample_path_weighted`."""
    if sampler not in SAMPLERS:
        raise LftmlError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if sampler == "exp":
        if x_init is not None:
            raise LftmlError("the exp sampler draws its own prior N(0, C + sigma_max^2); x_init is not supported")
        x, _, info = sample_path_weighted(score_fn, sde, shape, steps=steps, generator=generator, schedule=schedule,
                                          device=device, net_dtype=dtype if dtype != torch.float64 else torch.float64,
                                          snapshot_times=snapshot_times, network_max_std=network_max_std)
        return x.to(dtype), info["snapshots"]
    pending = sorted((float(s) for s in (snapshot_times or [])), reverse=True)
    snaps: list[tuple[float, torch.Tensor]] = []

    def record(t: float, x: torch.Tensor) -> None:
        while pending and t <= pending[0] + 1e-12:
            pending.pop(0)
            snaps.append((t, x.detach().cpu().clone()))

    if sampler == "ode":  # deterministic: the package's one Heun integrator (likelihood.integrate_pf_ode)
        from lftml.diffusion.likelihood import LikelihoodSettings, integrate_pf_ode, pf_ode_prior

        ts = time_grid(sde, steps, schedule, dtype=dtype, device=device)
        x = pf_ode_prior(score_fn, sde)[1](shape, generator, dtype=dtype, device=device) if x_init is None \
            else x_init.to(device, dtype)
        record(1.0, x)
        x, _, _ = integrate_pf_ode(score_fn, sde, x, float(ts[0]), float(ts[-1]), LikelihoodSettings(solver="heun"),
                                   None, times=ts.to(torch.float64).cpu().numpy(), divergence=False, callback=record)
        t_end = float(ts[-1])
    else:
        chain = SDESampler(score_fn, sde, tuple(shape[1:]), steps, sampler, schedule, snr, corrector_steps, dtype, device)
        state = chain.init(shape[0], generator, x_init)
        record(1.0, state.x)
        while state.k < steps:
            state, info = chain.step(state, generator)
            record(info["t"], state.x)
        x, t_end = state.x, chain.time(steps)
    for _ in list(pending):  # times below eps: the final configuration
        snaps.append((t_end, x.detach().cpu().clone()))
    return x, snaps


@dataclass(frozen=True)
class SDEState:
    """State of :class:`SDESampler` after ``k`` steps: the batch ``x`` (model units)."""

    x: torch.Tensor
    k: int


@dataclass(frozen=True, eq=False)
class SDESampler:
    """Euler-Maruyama (``em``) or predictor-corrector (``pc``) for the reverse VE SDE, in the
    engine's convention (frozen settings, ``init(n, generator) -> state``, ``step(state, generator)
    -> (state, info)``); :func:`sample` runs it. Step ``k`` (grid time ``t_k``, ``dt = t_k - t_{k+1}``):
    ``pc`` first makes ``corrector_steps`` Langevin corrector moves with step ``2 (snr |z| / |s|)^2``,
    then the EM predictor ``x <- x + g^2 s dt + g sqrt(dt) z``; the last step (from ``t = eps``) is
    Tweedie's denoiser ``x + std(eps)^2 s`` (no noise). Approximate (O(dt) bias): for exact samples
    use :class:`ExpSampler` with its path weights."""

    score_fn: ScoreFn
    sde: VESDE
    lattice_shape: tuple[int, ...]
    steps: int
    method: str = "em"
    schedule: str = "edm"
    snr: float = 0.16
    corrector_steps: int = 1
    dtype: torch.dtype = torch.float32
    device: str | torch.device = "cpu"

    def __post_init__(self) -> None:
        if self.method not in ("em", "pc"):
            raise LftmlError(f"SDESampler runs em or pc, got {self.method!r}")
        object.__setattr__(self, "_ts", time_grid(self.sde, self.steps, self.schedule, dtype=self.dtype,
                                                  device=self.device))

    def time(self, k: int) -> float:
        """Grid time after ``k`` steps (the last step ends at ``eps``, where the denoiser acts)."""
        return float(self._ts[min(k, self.steps - 1)]) if k < self.steps else float(self._ts[-1])

    def init(self, n: int, generator: torch.Generator, x_init: torch.Tensor | None = None) -> SDEState:
        """``n`` draws from the prior ``N(0, C + sigma_max^2)`` (or ``x_init``)."""
        from lftml.diffusion.likelihood import pf_ode_prior

        if x_init is not None:
            return SDEState(x_init.to(self.device, self.dtype), 0)
        shape = (n, *self.lattice_shape)
        return SDEState(pf_ode_prior(self.score_fn, self.sde)[1](shape, generator, dtype=self.dtype, device=self.device), 0)

    def step(self, state: SDEState, generator: torch.Generator) -> tuple[SDEState, dict]:
        if state.k >= self.steps:
            raise LftmlError(f"the {self.method} sampler has done all its {self.steps} steps")
        ts, k, x = self._ts, state.k, state.x
        n = x.shape[0]
        t = ts[k]
        tb = t.expand(n)
        g2 = self.sde.diffusion(t) ** 2
        if self.method == "pc":
            for _ in range(self.corrector_steps):
                grad = self.score_fn(x, tb)
                z = _noise(x.shape, generator, self.dtype, self.device)
                gn = grad.reshape(n, -1).norm(dim=1).mean()
                zn = z.reshape(n, -1).norm(dim=1).mean()
                eps_l = 2.0 * (self.snr * zn / gn) ** 2
                x = x + eps_l * grad + torch.sqrt(2.0 * eps_l) * z
        if k + 1 < self.steps:
            dt = ts[k] - ts[k + 1]
            mean = x + g2 * self.score_fn(x, tb) * dt
            x = mean + torch.sqrt(g2 * dt) * _noise(x.shape, generator, self.dtype, self.device)
            t_new = float(ts[k + 1])
        else:
            # final step t = eps -> 0: Tweedie's denoiser E[x_0 | x_eps] = x + std(eps)^2 score
            # (exact for any target given the exact score); reusing the previous dt here
            # shrank the stiff UV modes (issue 11: ~53% of the (pi, pi) variance kept at 100 steps)
            x = x + self.sde.std(t) ** 2 * self.score_fn(x, tb)
            t_new = float(ts[-1])
        return SDEState(x, k + 1), {"t": t_new}


@dataclass
class SampleResult:
    """Generated configurations in engine units ``(n, *lattice_shape)`` (float64) and timing;
    ``log_weights`` (``(n,)``, or ``None``): ``log w = -S(phi) - log q(phi)`` per sample (``path``:
    the exact path-space weight; ``ode``: the probability-flow ODE's approximate log q)."""

    configs: np.ndarray
    wall_seconds: float
    settings: dict
    snapshots: list[tuple[float, np.ndarray]] = field(default_factory=list)
    log_weights: np.ndarray | None = None


#: activation memory per batch that :func:`auto_batch_size` aims at (fits the L2/L3 caches of CPUs)
BATCH_BYTES = 8 * 2**20


def auto_batch_size(model) -> int:
    """Sampling batch whose largest U-Net activation (full-resolution concatenation, doubled by the
    Z2 antisymmetrisation) is about :data:`BATCH_BYTES`: a power of two in ``[1, 256]`` (16 for
    ``equi`` at 32x32). Measured on one core: without :func:`lftml.devices.keep_freed_memory` the
    ``equi`` preset at 32x32 cost 4.6-5.1 ms per sample and network evaluation at batch 16 against
    8.8 ms at batch 64, almost all of it page faults of the larger buffers; with it (as the CLI runs)
    batch 16 and 64 cost the same (7.3 vs 7.1 CPU-s per 128 samples, benchmarks/bench_weighted_sampling.py).
    Kept for the smaller memory footprint."""
    net = getattr(model, "net", None)
    cfg = getattr(net, "config", None)
    if cfg is None:
        return 64
    n, V, largest, stride = len(cfg.channels), math.prod(model.lattice_shape), 0, 1
    for i, (c, st) in enumerate(zip(cfg.channels, cfg.strides)):
        stride *= st
        width = 2 * c if i < n - 1 else c  # decoder concatenation with the skip of this level
        largest = max(largest, width * V // stride**cfg.ndim)
    per_config = largest * 4 * (2 if cfg.odd else 1)
    b = max(1, BATCH_BYTES // per_config)
    return int(min(256, 2 ** int(math.log2(b))))


def check_weights_option(sampler: str, weights: str) -> None:
    """One-line errors for a ``--weights`` choice the sampler cannot provide."""
    if weights not in WEIGHTS:
        raise LftmlError(f"unknown --weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
    if sampler not in SAMPLERS:
        raise LftmlError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if weights == "path" and sampler != "exp":
        raise LftmlError(f"--weights path needs --sampler exp (the {sampler} sampler's steps are not the exact-posterior "
                         "transitions the weights are built from); or pass --weights none")
    if weights == "ode" and sampler != "ode":
        raise LftmlError("--weights ode needs --sampler ode (log q is computed along the probability-flow ODE)")


def generate(
    model,
    n: int,
    *,
    sampler: str = "em",
    steps: int = 200,
    seed: int = 0,
    batch_size: int | None = None,
    snr: float = 0.16,
    corrector_steps: int = 1,
    device: str | torch.device = "auto",
    progress: bool = False,
    snapshot_times: Sequence[float] | None = None,
    schedule: str = "edm",
    weights: str = "none",
    probes: int = 1,
    network_below: float | None = None,
) -> SampleResult:
    """Generate ``n`` configurations from a :class:`~lftml.diffusion.model.ScoreModel`, in batches
    of ``batch_size`` (default :func:`auto_batch_size`; the samples depend on it, and it is recorded),
    with the noise stream seeded by ``seed``; returns engine units (the model's
    data scaling inverted), float64. Snapshots (if requested) are taken from the first batch.

    ``weights``: ``none``; ``path`` (sampler ``exp``): exact path-space log weights
    ``-S(phi_0) - V log(scale) + log_r_over_q`` (:func:`sample_path_weighted`); ``ode`` (sampler
    ``ode``): ``-S - log q`` with log q from the Heun PF-ODE and ``probes`` Hutchinson probes for the
    network part (approximate: ODE discretisation and probe noise).

    ``network_below`` (``exp`` sampler): the network is evaluated only at noise levels
    ``std <= network_below * sigma_data`` (the model's per-site data width; default
    :data:`NETWORK_BELOW`; ``inf`` for every step); the weights stay exact (see
    :func:`sample_path_weighted`). Ignored by the other samplers."""
    from lftml.diffusion.training import resolve_device

    batch_size, network_below = _check_generate_options(model, n, batch_size, sampler, weights, network_below)
    net_max = None
    if sampler == "exp" and math.isfinite(network_below) and _has_analytic_part(model):
        net_max = network_below * float(model.sigma_data)
    theory = _weights_theory(model, weights)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    g = torch_generator(seed, "sampling", dev)
    out, lws = [], []
    snaps: list[tuple[float, np.ndarray]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"sample ({sampler})", unit="cfg", dynamic_ncols=True)
    t0 = time.perf_counter()
    done = 0
    nfe = None
    log_jac = model.scaling.log_jacobian(model.volume)
    while done < n:
        b = min(batch_size, n - done)
        x, s, log_part, nfe = _draw_batch(model, (b, *model.lattice_shape), g, dev, sampler=sampler, weights=weights,
                                          steps=steps, schedule=schedule, snr=snr, corrector_steps=corrector_steps,
                                          probes=probes, snapshot_times=snapshot_times if done == 0 else None,
                                          network_max_std=net_max)
        if not torch.all(torch.isfinite(x)):
            raise LftmlError("the sampler produced NaN/inf configurations: the model is broken or --steps too small")
        phi = model.scaling.to_data(x.to(torch.float64)).cpu()
        if theory is not None:
            lws.append(_batch_log_weights(phi, theory, weights, log_jac, log_part).numpy())
        out.append(phi)
        if s:
            snaps = [(t, model.scaling.to_data(v).to(torch.float64).numpy()) for t, v in s]
        done += b
        if bar is not None:
            bar.update(b)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    settings = {"sampler": sampler, "steps": steps, "seed": int(seed), "batch_size": batch_size,
                "snr": snr if sampler == "pc" else None, "corrector_steps": corrector_steps if sampler == "pc" else None,
                "device": str(dev), "schedule": schedule, "weights": weights,
                "probes": probes if weights == "ode" else None,
                "network_below": network_below if sampler == "exp" else None,
                "network_evaluations_per_sample": nfe}
    return SampleResult(torch.cat(out).numpy(), wall, settings, snaps,
                        np.concatenate(lws) if lws else None)


def _check_generate_options(model, n: int, batch_size: int | None, sampler: str, weights: str,
                            network_below: float | None) -> tuple[int, float]:
    """One-line errors for :func:`generate`'s options; returns ``(batch_size, network_below)`` with
    the defaults filled in."""
    if n < 1:
        raise LftmlError(f"--n-configs must be >= 1, got {n}")
    if batch_size is None:
        batch_size = auto_batch_size(model)
    if batch_size < 1:
        raise LftmlError(f"--batch-size must be >= 1, got {batch_size}")
    check_weights_option(sampler, weights)
    network_below = NETWORK_BELOW if network_below is None else float(network_below)
    if not network_below > 0:
        raise LftmlError(f"--network-below must be > 0 (inf: the network on every step), got {network_below}")
    return batch_size, network_below


def _has_analytic_part(model) -> bool:
    """Whether the score has an analytic Gaussian part (``analytic_power_spectrum()`` is not None),
    read off a :class:`~lftml.diffusion.model.ScoreModel`'s parametrization without building the spectrum."""
    parametrization = getattr(model, "parametrization", None)
    if parametrization is not None:  # ScoreModel: every parametrization but reference has one
        return parametrization != "reference"
    return getattr(model, "analytic_power_spectrum", lambda: None)() is not None


def _weights_theory(model, weights: str):
    """The model's theory (for S(phi) in the log weights); ``None`` for ``weights = "none"``."""
    if weights == "none":
        return None
    from lftml.theories import theory_from_dict

    if model.theory is None:
        raise LftmlError("the model does not record its theory, so S(phi) and the weights are unknown; "
                         "pass --weights none or train on an ensemble file with a theory")
    return theory_from_dict(model.theory)


def _draw_batch(model, shape: tuple[int, ...], g: torch.Generator, dev: torch.device, *, sampler: str, weights: str,
                steps: int, schedule: str, snr: float, corrector_steps: int, probes: int,
                snapshot_times: Sequence[float] | None,
                network_max_std: float | None) -> tuple[torch.Tensor, list, torch.Tensor | None, int | None]:
    """One batch in model units: ``(x, snapshots, log_part, nfe)`` with ``log_part`` the path weights'
    ``log r/q`` (``path``) or the PF-ODE's ``log q`` (``ode``), and ``nfe`` (``path`` only) the
    network evaluations per sample."""
    if weights == "path":
        with torch.no_grad():
            x, log_ratio, info = sample_path_weighted(model, model.sde, shape, steps=steps, generator=g,
                                                      schedule=schedule, device=dev, snapshot_times=snapshot_times,
                                                      network_max_std=network_max_std)
        return x, info["snapshots"], log_ratio, info["nfe"]
    if weights == "ode":
        from lftml.diffusion.likelihood import LikelihoodSettings, sample_with_log_likelihood

        x, lq, _ = sample_with_log_likelihood(model, model.sde, shape, generator=g, device=dev,
                                              settings=LikelihoodSettings(solver="heun", steps=steps, probes=probes,
                                                                         schedule=schedule))
        return x, [], lq, None
    x, s = sample(model, model.sde, shape, sampler=sampler, steps=steps, generator=g, snr=snr,
                  corrector_steps=corrector_steps, device=dev, snapshot_times=snapshot_times, schedule=schedule,
                  network_max_std=network_max_std)
    return x, s, None, None


def _batch_log_weights(phi: torch.Tensor, theory, weights: str, log_jac: float, log_part: torch.Tensor) -> torch.Tensor:
    """``log w = -S(phi) - log q(phi)`` (float64) of a batch in engine units, from the model-units
    ``log_part`` of :func:`_draw_batch` and the data scaling's ``log_jac``."""
    S = theory.action(phi).to(torch.float64)
    if weights == "path":
        return -S - log_jac + log_part.cpu()
    return -S - (log_part.cpu().to(torch.float64) + log_jac)


def write_generated(path, result: SampleResult, model, *, model_path: str | None = None, extra: dict | None = None,
                    overwrite: bool = True):
    """Write generated configurations as an engine ensemble file: one chain of ``n`` independent
    configurations ``(n, 1, *lattice_shape)``, ``kind = "diffusion"``, with the model's theory (so
    the standard observables are computed) and provenance in the metadata; the samples' log
    weights (if any) as ``/log_weights``."""
    from lftml.ensemble import write_ensemble
    from lftml.theories import theory_from_dict

    theory = theory_from_dict(model.theory) if model.theory else None
    meta = {
        "kind": "diffusion",
        "theory": model.theory,
        "sampler": result.settings,
        "seed": result.settings["seed"],
        "model": {"path": str(model_path) if model_path else None, "preset": model.info.get("preset"),
                  "seeds": model.info.get("seeds"), "sde": model.sde.to_dict(), "scaling": model.scaling.to_dict(),
                  "data_fingerprint": model.info.get("data", {}).get("fingerprint"),
                  "trained_on_lattice": model.info.get("resized_from")},
        "wall_seconds": result.wall_seconds,
        **(extra or {}),
    }
    configs = result.configs[:, None]
    lw = None if result.log_weights is None else np.asarray(result.log_weights)[:, None]
    from lftml.observables import measure_history

    return write_ensemble(path, configs, metadata=meta, theory=theory, log_weights=lw,
                          observables=measure_history(configs, theory), wall_time_s=result.wall_seconds)


# ----------------------------------------------------------------------------------------------
# The reverse process as a chain of Gaussian transitions with known densities (path weights)
# ----------------------------------------------------------------------------------------------


def symmetrize_spectrum(c: torch.Tensor) -> torch.Tensor:
    """``(c_p + c_{-p}) / 2``: a per-mode variance of a *real* field must be even in p; enforcing it
    exactly makes ``F^-1 sqrt(c) F`` a real symmetric matrix (so the densities below are exact)."""
    dims = tuple(range(c.ndim))
    flipped = torch.roll(torch.flip(c, dims=dims), shifts=(1,) * c.ndim, dims=dims)
    return 0.5 * (c + flipped)


def power_spectrum(x: torch.Tensor, mean: float = 0.0) -> torch.Tensor:
    """``c_p = <|F(x - mean)_p|^2> / V`` over the batch axis 0 (unnormalised DFT over the lattice
    axes, float64): the two-point function in momentum space of configurations ``(n, *lattice)``,
    the maximum-likelihood per-mode variance of a translation-invariant Gaussian around ``mean``."""
    x = torch.as_tensor(x).to(torch.float64)
    dims = tuple(range(1, x.ndim))
    V = math.prod(x.shape[1:])
    return (torch.fft.fftn(x - mean, dim=dims).abs() ** 2).mean(dim=0) / V


def gaussian_log_prob(x: torch.Tensor, c: torch.Tensor, mean: float = 0.0) -> torch.Tensor:
    """``log N(x; mean * 1, F^-1 diag(c) F)`` per configuration (float64) for ``x`` of shape
    ``(n, *c.shape)``: ``-(1/2V) sum_p |F(x - mean)_p|^2 / c_p - (1/2) sum_p log(2 pi c_p)``
    (``c`` even in p, :func:`symmetrize_spectrum`, so that this is a real Gaussian's density)."""
    x = x.to(torch.float64)
    dims = tuple(range(1, x.ndim))
    quad = (torch.fft.fftn(x - mean, dim=dims).abs() ** 2 / c).reshape(x.shape[0], -1).sum(1) / c.numel()
    return -0.5 * quad - 0.5 * float(torch.log(2 * math.pi * c).sum())


def point_group_average(c: torch.Tensor) -> torch.Tensor:
    """Average of a per-mode spectrum ``c`` (lattice shape, momentum index ``k = 0..L-1`` per axis)
    over the lattice's point group: every reflection ``k_mu -> -k_mu`` and every permutation of
    axes of equal extent (the symmetries of an isotropic nearest-neighbour action on a periodic
    hypercubic lattice; in 2d exactly the training augmentation's group, in 3d and beyond a superset
    of it). Exact for the true spectrum. For one estimated from configurations of a Gaussian-like
    field it divides the variance of each mode's estimate by the number of distinct +-pairs in its
    orbit (4 for a generic 2d mode), and with it the part of a fitted Gaussian's ``KL(p || q)`` that
    is estimation noise (measured at 32x32 from 3200 configurations: the fit's KL 0.727 -> 0.668
    nats, against 0.651 for a fit of 19200)."""
    nd = c.ndim
    acc = torch.zeros_like(c)
    count = 0
    perms = [p for p in itertools.permutations(range(nd)) if all(c.shape[a] == c.shape[b] for a, b in enumerate(p))]
    for flips in itertools.product((False, True), repeat=nd):
        r = c
        for mu, f in enumerate(flips):
            if f:
                r = torch.roll(torch.flip(r, dims=(mu,)), shifts=1, dims=mu)
        for perm in perms:
            acc = acc + r.permute(perm)
            count += 1
    return acc / count


def color_noise(z: torch.Tensor, sqrt_var: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``A z`` with ``A = F^-1 diag(sqrt_var) F`` (real symmetric for even ``sqrt_var``): a sample of
    ``N(0, F^-1 diag(sqrt_var^2) F)`` from white noise ``z``."""
    return torch.fft.ifftn(torch.fft.fftn(z, dim=dims) * sqrt_var, dim=dims).real


def _draw_sign(p_plus: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``+1`` with probability ``p_plus``, else ``-1`` (float64, one uniform per configuration)."""
    u = torch.rand(p_plus.shape, generator=generator, dtype=torch.float64, device=generator.device).to(p_plus.device)
    return torch.where(u < p_plus, 1.0, -1.0).to(torch.float64)


def _minus_log_two_component(z: torch.Tensor, sign: torch.Tensor, shift: float, log_pi_same: torch.Tensor,
                             log_pi_other: torch.Tensor) -> torch.Tensor:
    """``-log sum_c pi_c exp(-|z_c|^2 / 2)`` (without the ``logdet / 2``) for a two-component
    Gaussian mixture whose components share a covariance and differ by a constant field: ``z`` is the
    whitened draw of the component taken (``sign``), ``z' = z + sign * shift / sqrt(V) * 1`` that of
    the other one (``shift`` = the whitened distance of the two means, a zero-mode vector)."""
    n = z.shape[0]
    V = z[0].numel()
    q = z.reshape(n, -1)
    zz = (q * q).sum(1)
    zbar = q.sum(1) / math.sqrt(V)  # unitary zero-mode coordinate of z
    other = zz + 2.0 * sign * shift * zbar + shift * shift
    return -torch.logaddexp(log_pi_same - 0.5 * zz, log_pi_other - 0.5 * other)


@dataclass(frozen=True)
class ExpState:
    """State of :class:`ExpSampler` after ``k`` of its steps (model units, float64): the batch ``x`` at
    level ``s_{N-k}``, the accumulated ``log_ratio`` (``log r/q`` of the path so far, minus the
    prior's log density; per configuration) and the network evaluations ``nfe`` so far."""

    x: torch.Tensor
    k: int
    log_ratio: torch.Tensor
    nfe: int = 0


@dataclass(frozen=True, eq=False)
class ExpSampler:
    """The ``exp`` reverse process as a Markov chain in diffusion time, in the engine's convention
    (frozen settings, a small state, ``init(n, generator) -> state``, ``step(state, generator) ->
    (state, info)``); :func:`sample_path_weighted` runs it to the end. Conventions and exactness:
    see there. ``score_fn`` may provide ``score_parts``, ``analytic_power_spectrum`` and
    ``analytic_vacuum`` (a :class:`~lftml.diffusion.model.ScoreModel` does)."""

    score_fn: ScoreFn
    sde: VESDE
    lattice_shape: tuple[int, ...]
    steps: int
    schedule: str = "edm"
    power_spectrum: torch.Tensor | np.ndarray | None = None
    device: str | torch.device = "cpu"
    net_dtype: torch.dtype = torch.float32
    network_max_std: float | None = None

    def __post_init__(self) -> None:
        if self.steps < 2:
            raise LftmlError(f"the samplers need --steps >= 2, got {self.steps}")
        f64 = torch.float64
        ps = self.power_spectrum
        if ps is None and hasattr(self.score_fn, "analytic_power_spectrum"):
            ps = self.score_fn.analytic_power_spectrum()
        c = None
        if ps is not None:
            c = torch.as_tensor(np.asarray(ps) if not isinstance(ps, torch.Tensor) else ps)
            c = symmetrize_spectrum(c.to(f64).cpu()).to(self.device)
            if tuple(c.shape) != tuple(self.lattice_shape):
                raise LftmlError(f"power spectrum shape {tuple(c.shape)} does not match the lattice {tuple(self.lattice_shape)}")
            if not bool(torch.all(c > 0)):
                raise LftmlError("the analytic part's power spectrum has a non-positive mode; refit it on more data")
        vac = self.score_fn.analytic_vacuum() if (c is not None and hasattr(self.score_fn, "analytic_vacuum")) else None
        ts = time_grid(self.sde, self.steps, self.schedule, dtype=f64)
        object.__setattr__(self, "_c", c)
        object.__setattr__(self, "_vac", vac)
        object.__setattr__(self, "_ts", ts)
        object.__setattr__(self, "_levels", torch.cat([self.sde.std(ts).to(f64), torch.zeros(1, dtype=f64)]))
        object.__setattr__(self, "_dims", tuple(range(1, len(self.lattice_shape) + 1)))
        object.__setattr__(self, "_V", int(np.prod(self.lattice_shape)))

    def time(self, k: int) -> float:
        """Diffusion time of the level after ``k`` steps (1 = prior, 0 = data)."""
        return float(self._ts[k]) if k < self.steps else 0.0

    def _white(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn((n, *self.lattice_shape), generator=generator, dtype=torch.float64,
                           device=generator.device).to(self.device)

    def init(self, n: int, generator: torch.Generator) -> ExpState:
        """``n`` draws from the prior ``N(0, C + s_N^2)`` (mixture: ``1/2 N(+-mu, C + s_N^2)``; no
        analytic part: ``N(0, s_N^2)``) with ``log_ratio = -log p_N(x_N)``."""
        c, vac, V, dims = self._c, self._vac, self._V, self._dims
        sN2 = float(self._levels[0]) ** 2
        z = self._white(n, generator)
        if c is not None:
            var = c + sN2
            x = color_noise(z, torch.sqrt(var), dims)
            logdet = float(torch.log(2 * math.pi * var).sum())
        else:
            x = math.sqrt(sN2) * z
            logdet = V * math.log(2 * math.pi * sN2)
        log_ratio = 0.5 * _sum_sites(z * z) + 0.5 * logdet  # -log p_N(x_N)
        if vac is not None:
            # 1/2 N(+mu, .) + 1/2 N(-mu, .): draw the component, then the Gaussian around it
            sign = _draw_sign(torch.full((n,), 0.5, dtype=torch.float64, device=self.device), generator)
            x = x + (sign * vac).reshape(-1, *([1] * len(dims)))
            half = torch.full((n,), math.log(0.5), dtype=torch.float64, device=self.device)
            shift = 2.0 * vac * math.sqrt(V) / math.sqrt(float((c + sN2).reshape(-1)[0]))
            log_ratio = _minus_log_two_component(z, sign, shift, half, half) + 0.5 * logdet
        return ExpState(x, 0, log_ratio, 0)

    def step(self, state: ExpState, generator: torch.Generator) -> tuple[ExpState, dict]:
        """One transition ``x_k -> x_{k-1}`` with its exact density; ``info``: ``t`` (the new
        level's time), ``std`` (the level it came from), ``network`` (whether the network ran)."""
        if state.k >= self.steps:
            raise LftmlError(f"the exp sampler has done all its {self.steps} steps")
        c, vac, V, dims = self._c, self._vac, self._V, self._dims
        k, x, n = state.k, state.x, state.x.shape[0]
        f64 = torch.float64
        s_hi2, s_lo2 = float(self._levels[k]) ** 2, float(self._levels[k + 1]) ** 2
        d = s_hi2 - s_lo2
        tb = self._ts[k].to(self.net_dtype).expand(n).to(self.device)
        xin = x.to(self.net_dtype)
        use_net = True
        if c is not None:
            analytic = -torch.fft.ifftn(torch.fft.fftn(x, dim=dims) / (c + s_hi2), dim=dims).real
            if vac is not None:
                # exact mixture posterior: component +-1 with its responsibility at x_k, then the
                # Gaussian posterior of that component (mean shifted by +- d A mu, A mu = b * 1)
                b = vac / (float(c.reshape(-1)[0]) + s_hi2)
                a2 = 2.0 * b * _sum_sites(x)  # log(pi_+ / pi_-) = 2 mu.A x
                log_pp, log_pm = torch.nn.functional.logsigmoid(a2), torch.nn.functional.logsigmoid(-a2)
                comp = _draw_sign(torch.exp(log_pp), generator)
                analytic = analytic + (comp * b).reshape(-1, *([1] * len(dims)))
            use_net = self.network_max_std is None or float(self._levels[k]) <= self.network_max_std
            if not use_net:
                score = analytic
            elif hasattr(self.score_fn, "score_parts"):
                score = analytic + self.score_fn.score_parts(xin, tb)[1].to(f64)
            else:
                score = self.score_fn(xin, tb).to(f64)
            sig = d * (c + s_lo2) / (c + s_hi2)
            z = self._white(n, generator)
            noise = color_noise(z, torch.sqrt(sig), dims)
            logdet = float(torch.log(2 * math.pi * sig).sum())
        else:
            score = self.score_fn(xin, tb).to(f64)
            z = self._white(n, generator)
            noise = math.sqrt(d) * z
            logdet = V * math.log(2 * math.pi * d)
        x_new = x + d * score + noise
        # - log q_k(x_new | x): noise = A z with A^2 = Sigma, so the quadratic form is |z|^2
        if vac is not None:
            same = torch.where(comp > 0, log_pp, log_pm)
            other = torch.where(comp > 0, log_pm, log_pp)
            shift = 2.0 * d * b * math.sqrt(V) / math.sqrt(float(sig.reshape(-1)[0]))
            log_ratio = state.log_ratio + _minus_log_two_component(z, comp, shift, same, other) + 0.5 * logdet
        else:
            log_ratio = state.log_ratio + 0.5 * _sum_sites(z * z) + 0.5 * logdet
        # + log r_k(x | x_new), forward kernel N(x_new, d)
        dx = x - x_new
        log_ratio = log_ratio - 0.5 * _sum_sites(dx * dx) / d - 0.5 * V * math.log(2 * math.pi * d)
        new = ExpState(x_new, k + 1, log_ratio, state.nfe + int(use_net))
        return new, {"t": self.time(k + 1), "std": math.sqrt(s_hi2), "network": use_net}


def _sum_sites(a: torch.Tensor) -> torch.Tensor:
    return a.reshape(a.shape[0], -1).sum(1)


def sample_path_weighted(
    score_fn: ScoreFn,
    sde: VESDE,
    shape: tuple[int, ...],
    *,
    steps: int,
    generator: torch.Generator,
    schedule: str = "edm",
    power_spectrum: torch.Tensor | np.ndarray | None = None,
    device: str | torch.device = "cpu",
    net_dtype: torch.dtype = torch.float32,
    snapshot_times: Sequence[float] | None = None,
    network_max_std: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    r"""Reverse process as ``steps`` Gaussian transitions with exact densities (model units).

    Levels ``s_N = std(1) > ... > s_1 = std(eps) > s_0 = 0`` (``steps`` grid times of
    :func:`time_grid`, then the data level). With ``c_p`` the per-mode variance of the score's
    analytic Gaussian part (``power_spectrum``, or ``score_fn.analytic_power_spectrum()``), each step
    ``x_k -> x_{k-1}`` with ``d_k = s_k^2 - s_{k-1}^2`` draws from

    ``q_k(x_{k-1} | x_k) = N(x_k + d_k score(x_k, t_k), Sigma_k)``,
    ``Sigma_k = F^-1 diag(d_k (c_p + s_{k-1}^2) / (c_p + s_k^2)) F``,

    the first- and second-order Tweedie formulas with the full score in the mean and the analytic
    part's Hessian in the covariance: for a Gaussian target with its exact score this *is* the exact
    posterior ``p(x_{k-1} | x_k)`` (an exponential integrator, exact at any number of steps); the
    network's correction enters as an Euler step of the mean. The prior is ``N(0, c_p + s_N^2)``
    (exact for the analytic part). Without an analytic part (``reference``), ``c_p = 0``:
    ``Sigma_k = d_k`` and prior ``N(0, s_N^2)``.

    Returns ``(x_0, log_r_over_q, info)`` with, per configuration (float64),

    ``log_r_over_q = sum_k log r_k(x_k | x_{k-1}) - log p_N(x_N) - sum_k log q_k(x_{k-1} | x_k)``,

    ``r_k = N(x_{k-1}, d_k)`` the exact forward (noising) kernel. The path-space importance weight of
    a target density ``p(x_0) ~ exp(log_target(x_0))`` is ``log w = log_target(x_0) + log_r_over_q``:
    exact, since both path densities are known in closed form (no ODE, no probes).

    ``network_max_std``: evaluate the network only on steps with ``s_k <= network_max_std`` (model
    units); above it the step uses the analytic part alone, which is then the exact posterior of
    that Gaussian. The weights stay exact (every transition density is still known): the cut only
    decides where the proposal uses the learned correction. Far above the data's per-site width the
    diffused density is Gaussian to high accuracy and the correction is noise (32x32, kappa = 0.21:
    the same acceptance with the network on all 20 steps and on the 11 below ``4 sigma_data``; see
    docs/diffusion.md, "Speed"). Ignored without an analytic part (the network is the score).
    ``info``: ``nfe`` (network evaluations), ``snapshots``.
    """
    sampler = ExpSampler(score_fn, sde, tuple(shape[1:]), steps, schedule, power_spectrum, device, net_dtype,
                         network_max_std)
    state = sampler.init(shape[0], generator)
    pending = sorted((float(s) for s in (snapshot_times or [])), reverse=True)
    snaps: list[tuple[float, torch.Tensor]] = []

    def record(t: float, xx: torch.Tensor) -> None:
        while pending and t <= pending[0] + 1e-12:
            pending.pop(0)
            snaps.append((t, xx.detach().cpu().clone()))

    record(1.0, state.x)
    while state.k < steps:
        state, info = sampler.step(state, generator)
        record(info["t"], state.x)
    for _ in list(pending):
        snaps.append((0.0, state.x.detach().cpu().clone()))
    return state.x, state.log_ratio, {"nfe": state.nfe, "snapshots": snaps}
