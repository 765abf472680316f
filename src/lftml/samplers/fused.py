r"""Fused CPU molecular dynamics for HMC (numba), for actions of the common phi^4 form
``S = sum_x [-c_hop sum_mu phi_x phi_{x+mu} + c_2 phi_x^2 + c_4 phi_x^4]`` on periodic lattices of
any dimension, in float64 or float32.

One compiled call integrates a whole trajectory for every chain: chains are processed one after
the other (a 32x32 float64 chain is 8 KB, so field, momenta and a one-row scratch buffer stay in
L1/L2 for all force evaluations of its trajectory), kicks and drifts update ``phi`` and ``pi`` in
place, and the force is never stored: each kick computes the neighbour sum of one lattice row
(the last, contiguous axis) and adds ``coef * force`` to ``pi`` in the same loop. Neighbours
along the other axes are whole rows, found from a small precomputed table of row indices; the
periodic wrap of the last axis is handled by peeling its first and last site. No temporaries are
allocated inside the trajectory.

The kernel reproduces the eager torch path operation by operation (the same neighbour-sum order
``((phi[x+0] + phi[x-0]) + phi[x+1]) + ...``, the same force expression
``c_hop * nb - phi * (2 c_2 + 4 c_4 phi phi)``, the same scalar step coefficients, no fast-math
and no FMA contraction), so for :class:`~lftml.theories.Phi4` the MD end points are normally bit
for bit those of :func:`lftml.samplers.integrators.omelyan` / ``leapfrog``. Only the sums over
the lattice (kinetic energy and action, accumulated here in float64 with eight partial sums)
differ in their summation order, so ``dH`` agrees to ~1e-13 absolute, which changes an
accept/reject decision only if ``log(u)`` falls within that distance of ``-dH``.
(:class:`~lftml.theories.FreeScalar` writes its force as ``Laplacian - m^2 phi``, which is the same
function rounded differently, so there the fields agree to ~1e-14 relative.)

numba is optional: :func:`available` says whether it can be imported (without importing it);
the kernels are compiled on first use (about 1-3 s per dtype and integrator) and cached on disk
(``cache=True``) next to this file or, when that is not writable, in numba's user cache
directory; when no cache location is writable they are compiled in memory at each start.
"""

from __future__ import annotations

import importlib.util
import logging
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from lftml.samplers.integrators import OMELYAN_LAMBDA

log = logging.getLogger(__name__)

INTEGRATOR_CODES = {"leapfrog": 0, "omelyan": 1}

_DISABLED = False  # set by tests (and by a failed import) to force the eager fallback


def available() -> bool:
    """True if numba can be imported (checked without importing it, so this is cheap)."""
    if _DISABLED:
        return False
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):
        return False


def supports(theory: Any, phi: torch.Tensor | None = None) -> bool:
    """Whether the fused path can run ``theory`` (and the field ``phi``, if given): numba is available,
    the theory exposes ``coefficients = (c_hop, c_2, c_4)``, and the field is a CPU float32/float64 tensor."""
    if not available() or not hasattr(theory, "coefficients"):
        return False
    if phi is not None and (phi.device.type != "cpu" or phi.dtype not in (torch.float64, torch.float32)):
        return False
    return True


