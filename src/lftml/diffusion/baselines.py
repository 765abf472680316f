r"""Baselines every diffusion result is compared with: exact samplers with exact log q (FFT-diagonal).

* :class:`GaussianBaseline` (symmetric phase): ``N(mu, C)`` with ``mu`` a constant field and ``C``
  translation invariant, i.e. diagonal in momentum space with eigenvalues ``c_p``. Fitted to an
  ensemble: ``mu = 0`` (Z2) and ``c_p = <|F(phi)_p|^2> / V``, the data's two-point function (the
  Gaussian the ``gaussian`` parametrisation's analytic score part is built from).
* :class:`MixtureBaseline` (broken phase): ``q = 1/2 N(mu, C) + 1/2 N(-mu, C)``, fitted to the
  sign-aligned configurations ``s phi`` with ``s = sign(M)``: ``mu = <s M>`` and
  ``c_p = <|F(s phi - mu)_p|^2> / V``. Z2-symmetric by construction, so it has both vacua with
  equal weight; a Gaussian has one mode at M = 0, where the broken-phase density vanishes.

Conventions: unnormalised DFT ``F``; ``log N(phi; mu, C) = -(1/2V) sum_p |F(phi - mu)_p|^2 / c_p
- (1/2) sum_p log(2 pi c_p)``; samples ``phi = mu + F^-1[sqrt(c_p) F(z)]`` with white ``z``
(``c_p`` is symmetrised, ``c_p = c_{-p}``, so this is exactly ``N(mu, C)``). Engine units.
Both are exact: :meth:`sample` draws independent configurations and :meth:`log_prob` is the exact
density, so ``log w = -S - log q`` are exact importance weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.diffusion.sampling import color_noise, gaussian_log_prob, point_group_average, power_spectrum, symmetrize_spectrum

__all__ = ["GaussianBaseline", "MixtureBaseline", "BASELINES", "fit_baseline"]

BASELINES = ("gaussian", "mixture")


def _dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def _check_data(phi) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(phi), dtype=torch.float64)
    if x.ndim < 2 or x.shape[0] < 2:
        raise LftmlError(f"a baseline needs at least 2 configurations (n, *lattice_shape), got shape {tuple(x.shape)}")
    if not bool(torch.all(torch.isfinite(x))):
        raise LftmlError("the configurations contain NaN/inf; cannot fit a baseline")
    return x


@dataclass(frozen=True)
class GaussianBaseline:
    """``N(mean * 1, F^-1 diag(power_spectrum) F)`` on the lattice (engine units, float64)."""

    power_spectrum: torch.Tensor
    mean: float = 0.0

    def __post_init__(self) -> None:
        c = symmetrize_spectrum(torch.as_tensor(self.power_spectrum, dtype=torch.float64).cpu())
        if not bool(torch.all(c > 0)) or not bool(torch.all(torch.isfinite(c))):
            raise LftmlError("the baseline's power spectrum must be positive and finite on every mode")
        object.__setattr__(self, "power_spectrum", c)
        object.__setattr__(self, "mean", float(self.mean))

    @property
    def lattice_shape(self) -> tuple[int, ...]:
        return tuple(self.power_spectrum.shape)

    @classmethod
    def fit(cls, phi, point_group: bool = True) -> "GaussianBaseline":
        """Z2-symmetric fit: mean 0, ``c_p = <|F(phi)_p|^2> / V`` over the configurations, averaged
        over the lattice's reflections and equal-extent axis permutations unless ``point_group`` is
        false (:func:`~lftml.diffusion.sampling.point_group_average`)."""
        c = power_spectrum(_check_data(phi))
        return cls(point_group_average(c) if point_group else c, 0.0)

    @classmethod
    def from_model(cls, model) -> "GaussianBaseline | MixtureBaseline":
        """The analytic part of a :class:`~lftml.diffusion.model.ScoreModel`, in engine units: this
        Gaussian, or a :class:`MixtureBaseline` for the ``mixture`` parametrisation."""
        c = model.analytic_power_spectrum()
        if c is None:
            raise LftmlError("this model (reference parametrisation) has no analytic Gaussian part")
        vac = model.analytic_vacuum() if hasattr(model, "analytic_vacuum") else None
        if vac is not None:
            return MixtureBaseline(cls(c / model.scaling.scale**2, vac / model.scaling.scale))
        return cls(c / model.scaling.scale**2, 0.0)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` independent configurations ``(n, *lattice_shape)`` (float64)."""
        if n < 1:
            raise LftmlError(f"--n-configs must be >= 1, got {n}")
        z = torch.randn((n, *self.lattice_shape), generator=generator, dtype=torch.float64)
        return self.mean + color_noise(z, torch.sqrt(self.power_spectrum), _dims(z))

    def log_prob(self, phi) -> torch.Tensor:
        """Exact ``log q(phi)`` per configuration (float64)."""
        x = torch.as_tensor(np.asarray(phi) if not isinstance(phi, torch.Tensor) else phi, dtype=torch.float64)
        if tuple(x.shape[1:]) != self.lattice_shape:
            raise LftmlError(f"configurations of shape {tuple(x.shape[1:])} for a baseline on {self.lattice_shape}")
        return gaussian_log_prob(x, self.power_spectrum, self.mean)

    def to_dict(self) -> dict:
        return {"kind": "gaussian", "mean": self.mean, "zero_mode_variance": float(self.power_spectrum.flatten()[0])}


