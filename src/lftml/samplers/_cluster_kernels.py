"""numba kernel of :mod:`lftml.samplers.cluster` (imported lazily: importing this module imports numba).

Cluster labels by union-find over the active bonds of all chains at once. Union by the smaller
root keeps every root the smallest site (global index ``chain * V + x``) of its cluster, which is
exactly the label the scipy path derives (connected components, then the first site of each), so
both paths flip the same clusters with the same random numbers.
"""

from __future__ import annotations

import math

import numpy as np

from lftml.samplers._fused_kernels import _jit  # one way to compile (cache in the user's folder, fallback in memory)


@_jit
def _find(parent, i):
    while parent[i] != i:  # path halving; parent[i] <= i throughout
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@_jit
def bond_bounds(y):
    """``(lo, hi)`` with ``lo <= 1 - exp(-y) <= hi`` for ``y = 2 J >= 0``, each widened by a relative 1e-12.

    ``y - y^2/2 <= 1 - exp(-y) <= y - y^2/2 + y^3/6`` (y < 1) and ``1 - 1/(1 + y + y^2/2) <= 1 - exp(-y)
    <= 1`` (any y); the margin is far beyond the few ulps of rounding in the bounds and in expm1, so
    ``u < lo`` and ``u >= hi`` decide ``u < -expm1(-y)`` exactly. Written with selects, not branches (the
    kernel below evaluates it for every bond)."""
    small = y < 1.0
    lo1 = y * (1.0 - 0.5 * y)
    hi1 = y * (1.0 - y * (0.5 - y / 6.0))
    lo2 = 1.0 - 1.0 / (1.0 + y * (1.0 + 0.5 * y))
    lo = lo1 if small else lo2
    hi = hi1 if small else 1.0
    return lo * (1.0 - 1e-12), hi * (1.0 + 1e-12)


@_jit
def bond_active(u, neg_two_j):
    """``u < -expm1(neg_two_j)``, ``neg_two_j = -2 J <= 0``, decided by :func:`bond_bounds` for most ``u``:
    only ``u`` inside the band (~5 % of the bonds near kappa_c) pays for the transcendental. Same
    result as the plain comparison, bit for bit."""
    lo, hi = bond_bounds(-neg_two_j)
    if u < lo:
        return True
    if u >= hi:
        return False
    return u < -math.expm1(neg_two_j)


@_jit
def smallest_site_roots(x, u, c_hop, src, dst):
    """``root[chain * V + s]`` = smallest global site of s's cluster, for the field ``x`` ``(n, V)``.

    Bond b joins ``src[b]`` and ``dst[b]`` (sites of one chain); it is active when the signs agree and
    ``u[chain, b] < 1 - exp(-2 c_hop |x_src| |x_dst|)`` (the same expression, in the same order, as
    :func:`lftml.samplers.cluster.bond_probability`), decided exactly as :func:`bond_active` does.

    Per chain, three passes: every bond through the bounds without a branch (the sign test and the
    bounds are coin flips near kappa_c: as branches they cost ~15 ns per bond in mispredictions),
    appending the surely active bonds to one list and the band's to another; :func:`bond_active` for
    the band's;
    then union-find over the active list. Union by the smaller root makes every root the smallest site
    of its cluster whatever the order of the unions, so the labels are those of any other order."""
    n, V = x.shape
    nb = src.shape[0]
    parent = np.arange(n * V)
    active = np.empty(nb, dtype=np.int64)
    band = np.empty(nb, dtype=np.int64)
    for c in range(n):
        off = c * V
        k = 0
        kb = 0
        for b in range(nb):
            xs = x[c, src[b]]
            xd = x[c, dst[b]]
            same = (xs >= 0) == (xd >= 0)
            lo, hi = bond_bounds(2.0 * c_hop * abs(xs) * abs(xd))  # = -neg_two_j of bond_active, bit for bit
            ub = u[c, b]
            sure = ub < lo
            active[k] = b
            k += same & sure
            band[kb] = b
            kb += same & (ub < hi) & (not sure)
        for i in range(kb):  # the band's few bonds: the one decision function, expm1 included
            b = band[i]
            if bond_active(u[c, b], -2.0 * c_hop * abs(x[c, src[b]]) * abs(x[c, dst[b]])):
                active[k] = b
                k += 1
        for i in range(k):
            b = active[i]
            r = _find(parent, off + src[b])
            q = _find(parent, off + dst[b])
            if r < q:
                parent[q] = r
            elif q < r:
                parent[r] = q
    for i in range(n * V):  # parent[i] < i already points at its root: one forward pass compresses all
        parent[i] = parent[parent[i]]
    return parent


@_jit
def sw_flips(labels, site_u, sign, size, frac):
    """Swendsen-Wang's decisions for ``n`` chains of ``V`` sites (``sign`` ``(n, V)``): site i gets
    ``-1`` when ``site_u[labels[i]] < 1/2`` (the uniform of its cluster's smallest site), else ``+1``;
    ``size[c]`` the mean over chain c's sites of the size of their cluster (sum_c |c|^2 / V),
    ``frac[c]`` the fraction flipped. Integer counts, so the same numbers as the numpy path bit for bit."""
    n, V = sign.shape
    counts = np.zeros(n * V, dtype=np.int64)
    for i in range(n * V):
        counts[labels[i]] += 1
    for c in range(n):
        total = 0
        flipped = 0
        for x in range(V):
            r = labels[c * V + x]
            total += counts[r]
            if site_u[r] < 0.5:
                sign[c, x] = -1.0
                flipped += 1
            else:
                sign[c, x] = 1.0
        size[c] = total / V
        frac[c] = flipped / V
