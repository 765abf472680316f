r"""Embedded-Ising cluster moves (Brower & Tamayo, PRL 62 (1989) 1087): Wolff and Swendsen-Wang.

Condition (the embedding): the action must be ``S = sum_x [-c_hop sum_mu phi_x phi_{x+mu} + U(phi_x)]``
with a ferromagnetic nearest-neighbour hopping term (``c_hop >= 0``) and an even on-site potential
U (here ``U = c_2 phi^2 + c_4 phi^4``: every theory exposing ``coefficients``, i.e. phi^4 in all three
forms and the free field). Write ``phi_x = s_x |phi_x|``. At fixed |phi| the action depends on the
signs only through ``-sum_<xy> J_xy s_x s_y`` with ``J_xy = c_hop |phi_x| |phi_y|`` (one term per
bond x -> x + mu; in the hopping form J = 2 kappa |phi_x||phi_y|), an Ising model with
bond-dependent couplings. Its Fortuin-Kasteleyn representation: a bond between equal signs is active
with probability ``p_xy = 1 - exp(-2 J_xy)``, never between opposite signs; flipping the signs of
whole clusters of active bonds then leaves exp(-S) invariant (detailed balance):

* ``sw`` (Swendsen-Wang): every cluster is flipped with probability 1/2;
* ``wolff``: the cluster of one uniformly chosen site is flipped.

Both change only signs, so they are not ergodic alone (|phi| never changes); composed with HMC they
are (``HMC(cluster=..., cluster_every=N)``). Clusters are the connected components of the active
bonds over all chains at once: a compiled union-find (numba) where numba runs, else one block-diagonal
graph through :func:`scipy.sparse.csgraph.connected_components`; the same labels either way (the
smallest site of each cluster), no Python loop over sites. Random numbers per chain and move: ``d V`` bond uniforms and then ``V``
uniforms (SW: cluster c flips if the uniform of its smallest site is < 1/2) or 1 (Wolff: the seed
site ``floor(u V)``), so chain i is the same whatever the number of chains.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from lftml.errors import LftmlError

KINDS = ("wolff", "sw")


def embedding_coupling(theory: Any) -> float:
    """``c_hop`` of an action that admits the embedding; a one-line :class:`LftmlError` otherwise."""
    coefficients = getattr(theory, "coefficients", None)
    name = getattr(theory, "describe", lambda: type(theory).__name__)()
    if coefficients is None:
        raise LftmlError(
            f"--cluster needs an action S = sum_x [-c sum_mu phi_x phi_x+mu + U(phi_x)] with c >= 0 and an even "
            f"on-site U (phi^4 or free field); {name} is not of that form: drop --cluster"
        )
    c_hop = float(coefficients[0])
    if c_hop < 0:
        raise LftmlError(f"--cluster needs a ferromagnetic hopping term (c_hop >= 0); {name} has c_hop = {c_hop:g}")
    return c_hop


def bond_probability(c_hop: float, abs_x: np.ndarray, abs_y: np.ndarray) -> np.ndarray:
    """Fortuin-Kasteleyn probability ``1 - exp(-2 J)``, ``J = c_hop |phi_x| |phi_y|`` (aligned signs)."""
    return -np.expm1(-2.0 * c_hop * abs_x * abs_y)


@lru_cache(maxsize=32)
def _bonds(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(src, dst)``, each ``(d V,)``: bond mu*V + x joins site x to x + mu (C order, periodic).
    Cached per shape: every move of a run shares the same two arrays (do not modify them)."""
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    src = np.concatenate([idx.ravel()] * len(shape))
    dst = np.concatenate([np.roll(idx, -1, axis=mu).ravel() for mu in range(len(shape))])
    return src, dst


_USE_NUMBA = True  # tests switch it off to compare the two paths


def _kernels() -> Any:
    """:mod:`lftml.samplers._cluster_kernels` where numba runs (compiled once), else None (numpy/scipy paths)."""
    global _USE_NUMBA
    if not _USE_NUMBA:
        return None
    from lftml.samplers import fused

    if not fused.available():
        return None
    try:
        fused._compiled()  # sets numba's cache folder (the user's cache, not the source tree)
        from lftml.samplers import _cluster_kernels

        return _cluster_kernels
    except Exception:  # noqa: BLE001  (a broken numba install must not stop a run)
        _USE_NUMBA = False  # do not retry the import/compile on every move
        return None


