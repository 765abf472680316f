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
def _pad(x, a, R, L):
    """Copy the ``R x L`` field ``x`` (flat) into the interior of the padded ``(R + 2) x (L + 2)`` array ``a``."""
    S = L + 2
    for r in range(R):
        a[(r + 1) * S + 1 : (r + 1) * S + 1 + L] = x[r * L : (r + 1) * L]


@_jit
def _unpad(a, x, R, L):
    """The inverse of :func:`_pad`: the interior of ``a`` back into ``x``."""
    S = L + 2
    for r in range(R):
        x[r * L : (r + 1) * L] = a[(r + 1) * S + 1 : (r + 1) * S + 1 + L]


@_jit
def _halo(a, R, L, below, above):
    """Refresh the one-site halo of the padded field ``a``: column 0 / L+1 of every row are copies of its
    sites L-1 / 0 (the periodic wrap in the last axis), then padded row 0 is a copy of row ``below``
    (the row x - e_0 of row 0) and padded row R+1 of row ``above`` (x + e_0 of row R-1)."""
    S = L + 2
    for r in range(1, R + 1):
        a[r * S] = a[r * S + L]
        a[r * S + L + 1] = a[r * S + 1]
    a[0:S] = a[(below + 1) * S : (below + 2) * S]
    a[(R + 1) * S : (R + 2) * S] = a[(above + 1) * S : (above + 2) * S]


PADDED_MAX_SITES = 40 * 40
"""Largest 2d lattice whose trajectories run padded (:func:`_md`); above it the three padded buffers no
longer fit the core's fast caches and the in-place kernel is as fast or faster (measured, ``hmc_step``,
64 chains, one core, modes alternated in one process: padded 1.3-1.4x faster at 8x8 and 16x16,
1.10-1.13x at 32x32, 0.96-1.02x at 48x48, 0.96-1.0x at 64x64, 0.89x at 128x128; the results are the
same bit for bit)."""


@_jit
def md_mode(shape_rows, nr, L):
    """The :func:`_md` mode of a lattice with ``shape_rows`` rows of ``L`` sites and ``nr`` row-neighbour
    columns: 0 generic, 1 flat 2d in place, 2 flat 2d padded."""
    if nr != 2 or shape_rows < 3 or L < 3:
        return 0
    return 2 if shape_rows * L <= PADDED_MAX_SITES else 1


@_jit
def _md_scratch(phi, rows, L, mode):
    """The scratch arrays :func:`_md` needs in ``mode``, in ``phi``'s dtype: ``edge`` ``(2R,)``, ``y`` (one
    field, mode 1) and ``pad`` ``(3, (R + 2) (L + 2))`` (mode 2); the ones a mode does not use have size 1."""
    R = rows.shape[0]
    edge = np.empty(2 * R, dtype=phi.dtype)
    y = np.empty(R * L if mode == 1 else 1, dtype=phi.dtype)
    pad = np.empty((3, (R + 2) * (L + 2) if mode == 2 else 1), dtype=phi.dtype)
    return edge, y, pad


@_jit
def _md(x, y, pad, p, edge, tmp, rows, L, ops, coefs, cf, mode):
    """The schedule ``ops``/``coefs`` (see :func:`trajectory`) on one chain's ``(x, p)``, in place; the
    end point is left in ``x``. ``mode`` (:func:`md_mode`):

    0: any lattice, :func:`kick` and :func:`drift` in place.
    1: a flat 2d lattice: each kick followed by a drift is one pass (:func:`kick2d` with ``out``) that
       writes the drifted field to the other buffer of ``x``/``y`` (``y``: scratch of ``x``'s size).
    2: a flat 2d lattice on padded copies, ``pad``: ``(3, (R + 2) (L + 2))`` scratch holding two field
       buffers and the momenta, each ``R x L`` lattice surrounded by a one-site halo of periodic copies
       (:func:`_halo`), so that every kick is one flat vector loop over the ``R (L + 2)`` sites of rows
       1 .. R (:func:`_band`; what it computes in the halo columns is discarded) with no wrapped sites
       to fix up; a kick and the drift after it are again one pass into the other buffer.

    The arithmetic of every lattice site is that of :func:`kick` and :func:`drift` in every mode, bit
    for bit."""
    n_ops = ops.shape[0]
    if mode == 2:
        _md_padded(x, pad, p, rows, L, ops, coefs, cf)
        return
    swapped = False
    cur = x
    oth = y
    i = 0
    while i < n_ops:
        if ops[i] == 0:
            if mode == 1 and i + 1 < n_ops and ops[i + 1] == 1:
                kick2d(cur, oth, p, edge, rows, L, coefs[i], coefs[i + 1], cf[0], cf[1], cf[2])
                cur, oth = oth, cur
                swapped = not swapped
                i += 2
                continue
            if mode == 1:
                kick2d(cur, None, p, edge, rows, L, coefs[i], coefs[i], cf[0], cf[1], cf[2])
            else:
                kick(cur, p, tmp, rows, L, coefs[i], cf[0], cf[1], cf[2])
        else:
            drift(cur, p, coefs[i])
        i += 1
    if swapped:
        x[:] = cur


@_jit
def _md_padded(x, pad, p, rows, L, ops, coefs, cf):
    """Mode 2 of :func:`_md`."""
    n_ops = ops.shape[0]
    R = rows.shape[0]
    S = L + 2
    below = rows[0, 1]
    above = rows[R - 1, 0]
    cur = pad[0]
    oth = pad[1]
    pp = pad[2]
    _pad(x, cur, R, L)
    _halo(cur, R, L, below, above)
    _pad(p, pp, R, L)
    for r in range(1, R + 1):  # the halo momenta are kicked too (and never read): keep them finite
        pp[r * S] = 0.0
        pp[r * S + L + 1] = 0.0
    i = 0
    while i < n_ops:
        if ops[i] == 0:
            if i + 1 < n_ops and ops[i + 1] == 1:
                _band(cur, oth, pp, S, 2 * S, 0, R * S, coefs[i], coefs[i + 1], cf[0], cf[1], cf[2])
                _halo(oth, R, L, below, above)
                cur, oth = oth, cur
                i += 2
                continue
            _band(cur, None, pp, S, 2 * S, 0, R * S, coefs[i], coefs[i], cf[0], cf[1], cf[2])
        else:
            drift(cur[S : (R + 1) * S], pp[S : (R + 1) * S], coefs[i])
            _halo(cur, R, L, below, above)
        i += 1
    _unpad(cur, x, R, L)
    _unpad(pp, p, R, L)


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
    mode = md_mode(R, rows.shape[1], L)
    edge, y, pad = _md_scratch(phi0, rows, L, mode)
    for c in range(n):
        x = phi1[c]
        p = pi[c]
        x[:] = phi0[c]
        k0[c] = half_sum_sq(p)
        _md(x, y, pad, p, edge, tmp, rows, L, ops, coefs[c], cf, mode)
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
    mode = md_mode(R, rows.shape[1], L)
    edge, y, pad = _md_scratch(phi0, rows, L, mode)
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
        _md(x, y, pad, p, edge, tmp, rows, L, ops, coefs, cf, mode)
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