# --------------------------------------------------------------------------- kernels
def _kernel_source():  # noqa: C901  (the kernels are defined here so that importing this module does not import numba)
    import numba

    def jit(fn):
        try:
            return numba.njit(cache=True, nogil=True)(fn)
        except Exception as exc:  # no writable cache location
            log.debug("numba cache unavailable (%s); compiling in memory", exc)
            return numba.njit(cache=False, nogil=True)(fn)

    @jit
    def _kick(phi, pi, tmp, rows, L, coef, c_hop, two_c2, four_c4):
        """pi += coef * force(phi) for one chain (phi, pi: flat (R*L,)); rows: (R, 2*(d-1))."""
        R = rows.shape[0]
        nr = rows.shape[1]
        for r in range(R):
            base = r * L
            if nr == 0:
                # one dimension: nb = phi[x+1] + phi[x-1]
                for j in range(1, L - 1):
                    p = phi[base + j]
                    nb = phi[base + j + 1] + phi[base + j - 1]
                    pi[base + j] = pi[base + j] + coef * (c_hop * nb - p * (two_c2 + (four_c4 * p) * p))
                for j in range(0, L, max(L - 1, 1)):  # the two edge sites (one when L == 1)
                    p = phi[base + j]
                    nb = phi[base + (j + 1) % L] + phi[base + (j - 1 + L) % L]
                    pi[base + j] = pi[base + j] + coef * (c_hop * nb - p * (two_c2 + (four_c4 * p) * p))
                continue
            # neighbours along axes 0 .. d-2 are whole rows, in the eager order (+0, -0, +1, -1, ...)
            up = rows[r, 0] * L
            dn = rows[r, 1] * L
            for j in range(L):
                tmp[j] = phi[up + j] + phi[dn + j]
            for k in range(2, nr):
                o = rows[r, k] * L
                for j in range(L):
                    tmp[j] = tmp[j] + phi[o + j]
            # last axis, inside the row, then the kick
            for j in range(1, L - 1):
                p = phi[base + j]
                nb = (tmp[j] + phi[base + j + 1]) + phi[base + j - 1]
                pi[base + j] = pi[base + j] + coef * (c_hop * nb - p * (two_c2 + (four_c4 * p) * p))
            p = phi[base]
            nb = (tmp[0] + phi[base + 1 % L]) + phi[base + L - 1]
            pi[base] = pi[base] + coef * (c_hop * nb - p * (two_c2 + (four_c4 * p) * p))
            if L > 1:
                j = L - 1
                p = phi[base + j]
                nb = (tmp[j] + phi[base]) + phi[base + j - 1]
                pi[base + j] = pi[base + j] + coef * (c_hop * nb - p * (two_c2 + (four_c4 * p) * p))

    @jit
    def _drift(phi, pi, coef):
        for i in range(phi.shape[0]):
            phi[i] = phi[i] + coef * pi[i]

    @jit
    def _sum_sq(x):
        """sum x^2 in float64 with eight partial sums."""
        n = x.shape[0]
        a = np.zeros(8)
        m = n - n % 8
        for i in range(0, m, 8):
            for k in range(8):
                v = np.float64(x[i + k])
                a[k] += v * v
        for i in range(m, n):
            v = np.float64(x[i])
            a[0] += v * v
        return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))

    @jit
    def _action(phi, tmp, rows, L, c_hop, c2, c4):
        """S of one chain in float64 (forward neighbours: rows[:, 0::2] and x+1 in the row)."""
        R = rows.shape[0]
        nr = rows.shape[1]
        a = np.zeros(8)
        for r in range(R):
            base = r * L
            for j in range(L - 1):
                tmp[j] = phi[base + j + 1]
            tmp[L - 1] = phi[base]
            for k in range(0, nr, 2):
                o = rows[r, k] * L
                for j in range(L):
                    tmp[j] = tmp[j] + phi[o + j]
            for j in range(L):
                p = np.float64(phi[base + j])
                p2 = p * p
                a[j % 8] += (-c_hop * p) * np.float64(tmp[j]) + c2 * p2 + (c4 * p2) * p2
        return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))

    @jit
    def trajectory(phi0, pi, phi1, k0, k1, s1, rows, L, integrator, n_steps, kc, dc, cf, c64):
        """Integrate every chain: phi1 <- MD(phi0, pi); pi is updated in place.

        kc: kick coefficients (first, middle1, middle2, last) in the field dtype;
        dc: drift coefficient(s) (full, half); cf: (c_hop, 2 c_2, 4 c_4) in the field dtype;
        c64: (c_hop, c_2, c_4) in float64 for the action. k0, k1, s1: (n,) float64 outputs."""
        n = phi0.shape[0]
        tmp = np.empty(L, dtype=phi0.dtype)
        c_hop, two_c2, four_c4 = cf[0], cf[1], cf[2]
        for c in range(n):
            x = phi1[c]
            p = pi[c]
            x[:] = phi0[c]
            k0[c] = 0.5 * _sum_sq(p)
            if integrator == 0:  # leapfrog: kick(eps/2) [drift(eps) kick(eps)]* drift(eps) kick(eps/2)
                _kick(x, p, tmp, rows, L, kc[0], c_hop, two_c2, four_c4)
                _drift(x, p, dc[0])
                for _ in range(n_steps - 1):
                    _kick(x, p, tmp, rows, L, kc[1], c_hop, two_c2, four_c4)
                    _drift(x, p, dc[0])
                _kick(x, p, tmp, rows, L, kc[3], c_hop, two_c2, four_c4)
            else:  # Omelyan 2MN with merged kicks
                _kick(x, p, tmp, rows, L, kc[0], c_hop, two_c2, four_c4)
                for i in range(n_steps):
                    _drift(x, p, dc[1])
                    _kick(x, p, tmp, rows, L, kc[1], c_hop, two_c2, four_c4)
                    _drift(x, p, dc[1])
                    _kick(x, p, tmp, rows, L, kc[2] if i < n_steps - 1 else kc[3], c_hop, two_c2, four_c4)
            k1[c] = 0.5 * _sum_sq(p)
            s1[c] = _action(x, tmp, rows, L, c64[0], c64[1], c64[2])

    return trajectory