def _sw_flips(labels: np.ndarray, site_u: np.ndarray, n: int, V: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Swendsen-Wang's decisions from the cluster labels: ``(sign (n, V), mean cluster size (n,), flipped
    fraction (n,))``; cluster c flips when the uniform of its smallest site, ``site_u[c]``, is < 1/2. The
    mean size is the one of the cluster containing a site, sum_c |c|^2 / V."""
    kernels = _kernels()
    if kernels is not None:
        sign, size, frac = np.empty((n, V)), np.empty(n), np.empty(n)
        kernels.sw_flips(labels, site_u, sign, size, frac)
        return sign, size, frac
    sizes = np.bincount(labels, minlength=n * V)
    flip = (site_u[labels] < 0.5).reshape(n, V)
    return np.where(flip, -1.0, 1.0), (sizes[labels].reshape(n, V)).mean(axis=1), flip.mean(axis=1)


def _labels(x: np.ndarray, u_bonds: np.ndarray, c_hop: float, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Label of every global site ``chain * V + x`` of the field ``x`` ``(n, V)``: the smallest global site
    of its cluster. Bond b (``src[b]`` -> ``dst[b]``) is active when its signs agree and
    ``u_bonds[:, b] < bond_probability``.

    Union-find in numba (:mod:`lftml.samplers._cluster_kernels`) where it can run, else connected
    components through scipy; both give the same labels (tested)."""
    n, V = x.shape
    kernels = _kernels()
    if kernels is not None:
        return kernels.smallest_site_roots(np.ascontiguousarray(x), np.ascontiguousarray(u_bonds), float(c_hop), src, dst)
    a, up = np.abs(x), x >= 0
    active = (up[:, src] == up[:, dst]) & (u_bonds < bond_probability(c_hop, a[:, src], a[:, dst]))
    chain, bond = np.nonzero(active)
    offset = chain * V
    import scipy.sparse  # here, not at the top: `lftml hmc` without --cluster never needs it (start-up)
    from scipy.sparse.csgraph import connected_components

    graph = scipy.sparse.coo_matrix(
        (np.ones(chain.size, dtype=np.int8), (offset + src[bond], offset + dst[bond])), shape=(n * V, n * V)
    ).tocsr()
    _, comp = connected_components(graph, directed=False)
    _, first = np.unique(comp, return_index=True)  # smallest node (site) of every component
    return first[comp]


@dataclass(frozen=True)
class ClusterState:
    phi: torch.Tensor  # (n_chains, *shape)


@dataclass(frozen=True)
class ClusterMove:
    """Embedded-Ising cluster update of ``theory`` (``kind``: ``"wolff"`` or ``"sw"``).

    As a sampler: ``init(phi) -> ClusterState``, ``step(state, rng) -> (state, info)`` with
    ``info["cluster_size"]`` (Wolff: size of the flipped cluster; SW: the mean size of the cluster
    containing a site, sum_c |c|^2 / V) and ``info["flipped_fraction"]``, both ``(n_chains,)``."""

    theory: Any
    kind: str = "wolff"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LftmlError(f"unknown --cluster {self.kind!r}; choose wolff or sw")
        embedding_coupling(self.theory)

    def settings(self) -> dict[str, Any]:
        return {"algorithm": "cluster", "cluster": self.kind}

    def init(self, phi: torch.Tensor) -> ClusterState:
        self.theory.lattice.check_field(phi, "initial field")
        return ClusterState(phi)

    def step(self, state: ClusterState, rng: Any) -> tuple[ClusterState, dict[str, torch.Tensor]]:
        phi, info = self.flip(state.phi, rng)
        return ClusterState(phi), info

    def flip(self, phi: torch.Tensor, rng: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One cluster move on every chain of ``phi`` ``(n_chains, *shape)``; returns a new field."""
        lat = self.theory.lattice
        shape = tuple(lat.shape)
        n, V, d = phi.shape[0], lat.volume, lat.ndim
        c_hop = embedding_coupling(self.theory)
        n_site_draws = V if self.kind == "sw" else 1
        u = rng.uniforms((d * V + n_site_draws,), dtype=torch.float64).cpu().numpy()
        x = phi.detach().to(torch.float64).cpu().numpy().reshape(n, V)
        src, dst = _bonds(shape)
        labels = _labels(x, u[:, : d * V], c_hop, src, dst)  # the smallest global site of each cluster
        if self.kind == "sw":
            sign, size, frac = _sw_flips(labels, np.ascontiguousarray(u[:, d * V:]).ravel(), n, V)
        else:
            sizes = np.bincount(labels, minlength=n * V)
            seed = np.minimum((u[:, d * V] * V).astype(np.int64), V - 1)
            seed_label = labels[np.arange(n) * V + seed]
            flip = labels.reshape(n, V) == seed_label[:, None]
            sign, size, frac = np.where(flip, -1.0, 1.0), sizes[seed_label].astype(np.float64), flip.mean(axis=1)
        sign_t = torch.from_numpy(sign.reshape(n, *shape)).to(device=phi.device, dtype=phi.dtype)
        info = {"cluster_size": torch.from_numpy(size), "flipped_fraction": torch.from_numpy(frac)}  # float64 (n,)
        return phi * sign_t, info
