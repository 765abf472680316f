"""The relativistic Bose gas at finite chemical potential on a d-dimensional lattice.

Aarts, PRL 102 (2009) 131601 [arXiv:0810.2089]. With a complex field phi and the *last* lattice
axis as Euclidean time (the issue's ``nu = 4``),

    S = sum_x [ (2d + m^2) phi*_x phi_x + lam (phi*_x phi_x)^2
                - sum_nu ( phi*_x e^{-mu delta_{nu,t}} phi_{x+nu} + phi*_{x+nu} e^{mu delta_{nu,t}} phi_x ) ].

Writing ``phi = (phi_1 + i phi_2)/sqrt(2)`` (two real fields, component axis right after the chain
axis: fields are ``(n_chains, 2, *shape)``):

    S = sum_x [ (d + m^2/2) phi_a^2 + (lam/4) (phi_a^2)^2 - sum_{i spatial} phi_{a,x} phi_{a,x+i}
                - cosh(mu) phi_{a,x} phi_{a,x+t} + i sinh(mu) eps_ab phi_{a,x} phi_{b,x+t} ],

``eps_12 = -eps_21 = 1``. The action is complex for mu != 0 (sign problem); complex Langevin
complexifies ``phi_a``. Drift ``K_a = -dS/dphi_a``

    K_a(x) = -(2d + m^2) phi_a - lam phi_b^2 phi_a + sum_i (phi_a(x+i) + phi_a(x-i))
             + cosh(mu) (phi_a(x+t) + phi_a(x-t)) - i sinh(mu) eps_ab (phi_b(x+t) - phi_b(x-t)).

Observables (holomorphic, V = number of sites):

* density ``n = (1/V) d ln Z / d mu = (1/V) sum_x [ sinh(mu) phi_{a,x} phi_{a,x+t}
  - i cosh(mu) eps_ab phi_{a,x} phi_{b,x+t} ]`` (= ``(1/V) sum_x (e^mu phi*_{x+t} phi_x - e^-mu phi*_x phi_{x+t})``);
* ``phi2 = <|phi|^2> = (1/V) sum_x phi*_x phi_x = (1/(2V)) sum_x phi_a^2``.

Free theory (lam = 0): with ``M(p) = m^2 + sum_{i spatial} 4 sin^2(p_i/2) + 2 - 2 cosh(mu - i p_t)``,
``ln Z = -sum_p ln M(p) + const``, so

    n = -(1/V) sum_p M'(p)/M(p),  M'(p) = dM/dmu = -2 sinh(mu) cos p_t + 2 i cosh(mu) sin p_t,
    <|phi|^2> = (1/V) sum_p 1/M(p).

This normalisation (Z = int D phi D phi* e^{-S}, density per site, ``|phi|^2 = phi* phi``) reproduces the
numbers of the issue: on 4^4 with m = 1, n = 0.005464 at mu = 0.5 and n = 0.068605 at mu = 0.9
(<|phi|^2> = 0.129811 and 0.155049). The free theory exists for ``cosh(mu) < 1 + m^2/2`` (Re M > 0);
at larger mu the Gaussian integral diverges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.lattice import Lattice

__all__ = [
    "BoseGas",
    "PhaseQuenchedBoseGas",
    "free_bose_gas_exact",
    "free_bose_gas_stable",
    "free_bose_gas_discrete",
]


def _eps_apply(v: torch.Tensor) -> torch.Tensor:
    """``(eps v)_a = eps_ab v_b`` on the component axis 1: ``(v_2, -v_1)``."""
    return torch.stack((v[:, 1], -v[:, 0]), dim=1)


def free_bose_gas_stable(m: float, mu: float) -> bool:
    """Whether the free lattice theory exists (``cosh mu < 1 + m^2/2``)."""
    return math.cosh(mu) < 1.0 + 0.5 * m * m


def free_bose_gas_exact(shape: Sequence[int], m: float, mu: float) -> dict[str, complex]:
    """Exact free-theory (lam = 0) ``density`` and ``phi2`` as lattice momentum sums (module docstring).

    The last axis of ``shape`` is time. Raises :class:`LftmlError` outside the stable region.
    """
    lat = Lattice(shape)
    if not free_bose_gas_stable(m, mu):
        raise LftmlError(
            f"the free Bose gas with m={m} is unstable at mu={mu} (needs cosh(mu) < 1 + m^2/2, i.e. mu < "
            f"{math.acosh(1 + 0.5 * m * m):.6f}); add an interaction --lam > 0"
        )
    grids = np.meshgrid(*lat.momenta(), indexing="ij")
    spatial = sum((4.0 * np.sin(p / 2.0) ** 2 for p in grids[:-1]), np.zeros(lat.shape))
    pt = grids[-1]
    big_m = m * m + spatial + 2.0 - 2.0 * np.cosh(mu) * np.cos(pt) + 2j * np.sinh(mu) * np.sin(pt)
    dm = -2.0 * np.sinh(mu) * np.cos(pt) + 2j * np.cosh(mu) * np.sin(pt)
    v = lat.volume
    return {"density": complex(-(dm / big_m).sum() / v), "phi2": complex((1.0 / big_m).sum() / v)}


def free_bose_gas_discrete(
    shape: Sequence[int], m: float, mu: float, step_size: float = 0.0, scheme: str = "euler"
) -> dict[str, complex]:
    """Exact stationary ``density`` and ``phi2`` of the *discretised* complex Langevin process for the
    free theory (dense linear algebra; small lattices only, 2V <= 4096).

    For a linear drift ``K = -A phi`` (A the complex symmetric Hessian in the two-real-field basis) the
    stationary distribution is Gaussian with covariance ``C`` (``<phi phi^T> = C``):
    Euler ``C = [A (1 - eps A/2)]^{-1}``; Heun ``C = 2 eps B^2 (1 - G^2)^{-1}`` with
    ``G = 1 - eps A + eps^2 A^2/2``, ``B = 1 - eps A/2``. ``step_size = 0`` gives ``C = A^{-1}``, i.e. the
    exact answer, which equals :func:`free_bose_gas_exact` (a check of action, drift and observables).
    Then ``phi2 = tr C / (2V)`` and ``density = tr(N C)`` with ``n(phi) = phi^T N phi``.
    """
    model = BoseGas(tuple(shape), m=m, lam=0.0, mu=mu)
    dim = 2 * model.volume
    if dim > 4096:
        raise LftmlError(f"free_bose_gas_discrete needs a dense {dim}x{dim} matrix; use a lattice with <= 2048 sites")
    basis = torch.eye(dim, dtype=torch.complex128).reshape(dim, *model.field_shape)
    a = -model.drift(basis).reshape(dim, dim).numpy().T  # column j = -K(e_j)
    n_mat = 0.5 * model.density_gradient(basis).reshape(dim, dim).numpy().T
    eye = np.eye(dim)
    eps = float(step_size)
    if eps == 0:
        c = np.linalg.inv(a)
    elif scheme == "euler":
        c = np.linalg.inv(a @ (eye - 0.5 * eps * a))
    elif scheme == "heun":
        g = eye - eps * a + 0.5 * eps * eps * a @ a
        b = eye - 0.5 * eps * a
        c = 2 * eps * b @ b @ np.linalg.inv(eye - g @ g)
    else:
        raise LftmlError(f"unknown scheme {scheme!r}; choose euler or heun")
    return {"density": complex(np.trace(n_mat @ c)), "phi2": complex(np.trace(c) / dim)}


@dataclass(frozen=True)
class BoseGas:
    """Complex-Langevin model of the relativistic Bose gas (see module docstring for all conventions).

    ``shape``: lattice extents, last axis = time (needs extent >= 2); ``m``: bare mass; ``lam``: quartic
    coupling; ``mu``: chemical potential.
    """

    shape: tuple[int, ...]
    m: float = 1.0
    lam: float = 0.0
    mu: float = 0.0
    name: str = "bose_gas"

    def __post_init__(self) -> None:
        lat = Lattice(self.shape)
        object.__setattr__(self, "shape", lat.shape)
        if lat.shape[-1] < 2:
            raise LftmlError(f"the time extent (last axis of --shape) must be >= 2, got shape {lat.shape}")
        for k in ("m", "lam", "mu"):
            v = getattr(self, k)
            if isinstance(v, complex) or not math.isfinite(float(v)):
                raise LftmlError(f"{k} must be a finite real number, got {v!r}")
            object.__setattr__(self, k, float(v))
        if self.lam < 0:
            raise LftmlError(f"lam must be >= 0 (the action is unbounded below otherwise), got {self.lam}")
        if self.lam == 0 and not free_bose_gas_stable(self.m, self.mu):
            raise LftmlError(
                f"the free Bose gas (lam=0) with m={self.m} does not exist at mu={self.mu}: needs mu < "
                f"{math.acosh(1 + 0.5 * self.m**2):.4f}; lower --mu or set --lam > 0"
            )

    # ------------------------------------------------------------ geometry
    @property
    def lattice(self) -> Lattice:
        return Lattice(self.shape)

    @property
    def volume(self) -> int:
        return int(np.prod(self.shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def field_shape(self) -> tuple[int, ...]:
        return (2, *self.shape)

    def _shift(self, z: torch.Tensor, axis: int, direction: int) -> torch.Tensor:
        """``out[x] = z[x + direction * axis_hat]`` for lattice axis ``axis`` (0..d-1)."""
        return torch.roll(z, shifts=-direction, dims=2 + axis)

    # ------------------------------------------------------------ action and drift
    def action(self, z: torch.Tensor) -> torch.Tensor:
        d, t = self.ndim, self.ndim - 1
        p2 = (z * z).sum(1)
        s = (d + 0.5 * self.m**2) * p2 + 0.25 * self.lam * p2 * p2
        for i in range(d - 1):
            s = s - (z * self._shift(z, i, +1)).sum(1)
        fwd = self._shift(z, t, +1)
        s = s - math.cosh(self.mu) * (z * fwd).sum(1)
        s = s + 1j * math.sinh(self.mu) * (z[:, 0] * fwd[:, 1] - z[:, 1] * fwd[:, 0])
        return s.reshape(s.shape[0], -1).sum(1)

    def drift(self, z: torch.Tensor) -> torch.Tensor:
        d, t = self.ndim, self.ndim - 1
        p2 = (z * z).sum(1, keepdim=True)
        k = -(2 * d + self.m**2) * z - self.lam * p2 * z
        for i in range(d - 1):
            k = k + self._shift(z, i, +1) + self._shift(z, i, -1)
        fwd, bwd = self._shift(z, t, +1), self._shift(z, t, -1)
        k = k + math.cosh(self.mu) * (fwd + bwd) - 1j * math.sinh(self.mu) * _eps_apply(fwd - bwd)
        return k

    # ------------------------------------------------------------ observables
    def _density_terms(self, z: torch.Tensor) -> torch.Tensor:
        fwd = self._shift(z, self.ndim - 1, +1)
        dens = math.sinh(self.mu) * (z * fwd).sum(1) - 1j * math.cosh(self.mu) * (
            z[:, 0] * fwd[:, 1] - z[:, 1] * fwd[:, 0]
        )
        return dens.reshape(dens.shape[0], -1).mean(1)

    def observables(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        phi2 = 0.5 * (z * z).reshape(z.shape[0], -1).sum(1) / self.volume
        return {"density": self._density_terms(z), "phi2": phi2}

    def density_gradient(self, z: torch.Tensor) -> torch.Tensor:
        """``d n / d phi_a(x)`` of the density observable (linear in the field)."""
        t = self.ndim - 1
        fwd, bwd = self._shift(z, t, +1), self._shift(z, t, -1)
        return (math.sinh(self.mu) * (fwd + bwd) - 1j * math.cosh(self.mu) * _eps_apply(fwd - bwd)) / self.volume

    def criterion(self, z: torch.Tensor, drift: torch.Tensor) -> dict[str, torch.Tensor]:
        """``L_c O = sum (d + K) d O`` for density and phi2 (second derivatives: phi2 gives 2, the
        density none, since it only couples different sites for time extent >= 2)."""
        grad_n = self.density_gradient(z)
        n = z.shape[0]
        lc_n = (drift * grad_n).reshape(n, -1).sum(1)
        lc_phi2 = 2.0 + (drift * z).reshape(n, -1).sum(1) / self.volume
        return {"density": lc_n, "phi2": lc_phi2}

    def exact(self) -> dict[str, complex | None]:
        if self.lam == 0 and free_bose_gas_stable(self.m, self.mu):
            return dict(free_bose_gas_exact(self.shape, self.m, self.mu))
        return {"density": None, "phi2": None}

    def initial(self, n_chains: int) -> torch.Tensor:
        return torch.zeros(n_chains, *self.field_shape, dtype=torch.complex128)

    def phase_quenched(self) -> "PhaseQuenchedBoseGas":
        return PhaseQuenchedBoseGas(shape=self.shape, m=self.m, lam=self.lam, mu=self.mu)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.name, "shape": list(self.shape), "m": self.m, "lam": self.lam, "mu": self.mu}


@dataclass(frozen=True)
class PhaseQuenchedBoseGas(BoseGas):
    """The phase-quenched theory: real fields with weight ``|e^{-S}| = e^{-Re S}`` (real Langevin).

    The drift is ``Re K`` at real fields and the noise is real, so fields stay real. The observable
    ``phase_factor = e^{-i Im S}`` has ``<e^{i phi}>_pq = Z / Z_pq``, the average phase factor, which
    measures the severity of the sign problem (Aarts 2009, Fig. 4). ``density`` here is the full
    theory's density operator evaluated on phase-quenched configurations (not the full answer).
    """

    name: str = "bose_gas_phase_quenched"

    def drift(self, z: torch.Tensor) -> torch.Tensor:
        k = super().drift(z.real.to(torch.complex128))
        return torch.complex(k.real, torch.zeros_like(k.real))

    def observables(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        zr = z.real.to(torch.complex128)
        out = super().observables(zr)
        s = self.action(zr)
        out["phase_factor"] = torch.exp(-1j * s.imag)
        return out

    def criterion(self, z: torch.Tensor, drift: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def exact(self) -> dict[str, complex | None]:
        return {"density": None, "phi2": None, "phase_factor": None}
