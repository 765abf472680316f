"""numba kernels of :mod:`lftml.samplers.fused` (imported lazily: importing this module imports numba).

Every loop runs over contiguous row views (``phi[a:b]``) so that LLVM can prove the indices
non-negative and vectorise; no fast-math, so no reassociation and no FMA contraction: the kick
and drift reproduce the eager torch arithmetic exactly. Sums over the lattice use eight float64
partial sums.
"""

from __future__ import annotations

import logging
import math

import numba
import numpy as np

from lftml.samplers import _philox_kernels as _pk  # numba's cache keys on this file only: touch it when editing that one

log = logging.getLogger(__name__)


def _jit(fn):
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except Exception as exc:  # noqa: BLE001  (no writable cache location: compile in memory)
        log.debug("numba cache unavailable for %s (%s); compiling in memory", fn.__name__, exc)
        return numba.njit(cache=False, nogil=True)(fn)


@_jit
def kick(phi, pi, tmp, rows, L, coef, c_hop, two_c2, four_c4):
    """``pi += coef * force(phi)`` for one chain, ``force = c_hop * nb - phi * (2 c_2 + 4 c_4 phi phi)``.

    phi, pi: flat ``(R * L,)``; rows: ``(R, 2 (d-1))`` row indices of x+e_0, x-e_0, x+e_1, ...;
    tmp: scratch ``(L,)``. The neighbour sum is ``((phi[x+e0] + phi[x-e0]) + phi[x+e1]) + ...``,
    the order of :meth:`lftml.lattice.Lattice.neighbour_sum`."""
    R = rows.shape[0]
    nr = rows.shape[1]
    for r in range(R):
        ph = phi[r * L : (r + 1) * L]
        pp = pi[r * L : (r + 1) * L]
        if nr == 0:  # one dimension
            for j in range(1, L - 1):
                p = ph[j]
                nb = ph[j + 1] + ph[j - 1]
                pp[j] = pp[j] + coef * (c_hop * nb - p * (two_c2 + (four_c4 * p) * p))
            for j in range(0, L, max(L - 1, 1)):  # the edge sites (one when L == 1)
                p = ph[j]
                nb = ph[(j + 1) % L] + ph[(j - 1 + L) % L]
                pp[j] = pp[j] + coef * (c_hop * nb - p * (two_c2 + (four_c4 * p) * p))
            continue
        up = phi[rows[r, 0] * L : (rows[r, 0] + 1) * L]
        dn = phi[rows[r, 1] * L : (rows[r, 1] + 1) * L]
        for j in range(L):
            tmp[j] = up[j] + dn[j]
        for k in range(2, nr):
            o = phi[rows[r, k] * L : (rows[r, k] + 1) * L]
            for j in range(L):
                tmp[j] = tmp[j] + o[j]
        for j in range(1, L - 1):
            p = ph[j]
            nb = (tmp[j] + ph[j + 1]) + ph[j - 1]
            pp[j] = pp[j] + coef * (c_hop * nb - p * (two_c2 + (four_c4 * p) * p))
        for j in range(0, L, max(L - 1, 1)):
            p = ph[j]
            nb = (tmp[j] + ph[(j + 1) % L]) + ph[(j - 1 + L) % L]
            pp[j] = pp[j] + coef * (c_hop * nb - p * (two_c2 + (four_c4 * p) * p))


