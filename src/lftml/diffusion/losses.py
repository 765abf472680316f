r"""Denoising score matching for the VE SDE.

With ``x_t = x_0 + std(t) z`` the conditional score is ``-z / std(t)``, and with the weighting
``lambda(t) = std(t)^2`` the loss is

``L = E_{t ~ U(eps, 1), x_0, z} [ mean_sites | std(t) s(x_t, t) + z |^2 ]``

(averaged over lattice sites, not summed: the minimum is O(1) independently of the volume; the
reference implementation sums, which only rescales the loss). Its minimiser is the score of the
perturbed data distribution.

Diffusion times: ``t_sampling="uniform"`` draws ``t ~ U(eps, 1)`` (the reference); ``"mixed"`` draws
half of the batch uniformly and half with ``std(t)`` log-uniform in ``[std(eps), sigma_max]``, which
puts more training signal on the small noise levels that carry the lattice-scale physics. Both
weightings have the same minimiser (the exact score at every t).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from lftml.diffusion.sde import VESDE

__all__ = ["dsm_loss", "sample_times", "T_SAMPLING"]
T_SAMPLING = ("uniform", "mixed")

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sample_times(n: int, sde: VESDE, generator: torch.Generator, t_sampling: str = "uniform",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` diffusion times in ``[eps, 1]`` (see module docstring)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device)
    t = u * (1.0 - sde.eps) + sde.eps
    if t_sampling == "mixed":
        k = n // 2
        lo = math.log(float(sde.std(torch.tensor(sde.eps, dtype=torch.float64))))
        hi = math.log(sde.sigma_max)
        s = torch.exp(lo + u[:k] * (hi - lo))
        t[:k] = torch.log1p(2.0 * sde.log_sigma * s * s) / (2.0 * sde.log_sigma)
    elif t_sampling != "uniform":
        raise ValueError(f"unknown t_sampling {t_sampling!r}")
    return t.clamp(sde.eps, 1.0).to(dtype)


def dsm_loss(score_fn: ScoreFn, x0: torch.Tensor, sde: VESDE, generator: torch.Generator,
             t_sampling: str = "uniform") -> torch.Tensor:
    """Denoising-score-matching loss (scalar) on the batch ``x0`` (model units), with ``t`` and the
    noise ``z`` drawn from ``generator``."""
    n = x0.shape[0]
    t = sample_times(n, sde, generator, t_sampling, x0.dtype).to(x0.device)
    xt, z, std = sde.perturb(x0, t, generator)
    s = score_fn(xt, t)
    residual = s * std + z
    return (residual * residual).reshape(n, -1).mean(dim=1).mean()
