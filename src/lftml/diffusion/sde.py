r"""The variance-expanding (VE) SDE of score-based diffusion models.

Conventions (used throughout :mod:`lftml.diffusion`)
----------------------------------------------------
* Diffusion time ``t`` runs over ``[0, 1]``: ``t = 0`` is the data, ``t = 1`` is (almost) pure noise.
* Forward process: ``dx = sigma^t dw`` (no drift), i.e. diffusion coefficient ``g(t) = sigma^t``
  with the scalar ``sigma > 1`` (the reference default is 25).
* Exact perturbation kernel: ``x(t) | x(0) ~ N(x(0), std(t)^2 I)`` with
  ``std(t)^2 = int_0^t sigma^{2s} ds = (sigma^{2t} - 1) / (2 ln sigma)``.
  ``std(1) = sqrt((sigma^2 - 1) / (2 ln sigma))`` is the largest noise scale, called ``sigma_max``
  in the code (it is *not* ``sigma`` itself: ``sigma = 25`` gives ``sigma_max ~ 9.84``).
* Prior: ``N(0, sigma_max^2 I)`` (the data's own spread is neglected against ``sigma_max``).
* The *score* is ``grad_x log p_t(x)`` (points towards higher probability). For a Boltzmann
  distribution ``p ~ exp(-S)`` at ``t = 0`` the score is the stochastic-quantisation drift
  ``-dS/dphi`` (the engine's ``force``).
* Fields inside the diffusion model are in *model units* ``x = scale * phi`` (see
  :class:`lftml.diffusion.model.DataScaling`), float32 by default.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from lftml.errors import LftmlError

__all__ = ["VESDE", "max_pairwise_distance", "check_sigma_max"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VESDE:
    """Variance-expanding SDE ``dx = sigma^t dw`` on ``t in [0, 1]``.

    Parameters
    ----------
    sigma:
        Base of the noise schedule (``> 1``); the reference default is 25.
    eps:
        Smallest diffusion time used in training and sampling (``t = 0`` has ``std = 0`` and a
        singular score); ``1e-5`` as in the reference implementation.
    """

    sigma: float = 25.0
    eps: float = 1e-5

    def __post_init__(self) -> None:
        s = float(self.sigma)
        if not math.isfinite(s) or s <= 1.0:
            raise LftmlError(f"the VE SDE needs sigma > 1 (noise must grow with t), got sigma = {self.sigma}")
        e = float(self.eps)
        if not (0.0 < e < 0.5):
            raise LftmlError(f"the smallest diffusion time eps must be in (0, 0.5), got {self.eps}")
        object.__setattr__(self, "sigma", s)
        object.__setattr__(self, "eps", e)

    # ------------------------------------------------------------ schedule
    @property
    def log_sigma(self) -> float:
        return math.log(self.sigma)

    @property
    def sigma_max(self) -> float:
        """``std(1) = sqrt((sigma^2 - 1) / (2 ln sigma))``: the prior's standard deviation."""
        return math.sqrt((self.sigma**2 - 1.0) / (2.0 * self.log_sigma))

    def std(self, t: torch.Tensor) -> torch.Tensor:
        """Exact perturbation-kernel standard deviation ``sqrt((sigma^{2t} - 1) / (2 ln sigma))``."""
        t = torch.as_tensor(t)
        return torch.sqrt(torch.expm1(2.0 * t * self.log_sigma) / (2.0 * self.log_sigma))

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """Diffusion coefficient ``g(t) = sigma^t`` (so ``d std^2 / dt = g^2``)."""
        t = torch.as_tensor(t)
        return torch.exp(t * self.log_sigma)

    # ------------------------------------------------------------ kernels
    def perturb(
        self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample ``x(t) = x0 + std(t) z`` from the exact kernel; returns ``(x_t, z, std)`` with
        ``std`` broadcastable to ``x0`` (shape ``(n, 1, ..., 1)``)."""
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=generator.device).to(x0.device)
        std = self.std(t).to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
        return x0 + std * z, z, std

    def prior_sample(
        self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Draw ``x(1) ~ N(0, sigma_max^2 I)`` of the given shape."""
        z = torch.randn(shape, generator=generator, dtype=dtype, device=generator.device)
        return (self.sigma_max * z).to(device)

    def prior_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log N(x; 0, sigma_max^2 I)`` summed over all but the first (batch) axis."""
        n = x[0].numel()
        s2 = self.sigma_max**2
        flat = x.reshape(x.shape[0], -1)
        return -0.5 * n * math.log(2.0 * math.pi * s2) - 0.5 * (flat * flat).sum(dim=1) / s2

    def to_dict(self) -> dict:
        return {"name": "ve", "sigma": self.sigma, "eps": self.eps}

    @classmethod
    def from_dict(cls, d: dict) -> "VESDE":
        if d.get("name", "ve") != "ve":
            raise LftmlError(f"unknown SDE {d.get('name')!r}: only the variance-expanding SDE ('ve') exists")
        return cls(sigma=float(d["sigma"]), eps=float(d.get("eps", 1e-5)))


def max_pairwise_distance(x: torch.Tensor | np.ndarray, max_samples: int = 1024) -> float:
    """Largest Euclidean distance between two configurations of ``x`` (batch axis first);
    at most ``max_samples`` evenly spaced configurations are compared."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    if flat.shape[0] > max_samples:
        idx = torch.linspace(0, flat.shape[0] - 1, max_samples).long()
        flat = flat[idx]
    if flat.shape[0] < 2:
        return 0.0
    return float(torch.cdist(flat, flat).max())


def check_sigma_max(sde: VESDE, x: torch.Tensor | np.ndarray, factor: float = 0.5) -> float:
    """Warn (logging) when ``sigma_max`` is far below the data's largest pairwise distance
    (below ``factor`` times it), the situation of an ordered (broken-phase) ensemble where the prior
    does not cover both vacua. Returns the distance (in the units of ``x``)."""
    d = max_pairwise_distance(x)
    if sde.sigma_max < factor * d:
        log.warning(
            "sigma_max = %.3g of the VE SDE (sigma = %g) is far below the data's largest pairwise distance %.3g: "
            "the prior will not cover the data (e.g. both vacua of the broken phase); increase sigma "
            "so that sigma_max ~ %.3g",
            sde.sigma_max, sde.sigma, d, d,
        )
    return d