@_jit
def _band(phi, out, pi, ct0, up0, dn0, n, coef, dcoef, c_hop, two_c2, four_c4):
    """The kick of the ``n`` sites ``ct0 ..`` whose +-1 neighbours are the next/previous flat sites and
    whose +-e_0 neighbours start at ``up0``/``dn0``; with ``out`` (not None) also the drift that
    follows it, ``out = phi + dcoef * pi``, written to the other buffer."""
    ct = phi[ct0 : ct0 + n]
    rg = phi[ct0 + 1 : ct0 + n + 1]
    lf = phi[ct0 - 1 : ct0 + n - 1]
    up = phi[up0 : up0 + n]
    dn = phi[dn0 : dn0 + n]
    pp = pi[ct0 : ct0 + n]
    if out is None:
        for j in range(n):
            p = ct[j]
            nb = ((up[j] + dn[j]) + rg[j]) + lf[j]
            pp[j] = pp[j] + coef * (c_hop * nb - p * (two_c2 + (four_c4 * p) * p))
    else:
        oo = out[ct0 : ct0 + n]
        for j in range(n):
            p = ct[j]
            nb = ((up[j] + dn[j]) + rg[j]) + lf[j]
            q = pp[j] + coef * (c_hop * nb - p * (two_c2 + (four_c4 * p) * p))
            pp[j] = q
            oo[j] = p + dcoef * q


@_jit
def kick2d(phi, out, pi, edge, rows, L, coef, dcoef, c_hop, two_c2, four_c4):
    """The same kick for a 2d lattice with R >= 3 rows of L >= 3 sites, as one flat loop over rows
    1 .. R-2 (neighbours at flat offsets +-L, +-1), then rows 0 and R-1, then the first and last site
    of every row (whose +-1 neighbours wrap), restarting from their momenta saved in ``edge`` (2R,).
    With ``out`` (not None) the drift that follows the kick is fused into it: ``out = phi + dcoef *
    pi`` with the kicked momenta (``phi`` unchanged), the arithmetic of :func:`drift`, site for site."""
    R = rows.shape[0]
    V = R * L
    for r in range(R):
        edge[2 * r] = pi[r * L]
        edge[2 * r + 1] = pi[r * L + L - 1]
    _band(phi, out, pi, L, 2 * L, 0, V - 2 * L, coef, dcoef, c_hop, two_c2, four_c4)
    for r in (0, R - 1):
        _band(phi, out, pi, r * L + 1, rows[r, 0] * L + 1, rows[r, 1] * L + 1, L - 2, coef, dcoef, c_hop, two_c2,
              four_c4)
    for r in range(R):
        x = r * L
        u = rows[r, 0] * L
        d = rows[r, 1] * L
        y = x + L - 1
        p = phi[x]
        nb = ((phi[u] + phi[d]) + phi[x + 1]) + phi[y]
        pi[x] = edge[2 * r] + coef * (c_hop * nb - p * (two_c2 + (four_c4 * p) * p))
        p = phi[y]
        nb = ((phi[u + L - 1] + phi[d + L - 1]) + phi[x]) + phi[y - 1]
        pi[y] = edge[2 * r + 1] + coef * (c_hop * nb - p * (two_c2 + (four_c4 * p) * p))
        if out is not None:
            out[x] = phi[x] + dcoef * pi[x]
            out[y] = phi[y] + dcoef * pi[y]


@_jit
def drift(phi, pi, coef):
    """``phi += coef * pi``."""
    for i in range(phi.shape[0]):
        phi[i] = phi[i] + coef * pi[i]


@_jit
def half_sum_sq(x):
    """``sum x^2 / 2`` in float64 (eight partial sums)."""
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
    return 0.5 * (((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])))


@_jit
def action(phi, tmp, rows, L, c_hop, c2, c4):
    """S of one chain in float64: ``sum_x [-c_hop phi_x sum_mu phi_{x+mu} + c_2 phi_x^2 + c_4 phi_x^4]``."""
    R = rows.shape[0]
    nr = rows.shape[1]
    a = np.zeros(8)
    for r in range(R):
        ph = phi[r * L : (r + 1) * L]
        for j in range(L - 1):
            tmp[j] = ph[j + 1]
        tmp[L - 1] = ph[0]
        for k in range(0, nr, 2):
            o = phi[rows[r, k] * L : (rows[r, k] + 1) * L]
            for j in range(L):
                tmp[j] = tmp[j] + o[j]
        for j in range(L):
            p = np.float64(ph[j])
            p2 = p * p
            a[j % 8] += (-c_hop * p) * np.float64(tmp[j]) + c2 * p2 + (c4 * p2) * p2
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


