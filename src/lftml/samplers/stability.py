"""Linear stability of integrators on the quadratic part of the action.

For ``S = sum_x [-c_hop sum_mu phi phi_{+mu} + c_2 phi^2 + c_4 phi^4]`` the Hessian at phi = 0 has
largest eigenvalue ``omega_max^2 = 2 c_2 + 2 d c_hop`` (momentum p = (pi, ..., pi)). An integrator
whose step is unstable for that mode blows up exponentially, so such settings are refused up front.
When ``omega_max^2 <= 0`` (a deep double well, e.g. hopping form with lambda > 1/2 + d kappa) no mode
is stiff at phi = 0 and the stiffness comes from the quartic term at the field's actual size: the
bounds below are then infinite (no up-front check; HMC's accept/reject still keeps it exact).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from lftml.samplers.integrators import OMELYAN_LAMBDA


def omega2_max(theory) -> float:
    c_hop, c2, _ = theory.coefficients
    return 2.0 * c2 + 2.0 * theory.lattice.ndim * abs(c_hop)


def _harmonic_step_matrix(integrator: str, eps: float, w2: float) -> np.ndarray:
    kick = lambda h: np.array([[1.0, 0.0], [-h * w2, 1.0]])  # noqa: E731  (x, p) -> (x, p - h w2 x)
    drift = lambda h: np.array([[1.0, h], [0.0, 1.0]])  # noqa: E731
    if integrator == "leapfrog":
        return kick(eps / 2) @ drift(eps) @ kick(eps / 2)
    lam = OMELYAN_LAMBDA
    return kick(lam * eps) @ drift(eps / 2) @ kick((1 - 2 * lam) * eps) @ drift(eps / 2) @ kick(lam * eps)


def md_stable(integrator: str, eps: float, w2: float) -> bool:
    """True if one step of ``integrator`` is stable (|tr M| < 2) for a harmonic mode of frequency^2 ``w2``."""
    m = _harmonic_step_matrix(integrator, eps, w2)
    return abs(np.trace(m)) < 2.0


@lru_cache(maxsize=256)
def max_stable_step(integrator: str, w2: float) -> float:
    if w2 <= 0:
        return float("inf")
    return _max_stable_step(integrator, w2)


def _max_stable_step(integrator: str, w2: float) -> float:
    """Upper end of the first interval of stable steps, (0, eps_max), for a mode of frequency^2 ``w2``.

    Omelyan's scheme has islands of stability beyond its first threshold; they are not counted."""
    grid = np.linspace(0.0, 6.0 / np.sqrt(w2), 3001)[1:]
    unstable = [e for e in grid if not md_stable(integrator, e, w2)]
    if not unstable:
        return float(grid[-1])
    hi = unstable[0]
    lo = grid[np.searchsorted(grid, hi) - 1] if hi > grid[0] else 0.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if md_stable(integrator, mid, w2) else (lo, mid)
    return float(lo)


def langevin_max_step(theory) -> float:
    """Largest dt for which Euler and Heun Langevin updates are linearly stable: dt < 2 / omega_max^2."""
    w2 = omega2_max(theory)
    return 2.0 / w2 if w2 > 0 else float("inf")
