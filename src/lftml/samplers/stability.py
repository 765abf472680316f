"""Linear stability of integrators on the quadratic part of the action.

For ``S = sum_x [-c_hop sum_mu phi phi_{+mu} + c_2 phi^2 + c_4 phi^4]`` the Hessian at a constant
field phi_c is diagonal in momentum space, ``H(p) = 2 c_2 + 12 c_4 phi_c^2 - 2 c_hop sum_mu cos p_mu``;
with a mass matrix M (diagonal in momentum space, eigenvalues m(p)) the MD frequencies are
``omega^2(p) = H(p) / m(p)``. An integrator whose step is unstable for the stiffest mode blows up
exponentially, so such settings are refused up front. The bound is the maximum over phi_c = 0 and
the mean-field vacuum ``phi_c = v``, ``v^2 = (d |c_hop| - c_2) / (2 c_4)`` (where it exists): in the
broken phase the vacuum is stiffer (kappa = 0.3, lambda = 0.05 in 2d: omega_max^2 = 6.0 at the vacuum,
4.2 at phi = 0; leapfrog bound 2/omega = 0.82, not 0.98). For unit mass
``omega_max^2 = 2 c_2 + 12 c_4 v^2 + 2 d |c_hop|`` (momentum (pi, ..., pi)). A deep double well
(hopping form with lambda > 1/2 + d kappa) has no stiff mode at phi = 0 but one at its vacuum.
The bounds are infinite only when no mode is stiff anywhere (HMC's accept/reject keeps it exact).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from lftml.samplers.integrators import OMELYAN_LAMBDA


def vacuum_field2(theory) -> float:
    """``v^2`` of the mean-field vacuum (0 when the constant-field potential has its minimum at 0)."""
    c_hop, c2, c4 = (float(c) for c in theory.coefficients)
    a = theory.lattice.ndim * abs(c_hop) - c2
    return a / (2.0 * c4) if (a > 0 and c4 > 0) else 0.0


def omega2_max(theory, inverse_mass: np.ndarray | None = None, vacuum: bool = True) -> float:
    """Largest MD frequency^2 over phi = 0 and (with ``vacuum``) the mean-field vacuum; ``inverse_mass``
    is the spectrum of M^{-1} on the momentum grid (None: unit mass)."""
    c_hop, c2, c4 = (float(c) for c in theory.coefficients)
    d = theory.lattice.ndim
    v2 = vacuum_field2(theory) if vacuum else 0.0
    if inverse_mass is None:
        return max(2.0 * c2 + 2.0 * d * abs(c_hop) + 12.0 * c4 * phi2 for phi2 in (0.0, v2))
    cos_sum = d - 0.5 * theory.lattice.p_hat2()  # sum_mu cos p_mu
    hess0 = 2.0 * c2 - 2.0 * c_hop * cos_sum
    return float(max(np.max((hess0 + 12.0 * c4 * phi2) * inverse_mass) for phi2 in (0.0, v2)))


def _harmonic_step_matrix(integrator: str, eps: float, w2: float) -> np.ndarray:
    kick = lambda h: np.array([[1.0, 0.0], [-h * w2, 1.0]])  # noqa: E731  (x, p) -> (x, p - h w2 x)
    drift = lambda h: np.array([[1.0, h], [0.0, 1.0]])  # noqa: E731
    if integrator == "leapfrog":
        return kick(eps / 2) @ drift(eps) @ kick(eps / 2)
    lam = OMELYAN_LAMBDA
    return kick(lam * eps) @ drift(eps / 2) @ kick((1 - 2 * lam) * eps) @ drift(eps / 2) @ kick(lam * eps)


def _stable_on_grid(integrator: str, eps: np.ndarray, w2: float) -> np.ndarray:
    """:func:`md_stable` for every step in ``eps`` at once: the same 2x2 products, batched (a start-up cost:
    the 3000-point scan of one matrix product per point took ~50 ms per HMC setting)."""
    def kick(h: np.ndarray) -> np.ndarray:
        m = np.zeros((h.size, 2, 2))
        m[:, 0, 0] = m[:, 1, 1] = 1.0
        m[:, 1, 0] = -h * w2
        return m

    def drift(h: np.ndarray) -> np.ndarray:
        m = np.zeros((h.size, 2, 2))
        m[:, 0, 0] = m[:, 1, 1] = 1.0
        m[:, 0, 1] = h
        return m

    if integrator == "leapfrog":
        m = kick(eps / 2) @ drift(eps) @ kick(eps / 2)
    else:
        lam = OMELYAN_LAMBDA
        m = kick(lam * eps) @ drift(eps / 2) @ kick((1 - 2 * lam) * eps) @ drift(eps / 2) @ kick(lam * eps)
    return np.abs(m[:, 0, 0] + m[:, 1, 1]) < 2.0


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
    bad = np.flatnonzero(~_stable_on_grid(integrator, grid, w2))
    if bad.size == 0:
        return float(grid[-1])
    hi = grid[bad[0]]
    lo = grid[np.searchsorted(grid, hi) - 1] if hi > grid[0] else 0.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if md_stable(integrator, mid, w2) else (lo, mid)
    return float(lo)


def langevin_max_step(theory) -> float:
    """Largest dt for which Euler and Heun Langevin updates are linearly stable: dt < 2 / omega_max^2."""
    w2 = omega2_max(theory)
    return 2.0 / w2 if w2 > 0 else float("inf")
