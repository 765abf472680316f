"""Embedded-Ising cluster moves (Wolff, Swendsen-Wang) and their composition with HMC / FA-HMC.

* detailed balance, exactly: at fixed |phi| the sign distribution of a cluster chain must be the
  Ising one exp(sum_bonds J s_x s_y), J = c_hop |phi_x||phi_y| (enumerated), state by state within
  4 Gamma-method sigma; with the bond probability altered to 1 - exp(-J) the same test fails;
* chain i is the same Markov chain whatever the number of chains;
* HMC, FA-HMC, HMC+Wolff, HMC+SW agree pairwise on <|M|>, chi_2 and U_L near kappa_c
  (8x8 here; 16x16 in the slow sibling), within 4 combined sigma.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lftml.analysis import summarize
from lftml.errors import LftmlError
from lftml.lattice import Lattice
from lftml.observables import measure
from lftml.run import RunConfig, run
from lftml.samplers import HMC, ChainRNG
from lftml.samplers import cluster as cluster_mod
from lftml.samplers.cluster import ClusterMove
from lftml.samplers.kinetic import FourierMass
from lftml.stats import gamma_method
from lftml.theories import Phi4

K_SIGMA = 4.0


def exact_sign_distribution(theory, abs_phi: np.ndarray) -> np.ndarray:
    """exp(-S(s |phi|)) normalised over all 2^V sign configurations s (S by the theory itself); state k
    has s_x = -1 where bit x of k is set."""
    V, shape = theory.lattice.volume, theory.lattice.shape
    bits = (np.arange(2**V)[:, None] >> np.arange(V)[None, :]) & 1
    phi = torch.from_numpy((1 - 2 * bits) * abs_phi.ravel()[None, :]).reshape(-1, *shape)
    s = theory.action(phi).numpy()
    w = np.exp(-(s - s.min()))
    return w / w.sum()


def sign_z_scores(kind: str, theory, abs_phi: np.ndarray, n_chains=64, n_steps=300, seed=5) -> np.ndarray:
    """z-score of the frequency of every sign class {s, -s} against the exact distribution (Gamma-method
    errors). s and -s are pooled (equal exact weight): a Wolff move on a tiny lattice often flips every
    site, which makes the indicator of a single state anticorrelated in Monte Carlo time."""
    p = exact_sign_distribution(theory, abs_phi)
    V = theory.lattice.volume
    full = 2**V - 1
    move = ClusterMove(theory, kind)
    rng = ChainRNG.from_seed(seed, n_chains)
    state = move.init(torch.tensor(abs_phi, dtype=torch.float64).expand(n_chains, *theory.lattice.shape).clone())
    weights = 1 << np.arange(V)
    codes = np.empty((n_steps, n_chains), dtype=np.int64)
    for t in range(n_steps):
        state, _ = move.step(state, rng)
        x = state.phi.reshape(n_chains, V).numpy()
        codes[t] = (x < 0).astype(np.int64) @ weights
        assert np.allclose(np.abs(x), abs_phi.ravel()[None, :])  # |phi| untouched
    codes = np.minimum(codes, full - codes)[10:]  # class representative
    z = []
    for k in range(2 ** (V - 1)):
        e = gamma_method((codes == k).astype(float))
        z.append((e.value - p[k] - p[full - k]) / e.error)
    return np.array(z)


CASES = {
    "ring3": (Lattice((3,)), np.array([0.8, 1.1, 0.6])),
    "2x2": (Lattice((2, 2)), np.array([[0.9, 0.5], [0.7, 1.2]])),  # every bond doubled by periodicity
}


@pytest.mark.parametrize("kind", ["wolff", "sw"])
@pytest.mark.parametrize("case", list(CASES))
def test_cluster_move_samples_the_exact_embedded_ising_distribution(kind, case):
    lattice, abs_phi = CASES[case]
    theory = Phi4.hopping(lattice, 0.45, 0.3)
    z = sign_z_scores(kind, theory, abs_phi)
    assert np.abs(z).max() < K_SIGMA, f"{kind} {case}: z = {np.round(z, 2)}"


@pytest.mark.parametrize("kind", ["wolff", "sw"])
def test_detailed_balance_test_detects_a_wrong_bond_probability(kind, monkeypatch):
    """p = 1 - exp(-J) instead of 1 - exp(-2J) (a factor 2 in the coupling) must be caught. The altered
    probability is patched into the scipy path (the numba kernel is compiled; that both paths flip the
    same clusters is tested below, so the exact-distribution test above covers the kernel)."""
    lattice, abs_phi = CASES["ring3"]
    theory = Phi4.hopping(lattice, 0.45, 0.3)
    monkeypatch.setattr(cluster_mod, "_USE_NUMBA", False)
    monkeypatch.setattr(cluster_mod, "bond_probability", lambda c, a, b: -np.expm1(-c * a * b))
    z = sign_z_scores(kind, theory, abs_phi)
    assert np.abs(z).max() > 2 * K_SIGMA, f"altered bond probability not detected: z = {np.round(z, 2)}"


def test_cluster_chain_i_does_not_depend_on_the_number_of_chains():
    theory = Phi4.hopping(Lattice((6, 6)), 0.27, 0.022)
    phi = torch.randn((3, 6, 6), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for kind in ("wolff", "sw"):
        move = ClusterMove(theory, kind)
        one, _ = move.flip(phi[:1], ChainRNG.from_seed(4, 1))
        three, _ = move.flip(phi, ChainRNG.from_seed(4, 3))
        assert torch.equal(one[0], three[0])


@pytest.mark.parametrize("kind", ["sw", "wolff"])
def test_union_find_labels_are_the_connected_components_of_the_scipy_path(kind, monkeypatch):
    """The numba union-find and scipy's connected components must flip the same clusters with the same
    random numbers (labels = smallest site of each cluster). Bugs caught: a union by the larger root
    (labels stop being the smallest site, so SW reads another site's uniform), a missing final
    compression (sites labelled by an inner node), bonds joined across chains (offset error)."""
    from lftml.samplers import fused

    if not fused.available():
        pytest.skip("numba is not installed: only the scipy path exists")
    theory = Phi4.hopping(Lattice((6, 5)), 0.28, 0.022)  # odd extent: the wrap-around bonds matter
    move = ClusterMove(theory, kind)
    phi = torch.randn(5, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    outs = {}
    for use in (True, False):
        monkeypatch.setattr(cluster_mod, "_USE_NUMBA", use)
        new, info = move.flip(phi, ChainRNG.from_seed(11, 5, purpose=1))
        outs[use] = (new, info)
    assert torch.equal(outs[True][0], outs[False][0])
    for key in ("cluster_size", "flipped_fraction"):
        assert torch.equal(outs[True][1][key], outs[False][1][key])
    assert not torch.equal(outs[True][0], phi)  # a move that flipped nothing would pass trivially


def test_branch_free_union_find_gives_the_scipy_labels_with_many_band_bonds(monkeypatch):
    """The kernel sorts every bond by the bounds into surely active, band (expm1 decides) and inactive,
    then unions; its labels must be scipy's connected components of the plainly decided bonds. Many
    draws on a 12x12 field at the near-critical hopping coupling, with uniforms placed on the band so
    that over a thousand decisions go through expm1. Bugs caught (each checked by breaking the kernel): band bonds dropped,
    band bonds decided against a wrong probability, the sign test lost in the branch-free pass.
    (A surely active bond also listed in the band is joined twice: harmless, so not a bug to catch.)"""
    from lftml.samplers import fused

    if not fused.available():
        pytest.skip("numba is not installed: only the scipy path exists")
    from lftml.samplers._cluster_kernels import smallest_site_roots

    shape, c_hop = (12, 12), 0.541
    src, dst = cluster_mod._bonds(shape)
    rng = np.random.default_rng(2)
    n_band = 0
    monkeypatch.setattr(cluster_mod, "_USE_NUMBA", False)  # _labels: the scipy path
    for draw in range(20):
        x = rng.normal(0.0, 1.2, (3, 144))
        y = 2.0 * c_hop * np.abs(x[:, src]) * np.abs(x[:, dst])
        p = -np.expm1(-y)
        u = rng.random(p.shape)
        near = rng.random(p.shape) < 0.3  # 30 % of the uniforms within 1e-13 of their probability
        u = np.where(near, np.clip(p * (1.0 + rng.uniform(-1e-13, 1e-13, p.shape)), 0.0, 0.999), u)
        n_band += int(np.sum(near & (np.sign(x[:, src]) == np.sign(x[:, dst]))))
        want = cluster_mod._labels(x, u, c_hop, src, dst)
        got = smallest_site_roots(x, u, c_hop, src, dst)
        assert np.array_equal(got, want), draw
    assert n_band > 1000


def test_bond_decision_without_expm1_equals_the_plain_comparison_at_the_boundary():
    """The kernel decides ``u < -expm1(-2J)`` by bounds first and calls expm1 only inside the band.
    At u = p and one ulp either side of p (the hardest cases), and at random u, for 2J from 1e-9 to 60,
    its decision must be the plain comparison's. Bugs caught: a bound on the wrong side of p (e.g. the
    upper bound y - y^2/2, which is the lower one), a missing safety margin, <= for <."""
    from lftml.samplers import fused

    if not fused.available():
        pytest.skip("numba is not installed: the scipy path compares directly")
    from lftml.samplers._cluster_kernels import bond_active

    rng = np.random.default_rng(5)
    y = np.concatenate([np.geomspace(1e-9, 60.0, 4001), rng.uniform(0.0, 3.0, 4000), [0.0, 1.0]])
    p = -np.expm1(-y)
    us = [p, np.nextafter(p, 0.0), np.nextafter(p, 1.0), rng.random(y.size), p * (1 - 1e-13), p * (1 + 1e-13)]
    n_band = 0
    for u in us:
        u = np.clip(u, 0.0, np.nextafter(1.0, 0.0))
        for ui, yi in zip(u, y):
            assert bond_active(ui, -yi) == (ui < -math.expm1(-yi)), (ui, yi)
        n_band += int(np.sum(np.abs(u - p) <= 1e-12 * p))
    assert n_band > 4 * y.size  # the boundary cases were really tested


def test_cluster_move_refuses_an_action_without_the_embedding():
    class NoHopping:
        """A theory without the phi^4 form (no coefficients): e.g. a general potential."""

        lattice = Lattice((4, 4))

        def describe(self):
            return "a theory with an odd potential"

    with pytest.raises(LftmlError, match="needs an action") as err:
        ClusterMove(NoHopping(), "wolff")
    assert "\n" not in str(err.value)
    with pytest.raises(LftmlError, match="wolff or sw"):
        ClusterMove(Phi4.hopping(Lattice((4, 4)), 0.2, 0.02), "metropolis")
    with pytest.raises(LftmlError, match="cluster-every"):
        HMC(Phi4.hopping(Lattice((4, 4)), 0.2, 0.02), 0.1, 10,
            cluster=ClusterMove(Phi4.hopping(Lattice((4, 4)), 0.2, 0.02), "sw"), cluster_every=0)


def samplers(theory):
    """The four algorithms of issue 9's acceptance test, each at settings a user would pick."""
    wolff, sw = ClusterMove(theory, "wolff"), ClusterMove(theory, "sw")
    return {
        "hmc": HMC.from_trajectory(theory, 1.0, 10),
        "fa-hmc": HMC.from_trajectory(theory, math.pi / 2, 5, kinetic=FourierMass.from_action(theory)),
        "hmc+wolff": HMC.from_trajectory(theory, 1.0, 10, cluster=wolff, cluster_every=1),
        "hmc+sw": HMC.from_trajectory(theory, 1.0, 10, cluster=sw, cluster_every=2),
    }


