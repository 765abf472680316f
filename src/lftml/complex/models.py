"""Complex actions for complex Langevin: one-site models with exact answers.

Conventions (shared by every model in :mod:`lftml.complex`)
-----------------------------------------------------------
* A model is a *holomorphic* action ``S(z)`` of complexified real variables. Fields are complex128
  tensors of shape ``(n_chains, *field_shape)``; one-site models have ``field_shape = (1,)``.
* ``action(z)`` is S per chain (complex, ``(n_chains,)``); ``drift(z) = K(z) = -dS/dz`` (holomorphic
  derivative, same shape as ``z``).
* ``observables(z)`` returns holomorphic observables ``O(z)`` per chain (complex ``(n_chains,)``),
  whose Langevin-time averages estimate ``<O> = int dx O(x) e^{-S(x)} / int dx e^{-S(x)}`` over the
  *real* (original) integration domain.
* ``criterion(z, K)`` returns ``L_c O = sum_k (d_k + K_k) d_k O`` for the same observables (the
  Langevin operator acting on holomorphic O, Aarts, James, Seiler, Stamatescu, EPJC 71 (2011) 1756).
  For correct convergence ``<L_c O> = 0``.
* ``exact()`` returns the exact expectation values (complex) or ``None`` per observable.
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from lftml.errors import LftmlError

__all__ = [
    "ComplexModel",
    "GaussianModel",
    "QuarticModel",
    "U1OneLinkModel",
    "model_from_dict",
    "parse_complex",
]


@runtime_checkable
class ComplexModel(Protocol):
    """What the complex Langevin sampler needs from a model."""

    name: str

    @property
    def field_shape(self) -> tuple[int, ...]: ...

    def action(self, z: torch.Tensor) -> torch.Tensor: ...

    def drift(self, z: torch.Tensor) -> torch.Tensor: ...

    def observables(self, z: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def criterion(self, z: torch.Tensor, drift: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def exact(self) -> dict[str, complex | None]: ...

    def initial(self, n_chains: int) -> torch.Tensor: ...

    def to_dict(self) -> dict[str, Any]: ...


def parse_complex(text: str | complex | float, name: str = "value") -> complex:
    """Parse ``"1+1j"``, ``"-1+4i"``, ``"2"``, ``"1j"`` (``i`` accepted for ``j``) into a complex number."""
    if isinstance(text, (int, float, complex)):
        return complex(text)
    s = str(text).strip().replace(" ", "").replace("I", "j").replace("i", "j").replace("J", "j")
    try:
        value = complex(s)
    except ValueError:
        raise LftmlError(f"cannot parse {name} {text!r} as a complex number; write e.g. 1+1j, -1+4j or 0.5") from None
    if not (math.isfinite(value.real) and math.isfinite(value.imag)):
        raise LftmlError(f"{name} must be finite, got {text!r}")
    return value


def _c(x: complex) -> list[float]:
    return [float(x.real), float(x.imag)]


def _from_pair(x: Any) -> complex:
    if isinstance(x, (list, tuple)):
        return complex(float(x[0]), float(x[1]))
    return complex(x)


def _one_site(z: torch.Tensor) -> torch.Tensor:
    return z[:, 0]


class _OneSiteMoments:
    """Observables z^2, z^4 of a one-site model and their Langevin operators
    ``L_c z^n = n(n-1) z^(n-2) + n z^(n-1) K`` (for ``<L_c O> = 0``)."""

    def observables(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        x = _one_site(z)
        x2 = x * x
        return {"z2": x2, "z4": x2 * x2}

    def criterion(self, z: torch.Tensor, drift: torch.Tensor) -> dict[str, torch.Tensor]:
        x, k = _one_site(z), _one_site(drift)
        return {"z2": 2.0 + 2.0 * x * k, "z4": 12.0 * x * x + 4.0 * x**3 * k}


@dataclass(frozen=True)
class GaussianModel(_OneSiteMoments):
    """Gaussian one-site model ``S = sigma z^2 / 2`` with complex ``sigma`` (``Re sigma > 0``).

    Exact: ``<z^2> = 1/sigma``, ``<z^4> = 3/sigma^2``. Complex Langevin is exact for this model; the
    Euler discretisation with step eps has the stationary bias ``<z^2>_eps = 1/(sigma (1 - eps sigma/2))``
    (see :func:`lftml.complex.exact.gaussian_z2_euler`), and is stable for ``|1 - eps sigma| < 1``.
    """

    sigma: complex = 1.0 + 1.0j
    name: str = "gaussian"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", parse_complex(self.sigma, "sigma"))
        if self.sigma.real <= 0:
            raise LftmlError(
                f"the Gaussian model needs Re sigma > 0 (the integral over the real line diverges), got sigma={self.sigma}"
            )

    @property
    def field_shape(self) -> tuple[int, ...]:
        return (1,)

    def action(self, z: torch.Tensor) -> torch.Tensor:
        x = _one_site(z)
        return 0.5 * self.sigma * x * x

    def drift(self, z: torch.Tensor) -> torch.Tensor:
        return -self.sigma * z


    def exact(self) -> dict[str, complex | None]:
        return {"z2": 1.0 / self.sigma, "z4": 3.0 / self.sigma**2}

    def initial(self, n_chains: int) -> torch.Tensor:
        return torch.zeros(n_chains, 1, dtype=torch.complex128)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.name, "sigma": _c(self.sigma)}


@dataclass(frozen=True)
class QuarticModel(_OneSiteMoments):
    """Quartic one-site model ``S = sigma z^2 / 2 + lam z^4 / 4`` (complex sigma, lam; ``Re lam > 0``
    or a rotated contour, see :func:`lftml.complex.exact.quartic_moments`).

    Known behaviour (Aarts, Giudice, Seiler, Ann. Phys. 337 (2013) 238; Scherzer, Seiler, Sexty,
    Stamatescu, PRD 99 (2019) 014512): for ``sigma = 1 + i, lam = 1`` the complex Langevin
    distribution is localised in a strip around the real axis and the results are correct; for
    ``sigma = -1 + 4i, lam = 1`` the distribution decays only like a power in ``Im z``, boundary
    terms do not vanish, and the results are wrong.
    """

    sigma: complex = 1.0 + 1.0j
    lam: complex = 1.0
    name: str = "quartic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", parse_complex(self.sigma, "sigma"))
        object.__setattr__(self, "lam", parse_complex(self.lam, "lam"))
        if self.lam == 0 and self.sigma.real <= 0:
            raise LftmlError("with lam = 0 the quartic model is Gaussian and needs Re sigma > 0")
        if self.lam != 0 and abs(cmath.phase(self.lam)) >= math.pi * 0.999:
            raise LftmlError(
                f"lam = {self.lam} has arg(lam) ~ pi: the quartic integral does not exist (the action is unbounded "
                "below); use Re lam > 0"
            )

    @property
    def field_shape(self) -> tuple[int, ...]:
        return (1,)

    def action(self, z: torch.Tensor) -> torch.Tensor:
        x = _one_site(z)
        x2 = x * x
        return 0.5 * self.sigma * x2 + 0.25 * self.lam * x2 * x2

    def drift(self, z: torch.Tensor) -> torch.Tensor:
        return -(self.sigma * z + self.lam * z**3)


    def exact(self) -> dict[str, complex | None]:
        from lftml.complex.exact import quartic_moments

        m = quartic_moments(self.sigma, self.lam, orders=(2, 4))
        return {"z2": m[2], "z4": m[4]}

    def initial(self, n_chains: int) -> torch.Tensor:
        return torch.zeros(n_chains, 1, dtype=torch.complex128)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.name, "sigma": _c(self.sigma), "lam": _c(self.lam)}


@dataclass(frozen=True)
class U1OneLinkModel:
    """U(1) one-link model at chemical potential mu: ``S = -beta cos z - kappa cos(z - i mu)``,
    ``z = x`` an angle in ``(-pi, pi]`` complexified to ``x + i y``.

    Exact solution: ``beta cos x + kappa cos(x - i mu) = xi cos(x - i theta)`` with
    ``xi cosh(theta) = beta + kappa cosh(mu)``, ``xi sinh(theta) = kappa sinh(mu)``, i.e.
    ``xi e^{+-theta} = beta + kappa e^{+-mu}`` and ``xi^2 = beta^2 + kappa^2 + 2 beta kappa cosh(mu)``.
    Shifting the (periodic) contour by ``i theta`` gives ``Z = 2 pi I_0(xi)`` and

        <e^{+ix}> = e^{-theta} I_1(xi) / I_0(xi),   <e^{-ix}> = e^{+theta} I_1(xi) / I_0(xi).

    (Computed as ``(beta + kappa e^{-+mu}) I_1(xi) / (xi I_0(xi))``, independent of the branch of xi;
    verified against direct quadrature in the tests.) The drift is
    ``K = -beta sin z - kappa sin(z - i mu)``; the real part of ``z`` is kept in ``(-pi, pi]``.
    With ``beta = 0`` the drift grows like ``e^{|y|}`` away from the real axis and fixed-step
    Euler integration runs away (Aarts, James, Seiler, Stamatescu, PLB 687 (2010) 154); the
    adaptive step size cures it.
    """

    beta: float = 1.0
    kappa: float = 1.0
    mu: float = 1.0
    name: str = "u1"

    def __post_init__(self) -> None:
        for k in ("beta", "kappa", "mu"):
            v = getattr(self, k)
            if isinstance(v, complex) or not math.isfinite(float(v)):
                raise LftmlError(f"{k} must be a finite real number, got {v!r}")
            object.__setattr__(self, k, float(v))

    @property
    def field_shape(self) -> tuple[int, ...]:
        return (1,)

    def action(self, z: torch.Tensor) -> torch.Tensor:
        x = _one_site(z)
        return -self.beta * torch.cos(x) - self.kappa * torch.cos(x - 1j * self.mu)

    def drift(self, z: torch.Tensor) -> torch.Tensor:
        return -self.beta * torch.sin(z) - self.kappa * torch.sin(z - 1j * self.mu)

    def observables(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        x = _one_site(z)
        e = torch.exp(1j * x)
        return {"exp_ix": e, "exp_minus_ix": 1.0 / e}

    def criterion(self, z: torch.Tensor, drift: torch.Tensor) -> dict[str, torch.Tensor]:
        x, k = _one_site(z), _one_site(drift)
        e = torch.exp(1j * x)
        return {"exp_ix": (-1.0 + 1j * k) * e, "exp_minus_ix": (-1.0 - 1j * k) / e}

    def exact(self) -> dict[str, complex | None]:
        from lftml.complex.exact import u1_exp_ix

        plus, minus = u1_exp_ix(self.beta, self.kappa, self.mu)
        return {"exp_ix": plus, "exp_minus_ix": minus}

    def initial(self, n_chains: int) -> torch.Tensor:
        return torch.zeros(n_chains, 1, dtype=torch.complex128)

    def wrap(self, z: torch.Tensor) -> torch.Tensor:
        """Map ``Re z`` into ``(-pi, pi]`` (all observables are 2 pi periodic)."""
        re = torch.remainder(z.real + math.pi, 2 * math.pi) - math.pi
        return torch.complex(re, z.imag)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.name, "beta": self.beta, "kappa": self.kappa, "mu": self.mu}


def model_from_dict(d: dict[str, Any]) -> ComplexModel:
    """Rebuild a model from :meth:`to_dict` output (as stored in ensemble metadata)."""
    kind = d.get("model")
    if kind == "gaussian":
        return GaussianModel(sigma=_from_pair(d["sigma"]))
    if kind == "quartic":
        return QuarticModel(sigma=_from_pair(d["sigma"]), lam=_from_pair(d["lam"]))
    if kind == "u1":
        return U1OneLinkModel(beta=d["beta"], kappa=d["kappa"], mu=d["mu"])
    if kind in ("bose_gas", "bose_gas_phase_quenched"):
        from lftml.complex.bose_gas import BoseGas

        model = BoseGas(shape=tuple(d["shape"]), m=d["m"], lam=d["lam"], mu=d["mu"])
        return model.phase_quenched() if kind == "bose_gas_phase_quenched" else model
    raise LftmlError(f"unknown complex Langevin model {kind!r} (known: gaussian, quartic, u1, bose_gas)")
