"""Complex Langevin as a sampler (``init`` / ``step``): per-chain streams, the adaptive Heun step,
the frozen <K_max>, and the criterion of the discretised process against exact finite-step values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lftml.complex.analysis import complex_estimate
from lftml.complex.diagnostics import diagnose
from lftml.complex.exact import gaussian_z2_euler
from lftml.complex.langevin import ComplexLangevin, ComplexLangevinSampler, run_complex_langevin
from lftml.complex.models import GaussianModel, QuarticModel
from lftml.complex.langevin import ChainRNG  # the stream complex Langevin uses

K = 4.0


@pytest.mark.parametrize("adaptive", [False, True])
def test_chain_i_is_the_same_whatever_the_number_of_chains(adaptive):
    """Catches one generator shared by all chains (the old loop): chain 0..2 must not change when
    more chains run beside them (adaptive: with a given <K_max>, the step does not couple chains)."""
    s = ComplexLangevin(step_size=0.02, scheme="heun", adaptive=adaptive, drift_reference=2.0 if adaptive else None,
                        thermalisation_time=0.2, bin_time=0.2, n_bins=5)
    model = QuarticModel(1 + 1j, 1.0)
    few = run_complex_langevin(model, s, 3, seed=5)
    many = run_complex_langevin(model, s, 7, seed=5)
    assert np.array_equal(few.configs, many.configs[:, :3])  # the dynamics: bit for bit
    # bin means: to rounding (torch's vectorised complex products round differently with the batch size)
    for name in few.bins:
        np.testing.assert_allclose(few.bins[name], many.bins[name][:, :3], rtol=1e-12, atol=0)
        np.testing.assert_allclose(few.step_criterion[name], many.step_criterion[name][:, :3], rtol=1e-12, atol=0)
    assert not np.array_equal(many.configs[:, 0], many.configs[:, 1])  # chains are not copies of each other


def _far_states(n: int) -> torch.Tensor:
    """Start points of the sigma = -1+4i quartic model spread into the region where K(z') >> K(z)."""
    g = torch.Generator().manual_seed(0)
    return torch.complex(torch.randn(n, 1, generator=g, dtype=torch.float64) * 1.5,
                         torch.randn(n, 1, generator=g, dtype=torch.float64) * 1.5)


def test_adaptive_heun_step_depends_on_the_state_only_and_its_noise_is_drawn_for_it():
    """Catches the old rule (draw the noise, then shorten the step until the noisy predictor behaves,
    reusing that noise): the step would depend on the noise, and the noise kept would be conditioned on
    having been small. Here the step from a state is the same for any noise, and the noise in the update
    is exactly sqrt(2 eps) times the stream's next standard normal."""
    model = QuarticModel(-1 + 4j, 1.0)
    s = ComplexLangevin(step_size=0.1, scheme="heun", adaptive=True, drift_reference=20.0, bin_time=1.0)
    sampler = ComplexLangevinSampler(model, s)
    state = sampler.init(256, initial=_far_states(256))
    new_a, info_a = sampler.step(state, ChainRNG.from_seed(1, 256))
    _, info_b = sampler.step(state, ChainRNG.from_seed(2, 256))
    eps = info_a["eps"]
    assert torch.equal(eps, info_b["eps"])
    kmax = state.drift.abs().reshape(256, -1).amax(1)
    plain = torch.clamp(0.1 * 20.0 / kmax, max=0.1)
    assert bool((eps < 0.99 * plain).any())  # premise: the Heun shortening did act on some chains
    xi = ChainRNG.from_seed(1, 256).normal((1,)) * math.sqrt(2.0)
    zp = state.z + eps[:, None] * state.drift + eps.sqrt()[:, None] * xi
    expected = state.z + eps[:, None] * 0.5 * (state.drift + model.drift(zp)) + eps.sqrt()[:, None] * xi
    assert torch.allclose(new_a.z, expected, rtol=1e-13, atol=1e-13)


def test_drift_reference_is_frozen_when_the_first_chain_starts_measuring():
    """Catches the old rule (<K_max> kept adapting until the *last* chain had thermalised, while the
    leading chains already measured): the stored reference is the one reached at the step where the
    first chain crossed the thermalisation time."""
    model = QuarticModel(1 + 1j, 1.0)
    s = ComplexLangevin(step_size=0.05, scheme="euler", adaptive=True, thermalisation_time=1.0, bin_time=0.4, n_bins=3)
    run = run_complex_langevin(model, s, 16, seed=3)
    sampler = ComplexLangevinSampler(model, s)
    state, rng = sampler.init(16), ChainRNG.from_seed(3, 16, purpose=1)
    while not bool((state.t >= 1.0 * (1 - 1e-12)).any()):
        state, _ = sampler.step(state, rng)
    assert run.drift_reference == state.k_ref
    while not bool((state.t >= 1.0 * (1 - 1e-12)).all()):  # premise: the old rule gives another value
        state, _ = sampler.step(state, rng)
    assert state.k_ref != run.drift_reference


def test_criterion_of_the_discretised_process_is_zero_where_the_continuum_one_has_its_exact_bias():
    """Gaussian model, Euler at eps = 0.1: <L_c z^2> = 2 - 2 sigma <z^2>_eps (exact, non-zero) while
    <L_eps O> = 0 at any eps. Catches: L_c (or another scheme's update) used in place of the simulated
    kernel (its bias is resolved here), a missing -2 O(z) term, and a diagnosis that calls step-size
    bias wrong convergence."""
    sigma, eps = 1 + 1j, 0.1
    s = ComplexLangevin(step_size=eps, scheme="euler", thermalisation_time=5.0, bin_time=0.5, n_bins=200)
    run = run_complex_langevin(GaussianModel(sigma), s, 128, seed=8)
    z2 = gaussian_z2_euler(sigma, eps)
    lc = {"z2": 2 - 2 * sigma * z2, "z4": 12 * z2 - 4 * sigma * 3 * z2 * z2}  # <12 z^2 + 4 z^3 K>, K = -sigma z
    for name, exact in lc.items():
        cont = complex_estimate(run.criterion[name], run.weights)
        disc = complex_estimate(run.step_criterion[name], run.step_weights)
        assert cont.zscore(exact) < K, (name, cont, exact)
        assert disc.zscore(0j) < K, (name, disc)
    assert complex_estimate(run.criterion["z2"], run.weights).zscore(0j) > K  # premise: the bias is resolved
    d = diagnose(run)
    assert not d["suspicious"], d["reasons"]
    assert d["step_size_bias"] and "step-size bias" in d["notes"][0]


def test_antithetic_estimator_equals_its_closed_form_per_sample():
    """Euler, S = sigma z^2/2, O = z^2: z'(+-xi) = (1 - eps sigma) z +- sqrt(2 eps) xi, so the estimator is
    exactly z^2 ((1 - eps sigma)^2 - 1)/eps + 2 xi^2 per sample. Catches a factor 2, a wrong sign of the
    antithetic partner, a missing -2 O(z) and a missing sqrt(2) in the noise."""
    sigma, eps = 1 + 1j, 0.07
    model = GaussianModel(sigma)
    sampler = ComplexLangevinSampler(model, ComplexLangevin(step_size=eps, bin_time=1.0))
    g = torch.Generator().manual_seed(3)
    z = torch.complex(torch.randn(64, 1, generator=g, dtype=torch.float64), torch.randn(64, 1, generator=g, dtype=torch.float64))
    xi = torch.randn(64, 1, generator=g, dtype=torch.float64)
    d = sampler.discrete_criterion(z, model.drift(z), torch.full((64,), eps, dtype=torch.float64), xi)
    expected = z[:, 0] ** 2 * ((1 - eps * sigma) ** 2 - 1) / eps + 2 * xi[:, 0] ** 2
    assert torch.allclose(d["z2"], expected, rtol=1e-12, atol=1e-12)