@_jit
def actions(phi, s, rows, L, c64):
    """``s[c] = S(phi[c])`` for every chain (phi: ``(n, V)``), exactly as :func:`trajectory` computes it."""
    tmp = np.empty(L, dtype=phi.dtype)
    for c in range(phi.shape[0]):
        s[c] = action(phi[c], tmp, rows, L, c64[0], c64[1], c64[2])


@_jit
def _md(x, y, p, edge, tmp, rows, L, ops, coefs, cf, flat2d):
    """The schedule ``ops``/``coefs`` (see :func:`trajectory`) on one chain's ``(x, p)``, in place; the
    end point is left in ``x``. On a flat 2d lattice each kick followed by a drift is one pass
    (:func:`kick2d` with ``out``) that writes the drifted field to the other buffer of ``x``/``y``
    (``y``: scratch of ``x``'s size); the arithmetic is that of the separate kick and drift."""
    n_ops = ops.shape[0]
    swapped = False
    cur = x
    oth = y
    i = 0
    while i < n_ops:
        if ops[i] == 0:
            if flat2d and i + 1 < n_ops and ops[i + 1] == 1:
                kick2d(cur, oth, p, edge, rows, L, coefs[i], coefs[i + 1], cf[0], cf[1], cf[2])
                cur, oth = oth, cur
                swapped = not swapped
                i += 2
                continue
            if flat2d:
                kick2d(cur, None, p, edge, rows, L, coefs[i], coefs[i], cf[0], cf[1], cf[2])
            else:
                kick(cur, p, tmp, rows, L, coefs[i], cf[0], cf[1], cf[2])
        else:
            drift(cur, p, coefs[i])
        i += 1
    if swapped:
        x[:] = cur


@_jit
def trajectory(phi0, pi, phi1, k0, k1, s1, rows, L, ops, coefs, cf, c64):
    """One MD trajectory per chain, chain after chain: ``phi1[c] <- MD(phi0[c], pi[c])``, ``pi`` in place.

    phi0, pi, phi1: ``(n, V)``; the integrator is the schedule ``ops[i]`` (0: kick ``pi += coefs[c, i] *
    force``, 1: drift ``phi += coefs[c, i] * pi``), coefs ``(n, n_ops)`` per chain in the field dtype; cf: (c_hop, 2 c_2, 4 c_4) in the
    field dtype; c64: (c_hop, c_2, c_4) in float64. Outputs k0, k1 (kinetic energy at the start and the
    end) and s1 (action at the end), float64 ``(n,)``."""
    n = phi0.shape[0]
    R = rows.shape[0]
    tmp = np.empty(L, dtype=phi0.dtype)
    edge = np.empty(2 * R, dtype=phi0.dtype)
    flat2d = rows.shape[1] == 2 and R >= 3 and L >= 3
    y = np.empty(phi0.shape[1], dtype=phi0.dtype)
    for c in range(n):
        x = phi1[c]
        p = pi[c]
        x[:] = phi0[c]
        k0[c] = half_sum_sq(p)
        _md(x, y, p, edge, tmp, rows, L, ops, coefs[c], cf, flat2d)
        k1[c] = half_sum_sq(p)
        s1[c] = action(x, tmp, rows, L, c64[0], c64[1], c64[2])