@dataclass(frozen=True)
class MixtureBaseline:
    """``1/2 N(mu, C) + 1/2 N(-mu, C)`` (engine units): ``component`` is ``N(mu, C)``."""

    component: GaussianBaseline

    @property
    def lattice_shape(self) -> tuple[int, ...]:
        return self.component.lattice_shape

    @classmethod
    def fit(cls, phi, point_group: bool = True) -> "MixtureBaseline":
        """Fit ``N(mu, C)`` to the sign-aligned configurations ``sign(M) phi`` (``sign(0) = +1``);
        ``point_group`` as for :meth:`GaussianBaseline.fit`."""
        x = _check_data(phi)
        M = x.reshape(x.shape[0], -1).mean(1)
        s = torch.where(M >= 0, 1.0, -1.0).to(torch.float64).reshape(-1, *([1] * (x.ndim - 1)))
        y = s * x
        mu = float(y.mean())
        c = power_spectrum(y, mu)
        return cls(GaussianBaseline(point_group_average(c) if point_group else c, mu))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        x = self.component.sample(n, generator)
        sign = torch.where(torch.rand(n, generator=generator, dtype=torch.float64) < 0.5, 1.0, -1.0)
        return sign.reshape(-1, *([1] * len(self.lattice_shape))).to(torch.float64) * x

    def log_prob(self, phi) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(phi) if not isinstance(phi, torch.Tensor) else phi, dtype=torch.float64)
        a = self.component.log_prob(x)
        b = self.component.log_prob(-x)  # N(-x; mu, C) = N(x; -mu, C)
        return torch.logaddexp(a, b) - math.log(2.0)

    def to_dict(self) -> dict:
        return {"kind": "mixture", "mean": self.component.mean,
                "zero_mode_variance": float(self.component.power_spectrum.flatten()[0])}


def fit_baseline(kind: str, phi, point_group: bool = True) -> GaussianBaseline | MixtureBaseline:
    """``gaussian`` or ``mixture`` fitted to configurations ``(n, *lattice_shape)`` (``point_group``:
    see :meth:`GaussianBaseline.fit`)."""
    if kind == "gaussian":
        return GaussianBaseline.fit(phi, point_group)
    if kind == "mixture":
        return MixtureBaseline.fit(phi, point_group)
    raise LftmlError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")
