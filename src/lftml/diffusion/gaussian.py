r"""Exact scores and densities of a VE-diffused free (Gaussian) field: the reference for tests.

If the data are ``phi ~ N(0, K^{-1})`` (free field, ``K = -Laplacian + m^2``) and ``x = a phi``
(model units), the VE-perturbed distribution at time t is ``N(0, C_t)`` with
``C_t = a^2 K^{-1} + std(t)^2 I``. Both terms are diagonal in momentum space, with eigenvalues
``v_p(t) = a^2 / (p_hat^2 + m^2) + std(t)^2``, so the exact score is

``s(x, t) = -C_t^{-1} x = -F^{-1}[ F(x)_p / v_p(t) ]``

and ``log p_t(x) = -(1/2V) sum_p |F(x)_p|^2 / v_p - (1/2) sum_p log(2 pi v_p)`` (unnormalised DFT).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lftml.diffusion.sde import VESDE

__all__ = ["GaussianScore"]


class GaussianScore:
    """Callable exact score ``(x, t) -> s`` of a VE-diffused free field (model units).

    ``theory`` is a :class:`~lftml.theories.FreeScalar`; ``scale`` is the model-unit factor ``a``.
    """

    def __init__(self, theory, sde: VESDE, scale: float = 1.0):
        self.theory = theory
        self.sde = sde
        self.scale = float(scale)
        self.lattice_shape = tuple(theory.lattice.shape)
        self._data_var = torch.as_tensor(self.scale**2 / theory.spectrum(), dtype=torch.float64)
        self.dims = tuple(range(-len(self.lattice_shape), 0))

    def variances(self, t: torch.Tensor) -> torch.Tensor:
        """``v_p(t)`` with shape ``(n, *lattice_shape)`` for times ``t`` of shape ``(n,)`` (float64)."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        s2 = self.sde.std(t) ** 2
        return self._data_var[None] + s2.reshape(-1, *([1] * len(self.lattice_shape)))

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64, device="cpu")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        v = self.variances(t.cpu()).to(x.device)
        xh = torch.fft.fftn(x.to(torch.float64), dim=self.dims)
        return (-torch.fft.ifftn(xh / v, dim=self.dims).real).to(x.dtype)

    def score_parts(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole score is analytic: ``(score, 0)``."""
        s = self(x, t)
        return s, torch.zeros_like(s)

    def analytic_power_spectrum(self) -> torch.Tensor:
        """Per-mode data variance ``a^2 / (p_hat^2 + m^2)`` (model units, float64)."""
        return self._data_var.clone()

    def analytic_divergence(self, t: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """``div s = -sum_p 1 / v_p(t)`` (exact; the same for every ``x``)."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        return -(1.0 / self.variances(t)).reshape(t.shape[0], -1).sum(1)

    def log_prob(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Exact ``log p_t(x)`` per configuration (float64)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        v = self.variances(t)
        V = int(np.prod(self.lattice_shape))
        xh = torch.fft.fftn(x.to(torch.float64).cpu(), dim=self.dims)
        quad = (xh.abs() ** 2 / v).reshape(x.shape[0], -1).sum(1) / V
        return -0.5 * quad - 0.5 * torch.log(2 * math.pi * v).reshape(x.shape[0], -1).sum(1)
