"""numba kernels of :mod:`lftml.samplers.rng` (imported lazily: importing this module imports numba).

Philox4x32-10 (Salmon, Moraes, Dror, Shaw, SC'11; the Random123 reference) in uint64 arithmetic:
every intermediate is kept below 2**32 by masks, the 32x32 -> 64 bit products are exact. The
Box-Muller transform uses the polynomial log and sin/cos of :mod:`lftml.samplers.rng` (basic IEEE
operations only, no libm), written as flat loops over scratch arrays so that LLVM vectorises them;
no fast-math and no FMA contraction, so every number is bit for bit the torch path's.
"""

from __future__ import annotations

import logging
import math

import numba
import numpy as np

log = logging.getLogger(__name__)

M0 = np.uint64(0xD2511F53)
M1 = np.uint64(0xCD9E8D57)
W0 = np.uint64(0x9E3779B9)
W1 = np.uint64(0xBB67AE85)
MASK = np.uint64(0xFFFFFFFF)
S32 = np.uint64(32)
S26 = np.uint64(26)
S6 = np.uint64(6)
ZERO = np.uint64(0)
ONE = np.uint64(1)
TWO_M52 = 2.0**-52
TWO_52 = 2.0**52
EXP52 = np.uint64(0x4330000000000000)  # bits of 2^52: (EXP52 | k) is the double 2^52 + k for k < 2^52
ONE_BITS = np.uint64(0x3FF0000000000000)
MANT = np.uint64(0x000FFFFFFFFFFFFF)
S52 = np.uint64(52)
BIAS = 1023.0
SQRT2 = math.sqrt(2.0)
LN2_HI = 6.93147180369123816490e-01  # fdlibm's split of log 2 (LN2_HI has 32 significant bits)
LN2_LO = 1.90821492927058770002e-10
HALF_PI = 0.5 * math.pi
L1, L2, L3, L4, L5, L6, L7, L8, L9, L10 = (1.0 / (2 * k + 1) for k in range(1, 11))
S1, S2, S3, S4, S5, S6_, S7, S8 = ((-1.0) ** k / math.factorial(2 * k + 1) for k in range(1, 9))
C1, C2, C3, C4, C5, C6, C7, C8, C9 = ((-1.0) ** k / math.factorial(2 * k) for k in range(1, 10))


def _jit(fn):
    # error_model="numpy": no ZeroDivisionError branch in float division (none can occur here), which
    # would stop LLVM from vectorising the loops; also lets math.sqrt become the vector sqrt instruction
    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)
    except Exception as exc:  # noqa: BLE001  (no writable cache location: compile in memory)
        log.debug("numba cache unavailable for %s (%s); compiling in memory", fn.__name__, exc)
        return numba.njit(cache=False, nogil=True, error_model="numpy")(fn)