@_jit
def hmc_step(phi0, s0, phi1, s1, pi, dH, acc, rows, L, ops, base, step, jitter, cf, c64, k0, k1, chains, counters):
    """One complete HMC trajectory per chain, chain after chain, drawing its random numbers inline from
    the Philox stream of :class:`lftml.samplers.rng.ChainRNG` in the order ``HMC.step`` draws them: one
    block for the step-size jitter (if ``jitter``), ``ceil(V/2)`` blocks of Box-Muller momenta, one block
    for the accept/reject uniform. float64 fields only.

    phi0 ``(n, V)``, s0 ``(n,)``: start; outputs phi1, s1 (the accepted or the old field and action), pi
    (end-point momenta), dH, acc (1 accepted, 0 not); base: the schedule's coefficients for eps = 1;
    per chain ``eps = step (1 + jitter (2 u - 1))`` and ``coef_i = base_i eps``, as the eager path computes them."""
    n, V = phi0.shape
    R = rows.shape[0]
    tmp = np.empty(L, dtype=phi0.dtype)
    edge = np.empty(2 * R, dtype=phi0.dtype)
    flat2d = rows.shape[1] == 2 and R >= 3 and L >= 3
    nb = (V + 1) // 2
    rk0 = np.empty(10, dtype=np.uint64)
    rk1 = np.empty(10, dtype=np.uint64)
    a0 = k0
    a1 = k1
    for r in range(10):
        rk0[r] = a0
        rk1[r] = a1
        a0 = (a0 + _pk.W0) & _pk.MASK
        a1 = (a1 + _pk.W1) & _pk.MASK
    one = np.empty(1)
    one_b = np.empty(1)
    ua = np.empty(nb)
    ub = np.empty(nb)
    mf = np.empty(nb)
    ef = np.empty(nb)
    oa = np.empty(nb)
    ob = np.empty(nb)
    coefs = np.empty(ops.shape[0])
    y = np.empty(V)
    half = V // 2
    for c in range(n):
        ch = np.uint64(chains[c])
        ctr = counters[c]
        eps = step
        if jitter != 0.0:
            _pk._units(ctr, ch, rk0, rk1, one, one_b, one.view(np.uint64), one_b.view(np.uint64))
            ctr = ctr + np.uint64(1)
            eps = step * (1.0 + jitter * (2.0 * one[0] - 1.0))
        for i in range(ops.shape[0]):
            coefs[i] = base[i] * eps
        _pk._units(ctr, ch, rk0, rk1, ua, ub, ua.view(np.uint64), ub.view(np.uint64))
        ctr = ctr + np.uint64(nb)
        _pk._split(ua.view(np.uint64), mf.view(np.uint64), ef.view(np.uint64))
        _pk._box_muller(mf, ef, ub, oa, ob)
        p = pi[c]
        for j in range(half):
            p[2 * j] = oa[j]
            p[2 * j + 1] = ob[j]
        if V % 2:
            p[V - 1] = oa[nb - 1]
        x = phi1[c]
        x[:] = phi0[c]
        kin0 = half_sum_sq(p)
        _md(x, y, p, edge, tmp, rows, L, ops, coefs, cf, flat2d)
        kin1 = half_sum_sq(p)
        s_new = action(x, tmp, rows, L, c64[0], c64[1], c64[2])
        _pk._units(ctr, ch, rk0, rk1, one, one_b, one.view(np.uint64), one_b.view(np.uint64))
        ctr = ctr + np.uint64(1)
        d = (kin1 + s_new) - (kin0 + s0[c])
        dH[c] = d
        if math.log(one[0]) < -d:  # NaN: rejected
            acc[c] = 1
            s1[c] = s_new
        else:
            acc[c] = 0
            s1[c] = s0[c]
            x[:] = phi0[c]
        counters[c] = ctr


@_jit
def kicks(phi, pi, rows, L, coefs, cf):
    """``pi[c] += coefs[c] * force(phi[c])`` for every chain (phi, pi: ``(n, V)``, in place): the kick of
    :func:`trajectory`, one call for all chains (FA-HMC's MD, whose drifts run outside numba)."""
    R = rows.shape[0]
    tmp = np.empty(L, dtype=phi.dtype)
    edge = np.empty(2 * R, dtype=phi.dtype)
    flat2d = rows.shape[1] == 2 and R >= 3 and L >= 3
    for c in range(phi.shape[0]):
        if flat2d:
            kick2d(phi[c], None, pi[c], edge, rows, L, coefs[c], coefs[c], cf[0], cf[1], cf[2])
        else:
            kick(phi[c], pi[c], tmp, rows, L, coefs[c], cf[0], cf[1], cf[2])
