r"""The free (Gaussian) real scalar field, with everything known in closed form.

``S = sum_x [ 1/2 sum_mu (phi_{x+mu} - phi_x)^2 + m^2 phi_x^2 / 2 ] = 1/2 phi^T K phi`` with
``K = -Laplacian + m^2`` (requires m^2 > 0). In momentum space K is diagonal with eigenvalues
``p_hat^2 + m^2``. Exact results (V = volume, T = L_0 the "time" extent, axis 0):

* propagator ``G(x) = <phi_x phi_0> = (1/V) sum_p e^{ipx} / (p_hat^2 + m^2)``; ``<phi^2> = G(0)``;
* susceptibility ``chi_2 = V (<M^2> - <M>^2) = sum_x G(x) = 1/m^2`` with ``M = (1/V) sum_x phi_x``;
* Binder cumulant ``U_L = 1 - <M^4>/(3<M^2>^2) = 0`` (M is Gaussian);
* zero-momentum (time-slice) correlator ``C(t) = sum_{x_spatial} G(t, x)
  = (1/T) sum_{p_0} cos(p_0 t) / (4 sin^2(p_0/2) + m^2)``, whose effective mass is
  ``arccosh(1 + m^2/2)`` at every t (cosh form).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.lattice import Lattice
from lftml.theories.phi4 import Phi4


@dataclass(frozen=True)
class FreeScalar:
    """Free scalar field of bare mass squared ``m2 > 0`` on ``lattice``."""

    lattice: Lattice
    m2: float

    def __post_init__(self) -> None:
        m2 = float(self.m2)
        if not math.isfinite(m2) or m2 <= 0:
            raise LftmlError(
                f"the free field needs m2 > 0 (its kernel -Laplacian + m2 has a zero mode otherwise), got m2 = {self.m2}"
            )
        object.__setattr__(self, "m2", m2)

    # ------------------------------------------------------------ action
    @property
    def coefficients(self) -> tuple[float, float, float]:
        """(c_hop, c_2, c_4) in the common phi^4 form (see :mod:`lftml.theories.phi4`)."""
        return 1.0, self.lattice.ndim + self.m2 / 2.0, 0.0

    def as_phi4(self) -> Phi4:
        """The same action as a (lambda = 0) :class:`Phi4` in the ``m2_lam4`` form."""
        return Phi4.m2_lam4(self.lattice, self.m2, 0.0)

    def action(self, phi: torch.Tensor) -> torch.Tensor:
        """S per configuration."""
        return self.as_phi4().action(phi)

    def force(self, phi: torch.Tensor) -> torch.Tensor:
        """``-dS/dphi = Laplacian(phi) - m^2 phi``."""
        return self.lattice.laplacian(phi) - self.m2 * phi

    def mean_field_vev(self) -> float:
        return 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": "free", "shape": list(self.lattice.shape), "m2": self.m2}

    def describe(self) -> str:
        return f"free scalar (m2={self.m2:g}) on {self.lattice.shape}"

    # ------------------------------------------------------------ exact results
    def spectrum(self) -> np.ndarray:
        """Eigenvalues ``p_hat^2 + m^2`` of K on the momentum grid (shape = lattice shape)."""
        return self.lattice.p_hat2() + self.m2

    def eigenvalues(self) -> np.ndarray:
        """All V eigenvalues of K, ascending."""
        return np.sort(self.spectrum().ravel())

    def kernel_matrix(self) -> np.ndarray:
        """Dense K = -Laplacian + m^2 (V x V, row-major site order)."""
        return self.lattice.laplacian_matrix() + self.m2 * np.eye(self.lattice.volume)

    def propagator(self) -> np.ndarray:
        """``G(x) = <phi_x phi_0>`` for every separation x (shape = lattice shape)."""
        return np.fft.ifftn(1.0 / self.spectrum()).real

    def phi2(self) -> float:
        """``<phi_x^2> = G(0)``."""
        return float(self.propagator().flat[0])

    def susceptibility(self) -> float:
        """``chi_2 = sum_x G(x) = 1/m^2``."""
        return 1.0 / self.m2

    def magnetisation_variance(self) -> float:
        """``<M^2> = chi_2 / V``."""
        return self.susceptibility() / self.lattice.volume

    def binder(self) -> float:
        """``U_L = 0`` for a Gaussian field."""
        return 0.0

    def zero_momentum_correlator(self) -> np.ndarray:
        """``C(t) = sum_{x_spatial} G(t, x)``, t = 0..T-1 along axis 0."""
        G = self.propagator()
        return G.reshape(self.lattice.shape[0], -1).sum(axis=1)

    def effective_mass(self) -> float:
        """Exact (cosh) effective mass ``arccosh(1 + m^2/2)`` of the zero-momentum correlator."""
        return float(np.arccosh(1.0 + self.m2 / 2.0))

    def log_partition(self) -> float:
        """``log Z = (V/2) log(2 pi) - (1/2) log det K`` for ``Z = int dphi exp(-S)``."""
        return 0.5 * self.lattice.volume * math.log(2 * math.pi) - 0.5 * float(np.log(self.spectrum()).sum())

    def sample(
        self,
        n: int,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """``n`` exact independent configurations ``(n, *shape)`` by FFT: phi = F^-1 (F xi / sqrt(K_p))
        with xi white Gaussian noise drawn from ``generator``."""
        if n < 1:
            raise LftmlError(f"number of samples must be >= 1, got {n}")
        shape = self.lattice.shape
        xi = torch.randn((n, *shape), generator=generator, dtype=torch.float64, device=generator.device)
        inv_sqrt = torch.as_tensor(1.0 / np.sqrt(self.spectrum()), dtype=torch.float64, device=xi.device)
        dims = self.lattice.dims
        phi = torch.fft.ifftn(torch.fft.fftn(xi, dim=dims) * inv_sqrt, dim=dims).real
        return phi.to(dtype=dtype, device=device)
