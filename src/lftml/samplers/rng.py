r"""Per-chain random streams, and the one way to derive a torch generator from a seed.

**The chain stream** (:class:`ChainRNG`, stream name ``"philox4x32-10/v1"``): the counter-based
generator Philox4x32-10 (Salmon et al., SC'11; the Random123 reference, checked against its
known-answer vectors in the tests). Conventions:

* key (2 x 32 bit): ``SeedSequence(seed, spawn_key=(purpose,)).generate_state(2, uint32)``, shared by
  all chains of one purpose (0: initial fields, 1: sampling);
* counter (4 x 32 bit) of block ``n`` of chain ``i``: ``(n mod 2^32, n div 2^32, i, 0)``; each chain
  holds its draw counter ``n`` (uint64), advanced by the blocks a draw uses;
* one block gives two float64 numbers: uniforms ``u = (k + 1/2) 2^-52`` in the open interval (0, 1),
  ``k`` the 52-bit integer from the top 26 bits of words (0, 1), resp. (2, 3); normals are the
  Box-Muller pair ``sqrt(-2 log u1) (cos 2 pi u2, sin 2 pi u2)`` of a block (float64; cast to the
  requested dtype afterwards). A draw of ``m`` numbers per chain uses ``ceil(m / 2)`` blocks per chain
  (``uniform()`` uses one block per chain and the first number of it). log and sin/cos are evaluated
  by polynomials from basic IEEE operations (no libm; ~1 ulp), so that every path gives the same bits.

So chain ``i``'s numbers depend only on (seed, purpose, i, counter): not on ``n_chains``, nor on the
device. The state is the counters (8 bytes per chain), saved in checkpoints; restoring them resumes
bit for bit. On CPU tensors the draws run in a numba kernel when numba can be imported (a vectorised
torch integer implementation otherwise, and always on CUDA); both produce the same numbers bit for bit
(tested; on CUDA as long as the device's float64 add/multiply/divide/sqrt are IEEE-rounded, as they are).

**Files written before this stream** (no ``rng_stream`` in the metadata) used one ``torch.Generator``
per chain (:class:`LegacyChainRNG`, stream name ``"torch-generator/v0"``). Policy: such a file is
resumed with its own stream, bit-identically to an uninterrupted old run; every new file records
``rng_stream`` in its metadata, and :func:`chain_rng` refuses an unknown stream name with a one-line
error. Streams are never mixed within one file.

**Torch generators** for everything that draws from a ``torch.Generator`` (network initialisation,
Gibbs or diffusion sampling, data order, complex Langevin noise): :func:`torch_generator` ``(seed,
purpose)``, seeded with :func:`derive_seed`, a 63-bit integer from ``SeedSequence(seed, spawn_key=
(0x746f7263, crc32(purpose)))``. Different purposes give independent streams from one seed.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import zlib
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from lftml.errors import LftmlError

log = logging.getLogger(__name__)

STREAM = "philox4x32-10/v1"
LEGACY_STREAM = "torch-generator/v0"

# Philox4x32 constants (Random123)
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK = 0xFFFFFFFF
_TORCH_SPAWN = 0x746F7263  # "torc": spawn-key prefix of torch_generator seeds, apart from the chain streams

_DISABLED_NUMBA = False  # set by tests to force the torch integer path on CPU


# --------------------------------------------------------------------------- seeds
def seed_sequences(seed: int, n: int, purpose: int) -> list[np.random.SeedSequence]:
    """``n`` child seed sequences ``SeedSequence(seed, spawn_key=(purpose, i))`` (the legacy per-chain seeds)."""
    return [np.random.SeedSequence(int(seed), spawn_key=(int(purpose), i)) for i in range(n)]


def philox_key(seed: int, purpose: int) -> tuple[int, int]:
    """The Philox key (two 32-bit words) of stream ``purpose`` for ``seed``."""
    k = np.random.SeedSequence(int(seed), spawn_key=(int(purpose),)).generate_state(2, dtype=np.uint32)
    return int(k[0]), int(k[1])


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for the named stream ``purpose`` (``"init"``, ``"sampling"``, ``"data"``, ...) of ``seed``."""
    if not isinstance(purpose, str) or not purpose:
        raise LftmlError(f"a random-stream purpose must be a non-empty name, got {purpose!r}")
    ss = np.random.SeedSequence(int(seed), spawn_key=(_TORCH_SPAWN, zlib.crc32(purpose.encode())))
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def torch_generator(seed: int, purpose: str, device: str | torch.device = "cpu") -> torch.Generator:
    """The ``torch.Generator`` of stream ``purpose`` for ``seed`` (on ``device``; CUDA generators for CUDA)."""
    dev = torch.device(device)
    return torch.Generator(device=dev if dev.type == "cuda" else "cpu").manual_seed(derive_seed(seed, purpose))


