"""Gaussian RBM as a lattice field theory: induced kernel, exact likelihood and gradients,
analytic constructions, hidden O(N_h) symmetry, Gibbs sampling, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lftml.errors import LftmlError
from lftml.lattice import Lattice
from lftml.rbm import (
    GaussianRBM,
    cholesky_weights,
    diagonal_weights,
    moment_gradients,
    optimal_spectrum,
    optimal_weights,
    random_orthogonal,
    rbm_from_kernel,
)
from lftml.rbm.training import Target
from lftml.theories import FreeScalar

from lftml.stats import gamma_method


def mean_and_error(x: np.ndarray) -> tuple[float, float]:
    """Mean over all configurations and chains (replicas) with its Gamma-method error."""
    est = gamma_method(x)
    return est.value, est.error


def random_rbm(n_v=5, n_h=3, mode="global", seed=0, eta=True, std=0.4, mu2=4.0) -> GaussianRBM:
    g = torch.Generator().manual_seed(seed)
    m = GaussianRBM(n_v, n_h, mu2=mu2, mu2_mode=mode, generator=g, learn_eta=eta, init_std=std, sigma_h=0.8)
    if eta:
        with torch.no_grad():
            m.eta.copy_(0.5 * torch.randn(n_h, generator=g, dtype=torch.float64))
    return m


# ------------------------------------------------------------------ induced theory
def test_kernel_and_source_are_the_integrated_out_hidden_layer():
    m = random_rbm()
    W, s = m.W.detach(), m.sigma_h
    K = torch.diag(m.mu2_vector()) - s**2 * W @ W.T
    assert torch.allclose(m.kernel(), K, atol=1e-14, rtol=0)
    assert torch.allclose(m.source(), W @ m.eta)
    # integrate h out numerically for one phi: log sum_h exp(-S(phi,h)) - log p(phi) is phi-independent
    g = torch.Generator().manual_seed(5)
    phis = 0.3 * torch.randn(4, 5, generator=g, dtype=torch.float64)
    # Gaussian integral over h in closed form: int dh exp(-S) = (2 pi s^2)^(N_h/2) exp(-S_eff(phi))
    vals = []
    for phi in phis:
        hstar = m.eta + s**2 * (m.W.T @ phi)
        S_at = m.joint_action(phi[None], hstar[None])[0]
        log_int = -S_at + 0.5 * m.n_hidden * math.log(2 * math.pi * s**2)
        vals.append(float((log_int - m.log_prob(phi[None])[0]).detach()))
    assert np.ptp(vals) < 1e-12


def test_log_prob_is_the_normalised_gaussian_with_mean_K_inverse_J():
    from scipy.stats import multivariate_normal

    m = random_rbm()
    K = m.kernel().detach().numpy()
    cov = np.linalg.inv(K)
    mean = cov @ m.source().detach().numpy()
    x = np.random.default_rng(1).normal(size=(6, 5))
    ref = multivariate_normal(mean, cov).logpdf(x)
    assert np.allclose(m.log_prob(torch.as_tensor(x)).detach().numpy(), ref, atol=1e-12)
    assert np.allclose(m.mean().detach().numpy(), mean, atol=1e-12)


def test_exact_log_likelihood_equals_average_log_prob_over_samples():
    m = random_rbm()
    x = torch.as_tensor(np.random.default_rng(2).normal(size=(50, 5)))
    C, mean = x.T @ x / 50, x.mean(0)
    assert float(m.log_likelihood(C, mean).detach()) == pytest.approx(float(m.log_prob(x).mean().detach()), abs=1e-12)


@pytest.mark.parametrize("mode", ["fixed", "global", "site"])
def test_closed_form_gradient_matches_autograd_of_exact_log_likelihood(mode):
    m = random_rbm(mode=mode, seed=3)
    g = torch.Generator().manual_seed(4)
    A = torch.randn(5, 5, generator=g, dtype=torch.float64)
    mean = 0.3 * torch.randn(5, generator=g, dtype=torch.float64)
    C = A @ A.T / 5 + 0.2 * torch.eye(5, dtype=torch.float64) + torch.outer(mean, mean)
    params = m.trainable_parameters()
    auto = torch.autograd.grad(m.log_likelihood(C, mean), list(params.values()))
    with torch.no_grad():
        mm = m.mean()
        M2 = m.propagator() + torch.outer(mm, mm)
    closed = moment_gradients(m, C, mean, M2, mm)
    assert set(closed) == set(params)
    for (name, _), a in zip(params.items(), auto):
        assert torch.allclose(closed[name], a, atol=1e-12, rtol=1e-10), name


@pytest.mark.parametrize("mode", ["global", "site"])
def test_sample_gradients_equal_moment_gradients_of_the_sample_moments(mode):
    from lftml.rbm import sample_gradients

    m = random_rbm(mode=mode, seed=5)
    g = torch.Generator().manual_seed(6)
    xd = torch.randn(30, 5, generator=g, dtype=torch.float64) + 0.2
    xm = torch.randn(20, 5, generator=g, dtype=torch.float64)
    ref = moment_gradients(m, xd.T @ xd / 30, xd.mean(0), xm.T @ xm / 20, xm.mean(0))
    for got in (sample_gradients(m, xm, data_samples=xd),
                sample_gradients(m, xm, data_second_moment=xd.T @ xd / 30, data_mean=xd.mean(0))):
        for k in ref:
            assert torch.allclose(got[k], ref[k], atol=1e-13), k


def test_eta_zero_weight_gradient_is_sigma2_C_minus_Kinv_W():
    m = random_rbm(eta=False)
    C = torch.eye(5, dtype=torch.float64) * 0.3
    grads = moment_gradients(m, C, torch.zeros(5, dtype=torch.float64), m.propagator().detach(), torch.zeros(5, dtype=torch.float64))
    expected = m.sigma_h**2 * (C - m.propagator().detach()) @ m.W.detach()
    assert torch.allclose(grads["W"], expected, atol=1e-14)


def test_per_site_mu2_gradient_uses_the_diagonal_of_the_correlator_not_row_sums():
    m = random_rbm(mode="site", eta=False)
    C = torch.full((5, 5), 0.1, dtype=torch.float64) + 0.2 * torch.eye(5, dtype=torch.float64)
    M2 = m.propagator().detach()
    g = moment_gradients(m, C, torch.zeros(5, dtype=torch.float64), M2, torch.zeros(5, dtype=torch.float64))
    expected_dmu2 = -0.5 * (torch.diagonal(C) - torch.diagonal(M2))
    assert torch.allclose(g["mu"], 2 * m.mu.detach() * expected_dmu2, atol=1e-14)


def test_non_positive_definite_kernel_gives_clear_error():
    m = GaussianRBM(3, 3, mu2=1.0, weights=2 * np.eye(3))
    with pytest.raises(LftmlError, match="not positive definite"):
        m.log_prob(torch.zeros(1, 3))
    with pytest.raises(LftmlError, match="not positive definite"):
        m.sample(5, 2, torch.Generator().manual_seed(0))
    with pytest.raises(LftmlError, match="not positive definite"):
        m.log_likelihood(torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_visible=4, n_hidden=0), "n_hidden >= 1"),
        (dict(n_visible=0, n_hidden=2), "n_visible >= 1"),
        (dict(n_visible=4, n_hidden=2, mu2=-1.0), "positive"),
        (dict(n_visible=4, n_hidden=2, mu2=[1.0, 2.0]), "N_v = 4"),
        (dict(n_visible=4, n_hidden=2, weights=np.zeros((2, 4))), r"\(N_v, N_h\)"),
        (dict(n_visible=4, n_hidden=2, mu2_mode="local"), "mu2_mode"),
        (dict(n_visible=4, n_hidden=2, lattice_shape=(3, 3)), "lattice_shape"),
        (dict(n_visible=4, n_hidden=2, sigma_h=0.0), "sigma_h"),
    ],
)
def test_bad_model_settings_are_rejected(kwargs, match):
    kwargs.setdefault("generator", torch.Generator().manual_seed(0))
    with pytest.raises(LftmlError, match=match):
        GaussianRBM(**kwargs)


def test_wrong_field_shape_is_rejected():
    m = random_rbm()
    with pytest.raises(LftmlError, match="expected"):
        m.log_prob(torch.zeros(2, 7))


# ------------------------------------------------------------------ analytic constructions
FREE10 = FreeScalar(Lattice(10), 4.0)
FREE2D = FreeScalar(Lattice((4, 4)), 0.5)


@pytest.mark.parametrize("theory", [FREE10, FREE2D], ids=["1d-10", "2d-4x4"])
@pytest.mark.parametrize("method", ["cholesky", "diagonal"])
def test_constructions_reproduce_the_target_kernel_to_1e_10(theory, method):
    K = theory.kernel_matrix()
    lam_max = theory.eigenvalues()[-1]
    m = rbm_from_kernel(K, lam_max + 0.5, method=method, lattice_shape=theory.lattice.shape)
    assert np.abs(m.kernel().detach().numpy() - K).max() < 1e-10
    W = m.W.detach().numpy()
    if method == "cholesky":
        assert np.allclose(W, np.tril(W))
    else:
        assert np.allclose(W, W.T, atol=1e-12)


def test_diagonalisation_allows_mu2_equal_to_lambda_max():
    K = FREE10.kernel_matrix()
    W = diagonal_weights(K, 8.0)
    assert np.abs(8.0 * np.eye(10) - W @ W.T - K).max() < 1e-10


@pytest.mark.parametrize("builder", [cholesky_weights, diagonal_weights])
def test_exact_construction_needs_mu2_above_the_spectrum(builder):
    with pytest.raises(LftmlError, match="lambda_max"):
        builder(FREE10.kernel_matrix(), 7.5)


def test_cholesky_rejects_mu2_equal_to_lambda_max():
    with pytest.raises(LftmlError, match="mu2 > lambda_max"):
        cholesky_weights(FREE10.kernel_matrix(), 8.0)


@pytest.mark.parametrize("bad", [np.zeros((3, 4)), np.array([[1.0, 2.0], [0.0, 1.0]]), np.array([1.0, 2.0])])
def test_construction_rejects_malformed_target_kernels(bad):
    with pytest.raises(LftmlError):
        cholesky_weights(bad, 10.0)


def test_hidden_rotation_leaves_kernel_source_and_observables_unchanged():
    m = random_rbm(n_v=6, n_h=4, seed=7)
    O = random_orthogonal(4, torch.Generator().manual_seed(8))
    r = m.rotate_hidden(O)
    assert not torch.allclose(r.W, m.W)
    assert torch.allclose(r.kernel(), m.kernel(), atol=1e-13)
    assert torch.allclose(r.source(), m.source(), atol=1e-13)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert torch.allclose(r.log_prob(x), m.log_prob(x), atol=1e-12)
    assert np.allclose(r.singular_values(), m.singular_values(), atol=1e-12)
    with pytest.raises(LftmlError, match="orthogonal"):
        m.rotate_hidden(2 * torch.eye(4, dtype=torch.float64))


def test_hidden_rotation_of_the_cholesky_solution_is_another_exact_solution():
    K = FREE10.kernel_matrix()
    m = rbm_from_kernel(K, 9.0, method="cholesky")
    r = m.rotate_hidden(random_orthogonal(10, torch.Generator().manual_seed(1)))
    assert np.abs(r.kernel().detach().numpy() - K).max() < 1e-10


# ------------------------------------------------------------------ ML optimum of the constrained family
def test_harmonic_mean_claim_learned_mu2_optimum():
    lam = FREE10.eigenvalues()
    for nh in range(1, 10):
        model_eigs, mu2 = optimal_spectrum(lam, nh)
        dropped = lam[nh:]
        assert mu2 == pytest.approx(len(dropped) / np.sum(1 / dropped))
        assert np.allclose(model_eigs[:nh], lam[:nh])
        assert mu2 >= lam[nh - 1]  # consistent: kept modes below the cut-off


@pytest.mark.parametrize("nh", [6, 8, 9])
def test_analytic_optimum_is_a_stationary_point_and_beats_neighbours(nh):
    K = FREE10.kernel_matrix()
    W, mu2 = optimal_weights(K, nh)
    m = GaussianRBM(10, nh, mu2=mu2, mu2_mode="global", weights=W)
    C = torch.as_tensor(np.linalg.inv(K))
    zero = torch.zeros(10, dtype=torch.float64)
    g = moment_gradients(m, C, zero, m.propagator().detach(), zero)
    assert float(g["W"].abs().max()) < 1e-12 and abs(float(g["mu"])) < 1e-12
    L0 = float(m.log_likelihood(C).detach())
    # any other global mu2 (with its own optimal W), or dropping other modes, is worse
    for other in (mu2 * 0.97, mu2 * 1.03):
        W2, _ = optimal_weights(K, nh, mu2=other)
        assert float(GaussianRBM(10, nh, mu2=other, weights=W2).log_likelihood(C).detach()) < L0
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        p = GaussianRBM(10, nh, mu2=mu2 * (1 + 0.01 * float(torch.randn(1, generator=gen))),
                        weights=W + 0.01 * np.random.default_rng(0).normal(size=W.shape))
        assert float(p.log_likelihood(C).detach()) < L0


def test_fixed_mu2_below_lambda_max_clips_the_spectrum():
    lam = FREE10.eigenvalues()
    for mu2 in (7.8, 7.1, 5.8, 4.8):
        eigs, _ = optimal_spectrum(lam, 10, mu2)
        assert np.allclose(eigs, np.minimum(lam, mu2))


# ------------------------------------------------------------------ Gibbs sampling
def test_gibbs_propagator_of_cholesky_rbm_matches_exact_free_field():
    theory = FREE10
    m = rbm_from_kernel(theory.kernel_matrix(), 9.0, method="cholesky")
    g = torch.Generator().manual_seed(11)
    hist = m.sample(2000, 16, g, n_therm=50).numpy()  # (n_configs, n_chains, 10)
    exact = theory.propagator()
    for x in range(6):
        obs = (hist * np.roll(hist, -x, axis=-1)).mean(-1)  # (n_configs, n_chains), translation averaged
        value, error = mean_and_error(obs)
        assert abs(value - exact[x]) < 4.5 * error, (x, value, exact[x], error)


def test_gibbs_moments_of_random_rbm_with_source_match_K_inverse():
    m = random_rbm(n_v=4, n_h=3, seed=12, mu2=3.0)
    g = torch.Generator().manual_seed(13)
    hist = m.sample(3000, 8, g, n_therm=100).numpy()
    mean = m.mean().detach().numpy()
    M2 = (m.propagator() + torch.outer(m.mean(), m.mean())).detach().numpy()
    for i in range(4):
        v, e = mean_and_error(hist[..., i])
        assert abs(v - mean[i]) < 4.5 * e
    for i, j in [(0, 0), (1, 1), (0, 1), (2, 3), (0, 3)]:
        v, e = mean_and_error(hist[..., i] * hist[..., j])
        assert abs(v - M2[i, j]) < 4.5 * e, (i, j)


def test_exact_sampler_and_lattice_shape():
    m = rbm_from_kernel(FREE2D.kernel_matrix(), 9.0, lattice_shape=(4, 4))
    x = m.sample_exact(20000, torch.Generator().manual_seed(3))
    assert x.shape == (20000, 4, 4)
    flat = x.reshape(20000, 16).numpy()
    C = flat.T @ flat / 20000
    # each entry of the sample covariance has sd <= sqrt(2/n) * max variance
    assert np.abs(C - np.linalg.inv(FREE2D.kernel_matrix())).max() < 5 * math.sqrt(2 / 20000) * C.diagonal().max()
    h = m.sample(3, 2, torch.Generator().manual_seed(0), n_therm=1)
    assert h.shape == (3, 2, 4, 4)


def test_sampling_is_reproducible_from_the_generator():
    m = random_rbm()
    a = m.sample(10, 3, torch.Generator().manual_seed(5), n_therm=3)
    b = m.sample(10, 3, torch.Generator().manual_seed(5), n_therm=3)
    assert torch.equal(a, b)


def test_target_shape_mismatch_is_rejected():
    t = Target.from_theory(FREE10)
    m = GaussianRBM(9, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(LftmlError, match="10 sites"):
        t.check_model(m)
    with pytest.raises(LftmlError, match="square"):
        Target.from_kernel(np.ones((3, 4)))
    with pytest.raises(LftmlError, match="positive definite"):
        Target.from_kernel(-np.eye(3))
    with pytest.raises(LftmlError, match="lattice_shape"):
        Target.from_data(np.zeros((5, 10)), lattice_shape=(3, 3))