@_jit
def block(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1); all uint64 holding 32-bit words."""
    for _ in range(10):
        p0 = M0 * c0
        p1 = M1 * c2
        c0, c1, c2, c3 = ((p1 >> S32) ^ c1) ^ k0, p1 & MASK, ((p0 >> S32) ^ c3) ^ k1, p0 & MASK
        k0 = (k0 + W0) & MASK
        k1 = (k1 + W1) & MASK
    return c0, c1, c2, c3


@_jit
def raw(ctr, key, out):
    """``out[i] = philox4x32_10(ctr[i], key[i])``; ctr, out ``(n, 4)``, key ``(n, 2)``, uint64 words."""
    for i in range(ctr.shape[0]):
        a, b, c, d = block(ctr[i, 0], ctr[i, 1], ctr[i, 2], ctr[i, 3], key[i, 0], key[i, 1])
        out[i, 0] = a
        out[i, 1] = b
        out[i, 2] = c
        out[i, 3] = d


@_jit
def _units(base, ch, rk0, rk1, a, b, ab, bb):
    """Blocks ``base + j`` of chain ``ch`` -> uniforms ``a[j] = u(x0, x1)``, ``b[j] = u(x2, x3)``; ``ab``, ``bb``
    are uint64 views of ``a``, ``b`` (the 52-bit integer is turned into a double through 2^52 + k)."""
    for j in range(a.shape[0]):
        ctr = base + np.uint64(j)
        c0 = ctr & MASK
        c1 = ctr >> S32
        c2 = ch & MASK
        c3 = ZERO
        for r in range(10):  # the masks tell LLVM that the words fit 32 bits: 32x32 -> 64 bit vector multiplies
            p0 = M0 * c0
            p1 = M1 * c2
            c0 = ((p1 >> S32) ^ c1) ^ (rk0[r] & MASK)
            c2 = ((p0 >> S32) ^ c3) ^ (rk1[r] & MASK)
            c1 = p1 & MASK
            c3 = p0 & MASK
        ab[j] = EXP52 | ((c0 >> S6) << S26) | (c1 >> S6)
        bb[j] = EXP52 | ((c2 >> S6) << S26) | (c3 >> S6)
    for j in range(a.shape[0]):
        a[j] = ((a[j] - TWO_52) + 0.5) * TWO_M52
        b[j] = ((b[j] - TWO_52) + 0.5) * TWO_M52


@_jit
def _split(ab, mb, eb):
    """Mantissa ``m in [1, 2)`` and biased exponent ``2^52 + E`` of the doubles with bits ``ab``, as the bits of
    doubles (``mb``, ``eb``: uint64 views of float64 scratch arrays)."""
    for j in range(ab.shape[0]):
        bits = ab[j]
        mb[j] = (bits & MANT) | ONE_BITS
        eb[j] = EXP52 | (bits >> S52)


@_jit
def _box_muller(mf, ef, b, oa, ob):
    """Normals ``oa, ob = r cos theta, r sin theta``, ``r = sqrt(-2 log u1)``, ``theta = 2 pi b``, from
    ``u1 = mf 2^(ef - 2^52 - 1023)`` (see :func:`_split`); the expressions of ``rng._box_muller_torch``."""
    for j in range(mf.shape[0]):
        m = mf[j]
        e = (ef[j] - TWO_52) - BIAS
        big = m > SQRT2
        m = m * 0.5 if big else m
        e = e + 1.0 if big else e
        s = (m - 1.0) / (m + 1.0)
        z = s * s
        q = ((((((((L10 * z + L9) * z + L8) * z + L7) * z + L6) * z + L5) * z + L4) * z + L3) * z + L2) * z + L1
        t = s + s
        lm = t + t * (z * q)
        lg = e * LN2_HI + (e * LN2_LO + lm)
        r = math.sqrt(-2.0 * lg)
        v = 4.0 * b[j]
        k = np.floor(v + 0.5)
        x = (v - k) * HALF_PI
        z = x * x
        sp = ((((((S8 * z + S7) * z + S6_) * z + S5) * z + S4) * z + S3) * z + S2) * z + S1
        sn = x + x * (z * sp)
        cp = (((((((C9 * z + C8) * z + C7) * z + C6) * z + C5) * z + C4) * z + C3) * z + C2) * z + C1
        cs = 1.0 + z * cp
        # quadrant k (4 = 0): (cos, sin) = (c, s), (-s, c), (-c, -s), (s, -c)
        odd = (k == 1.0) | (k == 3.0)
        neg_c = (k == 1.0) | (k == 2.0)
        neg_s = (k == 2.0) | (k == 3.0)
        c1 = sn if odd else cs
        s1 = cs if odd else sn
        oa[j] = r * (-c1 if neg_c else c1)
        ob[j] = r * (-s1 if neg_s else s1)


@_jit
def fill(k0, k1, chains, counters, out, normal):
    """Chain ``c`` (index ``chains[c]``) fills ``out[c, :m]`` from blocks ``counters[c] + j``, j < ceil(m/2),
    each block giving two numbers: uniforms ``u(x0, x1), u(x2, x3)`` or (``normal``) their Box-Muller pair,
    stored at ``2j, 2j + 1``. Advances ``counters[c]`` by the blocks used. Counter words: (n low, n high,
    chain index, 0)."""
    n, m = out.shape
    nb = (m + 1) // 2
    rk0 = np.empty(10, dtype=np.uint64)
    rk1 = np.empty(10, dtype=np.uint64)
    for r in range(10):
        rk0[r] = k0
        rk1[r] = k1
        k0 = (k0 + W0) & MASK
        k1 = (k1 + W1) & MASK
    a = np.empty(nb)
    b = np.empty(nb)
    mf = np.empty(nb)
    ef = np.empty(nb)
    oa = np.empty(nb)
    ob = np.empty(nb)
    ab = a.view(np.uint64)
    bb = b.view(np.uint64)
    mb = mf.view(np.uint64)
    eb = ef.view(np.uint64)
    half = m // 2
    for c in range(n):
        base = counters[c]
        _units(base, np.uint64(chains[c]), rk0, rk1, a, b, ab, bb)
        if normal:
            _split(ab, mb, eb)
            _box_muller(mf, ef, b, oa, ob)
            va, vb = oa, ob
        else:
            va, vb = a, b
        o = out[c]
        for j in range(half):
            o[2 * j] = va[j]
            o[2 * j + 1] = vb[j]
        if m % 2:
            o[m - 1] = va[nb - 1]
        counters[c] = base + np.uint64(nb)
