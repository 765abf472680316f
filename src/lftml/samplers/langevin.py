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


#: below this p-value a dt -> 0 fit is reported as not describing the data
FIT_P_MIN = 0.01


@dataclass(frozen=True)
class Extrapolation:
    """Result of a zero-step-size extrapolation ``O(dt) = value + sum_k c_k dt^(power_k)``.

    ``chi2`` over ``dof = n_points - n_parameters`` degrees of freedom and its ``p_value`` (``P(chi2' >=
    chi2)``; None when dof = 0, where the fit cannot be checked). ``acceptable``: p >= :data:`FIT_P_MIN`
    (or dof = 0); when False the model does not describe the data and ``value`` must not be trusted.
    """

    value: float
    error: float
    coefficients: tuple[float, ...]
    chi2: float
    dof: int
    powers: tuple[int, ...] = (1,)

    @property
    def chi2_per_dof(self) -> float | None:
        return self.chi2 / self.dof if self.dof > 0 else None

    @property
    def p_value(self) -> float | None:
        if self.dof <= 0:
            return None
        from scipy.stats import chi2

        return float(chi2.sf(self.chi2, self.dof))

    @property
    def acceptable(self) -> bool:
        p = self.p_value
        return p is None or p >= FIT_P_MIN

    def to_dict(self) -> dict:
        return {"value": self.value, "error": self.error, "coefficients": list(self.coefficients), "powers": list(self.powers),
                "chi2": self.chi2, "dof": self.dof, "chi2_per_dof": self.chi2_per_dof, "p_value": self.p_value,
                "acceptable": self.acceptable}


def extrapolate(
    step_sizes: Sequence[float], values: Sequence[float], errors: Sequence[float], order: int = 1, degree: int | None = None,
    powers: Sequence[int] | None = None,
) -> Extrapolation:
    """Weighted least-squares fit of ``values(dt)`` to ``a0 + sum_k a_k dt^(p_k)`` and the dt -> 0 value ``a0``
    (the package's one dt -> 0 fitter; :func:`lftml.complex.exact.extrapolate_step_size` uses it per part).

    ``order`` is the leading power of the scheme's bias (1 for Euler, 2 for Heun); ``degree`` the
    number of correction terms (default 1), giving powers ``order, 2 order, ...``; or give ``powers``
    explicitly. Errors are the fit's parameter errors (independent inputs); the fit quality is in
    ``chi2``, ``dof`` and ``p_value`` of the result.
    """
    dt = np.asarray(step_sizes, dtype=float)
    y = np.asarray(values, dtype=float)
    e = np.asarray(errors, dtype=float)
    if not (dt.shape == y.shape == e.shape) or dt.ndim != 1:
        raise LftmlError("step_sizes, values and errors must be 1-d and of the same length")
    if powers is None:
        if int(order) < 1:
            raise LftmlError(f"the order of the step-size bias must be >= 1, got {order}")
        degree = 1 if degree is None else int(degree)
        if degree < 1:
            raise LftmlError(f"--degree must be >= 1 (the number of correction terms dt^order, dt^(2 order), ...), got {degree}")
        powers = tuple(int(order) * k for k in range(1, degree + 1))
    else:
        powers = tuple(int(p) for p in powers)
        if not powers or any(p < 1 for p in powers) or len(set(powers)) != len(powers):
            raise LftmlError(f"powers of dt must be distinct integers >= 1, got {powers}")
    n_par = len(powers) + 1
    if len(dt) < n_par:
        raise LftmlError(f"extrapolation with {len(powers)} correction term(s) needs at least {n_par} step sizes, got {len(dt)}")
    if not (np.all(np.isfinite(dt)) and np.all(dt > 0)):
        raise LftmlError("step sizes must be positive and finite")
    if len(set(dt.tolist())) != len(dt):
        raise LftmlError(f"two data points share a step size ({dt.tolist()}); give one per dt")
    if not (np.all(np.isfinite(e)) and np.all(e > 0)):
        raise LftmlError("extrapolation needs positive, finite errors for every step size")
    A = np.stack([np.ones_like(dt)] + [dt**p for p in powers], axis=1)
    w = 1.0 / e
    Aw = A * w[:, None]
    cov = np.linalg.inv(Aw.T @ Aw)
    coef = cov @ Aw.T @ (y * w)
    resid = (A @ coef - y) * w
    return Extrapolation(float(coef[0]), float(np.sqrt(cov[0, 0])), tuple(float(c) for c in coef), float(resid @ resid),
                         len(dt) - n_par, powers)
