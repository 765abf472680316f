"""Markov-chain samplers of exp(-S): Hybrid Monte Carlo (unit or Fourier-accelerated mass, optionally
composed with embedded-Ising cluster moves) and Langevin dynamics.

A sampler is an immutable settings object with ``init(phi) -> state`` and
``step(state, rng) -> (state, info)``; ``info`` is a dict of per-chain tensors (``(n_chains,)``)."""

from lftml.samplers.cluster import ClusterMove, ClusterState
from lftml.samplers.hmc import HMC, HMCState
from lftml.samplers.integrators import INTEGRATORS, leapfrog, omelyan
from lftml.samplers.kinetic import FourierMass, IdentityMass
from lftml.samplers.langevin import Langevin, LangevinState, extrapolate
from lftml.samplers.rng import ChainRNG

__all__ = ["HMC", "HMCState", "FourierMass", "IdentityMass", "ClusterMove", "ClusterState", "Langevin", "LangevinState", "ChainRNG", "INTEGRATORS", "leapfrog", "omelyan", "extrapolate"]
