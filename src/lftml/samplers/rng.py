"""Per-chain random streams.

Each chain owns one ``torch.Generator``, seeded from ``numpy.random.SeedSequence(seed).spawn(...)``,
so chain ``i`` produces the same Markov chain whatever the number of chains run beside it, and the
whole state can be saved and restored bit for bit (for ``--resume``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def seed_sequences(seed: int, n: int, purpose: int) -> list[np.random.SeedSequence]:
    """``n`` independent child seed sequences of ``SeedSequence(seed)`` for stream ``purpose``
    (0: initial configurations, 1: sampling). Child i depends only on (seed, purpose, i)."""
    return [np.random.SeedSequence(int(seed), spawn_key=(int(purpose), i)) for i in range(n)]


class ChainRNG:
    """One ``torch.Generator`` per chain; draws are stacked along the chain axis (axis 0)."""

    def __init__(self, generators: Sequence[torch.Generator]):
        self.generators = list(generators)

    @classmethod
    def from_seed(cls, seed: int, n_chains: int, purpose: int = 1, device: str | torch.device = "cpu") -> "ChainRNG":
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
        """Standard normal ``(n_chains, *shape)`` on the generators' device."""
        shape = tuple(shape)
        return torch.stack([torch.randn(shape, generator=g, dtype=dtype, device=g.device) for g in self.generators])

    def uniform(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """One U(0,1) number per chain, shape ``(n_chains,)``."""
        return torch.cat([torch.rand(1, generator=g, dtype=dtype, device=g.device) for g in self.generators])

    def uniforms(self, shape: Sequence[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """U(0,1) numbers ``(n_chains, *shape)`` on the generators' device (e.g. the bonds of a cluster move)."""
        shape = tuple(shape)
        return torch.stack([torch.rand(shape, generator=g, dtype=dtype, device=g.device) for g in self.generators])

    def signs(self) -> torch.Tensor:
        """One random sign (+1 or -1, float64) per chain."""
        return torch.where(self.uniform() < 0.5, -1.0, 1.0).to(torch.float64)

    def get_state(self) -> np.ndarray:
        """All generator states as a ``(n_chains, n_bytes)`` uint8 array."""
        return np.stack([g.get_state().cpu().numpy() for g in self.generators])

    def set_state(self, states: np.ndarray) -> None:
        if len(states) != len(self.generators):
            raise ValueError(f"checkpoint holds {len(states)} generator states for {len(self.generators)} chains")
        for g, s in zip(self.generators, states):
            g.set_state(torch.from_numpy(np.ascontiguousarray(s, dtype=np.uint8)))
