"""The fused (numba) HMC trajectory reproduces the eager torch path: same random numbers, same
accept/reject decisions, fields equal to 1e-12 relative; it is reversible; and HMC falls back to
the eager path (or says clearly why it cannot run fused) when numba or the phi^4 form is missing."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lftml.errors import LftmlError
from lftml.lattice import Lattice
from lftml.run import RunConfig, run
from lftml.samplers import HMC, ChainRNG, fused
from lftml.theories.free import FreeScalar
from lftml.theories.phi4 import Phi4

needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed")

# shapes: 1d, 2d through the padded flat kernel, 2d through the in-place flat kernel (above
# PADDED_MAX_SITES), 2d with fewer than 3 rows (row kernel), 3d, and extents 1/2
SHAPES = [(12,), (8, 6), (41, 40), (2, 5), (4, 3, 5), (3, 1, 2)]


def _chains(theory, backend: str, integrator: str, n_traj: int, dtype=torch.float64, seed: int = 7, n_chains: int = 3):
    hmc = HMC.from_trajectory(theory, 1.0, 5, integrator, backend=backend)
    rng = ChainRNG.from_seed(seed, n_chains)
    phi = torch.randn((n_chains, *theory.lattice.shape), generator=torch.Generator().manual_seed(seed), dtype=dtype)
    state = hmc.init(phi)
    accepted, dH = [], []
    for _ in range(n_traj):
        state, info = hmc.step(state, rng)
        accepted.append(info["accepted"])
        dH.append(info["dH"])
    return state, torch.stack(accepted), torch.stack(dH), hmc


@needs_numba
@pytest.mark.parametrize("integrator", ["omelyan", "leapfrog"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_and_eager_chains_coincide_over_many_trajectories(shape, integrator):
    # the broken phase with a large step: chaotic MD and a visible rejection rate
    theory = Phi4.hopping(Lattice(shape), 0.3, 0.05)
    s_e, acc_e, dH_e, h_e = _chains(theory, "eager", integrator, 40)
    s_f, acc_f, dH_f, h_f = _chains(theory, "fused", integrator, 40)
    assert not h_e.uses_fused(s_e.phi) and h_f.uses_fused(s_f.phi)
    assert torch.equal(acc_e, acc_f)
    assert 0 < acc_e.double().mean() < 1 or integrator == "omelyan"
    scale = s_e.phi.abs().max()
    assert (s_f.phi - s_e.phi).abs().max() <= 1e-12 * scale
    assert torch.allclose(s_f.action, s_e.action, rtol=1e-12, atol=1e-10)
    assert (dH_f - dH_e).abs().max() < 1e-9


@needs_numba
def test_the_coincidence_shapes_take_every_path_of_the_md_kernel():
    # if PADDED_MAX_SITES moves, the test above must still run the generic, in-place and padded paths
    k = fused._compiled()
    modes = {k.md_mode(*fused.row_neighbours(s).shape, s[-1]) for s in SHAPES}
    assert modes == {0, 1, 2}
    assert k.md_mode(40, 2, 40) == 2 and k.md_mode(41, 2, 40) == 1


@needs_numba
def test_fused_free_field_agrees_although_its_force_is_rounded_differently():
    theory = FreeScalar(Lattice((6, 6)), 0.4)
    s_e, acc_e, _, _ = _chains(theory, "eager", "omelyan", 30)
    s_f, acc_f, _, _ = _chains(theory, "fused", "omelyan", 30)
    assert torch.equal(acc_e, acc_f)
    assert (s_f.phi - s_e.phi).abs().max() <= 1e-12 * s_e.phi.abs().max()


@needs_numba
def test_fused_float32_follows_the_eager_float32_chain():
    theory = Phi4.hopping(Lattice((8, 8)), 0.21, 0.022)
    s_e, acc_e, _, _ = _chains(theory, "eager", "omelyan", 10, dtype=torch.float32)
    s_f, acc_f, _, _ = _chains(theory, "fused", "omelyan", 10, dtype=torch.float32)
    # the field stays float32; S (and so dH) is accumulated and kept in float64 on both paths (issue 11)
    assert s_f.phi.dtype == torch.float32 and s_f.action.dtype == torch.float64 == s_e.action.dtype
    assert torch.equal(acc_e, acc_f)
    assert (s_f.phi - s_e.phi).abs().max() <= 1e-5 * s_e.phi.abs().max()


@needs_numba
@pytest.mark.parametrize("integrator", ["omelyan", "leapfrog"])
@pytest.mark.parametrize("shape", [(16,), (8, 8), (4, 4, 4)], ids=lambda s: f"{len(s)}d")
def test_fused_integrator_is_reversible(shape, integrator):
    theory = Phi4.m2_lam4(Lattice(shape), -0.7, 0.5)
    g = torch.Generator().manual_seed(3)
    phi0 = torch.randn((2, *shape), generator=g, dtype=torch.float64)
    pi0 = torch.randn((2, *shape), generator=g, dtype=torch.float64)
    pi = pi0.clone()
    phi1, k0, _, _ = fused.integrate(theory, phi0, pi, 0.1, 10, integrator)
    pi.neg_()
    phi2, _, k2, _ = fused.integrate(theory, phi1, pi, 0.1, 10, integrator)
    assert (phi2 - phi0).abs().max() < 1e-12
    assert (pi + pi0).abs().max() < 1e-12
    assert torch.allclose(k2, k0, rtol=1e-12)
    assert (phi1 - phi0).abs().max() > 0.1  # it did move


@needs_numba
def test_fused_integrate_leaves_the_start_field_alone_and_returns_the_hamiltonian_parts():
    theory = Phi4.hopping(Lattice((5, 7)), 0.2, 0.03)
    g = torch.Generator().manual_seed(1)
    phi0 = torch.randn((2, 5, 7), generator=g, dtype=torch.float64)
    before = phi0.clone()
    pi = torch.randn((2, 5, 7), generator=g, dtype=torch.float64)
    k0_expected = 0.5 * (pi * pi).sum(dim=(-2, -1))
    phi1, k0, k1, s1 = fused.integrate(theory, phi0, pi, 0.05, 4, "omelyan")
    assert torch.equal(phi0, before)
    assert torch.allclose(k0, k0_expected, rtol=1e-13)
    assert torch.allclose(k1, 0.5 * (pi * pi).sum(dim=(-2, -1)), rtol=1e-13)
    assert torch.allclose(s1, theory.action(phi1), rtol=1e-12)


@needs_numba
def test_run_gives_the_same_ensemble_with_either_backend():
    theory = Phi4.hopping(Lattice((6, 6)), 0.25, 0.03)
    cfg = RunConfig(n_chains=2, n_configs=5, n_therm=5, every=2, seed=11)
    eager = run(HMC.from_trajectory(theory, 1.0, 6, backend="eager"), cfg)
    fast = run(HMC.from_trajectory(theory, 1.0, 6, backend="fused"), cfg)
    assert eager.acceptance == fast.acceptance
    assert torch.allclose(fast.configs, eager.configs, rtol=0, atol=1e-12 * float(eager.configs.abs().max()))


@needs_numba
def test_fused_chain_restarted_from_its_field_continues_bit_for_bit():
    """init() sums the action as the fused trajectory does, so resume reproduces dH exactly."""
    theory = Phi4.hopping(Lattice((6, 6)), 0.25, 0.03)
    hmc = HMC.from_trajectory(theory, 1.0, 6, backend="fused")
    rng = ChainRNG.from_seed(5, 2)
    state = hmc.init(torch.randn((2, 6, 6), generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    for _ in range(3):
        state, _ = hmc.step(state, rng)
    restarted = hmc.init(state.phi.clone())
    rng2 = ChainRNG.from_seed(5, 2)
    rng2.set_state(rng.get_state())
    assert torch.equal(restarted.action, state.action)
    for _ in range(3):
        state, info = hmc.step(state, rng)
        restarted, info2 = hmc.step(restarted, rng2)
        assert torch.equal(info["dH"], info2["dH"]) and torch.equal(state.phi, restarted.phi)


# ----------------------------------------------------------------------------- fallback
class _NoCoefficients:
    """A theory that only offers action and force (no phi^4 coefficients)."""

    def __init__(self, theory):
        self.lattice = theory.lattice
        self.action = theory.action
        self.force = theory.force


def test_auto_falls_back_to_eager_without_numba(monkeypatch):
    monkeypatch.setattr(fused, "_DISABLED", True)
    theory = Phi4.hopping(Lattice((4, 4)), 0.2, 0.02)
    hmc = HMC.from_trajectory(theory, 1.0, 4)
    assert hmc.backend == "auto" and not fused.available()
    state, _, _, _ = _chains(theory, "auto", "omelyan", 3)
    ref, _, _, _ = _chains(theory, "eager", "omelyan", 3)
    assert not hmc.uses_fused(state.phi)
    assert torch.equal(state.phi, ref.phi)
    with pytest.raises(LftmlError, match="numba"):
        HMC.from_trajectory(theory, 1.0, 4, backend="fused")


def test_a_broken_numba_install_falls_back_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(fused, "_DISABLED", False)
    monkeypatch.setattr(fused, "available", lambda: True)

    def broken():
        raise ImportError("numba is broken here")

    monkeypatch.setattr(fused, "_compiled", broken)
    theory = Phi4.hopping(Lattice((4, 4)), 0.2, 0.02)
    phi = torch.zeros((1, 4, 4), dtype=torch.float64)
    with pytest.raises(LftmlError, match="unavailable"):
        HMC.from_trajectory(theory, 1.0, 4, backend="fused").uses_fused(phi)
    monkeypatch.setattr(fused, "_DISABLED", False)
    with caplog.at_level("WARNING"):
        assert not HMC.from_trajectory(theory, 1.0, 4, backend="auto").uses_fused(phi)
    assert "eager" in caplog.text


def test_theories_without_coefficients_run_eager():
    theory = _NoCoefficients(Phi4.hopping(Lattice((4, 4)), 0.2, 0.02))
    hmc = HMC.from_trajectory(theory, 1.0, 4)
    assert not hmc.uses_fused(torch.zeros((1, 4, 4), dtype=torch.float64))
    with pytest.raises(LftmlError, match="coefficients|numba"):
        HMC.from_trajectory(theory, 1.0, 4, backend="fused")


def test_non_cpu_or_integer_fields_and_eager_backend_never_use_the_fused_path():
    theory = Phi4.hopping(Lattice((4, 4)), 0.2, 0.02)
    assert not HMC.from_trajectory(theory, 1.0, 4, backend="fused").uses_fused(torch.empty((1, 4, 4), device="meta"))
    assert not HMC.from_trajectory(theory, 1.0, 4).uses_fused(torch.zeros((1, 4, 4), dtype=torch.float16))
    assert not HMC.from_trajectory(theory, 1.0, 4).uses_fused(torch.zeros((2, 3, 4, 4), dtype=torch.float64))
    eager = HMC.from_trajectory(theory, 1.0, 4, backend="eager")
    assert not eager.uses_fused(torch.zeros((1, 4, 4), dtype=torch.float64))


def test_unknown_backend_is_a_clear_error():
    theory = Phi4.hopping(Lattice((4, 4)), 0.2, 0.02)
    with pytest.raises(LftmlError, match="backend"):
        HMC.from_trajectory(theory, 1.0, 4, backend="gpu")
