r"""Fused CPU molecular dynamics for HMC (numba), for actions of the common phi^4 form
``S = sum_x [-c_hop sum_mu phi_x phi_{x+mu} + c_2 phi_x^2 + c_4 phi_x^4]`` on periodic lattices of
any dimension, in float64 or float32.

One compiled call integrates a whole trajectory for every chain: chains are processed one after
the other (a 32x32 float64 chain is 8 KB, so field, momenta and a one-row scratch buffer stay in
L1/L2 for all force evaluations of its trajectory), kicks and drifts update ``phi`` and ``pi`` in
place, and the force is never stored: each kick computes the neighbour sum of one lattice row
(the last, contiguous axis) and adds ``coef * force`` to ``pi`` in the same loop. Neighbours
along the other axes are whole rows, found from a small precomputed table of row indices; the
periodic wrap of the last axis is handled by peeling its first and last site. On 2d lattices the
whole lattice is one flat loop per kick, and each kick is fused with the drift that follows it
(one pass writing the drifted field to a second buffer); up to 40x40 sites the trajectory runs on
padded copies with a one-site periodic halo, so that no wrapped site needs fixing up
(``_fused_kernels.PADDED_MAX_SITES``: 1.1x faster at 32x32, slower above 48x48 where the padded
buffers leave the fast caches). No temporaries are allocated inside the trajectory.

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

With the Philox stream (:class:`lftml.samplers.rng.ChainRNG`) and float64 fields, ``HMC.step`` runs
the whole trajectory in one call, :func:`hmc_step`: the jitter uniform, the Box-Muller momenta and the
accept/reject uniform are generated inside the kernel from the chain's counter (the same numbers, in
the same order, as the pre-drawn path draws them; tested bit for bit), the field is updated and the
decision taken there, so no momentum array crosses into Python and no torch op runs per trajectory
except the few that build ``info``. The legacy stream and float32 fields use :func:`integrate` with
pre-drawn momenta.

numba is optional: :func:`available` says whether it can be imported (without importing it);
the kernels are compiled on first use (one compilation per dtype serves every integrator,
lattice shape and dimension; about 5 s, see benchmarks/README.md) and cached on disk
(``cache=True``) in the user's cache folder, ``$XDG_CACHE_HOME/lftml/numba`` (``~/.cache/lftml/numba``),
never in the source tree or an installed package (``NUMBA_CACHE_DIR`` overrides it); a later process
loads them in about 1 s, numba's import included. When no cache location is writable they are
compiled in memory at each start.
"""

from __future__ import annotations

import importlib.util
import logging
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.samplers.integrators import OMELYAN_LAMBDA

log = logging.getLogger(__name__)

BACKENDS = ("auto", "eager", "fused")

_DISABLED = False  # set by tests, and after a failed numba import/compile, to force the eager fallback


def available() -> bool:
    """True if numba can be imported (checked without importing it, once per process: this is called
    on every trajectory)."""
    if _DISABLED:
        return False
    return _numba_found()


@lru_cache(maxsize=1)
def _numba_found() -> bool:
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):
        return False


def supports(theory: Any, phi: torch.Tensor | None = None) -> bool:
    """Whether the fused path can run ``theory`` (and the field ``phi``, if given): numba is available,
    the theory exposes ``coefficients = (c_hop, c_2, c_4)``, and the field is a CPU float32/float64 tensor
    of shape ``(n_chains, *lattice.shape)``."""
    if not available() or not hasattr(theory, "coefficients"):
        return False
    if phi is not None and (
        phi.device.type != "cpu"
        or phi.dtype not in (torch.float64, torch.float32)
        or phi.ndim != theory.lattice.ndim + 1
        or tuple(phi.shape[1:]) != tuple(theory.lattice.shape)
    ):
        return False
    return True


def unsupported_reason(theory: Any) -> str:
    """One line saying why ``backend="fused"`` cannot run ``theory`` (for :class:`LftmlError`)."""
    if not available():
        return "the fused HMC backend needs numba (pip install numba); use --backend auto or eager"
    return (f"the fused HMC backend needs an action of the phi^4 form (a theory with coefficients); "
            f"{type(theory).__name__} has none; use --backend auto or eager")