def near_critical_estimates(L: int, n_configs: dict, seed: int = 11) -> dict:
    theory = Phi4.hopping(Lattice((L, L)), 0.2705, 0.022)
    out = {}
    for name, sampler in samplers(theory).items():
        res = run(sampler, RunConfig(n_chains=16, n_configs=n_configs[name], n_therm=100, every=1, seed=seed,
                                     start="hot"))
        M = np.stack([measure(c)["M"] for c in res.configs])
        out[name] = summarize(M, theory.lattice.volume)
    return out


def assert_pairwise_agreement(est: dict) -> None:
    for key in ("abs_magnetisation", "susceptibility", "binder"):
        for a, b in itertools.combinations(est, 2):
            ea, eb = est[a][key], est[b][key]
            z = (ea["value"] - eb["value"]) / math.hypot(ea["error"], eb["error"])
            assert abs(z) < K_SIGMA, f"{key}: {a} {ea['value']:.4f}({ea['error']:.4f}) vs {b} " \
                                     f"{eb['value']:.4f}({eb['error']:.4f}), z = {z:.2f}"


def test_hmc_fa_hmc_and_cluster_hybrids_agree_near_kappa_c_8x8():
    """Catches a cluster move or FA kinetic term that breaks exactness (e.g. a wrong bond probability,
    a flip that forgets to recompute S, a kinetic energy other than the one the drift conserves)."""
    est = near_critical_estimates(8, {"hmc": 600, "fa-hmc": 200, "hmc+wolff": 200, "hmc+sw": 200})
    assert_pairwise_agreement(est)
    # the cluster hybrids are the faster ones for |M| here
    assert est["hmc+sw"]["abs_magnetisation"]["tau_int"] < est["hmc"]["abs_magnetisation"]["tau_int"]


@pytest.mark.slow
def test_hmc_fa_hmc_and_cluster_hybrids_agree_near_kappa_c_16x16():
    est = near_critical_estimates(16, {"hmc": 4000, "fa-hmc": 1500, "hmc+wolff": 1500, "hmc+sw": 1500}, seed=12)
    assert_pairwise_agreement(est)
