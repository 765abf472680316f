r"""Sequential Monte Carlo rejuvenation of weighted samples: resample, then HMC moves under exp(-S).

Given ``n`` proposals ``phi_i`` with exact importance weights ``w_i`` for ``exp(-S)`` (the path
weights of :func:`~lftml.diffusion.sampling.sample_path_weighted`), one resample-move step

1. draws ``n`` ancestors by **systematic resampling** with probabilities ``w_i / sum w``
   (one uniform; the ancestor indices come out sorted, so descendants of one ancestor are
   neighbours in the output: the Gamma method along the output order sees their correlation as
   autocorrelation and widens the error bars accordingly);
2. moves every particle by ``moves`` HMC trajectories of the engine (:class:`lftml.samplers.hmc.HMC`,
   the particles batched as chains, one Philox stream per particle), which leave ``exp(-S)``
   invariant.

The output is an equally weighted population. Self-normalised importance sampling and resampling
are *consistent* (bias O(1/n)), not unbiased at finite n; the moves do not add bias (they are exact
for exp(-S)) and restore the diversity that resampling removes (duplicates become distinct after
one accepted trajectory). Use it when a plain equally weighted ensemble is wanted; for estimates
the reweighted ensemble (``lftml analyze`` on a weighted file) is the primary, exact-weights route.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lftml.errors import LftmlError

__all__ = ["systematic_resample", "resample_move"]


def systematic_resample(log_w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ancestor indices (sorted, ``len(log_w)`` of them) by systematic resampling: one uniform
    ``u``, ancestor of slot ``j`` = the index whose cumulative normalised weight first exceeds
    ``(j + u) / n``. Each index ``i`` gets ``floor(n w_i)`` or ``ceil(n w_i)`` copies."""
    lw = np.asarray(log_w, dtype=np.float64).reshape(-1)
    if lw.size < 1 or not np.all(np.isfinite(lw)):
        raise LftmlError("resampling needs finite log weights")
    w = np.exp(lw - lw.max())
    cdf = np.cumsum(w / w.sum())
    cdf[-1] = 1.0
    n = lw.size
    points = (np.arange(n) + rng.random()) / n
    return np.searchsorted(cdf, points, side="right").clip(0, n - 1)


def resample_move(phi: np.ndarray, log_w: np.ndarray, theory, *, moves: int, seed: int,
                  traj_length: float = 1.0, n_steps: int = 10) -> tuple[np.ndarray, dict[str, Any]]:
    """Resample ``phi`` (engine units, ``(n, *lattice)``) by ``log_w`` and apply ``moves`` HMC
    trajectories (length ``traj_length``, ``n_steps`` Omelyan steps) under ``theory``. Returns the
    new population (float64, same shape) and ``info``: ``ess_fraction`` (before resampling),
    ``distinct_ancestors``, ``distinct_fraction_after`` (configurations not equal to another one),
    ``hmc_acceptance`` (mean over particles and moves), ``moves``, ``seed``."""
    from lftml.samplers.hmc import HMC
    from lftml.samplers.rng import ChainRNG
    from lftml.stats import ess_fraction

    if isinstance(moves, bool) or int(moves) != moves or moves < 0:
        raise LftmlError(f"--smc-moves must be a non-negative integer, got {moves}")
    x = np.asarray(phi, dtype=np.float64)
    lw = np.asarray(log_w, dtype=np.float64).reshape(-1)
    if x.shape[0] != lw.size:
        raise LftmlError(f"{x.shape[0]} configurations but {lw.size} log weights")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EC]))
    anc = systematic_resample(lw, rng)
    y = torch.as_tensor(x[anc].copy(), dtype=torch.float64)
    acc = []
    if moves > 0:
        hmc = HMC.from_trajectory(theory, traj_length, n_steps)
        bound = hmc.max_stable_step()
        if hmc.step_size * (1.0 + hmc.step_jitter) > 0.9 * bound:  # keep the jittered step well inside the bound
            hmc = HMC.from_trajectory(theory, traj_length,
                                      int(math.ceil(traj_length * (1.0 + hmc.step_jitter) / (0.9 * bound))))
        chain_rng = ChainRNG.from_seed(int(seed), y.shape[0], purpose=3)
        state = hmc.init(y)
        for _ in range(int(moves)):
            state, info = hmc.step(state, chain_rng)
            acc.append(float(info["accepted"].to(torch.float64).mean()))
        y = state.phi
    out = y.numpy()
    flat = out.reshape(out.shape[0], -1)
    distinct = len(np.unique(flat, axis=0)) / flat.shape[0]
    return out, {"ess_fraction": ess_fraction(lw), "distinct_ancestors": int(len(np.unique(anc))),
                 "distinct_fraction_after": float(distinct),
                 "hmc_acceptance": float(np.mean(acc)) if acc else None, "moves": int(moves), "seed": int(seed),
                 "traj_length": traj_length}
