"""Molecular-dynamics integrators (leapfrog, Omelyan 2MN): the properties that make HMC exact.

* reversibility: integrate, flip momenta, integrate again -> start with flipped momenta (1e-12);
* area preservation: det d(phi', pi') / d(phi, pi) = 1 (autograd Jacobian, nonlinear phi^4);
* second order: rms energy violation dH ~ eps^2 at fixed trajectory length (fitted slope);
* Omelyan beats leapfrog at equal cost (force evaluations);
* Creutz's identity <exp(-dH)> = 1 in equilibrium, within its Gamma-method error.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from lftml.lattice import Lattice
from lftml.samplers import HMC, ChainRNG
from lftml.samplers.integrators import FORCES_PER_STEP, INTEGRATORS
from lftml.stats import gamma_method
from lftml.theories import FreeScalar, Phi4

INTEGRATOR_NAMES = ("leapfrog", "omelyan")


def hamiltonian(theory, phi, pi):
    return 0.5 * (pi * pi).sum(dim=theory.lattice.dims) + theory.action(phi)


def phi4_2d():
    # broken-phase m2 < 0 with a strong quartic term: a genuinely nonlinear force
    return Phi4.m2_lam4(Lattice((6, 5)), m2=-0.6, lam=1.2)


def random_phase_space(theory, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n, *theory.lattice.shape)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", INTEGRATOR_NAMES)
@pytest.mark.parametrize("which", ["free3d", "phi4_2d"])
def test_integrator_is_reversible_flip_momenta_and_integrate_back_to_1e_12(name, which):
    theory = FreeScalar(Lattice((4, 3, 5)), 0.8) if which == "free3d" else phi4_2d()
    phi0, pi0 = random_phase_space(theory)
    integ = INTEGRATORS[name]
    phi1, pi1 = integ(phi0, pi0, theory.force, 0.1, 20)
    assert torch.max(torch.abs(phi1 - phi0)) > 0.1  # it moved
    phi2, pi2 = integ(phi1, -pi1, theory.force, 0.1, 20)
    assert torch.max(torch.abs(phi2 - phi0)).item() < 1e-12
    assert torch.max(torch.abs(pi2 + pi0)).item() < 1e-12


@pytest.mark.parametrize("name", INTEGRATOR_NAMES)
def test_integrator_does_not_modify_inputs_and_uses_the_stated_number_of_forces(name):
    theory = phi4_2d()
    phi0, pi0 = random_phase_space(theory)
    phi_copy, pi_copy = phi0.clone(), pi0.clone()
    calls = []

    def counting_force(phi):
        calls.append(1)
        return theory.force(phi)

    INTEGRATORS[name](phi0, pi0, counting_force, 0.1, 7)
    assert torch.equal(phi0, phi_copy) and torch.equal(pi0, pi_copy)
    assert len(calls) == FORCES_PER_STEP[name] * 7 + 1
    assert HMC(theory, 0.1, 7, name).forces_per_update == len(calls)


@pytest.mark.parametrize("name", INTEGRATOR_NAMES)
def test_integrator_preserves_phase_space_volume_jacobian_determinant_one(name):
    """det of the full (2V x 2V) Jacobian of one trajectory, on a tiny nonlinear phi^4 lattice."""
    theory = Phi4.m2_lam4(Lattice((3, 2)), m2=-0.6, lam=1.2)
    V = theory.lattice.volume
    shape = (1, *theory.lattice.shape)
    integ = INTEGRATORS[name]

    def flow(z):
        phi, pi = integ(z[:V].reshape(shape), z[V:].reshape(shape), theory.force, 0.15, 6)
        return torch.cat([phi.reshape(-1), pi.reshape(-1)])

    z0 = torch.cat(random_phase_space(theory, n=1, seed=3)).reshape(-1)
    J = torch.autograd.functional.jacobian(flow, z0)
    assert J.shape == (2 * V, 2 * V)
    assert torch.max(torch.abs(J - torch.eye(2 * V, dtype=torch.float64))) > 0.1  # non-trivial map
    assert abs(torch.linalg.det(J).item() - 1.0) < 1e-12
    # symplectic, not only volume preserving: J^T Omega J = Omega
    Omega = torch.zeros(2 * V, 2 * V, dtype=torch.float64)
    Omega[:V, V:] = torch.eye(V)
    Omega[V:, :V] = -torch.eye(V)
    assert torch.max(torch.abs(J.T @ Omega @ J - Omega)).item() < 1e-12

    # the test can fail: an explicit-Euler flow (not symplectic) has det != 1
    def euler(z):
        phi, pi = z[:V].reshape(shape), z[V:].reshape(shape)
        for _ in range(6):
            phi, pi = phi + 0.15 * pi, pi + 0.15 * theory.force(phi)
        return torch.cat([phi.reshape(-1), pi.reshape(-1)])

    assert abs(torch.linalg.det(torch.autograd.functional.jacobian(euler, z0)).item() - 1.0) > 1e-3


def rms_dH(theory, phi, pi, name, eps, n_steps):
    phi1, pi1 = INTEGRATORS[name](phi, pi, theory.force, eps, n_steps)
    dH = hamiltonian(theory, phi1, pi1) - hamiltonian(theory, phi, pi)
    return float(dH.pow(2).mean().sqrt())


@pytest.mark.parametrize("name", INTEGRATOR_NAMES)
def test_energy_violation_scales_as_eps_squared_at_fixed_trajectory_length(name):
    """Equilibrium (exact FFT) free-field configurations and N(0,1) momenta, trajectory length 1:
    the fitted slope of log rms(dH) vs log eps is 2 (1 would be a first-order scheme, 4 a
    fourth-order one). The same phase-space points are used for every eps, so the slope has
    no Monte Carlo noise; the band 0.05 covers the O(eps^4) corrections at eps <= 1/16."""
    theory = FreeScalar(Lattice((8, 8)), 0.5)
    g = torch.Generator().manual_seed(1)
    phi = theory.sample(256, g)
    pi = torch.randn(phi.shape, generator=g, dtype=torch.float64)
    n_steps = np.array([16, 32, 64, 128])
    rms = np.array([rms_dH(theory, phi, pi, name, 1.0 / n, n) for n in n_steps])
    slope = np.polyfit(np.log(1.0 / n_steps), np.log(rms), 1)[0]
    assert abs(slope - 2.0) < 0.05, (slope, rms)
    # and each halving of eps divides rms dH by ~4 at the smallest steps
    assert abs(rms[-2] / rms[-1] - 4.0) < 0.1


@pytest.mark.parametrize("which", ["free", "phi4"])
def test_omelyan_energy_violation_is_smaller_than_leapfrog_at_equal_force_count(which):
    """leapfrog with 2k steps of tau/2k and Omelyan with k steps of tau/k both use 2k + 1 forces."""
    if which == "free":
        theory = FreeScalar(Lattice((8, 8)), 0.5)
        g = torch.Generator().manual_seed(2)
        phi = theory.sample(128, g)
        pi = torch.randn(phi.shape, generator=g, dtype=torch.float64)
    else:
        theory = Phi4.m2_lam4(Lattice((8, 8)), m2=-0.5, lam=0.5)
        phi, pi = random_phase_space(theory, n=128, seed=2)
        phi = 0.8 * phi
    for k in (5, 10, 20):
        lf = rms_dH(theory, phi, pi, "leapfrog", 1.0 / (2 * k), 2 * k)
        om = rms_dH(theory, phi, pi, "omelyan", 1.0 / k, k)
        assert om < 0.5 * lf, (k, om, lf)


@pytest.mark.parametrize("name", INTEGRATOR_NAMES)
def test_creutz_identity_mean_exp_minus_dH_is_one_within_gamma_error(name):
    """<exp(-dH)> = 1 holds for an exact (reversible, area-preserving) MD in equilibrium.
    A sizable step (acceptance ~ 0.7) so that exp(-dH) fluctuates strongly."""
    theory = FreeScalar(Lattice((8, 8)), 0.5)
    n_chains = 32
    eps = 0.3 if name == "leapfrog" else 0.75
    hmc = HMC(theory, step_size=eps, n_steps=max(1, round(1.5 / eps)), integrator=name)
    state = hmc.init(theory.sample(n_chains, torch.Generator().manual_seed(7)))  # equilibrium start
    rng = ChainRNG.from_seed(8, n_chains)
    x, acc = [], []
    for _ in range(300):
        state, info = hmc.step(state, rng)
        x.append(info["exp_minus_dH"].numpy())
        acc.append(info["accepted"].numpy())
    x = np.array(x)
    est = gamma_method(x)
    assert 0.5 < np.mean(acc) < 0.9  # the regime where the identity is a real check
    assert abs(est.value - 1.0) < 4 * est.error, (est.value, est.error)
    # exp(-dH) really fluctuates (the identity is not satisfied trivially by dH = 0)
    assert np.std(x) > 0.3
