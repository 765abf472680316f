"""Periodic hypercubic lattices of any dimension.

Conventions
-----------
* A lattice of ``shape = (L_0, ..., L_{d-1})`` has ``volume = prod(shape)`` sites and lattice
  spacing a = 1; all boundaries are periodic.
* Fields carry leading batch axes: a field is ``(..., *shape)``; the lattice axes are always the
  *last* ``d`` axes. ``shift(phi, mu, +1)[x] = phi[x + mu_hat]`` (forward neighbour).
* Momenta are ``p_mu = 2 pi n_mu / L_mu`` with ``n_mu = 0..L_mu-1`` (numpy FFT ordering), and the
  lattice momentum squared is ``p_hat^2 = sum_mu 4 sin^2(p_mu / 2)``, the spectrum of minus the
  lattice Laplacian.
* ``laplacian(phi)[x] = sum_mu (phi[x+mu] + phi[x-mu] - 2 phi[x])``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from lftml.errors import LftmlError

__all__ = ["Lattice"]


@dataclass(frozen=True)
class Lattice:
    """A periodic lattice with extents ``shape`` (any dimension d >= 1)."""

    shape: tuple[int, ...]

    def __init__(self, shape: Sequence[int] | int):
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        try:
            shape_tuple = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise LftmlError(f"lattice shape must be a sequence of integers, got {shape!r}") from None
        if len(shape_tuple) == 0:
            raise LftmlError("lattice shape is empty: give at least one extent, e.g. --shape 16 16")
        if any(s < 1 for s in shape_tuple) or any(float(s) != float(t) for s, t in zip(shape_tuple, shape)):
            raise LftmlError(
                f"lattice extents must be positive integers, got {tuple(shape)}; e.g. --shape 16 16"
            )
        object.__setattr__(self, "shape", shape_tuple)

    # ----------------------------------------------------------------- geometry
    @property
    def ndim(self) -> int:
        """Number of dimensions d."""
        return len(self.shape)

    @property
    def volume(self) -> int:
        """Number of sites V = prod(shape)."""
        return int(np.prod(self.shape))

    @property
    def dims(self) -> tuple[int, ...]:
        """Lattice axes of a batched field, counted from the end: (-d, ..., -1)."""
        return tuple(range(-self.ndim, 0))

    def check_field(self, phi: torch.Tensor | np.ndarray, name: str = "field") -> None:
        """Raise a clear error if the trailing axes of ``phi`` are not this lattice's shape."""
        trailing = tuple(phi.shape[phi.ndim - self.ndim :]) if phi.ndim >= self.ndim else tuple(phi.shape)
        if trailing != self.shape:
            raise LftmlError(
                f"{name} has shape {tuple(phi.shape)}, but the lattice is {self.shape}: "
                f"expected (..., {', '.join(map(str, self.shape))})"
            )

    def shift(self, phi: torch.Tensor, mu: int, direction: int = +1) -> torch.Tensor:
        """Periodic neighbour field: ``out[x] = phi[x + direction * mu_hat]``."""
        return torch.roll(phi, shifts=-direction, dims=mu - self.ndim)

    def laplacian(self, phi: torch.Tensor) -> torch.Tensor:
        """Lattice Laplacian ``sum_mu (phi[x+mu] + phi[x-mu] - 2 phi[x])`` (negative semi-definite)."""
        out = -2.0 * self.ndim * phi
        for mu in range(self.ndim):
            out = out + self.shift(phi, mu, +1) + self.shift(phi, mu, -1)
        return out

    def neighbour_sum(self, phi: torch.Tensor) -> torch.Tensor:
        """``sum_mu (phi[x+mu] + phi[x-mu])``: the 2d nearest neighbours of each site."""
        out = self.shift(phi, 0, +1) + self.shift(phi, 0, -1)
        for mu in range(1, self.ndim):
            out = out + self.shift(phi, mu, +1) + self.shift(phi, mu, -1)
        return out

    # ----------------------------------------------------------------- momenta
    def momenta(self) -> list[np.ndarray]:
        """Per-axis momenta ``2 pi n / L`` in numpy FFT ordering (one 1d array per axis)."""
        return [2.0 * np.pi * np.fft.fftfreq(L, d=1.0 / L) / L for L in self.shape]

    def p_hat2(self) -> np.ndarray:
        """``p_hat^2 = sum_mu 4 sin^2(p_mu/2)`` on the momentum grid, shape ``self.shape`` (FFT order)."""
        grids = np.meshgrid(*self.momenta(), indexing="ij")
        return sum(4.0 * np.sin(p / 2.0) ** 2 for p in grids)

    def laplacian_matrix(self) -> np.ndarray:
        """Dense (V, V) matrix of minus the Laplacian in row-major (C) site order. Small lattices only."""
        if self.volume > 4096:
            raise LftmlError(f"a dense {self.volume}x{self.volume} matrix is too large; use momentum space")
        eye = torch.eye(self.volume, dtype=torch.float64).reshape(self.volume, *self.shape)
        return (-self.laplacian(eye)).reshape(self.volume, self.volume).numpy()

    def to_dict(self) -> dict:
        return {"shape": list(self.shape)}
