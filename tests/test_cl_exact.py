"""Exact answers of the complex Langevin test models: closed forms against independent quadrature."""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest

from lftml.complex.bose_gas import BoseGas, free_bose_gas_discrete, free_bose_gas_exact
from lftml.complex.exact import (
    extrapolate_step_size,
    gaussian_z2_euler,
    gaussian_z2_heun,
    quartic_moments,
    u1_exp_ix,
    u1_quadrature,
)
from lftml.errors import LftmlError


@pytest.mark.parametrize("sigma", [1 + 1j, 2.0, 0.5 - 3j])
def test_quartic_quadrature_with_zero_coupling_is_gaussian(sigma):
    m = quartic_moments(sigma, 0.0, orders=(2, 4))
    assert abs(m[2] - 1 / sigma) < 1e-9
    assert abs(m[4] - 3 / sigma**2) < 1e-8


@pytest.mark.parametrize("sigma", [1 + 1j, -1 + 4j])
def test_quartic_moments_match_brute_force_riemann_sum_on_real_line(sigma):
    x = np.linspace(-8, 8, 400001)
    w = np.exp(-(sigma * x**2 / 2 + x**4 / 4))
    z0 = np.trapezoid(w, x)
    m = quartic_moments(sigma, 1.0)
    assert abs(m[2] - np.trapezoid(x**2 * w, x) / z0) < 1e-8
    assert abs(m[4] - np.trapezoid(x**4 * w, x) / z0) < 1e-8


def test_quartic_moments_satisfy_schwinger_dyson_equation():
    # <d/dz (z e^{-S})> = 0  =>  1 - sigma <z^2> - lam <z^4> = 0
    for sigma, lam in [(1 + 1j, 1.0), (-1 + 4j, 1.0), (1.0, 0.5 + 0.5j)]:
        m = quartic_moments(sigma, lam)
        assert abs(1 - sigma * m[2] - lam * m[4]) < 1e-9


@pytest.mark.parametrize("beta,kappa,mu", [(1.0, 1.0, 1.0), (0.0, 1.0, 2.0), (0.5, 2.0, 0.3), (2.0, 0.25, 3.0), (0.0, 0.0, 1.0)])
def test_u1_closed_form_equals_direct_quadrature(beta, kappa, mu):
    exact = u1_exp_ix(beta, kappa, mu)
    quad = u1_quadrature(beta, kappa, mu)
    assert abs(exact[0] - quad[0]) < 1e-10
    assert abs(exact[1] - quad[1]) < 1e-10


def test_u1_xi_theta_decomposition():
    beta, kappa, mu = 0.7, 1.3, 0.9
    xi = math.sqrt(beta**2 + kappa**2 + 2 * beta * kappa * math.cosh(mu))
    theta = math.atanh(kappa * math.sinh(mu) / (beta + kappa * math.cosh(mu)))
    for x in np.linspace(-3, 3, 7):
        lhs = beta * math.cos(x) + kappa * cmath.cos(x - 1j * mu)
        assert abs(lhs - xi * cmath.cos(x - 1j * theta)) < 1e-12
    from scipy.special import iv

    plus, minus = u1_exp_ix(beta, kappa, mu)
    assert abs(plus - math.exp(-theta) * iv(1, xi) / iv(0, xi)) < 1e-12
    assert abs(minus - math.exp(theta) * iv(1, xi) / iv(0, xi)) < 1e-12


def test_gaussian_discrete_formulas_match_lyapunov_series():
    sigma, eps = 1.0 + 1.0j, 0.1
    # Euler: z' = a z + sqrt(eps) eta, <z^2> = 2 eps sum a^{2k}
    a = 1 - eps * sigma
    assert abs(gaussian_z2_euler(sigma, eps) - 2 * eps / (1 - a * a)) < 1e-12
    g, b = 1 - eps * sigma + (eps * sigma) ** 2 / 2, 1 - eps * sigma / 2
    assert abs(gaussian_z2_heun(sigma, eps) - 2 * eps * b * b / (1 - g * g)) < 1e-12
    assert abs(gaussian_z2_heun(sigma, 1e-3) - 1 / sigma) < 1e-6  # O(eps^2)


def test_free_bose_gas_lattice_sums_reproduce_published_numbers():
    # issue / Aarts PRL 102 (2009) 131601: 4^4, m = 1
    assert round(free_bose_gas_exact((4, 4, 4, 4), 1.0, 0.5)["density"].real, 6) == 0.005464
    assert round(free_bose_gas_exact((4, 4, 4, 4), 1.0, 0.9)["density"].real, 6) == 0.068605
    ex = free_bose_gas_exact((4, 4, 4, 4), 1.0, 0.5)
    assert abs(ex["density"].imag) < 1e-14 and abs(ex["phi2"].imag) < 1e-14


def test_free_bose_gas_density_is_mu_derivative_of_log_z():
    shape, m, mu, h = (2, 3, 4), 1.2, 0.6, 1e-5
    lat_p = np.meshgrid(*[2 * np.pi * np.arange(L) / L for L in shape], indexing="ij")

    def log_z(mu_):
        big_m = m * m + sum(4 * np.sin(p / 2) ** 2 for p in lat_p[:-1]) + 2 - 2 * np.cosh(mu_ - 1j * lat_p[-1])
        return -np.log(big_m).sum()

    v = np.prod(shape)
    numeric = (log_z(mu + h) - log_z(mu - h)) / (2 * h) / v
    assert abs(numeric - free_bose_gas_exact(shape, m, mu)["density"]) < 1e-8


@pytest.mark.parametrize("mu", [0.0, 0.5, 0.9])
def test_dense_stationary_covariance_at_zero_step_equals_lattice_sums(mu):
    # checks action, drift, density and phi2 operators of the CL model against the momentum sums
    exact = free_bose_gas_exact((2, 2, 4), 1.0, mu)
    dense = free_bose_gas_discrete((2, 2, 4), 1.0, mu, 0.0)
    for k in ("density", "phi2"):
        assert abs(exact[k] - dense[k]) < 1e-12


def test_free_bose_gas_refuses_unstable_mu():
    with pytest.raises(LftmlError, match="unstable"):
        free_bose_gas_exact((4, 4), 1.0, 1.2)
    with pytest.raises(LftmlError, match="--lam"):
        BoseGas((4, 4), m=1.0, lam=0.0, mu=1.2)


def test_step_size_extrapolation_is_exact_for_polynomials():
    eps = [0.01, 0.02, 0.04]
    vals = [0.5 - 0.5j + (1 + 2j) * e + (3 - 1j) * e * e for e in eps]
    v0, err = extrapolate_step_size(eps, vals, [1e-3 + 1e-3j] * 3, powers=(1, 2))
    assert abs(v0 - (0.5 - 0.5j)) < 1e-10
    assert err.real > 0 and err.imag > 0