@lru_cache(maxsize=1)
def _compiled():
    return _kernel_source()


@lru_cache(maxsize=64)
def row_neighbours(shape: tuple[int, ...]) -> np.ndarray:
    """``(R, 2 (d-1))`` int64 table: for each row (a site of the first d-1 axes, C order) the rows
    ``x + e_mu`` and ``x - e_mu`` for mu = 0 .. d-2, in that order. Empty columns in one dimension."""
    outer = shape[:-1]
    R = int(np.prod(outer)) if outer else 1
    if not outer:
        return np.zeros((1, 0), dtype=np.int64)
    idx = np.arange(R).reshape(outer)
    cols = []
    for mu in range(len(outer)):
        cols.append(np.roll(idx, -1, axis=mu).ravel())  # row of x + e_mu
        cols.append(np.roll(idx, +1, axis=mu).ravel())  # row of x - e_mu
    return np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.int64)


def _coefficients(integrator: str, eps: float, lam: float = OMELYAN_LAMBDA) -> tuple[list[float], list[float]]:
    """Kick and drift coefficients computed exactly as the eager integrators compute them."""
    if integrator == "leapfrog":
        return [0.5 * eps, eps, eps, 0.5 * eps], [eps, 0.5 * eps]
    return [lam * eps, (1.0 - 2.0 * lam) * eps, (2.0 * lam) * eps, lam * eps], [0.5 * eps, 0.5 * eps]


def integrate(
    theory: Any, phi0: torch.Tensor, pi: torch.Tensor, step_size: float, n_steps: int, integrator: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One MD trajectory for every chain from ``(phi0, pi)``.

    Returns ``(phi1, kinetic0, kinetic1, action1)``: the end-point field (a new tensor; ``phi0`` is
    not modified), ``sum pi^2 / 2`` at the start and end, and ``S(phi1)``, each ``(n_chains,)`` in
    ``phi0``'s dtype (accumulated in float64). ``pi`` is overwritten with the end-point momenta.
    """
    kernel = _compiled()
    shape = tuple(theory.lattice.shape)
    n = phi0.shape[0]
    np_dtype = np.float64 if phi0.dtype == torch.float64 else np.float32
    x0 = phi0.detach().contiguous().numpy().reshape(n, -1)
    p = pi.detach()
    if not p.is_contiguous():
        raise ValueError("momenta must be contiguous")
    pn = p.numpy().reshape(n, -1)
    x1 = np.empty_like(x0)
    k0 = np.empty(n)
    k1 = np.empty(n)
    s1 = np.empty(n)
    c_hop, c2, c4 = (float(c) for c in theory.coefficients)
    kc, dc = _coefficients(integrator, float(step_size))
    kernel(
        x0, pn, x1, k0, k1, s1, row_neighbours(shape), int(shape[-1]), INTEGRATOR_CODES[integrator], int(n_steps),
        np.array(kc, dtype=np_dtype), np.array(dc, dtype=np_dtype),
        np.array([c_hop, 2.0 * c2, 4.0 * c4], dtype=np_dtype), np.array([c_hop, c2, c4], dtype=np.float64),
    )
    out = torch.from_numpy(x1).view(phi0.shape)
    tt = phi0.dtype
    return out, torch.from_numpy(k0).to(tt), torch.from_numpy(k1).to(tt), torch.from_numpy(s1).to(tt)


def warm_up(dtype: torch.dtype = torch.float64) -> float:
    """Compile (or load from the cache) the kernels for ``dtype``; returns the seconds it took."""
    import time

    from lftml.lattice import Lattice
    from lftml.theories.phi4 import Phi4

    t0 = time.perf_counter()
    th = Phi4.hopping(Lattice((4, 4)), 0.1, 0.01)
    phi = torch.zeros((1, 4, 4), dtype=dtype)
    for integ in INTEGRATOR_CODES:
        integrate(th, phi, torch.zeros_like(phi), 0.1, 1, integ)
    return time.perf_counter() - t0


__all__ = ["available", "supports", "integrate", "row_neighbours", "warm_up", "INTEGRATOR_CODES"]
