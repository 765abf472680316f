r"""Score-matching losses for the VE SDE: denoising (DSM) and target (TSM) score matching.

Notation: ``x_t = x_0 + s z`` with ``s = std(t)``, ``z ~ N(0, 1)``; model units; ``V`` sites.
Every loss here is

``L = E_{t ~ p(t), x_0, z} [ w(t) mean_sites | s (score(x_t, t) - T) |^2 ]``

(averaged over sites, so that the minimum is O(1) at every volume), with a regression target ``T``
whose conditional mean given ``x_t`` is the exact score ``grad log p_t(x_t)``. All choices below
therefore share the same minimiser (the exact score at every ``t``) and differ in variance and in how
the noise levels are weighted.

Targets (``target``):

* ``"dsm"`` — ``T = -z / s`` (denoising score matching, Vincent 2011).
* ``"tsm"`` — target score matching: for the VE kernel (a translation-invariant convolution)
  ``grad log p_t(x_t) = E[grad log p_0(x_0) | x_t]``, and ``grad log p_0`` of a lattice ensemble is
  known: the force ``-dS/dphi`` (in model units ``force_phi / scale``). Both ``-z/s`` and ``f(x_0)``
  are unbiased targets, so is every blend; we blend per momentum mode,
  ``T_p = w_p (-z_p / s) + (1 - w_p) f_p``, ``w_p = s^2 / (s^2 + c_p)`` with ``c_p`` the data's power
  spectrum. For a Gaussian with that power spectrum this blend has **zero variance** (``T`` is then
  exactly the score), so what is left of the target's noise comes only from the non-Gaussian part
  of the ensemble: ``w -> 1`` (pure DSM) at large noise, ``w -> 0`` (pure force) as ``s -> 0``.

Noise levels (``t_sampling``; ``sigma_min = std(eps)``, ``sigma_max = std(1)``):

* ``"uniform"`` — ``t ~ U(eps, 1)`` (the reference);
* ``"mixed"`` — half the batch uniform in ``t``, half log-uniform in ``s``;
* ``"loguniform"`` — ``log s`` uniform in ``[log sigma_min, log sigma_max]``;
* ``"low"`` — half log-uniform over the whole range, half log-uniform in ``[sigma_min, sigma_low]``
  with ``sigma_low`` the per-site width of the data (``sigma_data``): more samples where the phi^4
  non-Gaussianity lives.

Weightings (``weighting``):

* ``"sigma2"`` — ``w = 1`` (``lambda(t) = s^2``; the effective weighting then depends on ``p(t)``);
* ``"likelihood"`` — ``w = 1 / (q(log s) ln(sigma_max / sigma_min))`` with ``q`` the density of
  ``log s`` under ``p(t)``: an importance weight that makes ``L`` the same functional for every
  ``t_sampling``, namely the ``g^2`` (likelihood) weighting of Song et al. (2021). Then
  ``V ln(sigma_max/sigma_min) L = (1/2) int g^2 E sum_sites |score - grad log p_t|^2 dt + const``,
  the path-space KL bound (nats per configuration; :func:`nats_per_unit_loss`), and differences of
  ``L`` between two models are differences of their ELBOs.
* ``"edm"`` — ``w = (s^2 + sigma_data^2) / sigma_data^2``: Karras et al.'s (2022) loss weighting for
  their preconditioning (with ``lambda = s^2`` alone the network output of the ``edm``/``gaussian``
  parametrisations gets gradient weight ``sigma_data^2 / (s^2 + sigma_data^2)``, i.e. almost none
  at large noise; this weighting makes it 1).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from lftml.diffusion.sde import VESDE

__all__ = ["dsm_loss", "sample_times", "log_sigma_density", "loss_weight", "score_target", "per_config_loss",
           "nats_per_unit_loss", "T_SAMPLING", "WEIGHTINGS", "TARGETS"]
T_SAMPLING = ("uniform", "mixed", "loguniform", "low")
WEIGHTINGS = ("sigma2", "likelihood", "edm")
TARGETS = ("dsm", "tsm")

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _sigma_range(sde: VESDE) -> tuple[float, float]:
    lo = float(sde.std(torch.tensor(sde.eps, dtype=torch.float64)))
    return lo, sde.sigma_max


def _t_of_std(sde: VESDE, s: torch.Tensor) -> torch.Tensor:
    return torch.log1p(2.0 * sde.log_sigma * s * s) / (2.0 * sde.log_sigma)


def _sigma_low(sde: VESDE, sigma_low: float | None) -> float:
    lo, hi = _sigma_range(sde)
    return min(hi, max(lo * 1.0001, sigma_low if sigma_low is not None else 1.0))


def sample_times(n: int, sde: VESDE, generator: torch.Generator, t_sampling: str = "uniform",
                 dtype: torch.dtype = torch.float32, sigma_low: float | None = None) -> torch.Tensor:
    """``n`` diffusion times in ``[eps, 1]`` (see module docstring; ``sigma_low`` for ``"low"``)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device)
    t = u * (1.0 - sde.eps) + sde.eps
    lo, hi = (math.log(v) for v in _sigma_range(sde))
    if t_sampling == "mixed":
        k = n // 2
        t[:k] = _t_of_std(sde, torch.exp(lo + u[:k] * (hi - lo)))
    elif t_sampling == "loguniform":
        t = _t_of_std(sde, torch.exp(lo + u * (hi - lo)))
    elif t_sampling == "low":
        k = n // 2
        mid = math.log(_sigma_low(sde, sigma_low))
        t = _t_of_std(sde, torch.exp(lo + u * (hi - lo)))
        t[:k] = _t_of_std(sde, torch.exp(lo + u[:k] * (mid - lo)))
    elif t_sampling != "uniform":
        raise ValueError(f"unknown t_sampling {t_sampling!r}")
    return t.clamp(sde.eps, 1.0).to(dtype)


