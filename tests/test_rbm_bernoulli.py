"""Scalar-Bernoulli RBM (hidden +-1): exact marginal, induced action of all orders, log cosh
coefficients, Gibbs sampler against the exact 2^N_h Gaussian mixture."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from lftml.errors import LftmlError
from lftml.rbm.bernoulli import ScalarBernoulliRBM, bernoulli_numbers, log_cosh_coefficients

from lftml.stats import gamma_method


def mean_and_error(x: np.ndarray) -> tuple[float, float]:
    """Mean over all configurations and chains (replicas) with its Gamma-method error."""
    est = gamma_method(x)
    return est.value, est.error


def make(n_v=3, n_h=3, seed=0, scale=0.6, eta=True):
    rng = np.random.default_rng(seed)
    return ScalarBernoulliRBM(
        rng.normal(scale=scale, size=(n_v, n_h)),
        mu2=rng.uniform(1.0, 2.0, size=n_v),
        eta=rng.normal(scale=0.3, size=n_h) if eta else None,
    )


def test_log_cosh_coefficients_are_the_known_fractions():
    c = log_cosh_coefficients(4, exact=True)
    assert c == [Fraction(1, 2), Fraction(-1, 12), Fraction(1, 45), Fraction(-17, 2520)]
    assert bernoulli_numbers(4)[:5] == (1, Fraction(-1, 2), Fraction(1, 6), 0, Fraction(-1, 30))


def test_log_cosh_series_converges_inside_radius_pi_over_2():
    cs = log_cosh_coefficients(80)
    for x in (0.1, 0.5, 1.0, 1.2):
        series = sum(c * x ** (2 * (n + 1)) for n, c in enumerate(cs))
        assert series == pytest.approx(math.log(math.cosh(x)), rel=1e-10, abs=1e-14)


def test_free_energy_is_minus_log_of_the_sum_over_hidden_spins():
    m = make()
    phi = torch.as_tensor(np.random.default_rng(1).normal(size=(5, 3)))
    H = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=3)), dtype=torch.float64)
    brute = -torch.logsumexp(torch.stack([-m.joint_action(phi, h.expand(5, 3)) for h in H]), 0)
    assert torch.allclose(m.free_energy(phi), brute, atol=1e-12)
    # closed form: exp(-sum mu^2 phi^2/2) prod_a 2 cosh(psi_a)
    closed = 0.5 * (m.mu2 * phi**2).sum(-1) - torch.log(2 * torch.cosh(m.psi(phi))).sum(-1)
    assert torch.allclose(m.free_energy(phi), closed, atol=1e-12)


def test_marginal_is_normalised():
    from scipy.integrate import dblquad

    m = make(n_v=2, n_h=2, seed=3)

    def p(y, x):
        return math.exp(float(m.log_prob(torch.tensor([[x, y]], dtype=torch.float64))[0]))

    total, _ = dblquad(p, -8, 8, -8, 8, epsabs=1e-10)
    assert total == pytest.approx(1.0, abs=1e-7)


def test_induced_action_series_approaches_free_energy_with_interactions_of_all_orders():
    m = make(scale=0.3)
    phi = 0.5 * torch.as_tensor(np.random.default_rng(2).normal(size=(4, 3)))
    assert float(m.psi(phi).abs().max()) < math.pi / 2
    errs = [float((m.induced_action_series(phi, n) - m.free_energy(phi)).abs().max()) for n in (1, 2, 4, 8, 16)]
    assert all(a > b for a, b in zip(errs, errs[1:])) and errs[-1] < 1e-8
    # order W^2 is the Gaussian RBM kernel with sigma_h = 1 (eta = 0)
    m0 = make(scale=0.3, eta=False)
    S2 = m0.induced_action_series(phi, 1) + m0.n_hidden * math.log(2.0)
    K = m0.leading_kernel()
    assert torch.allclose(S2, 0.5 * torch.einsum("ni,ij,nj->n", phi, K, phi), atol=1e-12)
    # the quartic term is -c_2 sum_a psi_a^4 = +1/12 sum_a (sum_i phi_i w_ia)^4
    S4 = m0.induced_action_series(phi, 2) - m0.induced_action_series(phi, 1)
    assert torch.allclose(S4, ((phi @ m0.W) ** 4).sum(-1) / 12, atol=1e-12)


def test_gibbs_sampler_reproduces_exact_mixture_moments():
    m = make(n_v=3, n_h=4, seed=5, scale=0.8)
    hist = m.sample(3000, 8, torch.Generator().manual_seed(6), n_therm=100).numpy()
    mean, second = (t.numpy() for t in m.exact_moments())
    for i in range(3):
        v, e = mean_and_error(hist[..., i])
        assert abs(v - mean[i]) < 4.5 * e
    for i, j in [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2)]:
        v, e = mean_and_error(hist[..., i] * hist[..., j])
        assert abs(v - second[i, j]) < 4.5 * e, (i, j, v, second[i, j], e)
    # a non-Gaussian observable: <phi_0^4>
    H = m._hidden_states()
    w = torch.softmax(m._hidden_log_weights(H), 0).numpy()
    mu = ((H @ m.W.T) / m.mu2).numpy()[:, 0]
    s2 = 1.0 / float(m.mu2[0])
    exact4 = float(np.sum(w * (mu**4 + 6 * mu**2 * s2 + 3 * s2**2)))
    v, e = mean_and_error(hist[..., 0] ** 4)
    assert abs(v - exact4) < 4.5 * e


def test_hidden_conditional_probability_is_sigmoid_two_psi():
    m = make()
    phi = torch.zeros(20000, 3, dtype=torch.float64) + 0.3
    h = m.sample_hidden(phi, torch.Generator().manual_seed(0))
    p = torch.sigmoid(2 * m.psi(phi[:1]))[0].numpy()
    freq = (h == 1).double().mean(0).numpy()
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / 20000))


def test_bad_input():
    with pytest.raises(LftmlError):
        ScalarBernoulliRBM(np.zeros((3, 0)))
    with pytest.raises(LftmlError):
        ScalarBernoulliRBM(np.zeros((3, 2)), mu2=-1.0)
    with pytest.raises(LftmlError):
        ScalarBernoulliRBM(np.zeros((3, 2)), eta=np.zeros(3))
    with pytest.raises(LftmlError, match="N_h <= 20"):
        ScalarBernoulliRBM(np.zeros((2, 21))).log_partition()
    with pytest.raises(LftmlError):
        log_cosh_coefficients(0)