def ready(strict: bool = False) -> bool:
    """Import numba and the kernels (compiled or loaded from the cache on first call). On failure:
    with ``strict`` raise :class:`LftmlError`, else log a warning, disable the fused path and return False."""
    global _DISABLED
    if _DISABLED:
        if strict:
            raise LftmlError("the fused HMC backend is unavailable (numba could not be imported); use --backend eager")
        return False
    try:
        _compiled()
        return True
    except Exception as exc:  # noqa: BLE001  (a broken numba/llvmlite install must not stop a run)
        _DISABLED = True
        if strict:
            raise LftmlError(f"the fused HMC backend is unavailable ({exc}); use --backend eager") from exc
        log.warning("fused HMC backend unavailable (%s); using the eager torch path", exc)
        return False


# --------------------------------------------------------------------------- kernels
@lru_cache(maxsize=1)
def _compiled():
    """The compiled kernel module (imports numba on first use; its cache goes to the user's cache folder)."""
    import os
    from pathlib import Path

    if "NUMBA_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["NUMBA_CACHE_DIR"] = str(base / "lftml" / "numba")
    from lftml.samplers import _fused_kernels

    return _fused_kernels


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


@lru_cache(maxsize=256)
def schedule(
    integrator: str, eps: float, n_steps: int, lam: float = OMELYAN_LAMBDA
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The integrator as a sequence of operations (0: kick ``pi += c * force``, 1: drift ``phi += c * pi``)
    and their coefficients, computed exactly as :mod:`lftml.samplers.integrators` computes them."""
    K, D = 0, 1
    if integrator == "leapfrog":
        ops, cs = [K, D], [0.5 * eps, eps]
        for _ in range(n_steps - 1):
            ops += [K, D]
            cs += [eps, eps]
        return tuple(ops + [K]), tuple(cs + [0.5 * eps])
    if integrator != "omelyan":
        raise ValueError(f"unknown integrator {integrator!r}")
    ops, cs = [K], [lam * eps]
    for i in range(n_steps):
        ops += [D, K, D, K]
        cs += [0.5 * eps, (1.0 - 2.0 * lam) * eps, 0.5 * eps, (2.0 * lam if i < n_steps - 1 else lam) * eps]
    return tuple(ops), tuple(cs)


def integrate(
    theory: Any, phi0: torch.Tensor, pi: torch.Tensor, step_size: float | torch.Tensor, n_steps: int, integrator: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One MD trajectory for every chain from ``(phi0, pi)``; ``step_size`` is one number or one per
    chain (a tensor with ``n_chains`` elements, as drawn by HMC's step-size jitter).

    Returns ``(phi1, kinetic0, kinetic1, action1)``: the end-point field (a new tensor; ``phi0`` is
    not modified), ``sum pi^2 / 2`` at the start and end, and ``S(phi1)``, each ``(n_chains,)`` in
    float64 whatever ``phi0``'s dtype (float32 runs: no cancellation in dH). ``pi`` is overwritten with
    the end-point momenta.
    """
    kernel = _compiled().trajectory
    shape = tuple(theory.lattice.shape)
    n = phi0.shape[0]
    np_dtype = np.float64 if phi0.dtype == torch.float64 else np.float32
    x0 = phi0.detach().contiguous().numpy().reshape(n, -1)
    p = pi.detach() if pi.is_contiguous() else pi.detach().contiguous()
    pn = p.numpy().reshape(n, -1)
    x1 = np.empty_like(x0)
    k0 = np.empty(n)
    k1 = np.empty(n)
    s1 = np.empty(n)
    c_hop, c2, c4 = (float(c) for c in theory.coefficients)
    if isinstance(step_size, torch.Tensor):
        # the eager integrators compute (c * eps) per chain; base coefficients c are those of eps = 1
        ops, base = schedule(integrator, 1.0, int(n_steps))
        eps = step_size.detach().reshape(n, 1).cpu().numpy().astype(np_dtype)
        coefs = np.ascontiguousarray(np.array(base, dtype=np_dtype)[None, :] * eps)
    else:
        ops, cs = schedule(integrator, float(step_size), int(n_steps))
        coefs = np.ascontiguousarray(np.broadcast_to(np.array(cs, dtype=np_dtype), (n, len(cs))))
    kernel(
        x0, pn, x1, k0, k1, s1, row_neighbours(shape), int(shape[-1]), np.array(ops, dtype=np.int8),
        coefs, np.array([c_hop, 2.0 * c2, 4.0 * c4], dtype=np_dtype),
        np.array([c_hop, c2, c4], dtype=np.float64),
    )
    if p is not pi and p.data_ptr() != pi.data_ptr():
        pi.copy_(p)
    out = torch.from_numpy(x1).view(phi0.shape)
    return out, torch.from_numpy(k0), torch.from_numpy(k1), torch.from_numpy(s1)


def fa_supports(theory: Any, phi: torch.Tensor, kinetic: Any) -> bool:
    """Whether :func:`fa_integrate` can run: a float64 CPU field of a phi^4-form theory, a Fourier mass."""
    return phi.dtype == torch.float64 and hasattr(kinetic, "drift_") and supports(theory, phi)


def fa_integrate(
    theory: Any, phi0: torch.Tensor, pi: torch.Tensor, step_size: float | torch.Tensor, n_steps: int, integrator: str,
    kinetic: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FA-HMC's MD trajectory for every chain (float64 CPU fields): the kicks in one numba call each
    (:func:`_fused_kernels.kicks`, the kernel of :func:`integrate`), the drifts ``phi += c M^{-1} pi``
    through ``kinetic.drift_`` (real FFTs into reused buffers), all in place on two work arrays.

    The same operations in the same order as :func:`lftml.samplers.integrators.omelyan` / ``leapfrog``
    with ``velocity = kinetic.velocity`` and ``force = theory.force`` (per-chain coefficients
    ``c_i eps``; the kick is the eager force expression operation by operation), so the end points are
    those of the eager path (tested bit for bit). Returns new tensors ``(phi1, pi1)``; the inputs are
    not modified."""
    n = phi0.shape[0]
    shape = tuple(theory.lattice.shape)
    x = phi0.detach().clone(memory_format=torch.contiguous_format)
    p = pi.detach().clone(memory_format=torch.contiguous_format)
    xn, pn = x.numpy().reshape(n, -1), p.numpy().reshape(n, -1)
    if isinstance(step_size, torch.Tensor):
        ops, base = schedule(integrator, 1.0, int(n_steps))
        eps = step_size.detach().reshape(n).to(torch.float64).cpu().numpy()
        coefs = np.array(base)[:, None] * eps[None, :]  # (n_ops, n): c_i * eps_chain, as the eager path
    else:
        ops, cs = schedule(integrator, float(step_size), int(n_steps))
        coefs = np.repeat(np.array(cs)[:, None], n, axis=1)
    kick = _compiled().kicks
    rows, L, cf = row_neighbours(shape), int(shape[-1]), _force_coefficients(theory)
    work: dict[str, torch.Tensor] = {}
    drift_coefs = torch.from_numpy(coefs).view(len(ops), n, *([1] * len(shape)))
    for i, op in enumerate(ops):
        if op == 0:
            kick(xn, pn, rows, L, np.ascontiguousarray(coefs[i]), cf)
        else:
            kinetic.drift_(x, p, drift_coefs[i], work)
    return x, p


def _force_coefficients(theory: Any) -> np.ndarray:
    c_hop, c2, c4 = (float(c) for c in theory.coefficients)
    return np.array([c_hop, 2.0 * c2, 4.0 * c4])


def draws_inline(phi: torch.Tensor, rng: Any) -> bool:
    """Whether :func:`hmc_step` can run: a float64 CPU field and a Philox :class:`~lftml.samplers.rng.ChainRNG`
    (the kernel draws its numbers inline from that stream; the legacy stream and float32 fields take the
    pre-drawn path of :func:`integrate`)."""
    from lftml.samplers.rng import ChainRNG

    return phi.dtype == torch.float64 and phi.device.type == "cpu" and type(rng) is ChainRNG and rng.device.type == "cpu"


def hmc_step(
    theory: Any, phi0: torch.Tensor, action0: torch.Tensor, rng: Any, step_size: float, step_jitter: float, n_steps: int,
    integrator: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One complete HMC trajectory per chain in one compiled call (the fast path of ``HMC.step``): the
    step-size jitter uniform, the Box-Muller momenta and the accept/reject uniform are drawn inline from
    ``rng``'s Philox stream, block for block the numbers ``HMC.step`` draws on the pre-drawn path, so the
    chains are the same; accept/reject uses numba's ``log`` (glibc) where the pre-drawn path uses torch's,
    so a decision could differ only if ``log u`` fell within an ulp of ``-dH``.

    Returns ``(phi1, action1, dH, accepted)``: the new fields (accepted end points or the old fields, a new
    tensor), their action, ``dH`` and the boolean acceptance, per chain. ``rng``'s counters advance."""
    shape = tuple(theory.lattice.shape)
    n = phi0.shape[0]
    if rng.n_chains != n or action0.shape != (n,):
        raise ValueError(f"{n} fields, {tuple(action0.shape)} actions and a random stream of {rng.n_chains} chains")
    x0 = phi0.detach().contiguous().numpy().reshape(n, -1)
    s0 = np.ascontiguousarray(action0.detach().numpy(), dtype=np.float64)
    x1 = np.empty_like(x0)
    p = _scratch(x0.shape)  # the momenta never leave the kernel: one buffer per shape, reused (stays in cache)
    s1, dH = np.empty(n), np.empty(n)
    acc = np.empty(n, dtype=np.int8)
    ops, base = schedule(integrator, 1.0, int(n_steps))
    cf, c64 = _coefficient_arrays(theory.coefficients)
    _compiled().hmc_step(
        x0, s0, x1, s1, p, dH, acc, row_neighbours(shape), int(shape[-1]), _ops_array(ops), _base_array(base),
        float(step_size), float(step_jitter), cf, c64, np.uint64(rng.key[0]), np.uint64(rng.key[1]), rng.chains,
        rng.counters,
    )
    # numpy reshape and a bool view of the 0/1 bytes: ~5 us each, where torch's view and .to(bool) take ~10-15
    return (torch.from_numpy(x1.reshape(phi0.shape)), torch.from_numpy(s1), torch.from_numpy(dH),
            torch.from_numpy(acc.view(np.bool_)))


_SCRATCH: dict[tuple[int, ...], np.ndarray] = {}


def _scratch(shape: tuple[int, ...]) -> np.ndarray:
    """A float64 work array of ``shape``, the same one on every call (its contents are overwritten)."""
    a = _SCRATCH.get(shape)
    if a is None:
        if len(_SCRATCH) > 8:
            _SCRATCH.clear()
        a = _SCRATCH[shape] = np.empty(shape)
    return a


@lru_cache(maxsize=64)
def _coefficient_arrays(coefficients: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """``(c_hop, 2 c_2, 4 c_4)`` and ``(c_hop, c_2, c_4)`` as float64 arrays (shared: do not modify)."""
    c_hop, c2, c4 = (float(c) for c in coefficients)
    return np.array([c_hop, 2.0 * c2, 4.0 * c4]), np.array([c_hop, c2, c4])


@lru_cache(maxsize=64)
def _ops_array(ops: tuple[int, ...]) -> np.ndarray:
    a = np.array(ops, dtype=np.int8)
    return a


@lru_cache(maxsize=64)
def _base_array(base: tuple[float, ...]) -> np.ndarray:
    a = np.array(base, dtype=np.float64)
    return a


def action(theory: Any, phi: torch.Tensor) -> torch.Tensor:
    """``S(phi)`` per chain, ``(n_chains,)`` in float64, summed exactly as :func:`integrate` sums
    the end-point action (so a chain restarted from a stored field continues bit for bit)."""
    shape = tuple(theory.lattice.shape)
    n = phi.shape[0]
    x = phi.detach().contiguous().numpy().reshape(n, -1)
    s = np.empty(n)
    _compiled().actions(x, s, row_neighbours(shape), int(shape[-1]), np.array([float(c) for c in theory.coefficients]))
    return torch.from_numpy(s)


def warm_up(dtype: torch.dtype = torch.float64) -> float:
    """Compile (or load from the cache) the kernels for ``dtype``; returns the seconds it took."""
    import time

    from lftml.lattice import Lattice
    from lftml.theories.phi4 import Phi4

    t0 = time.perf_counter()
    th = Phi4.hopping(Lattice((4, 4)), 0.1, 0.01)
    phi = torch.zeros((1, 4, 4), dtype=dtype)
    for integ in ("leapfrog", "omelyan"):
        integrate(th, phi, torch.zeros_like(phi), 0.1, 1, integ)
    action(th, phi)
    return time.perf_counter() - t0


__all__ = [
    "BACKENDS", "available", "supports", "fa_supports", "fa_integrate", "unsupported_reason", "ready", "integrate", "hmc_step", "draws_inline", "action",
    "row_neighbours", "schedule", "warm_up",
]