def log_sigma_density(t: torch.Tensor, sde: VESDE, t_sampling: str, sigma_low: float | None = None) -> torch.Tensor:
    """Density ``q(log s)`` of ``log std(t)`` under :func:`sample_times` (float64)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    s = sde.std(t)
    g2 = sde.diffusion(t) ** 2
    lo, hi = (math.log(v) for v in _sigma_range(sde))
    q_log = torch.full_like(t, 1.0 / (hi - lo))
    q_unif = 2.0 * s * s / (g2 * (1.0 - sde.eps))  # p(t) = 1/(1-eps); d log s / dt = g^2 / (2 s^2)
    if t_sampling == "uniform":
        return q_unif
    if t_sampling == "loguniform":
        return q_log
    if t_sampling == "mixed":
        return 0.5 * q_unif + 0.5 * q_log
    if t_sampling == "low":
        mid = math.log(_sigma_low(sde, sigma_low))
        return 0.5 * q_log + 0.5 * (torch.log(s) <= mid).to(t.dtype) / (mid - lo)
    raise ValueError(f"unknown t_sampling {t_sampling!r}")


def loss_weight(t: torch.Tensor, sde: VESDE, weighting: str, t_sampling: str, sigma_data: float = 1.0,
                sigma_low: float | None = None) -> torch.Tensor:
    """Per-sample weight ``w(t)`` of the loss (float64, see module docstring)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    if weighting == "sigma2":
        return torch.ones_like(t)
    if weighting == "likelihood":
        lo, hi = (math.log(v) for v in _sigma_range(sde))
        return 1.0 / (log_sigma_density(t, sde, t_sampling, sigma_low) * (hi - lo))
    if weighting == "edm":
        s2 = sde.std(t) ** 2
        return (s2 + sigma_data**2) / sigma_data**2
    raise ValueError(f"unknown weighting {weighting!r}")


def nats_per_unit_loss(sde: VESDE, volume: int) -> float:
    """``V ln(sigma_max / sigma_min)``: multiply a likelihood-weighted loss (difference) by this to
    get nats per configuration of the path-space KL bound."""
    lo, hi = _sigma_range(sde)
    return volume * math.log(hi / lo)


def score_target(z: torch.Tensor, std: torch.Tensor, force0: torch.Tensor | None = None,
                 power_spectrum: torch.Tensor | None = None) -> torch.Tensor:
    """Regression target ``T`` (unbiased for the score at ``x_t``): ``-z/s`` without ``force0``;
    with ``force0`` (the force ``grad log p_0`` at ``x_0``, model units) and the power spectrum
    ``c_p``, the per-mode blend ``w_p (-z/s) + (1 - w_p) f`` with ``w_p = s^2 / (s^2 + c_p)``."""
    if force0 is None:
        return -z / std
    if power_spectrum is None:
        raise ValueError("the blended target needs the power spectrum of the data")
    dims = tuple(range(1, z.ndim))
    s2 = std * std
    w = s2 / (s2 + power_spectrum.to(z.dtype))
    mixed = w * torch.fft.fftn(-z / std, dim=dims) + (1.0 - w) * torch.fft.fftn(force0, dim=dims)
    return torch.fft.ifftn(mixed, dim=dims).real.to(z.dtype)


def per_config_loss(score_fn: ScoreFn, x0: torch.Tensor, t: torch.Tensor, z: torch.Tensor, sde: VESDE, *,
                    force0: torch.Tensor | None = None, power_spectrum: torch.Tensor | None = None) -> torch.Tensor:
    """``mean_sites |s (score(x_t) - T)|^2`` per configuration for given ``t`` and ``z`` (unweighted)."""
    std = sde.std(t).to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    xt = x0 + std * z
    s = score_fn(xt, t)
    r = (s - score_target(z, std, force0, power_spectrum)) * std
    return (r * r).reshape(x0.shape[0], -1).mean(dim=1)


def dsm_loss(score_fn: ScoreFn, x0: torch.Tensor, sde: VESDE, generator: torch.Generator,
             t_sampling: str = "uniform", *, weighting: str = "sigma2", force0: torch.Tensor | None = None,
             power_spectrum: torch.Tensor | None = None, sigma_data: float = 1.0, noise_draws: int = 1,
             sigma_low: float | None = None) -> torch.Tensor:
    """Score-matching loss (scalar) on the batch ``x0`` (model units): ``noise_draws`` draws of
    ``(t, z)`` per configuration from ``generator``; ``force0`` switches on the blended target."""
    if noise_draws > 1:
        x0 = x0.repeat(noise_draws, *([1] * (x0.ndim - 1)))
        if force0 is not None:
            force0 = force0.repeat(noise_draws, *([1] * (force0.ndim - 1)))
    n = x0.shape[0]
    t = sample_times(n, sde, generator, t_sampling, x0.dtype, sigma_low=sigma_low).to(x0.device)
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=generator.device).to(x0.device)
    per = per_config_loss(score_fn, x0, t, z, sde, force0=force0, power_spectrum=power_spectrum)
    w = loss_weight(t, sde, weighting, t_sampling, sigma_data, sigma_low).to(per.dtype).to(per.device)
    return (w * per).mean()