# --------------------------------------------------------------------------- Philox, torch integer path
def _philox_torch(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on int64 tensors holding 32-bit words (any device). The 32x32-bit products may wrap
    the int64 range; their bit pattern is the uint64 product, from which shifts and masks take the words."""
    for r in range(10):
        if r:
            k0 = (k0 + _W0) & _MASK
            k1 = (k1 + _W1) & _MASK
        p0 = c0 * _M0
        p1 = c2 * _M1
        c0, c1, c2, c3 = ((p1 >> 32) & _MASK) ^ c1 ^ k0, p1 & _MASK, ((p0 >> 32) & _MASK) ^ c3 ^ k1, p0 & _MASK
    return c0, c1, c2, c3


def philox4x32_10(counter: np.ndarray, key: np.ndarray | Sequence[int], backend: str = "auto") -> np.ndarray:
    """Raw Philox4x32-10 blocks: ``counter`` ``(n, 4)`` and ``key`` ``(2,)`` or ``(n, 2)`` of 32-bit words ->
    ``(n, 4)`` uint32. ``backend``: ``"numba"``, ``"torch"`` or ``"auto"``."""
    ctr = np.asarray(counter, dtype=np.uint64).reshape(-1, 4)
    k = np.broadcast_to(np.asarray(key, dtype=np.uint64).reshape(-1, 2), (ctr.shape[0], 2))
    if backend == "numba" or (backend == "auto" and _numba_ready()):
        out = np.empty_like(ctr)
        _kernels().raw(ctr, np.ascontiguousarray(k), out)
        return out.astype(np.uint32)
    t = torch.from_numpy(ctr.astype(np.int64))
    kt = torch.from_numpy(k.astype(np.int64))
    words = _philox_torch(t[:, 0], t[:, 1], t[:, 2], t[:, 3], kt[:, 0], kt[:, 1])
    return torch.stack(words, dim=1).numpy().astype(np.uint32)


def _unit_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    k = ((a >> 6) << 26) | (b >> 6)
    return (k.to(torch.float64) + 0.5) * 2.0**-52


# Box-Muller without libm: log and sin/cos from basic IEEE operations (the numba kernel evaluates the
# same expressions in the same order, so both paths give the same bits). log u = e log 2 + log m with
# u = m 2^e, m in [sqrt(1/2), sqrt(2)), log m = 2 atanh s, s = (m - 1)/(m + 1), |s| <= 0.172, series to
# s^21 (truncation < 1e-18 relative); 2 pi u2 = (k + f) pi/2, |f| <= 1/2, sin/cos of f pi/2 by Taylor
# series to x^17 / x^18 (truncation < 1e-18). Measured error: ~1 ulp against libm.
_SQRT2 = math.sqrt(2.0)
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # fdlibm's split of log 2
_LOG_C = tuple(1.0 / (2 * k + 1) for k in range(1, 11))
_SIN_C = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(1, 9))
_COS_C = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(1, 10))


def _horner(z: torch.Tensor, coefs: tuple[float, ...]) -> torch.Tensor:
    q = coefs[-1] * z + coefs[-2]
    for c in coefs[-3::-1]:
        q = q * z + c
    return q


def _box_muller_torch(u1: torch.Tensor, u2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, e = torch.frexp(u1)  # u1 = m 2^e, m in [1/2, 1)
    m = m * 2.0
    e = e.to(torch.float64) - 1.0
    big = m > _SQRT2
    m = torch.where(big, m * 0.5, m)
    e = torch.where(big, e + 1.0, e)
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    t = s + s
    lm = t + t * (z * _horner(z, _LOG_C))
    lg = e * _LN2_HI + (e * _LN2_LO + lm)
    y = -2.0 * lg
    # torch's CPU sqrt (SLEEF) is not always correctly rounded; numpy's and CUDA's are
    r = torch.from_numpy(np.sqrt(y.numpy())) if y.device.type == "cpu" else torch.sqrt(y)
    v = 4.0 * u2
    k = torch.floor(v + 0.5)
    x = (v - k) * (0.5 * math.pi)
    z = x * x
    sn = x + x * (z * _horner(z, _SIN_C))
    cs = 1.0 + z * _horner(z, _COS_C)
    q0 = (k == 0.0) | (k == 4.0)
    co = torch.where(q0, cs, torch.where(k == 1.0, -sn, torch.where(k == 2.0, -cs, sn)))
    si = torch.where(q0, sn, torch.where(k == 1.0, cs, torch.where(k == 2.0, -sn, -cs)))
    return r * co, r * si


def _fill_torch(key: tuple[int, int], chains: torch.Tensor, counters: torch.Tensor, m: int, normal: bool) -> torch.Tensor:
    """``(n, m)`` float64 on ``chains.device``: what the numba ``fill`` kernel writes (same blocks, same order)."""
    nb = (m + 1) // 2
    dev = chains.device
    ctr = counters.view(-1, 1) + torch.arange(nb, device=dev, dtype=torch.int64).view(1, -1)
    ch = chains.view(-1, 1).expand_as(ctr)
    k0 = torch.full_like(ctr, key[0])
    k1 = torch.full_like(ctr, key[1])
    x0, x1, x2, x3 = _philox_torch(ctr & _MASK, ctr >> 32, ch, torch.zeros_like(ctr), k0, k1)
    v1, v2 = _unit_torch(x0, x1), _unit_torch(x2, x3)
    if normal:
        v1, v2 = _box_muller_torch(v1, v2)
    return torch.stack([v1, v2], dim=2).reshape(ctr.shape[0], 2 * nb)[:, :m]


# --------------------------------------------------------------------------- numba path
def _numba_available() -> bool:
    if _DISABLED_NUMBA:
        return False
    return _numba_found()


@lru_cache(maxsize=1)
def _numba_found() -> bool:
    """Whether numba can be imported (looked up once per process: every draw asks)."""
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):
        return False


@lru_cache(maxsize=1)
def _kernels():
    from lftml.samplers import _philox_kernels

    return _philox_kernels


def _numba_ready() -> bool:
    """Whether the numba kernels can run (imported and compiled, or loaded from the cache, on first call)."""
    global _DISABLED_NUMBA
    if not _numba_available():
        return False
    try:
        _kernels()
        return True
    except Exception as exc:  # noqa: BLE001  (a broken numba install must not stop a run)
        _DISABLED_NUMBA = True
        log.warning("numba random-stream kernels unavailable (%s); using the torch integer path", exc)
        return False


# --------------------------------------------------------------------------- the chain stream
class ChainRNG:
    """Philox4x32-10 stream per chain (see the module docstring); draws are stacked along axis 0.

    ``key``: the two key words; ``chains``: the chain indices (``arange(n_chains)`` from :meth:`from_seed`);
    ``counters``: each chain's block counter (uint64). Draws land on ``device``."""

    stream = STREAM

    def __init__(self, key: tuple[int, int], chains: Sequence[int], counters: np.ndarray | None = None,
                 device: str | torch.device = "cpu"):
        self.key = (int(key[0]) & _MASK, int(key[1]) & _MASK)
        self.chains = np.asarray(chains, dtype=np.uint64).copy()
        self.counters = np.zeros(len(self.chains), dtype=np.uint64) if counters is None else np.array(counters, dtype=np.uint64)
        if self.counters.shape != self.chains.shape:
            raise ValueError(f"{len(self.counters)} counters for {len(self.chains)} chains")
        self.device = torch.device(device)

    @classmethod
    def from_seed(cls, seed: int, n_chains: int, purpose: int = 1, device: str | torch.device = "cpu") -> "ChainRNG":
        """Chains ``0 .. n_chains - 1`` of stream ``purpose`` (0: initial fields, 1: sampling) of ``seed``."""
        return cls(philox_key(seed, purpose), np.arange(int(n_chains)), device=device)

    @property
    def n_chains(self) -> int:
        return len(self.chains)

    def _draw(self, m: int, normal: bool) -> torch.Tensor:
        n = self.n_chains
        if m == 0:
            return torch.empty((n, 0), dtype=torch.float64, device=self.device)
        if self.device.type == "cpu" and _numba_ready():
            out = np.empty((n, m))
            _kernels().fill(np.uint64(self.key[0]), np.uint64(self.key[1]), self.chains, self.counters, out, normal)
            return torch.from_numpy(out)
        chains = torch.as_tensor(self.chains.astype(np.int64), device=self.device)
        counters = torch.as_tensor(self.counters.astype(np.int64), device=self.device)
        out = _fill_torch(self.key, chains, counters, m, normal)
        self.counters += np.uint64((m + 1) // 2)
        return out

    def normal(self, shape: Sequence[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Standard normal ``(n_chains, *shape)`` (float64 Box-Muller, then cast to ``dtype``)."""
        shape = tuple(int(s) for s in shape)
        out = self._draw(math.prod(shape), True).view(self.n_chains, *shape)
        return out if dtype == torch.float64 else out.to(dtype)

    def uniform_like(self, shape: Sequence[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """U(0, 1) numbers (open interval), ``(n_chains, *shape)``."""
        shape = tuple(int(s) for s in shape)
        out = self._draw(math.prod(shape), False).view(self.n_chains, *shape)
        return out if dtype == torch.float64 else out.to(dtype)

    uniforms = uniform_like  # the name the cluster moves use

    def uniform(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """One U(0, 1) number per chain, shape ``(n_chains,)`` (one block per chain)."""
        return self.uniform_like((), dtype).reshape(self.n_chains)

    def signs(self) -> torch.Tensor:
        """One random sign (+1 or -1, float64) per chain."""
        return torch.where(self.uniform() < 0.5, -1.0, 1.0).to(torch.float64)

    def get_state(self) -> np.ndarray:
        """The block counters, ``(n_chains,)`` uint64."""
        return self.counters.copy()

    def set_state(self, states: np.ndarray) -> None:
        states = np.asarray(states)
        if states.shape != (self.n_chains,) or states.dtype != np.uint64:
            raise LftmlError(
                f"the checkpoint's random-stream state {states.dtype}{list(states.shape)} is not the {STREAM} state of "
                f"{self.n_chains} chains (uint64[{self.n_chains}]); the file was written with another stream or chain count"
            )
        self.counters = states.copy()


class LegacyChainRNG:
    """The stream of files written before ``rng_stream`` was recorded: one ``torch.Generator`` per chain,
    seeded from ``SeedSequence(seed, spawn_key=(purpose, i))``; kept only to resume such files."""

    stream = LEGACY_STREAM

    def __init__(self, generators: Sequence[torch.Generator]):
        self.generators = list(generators)

    @classmethod
    def from_seed(cls, seed: int, n_chains: int, purpose: int = 1, device: str | torch.device = "cpu") -> "LegacyChainRNG":
        gens = []
        for ss in seed_sequences(seed, n_chains, purpose):
            g = torch.Generator(device=device)
            g.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0]) & ((1 << 63) - 1))
            gens.append(g)
        return cls(gens)

    @property
    def n_chains(self) -> int:
        return len(self.generators)

    def normal(self, shape: Sequence[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
        shape = tuple(shape)
        return torch.stack([torch.randn(shape, generator=g, dtype=dtype, device=g.device) for g in self.generators])

    def uniform_like(self, shape: Sequence[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
        shape = tuple(shape)
        return torch.stack([torch.rand(shape, generator=g, dtype=dtype, device=g.device) for g in self.generators])

    def uniform(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.cat([torch.rand(1, generator=g, dtype=dtype, device=g.device) for g in self.generators])

    def uniforms(self, shape: Sequence[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """U(0,1) numbers ``(n_chains, *shape)`` on the generators' device (e.g. the bonds of a cluster move)."""
        shape = tuple(shape)
        return torch.stack([torch.rand(shape, generator=g, dtype=dtype, device=g.device) for g in self.generators])

    def signs(self) -> torch.Tensor:
        return torch.where(self.uniform() < 0.5, -1.0, 1.0).to(torch.float64)

    def get_state(self) -> np.ndarray:
        """All generator states as a ``(n_chains, n_bytes)`` uint8 array."""
        return np.stack([g.get_state().cpu().numpy() for g in self.generators])

    def set_state(self, states: np.ndarray) -> None:
        states = np.asarray(states)
        if states.ndim != 2 or states.dtype != np.uint8 or len(states) != len(self.generators):
            raise LftmlError(f"the checkpoint's random-stream state is not the {LEGACY_STREAM} state of {self.n_chains} chains")
        for g, s in zip(self.generators, states):
            g.set_state(torch.from_numpy(np.ascontiguousarray(s, dtype=np.uint8)))


STREAMS = {STREAM: ChainRNG, LEGACY_STREAM: LegacyChainRNG}


def stream_of(metadata: dict) -> str:
    """The chain stream a file was written with: its ``rng_stream``, or the legacy stream when absent."""
    return str(metadata.get("rng_stream", LEGACY_STREAM))


def chain_rng(stream: str, seed: int, n_chains: int, purpose: int = 1,
              device: str | torch.device = "cpu") -> ChainRNG | LegacyChainRNG:
    """The per-chain stream named ``stream`` (one of :data:`STREAMS`)."""
    if stream not in STREAMS:
        raise LftmlError(f"unknown random stream {stream!r} (this lftml knows {', '.join(STREAMS)}); "
                         "resume the file with the lftml version that wrote it")
    return STREAMS[stream].from_seed(seed, n_chains, purpose, device)


__all__ = ["STREAM", "LEGACY_STREAM", "STREAMS", "ChainRNG", "LegacyChainRNG", "chain_rng", "stream_of", "philox_key",
           "philox4x32_10", "derive_seed", "torch_generator", "seed_sequences"]
