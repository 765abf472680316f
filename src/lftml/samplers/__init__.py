"""Markov-chain samplers of exp(-S): Hybrid Monte Carlo and Langevin dynamics.

A sampler is an immutable settings object with ``init(phi) -> state`` and
``step(state, rng) -> (state, info)``; ``info`` is a dict of per-chain tensors (``(n_chains,)``)."""

from lftml.samplers.hmc import HMC, HMCState
from lftml.samplers.integrators import INTEGRATORS, leapfrog, omelyan
from lftml.samplers.langevin import Langevin, LangevinState, extrapolate
from lftml.samplers.rng import ChainRNG

__all__ = ["HMC", "HMCState", "Langevin", "LangevinState", "ChainRNG", "INTEGRATORS", "leapfrog", "omelyan", "extrapolate"]
