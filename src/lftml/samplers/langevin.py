"""Langevin dynamics (stochastic quantisation, Parisi & Wu 1981), batched over chains.

Continuum: ``d phi / d tau = -dS/dphi + eta`` with ``<eta(x,tau) eta(x',tau')> = 2 delta(x-x') delta(tau-tau')``,
whose stationary distribution is exp(-S). Discretised with step ``dt`` (xi ~ N(0,1) per site):

* ``euler`` (Euler-Maruyama): ``phi' = phi + dt F(phi) + sqrt(2 dt) xi``; stationary averages carry
  an O(dt) bias (for a Gaussian mode of curvature k: <phi^2> = 1 / (k (1 - k dt / 2))).
* ``heun`` (stochastic Heun / second-order Runge-Kutta for additive noise):
  ``phi~ = phi + dt F(phi) + sqrt(2 dt) xi``, ``phi' = phi + dt (F(phi) + F(phi~)) / 2 + sqrt(2 dt) xi``;
  the bias is O(dt^2) (Gaussian mode: <phi^2> = (1/k)(1 - a + a^2/4) / (1 - a + a^2/2 - a^3/8), a = k dt).

Unlike HMC the result depends on dt: use :func:`extrapolate` over several step sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.samplers.rng import ChainRNG
from lftml.samplers.stability import langevin_max_step
from lftml.theories.base import Theory

SCHEMES = ("euler", "heun")
SCHEME_ORDER = {"euler": 1, "heun": 2}


@dataclass(frozen=True)
class LangevinState:
    phi: torch.Tensor


@dataclass(frozen=True)
class Langevin:
    """Langevin settings: step ``dt`` in Langevin time, ``scheme`` 'euler' or 'heun'."""

    theory: Theory
    dt: float
    scheme: str = "euler"

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise LftmlError(f"unknown Langevin scheme {self.scheme!r}; choose one of {', '.join(SCHEMES)}")
        if not (self.dt > 0 and math.isfinite(self.dt)):
            raise LftmlError(f"the Langevin step --dt must be positive, got {self.dt}")
        if hasattr(self.theory, "coefficients"):
            dt_max = langevin_max_step(self.theory)
            if self.dt >= dt_max:
                raise LftmlError(
                    f"Langevin step dt = {self.dt:g} is unstable for this action (the stiffest mode needs dt < {dt_max:.4g}); "
                    "reduce --dt"
                )

    @property
    def forces_per_update(self) -> int:
        return 1 if self.scheme == "euler" else 2

    def settings(self) -> dict:
        return {"algorithm": "langevin", "scheme": self.scheme, "dt": self.dt, "order": SCHEME_ORDER[self.scheme]}

    def init(self, phi: torch.Tensor) -> LangevinState:
        self.theory.lattice.check_field(phi, "initial field")
        return LangevinState(phi)

    def step(self, state: LangevinState, rng: ChainRNG) -> tuple[LangevinState, dict[str, torch.Tensor]]:
        phi = state.phi
        noise = math.sqrt(2.0 * self.dt) * rng.normal(phi.shape[1:], dtype=phi.dtype)
        f0 = self.theory.force(phi)
        if self.scheme == "euler":
            new = phi + self.dt * f0 + noise
        else:
            pred = phi + self.dt * f0 + noise
            new = phi + 0.5 * self.dt * (f0 + self.theory.force(pred)) + noise
        dims = self.theory.lattice.dims
        drift = f0.abs().amax(dim=dims)
        if not bool(torch.isfinite(new).all()):
            raise LftmlError(
                f"the Langevin field diverged (non-finite values) at dt = {self.dt:g}; reduce --dt"
            )
        return LangevinState(new), {"max_drift": drift}


@dataclass(frozen=True)
class Extrapolation:
    """Result of a zero-step-size extrapolation ``O(dt) = value + sum_k c_k dt^k``."""

    value: float
    error: float
    coefficients: tuple[float, ...]
    chi2: float
    dof: int

    def to_dict(self) -> dict:
        return {"value": self.value, "error": self.error, "coefficients": list(self.coefficients), "chi2": self.chi2, "dof": self.dof}


def extrapolate(
    step_sizes: Sequence[float], values: Sequence[float], errors: Sequence[float], order: int = 1, degree: int | None = None
) -> Extrapolation:
    """Weighted least-squares fit of ``values(dt)`` to ``a0 + a1 dt^order + ...`` and the dt -> 0 value ``a0``.

    ``order`` is the leading power of the scheme's bias (1 for Euler, 2 for Heun); ``degree`` the
    number of correction terms (default: 1). Errors are the fit's parameter errors (uncorrelated inputs).
    """
    dt = np.asarray(step_sizes, dtype=float)
    y = np.asarray(values, dtype=float)
    e = np.asarray(errors, dtype=float)
    if not (dt.shape == y.shape == e.shape):
        raise LftmlError("step_sizes, values and errors must have the same length")
    degree = 1 if degree is None else int(degree)
    n_par = degree + 1
    if len(dt) < n_par:
        raise LftmlError(f"extrapolation with {degree} correction term(s) needs at least {n_par} step sizes, got {len(dt)}")
    if np.any(e <= 0):
        raise LftmlError("extrapolation needs positive errors for every step size")
    A = np.stack([dt ** (order * k) if k else np.ones_like(dt) for k in range(n_par)], axis=1)
    w = 1.0 / e
    Aw = A * w[:, None]
    cov = np.linalg.inv(Aw.T @ Aw)
    coef = cov @ Aw.T @ (y * w)
    resid = (A @ coef - y) * w
    return Extrapolation(float(coef[0]), float(np.sqrt(cov[0, 0])), tuple(float(c) for c in coef), float(resid @ resid), len(dt) - n_par)
