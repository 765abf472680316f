"""Tests of lftml.stats: Gamma method (Wolff 2004), autocorrelations, jackknife, bootstrap.

Statistical tests use fixed seeds and tolerances derived from the quoted errors.
The reference process is AR(1), x_{t+1} = a x_t + sqrt(1 - a^2) eta_t, started in
equilibrium: rho(t) = a^t, Var x = 1, tau_int = 1/2 + a/(1 - a) = (1 + a) / (2 (1 - a)).
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
from scipy.signal import lfilter

from lftml.errors import LftmlError
from lftml.stats import (
    Estimate,
    autocorrelation_function,
    bootstrap,
    format_value_error,
    gamma_method,
    gamma_method_derived,
    integrated_autocorrelation_time,
    jackknife,
)


def ar1(a: float, n_configs: int, n_chains: int, rng: np.random.Generator) -> np.ndarray:
    """Equilibrium AR(1) chains, shape (n_configs, n_chains), unit variance."""
    eta = rng.standard_normal((n_configs, n_chains))
    x_before = rng.standard_normal((1, n_chains))  # x_{-1} from the stationary N(0, 1)
    return lfilter([math.sqrt(1 - a * a)], [1.0, -a], eta, axis=0, zi=a * x_before)[0]


def tau_exact(a: float) -> float:
    return 0.5 * (1 + a) / (1 - a)


def error_of_error_rel(est: Estimate, x2: Estimate) -> float:
    """Relative statistical uncertainty of a quoted error sqrt(2 tau Gamma0 / N).

    error^2 is proportional to tau_int * Gamma(0): relative uncertainty
    (1/2) sqrt((d tau / tau)^2 + (d Gamma0 / Gamma0)^2), with d Gamma0 / Gamma0 taken from the
    Gamma-method error of <x^2> (mean-zero data, so Gamma(0) ~ <x^2>).
    """
    return 0.5 * math.hypot(est.tau_int_error / est.tau_int, x2.error / x2.value)


# ------------------------------------------------------------------------------ AR(1) exact


@pytest.mark.parametrize(
    ("a", "n_configs", "n_chains", "seed"),
    [(0.8, 200_000, 1, 11), (0.8, 2000, 64, 12), (0.5, 2000, 64, 13)],
    ids=["one_long_chain", "64_short_chains_a0.8", "64_short_chains_a0.5"],
)
def test_ar1_tau_int_and_error_match_exact_values_within_quoted_errors(a, n_configs, n_chains, seed):
    rng = np.random.default_rng(seed)
    x = ar1(a, n_configs, n_chains, rng)
    est = gamma_method(x)
    tau = tau_exact(a)
    n_total = n_configs * n_chains
    assert est.n_samples == n_total
    # tau_int: z-score with the Madras-Sokal error
    assert abs(est.tau_int - tau) / est.tau_int_error < 4
    # mean: exact value 0
    assert abs(est.value) / est.error < 4
    # error of the mean vs the exact asymptotic error sqrt(2 tau / N) (Var x = 1)
    exact_error = math.sqrt(2 * tau / n_total)
    rel_tol = 4 * error_of_error_rel(est, gamma_method(x**2))
    assert abs(est.error / exact_error - 1) < rel_tol
    assert rel_tol < 0.1  # the test has teeth


def test_uncorrelated_data_give_tau_int_one_half_and_naive_error():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(100_000)
    est = gamma_method(x)
    assert abs(est.tau_int - 0.5) / est.tau_int_error < 4
    naive = x.std(ddof=1) / math.sqrt(x.size)
    assert abs(est.error / naive - 1) < 4 * error_of_error_rel(est, gamma_method(x**2))


def test_error_is_honest_coverage_of_one_sigma_interval_is_68_percent():
    """Over 400 independent short AR(1) runs, |mean - 0| < error in ~68.3% of cases."""
    rng = np.random.default_rng(2024)
    n_rep, a = 400, 0.7
    runs = ar1(a, 500, n_rep, rng)
    covered = sum(abs(e.value) < e.error for e in (gamma_method(runs[:, r]) for r in range(n_rep)))
    p = math.erf(1 / math.sqrt(2))
    sigma = math.sqrt(p * (1 - p) / n_rep)  # binomial
    assert abs(covered / n_rep - p) < 4 * sigma


def test_global_mean_over_many_short_chains_is_unbiased_where_per_chain_means_are_not():
    """256 chains x 100 configs, tau_int = 2.83: per-chain means bias Gamma(t) by ~ -2 tau Gamma0/N_r."""
    a, n_configs, n_chains = 0.7, 100, 256
    rng = np.random.default_rng(7)
    x = ar1(a, n_configs, n_chains, rng)
    est = gamma_method(x)
    assert abs(est.tau_int - tau_exact(a)) / est.tau_int_error < 4

    # naive alternative: subtract each chain's own mean, same window and normalisation
    d = x - x.mean(axis=0)
    gamma = np.array([np.sum(d[: n_configs - t] * d[t:]) / (n_chains * (n_configs - t)) for t in range(est.window + 1)])
    tau_per_chain = 0.5 + gamma[1:].sum() / gamma[0]
    assert (tau_exact(a) - tau_per_chain) / est.tau_int_error > 4


def test_autocorrelation_function_matches_direct_sum_and_ar1_exponential():
    rng = np.random.default_rng(5)
    x = ar1(0.6, 300, 3, rng)
    rho = autocorrelation_function(x, max_lag=20)
    d = x - x.mean()
    direct = np.array([np.sum(d[: 300 - t] * d[t:]) / (3 * (300 - t)) for t in range(21)])
    np.testing.assert_allclose(rho, direct / direct[0], rtol=1e-10, atol=1e-12)
    assert autocorrelation_function(x).shape == (151,)

    long = ar1(0.6, 10**6, 1, rng)[:, 0]
    start = time.perf_counter()
    rho_long = autocorrelation_function(long, max_lag=5)
    assert time.perf_counter() - start < 2.0
    # statistical error of rho(t) for AR(1) is O(sqrt(2 tau / N)) ~ 0.002
    np.testing.assert_allclose(rho_long, 0.6 ** np.arange(6), atol=0.01)


def test_gamma_method_on_1000_by_64_takes_milliseconds():
    x = ar1(0.5, 1000, 64, np.random.default_rng(0))
    gamma_method(x)
    start = time.perf_counter()
    for _ in range(20):
        gamma_method(x)
    assert (time.perf_counter() - start) / 20 < 0.02


def test_integrated_autocorrelation_time_helper_agrees_with_gamma_method():
    x = ar1(0.5, 5000, 4, np.random.default_rng(1))
    est = gamma_method(x, S=1.5)
    assert integrated_autocorrelation_time(x, S=1.5) == (est.tau_int, est.tau_int_error)


# ------------------------------------------------------------------------------ derived


def test_susceptibility_of_iid_gaussian_has_exact_error_v_sigma2_sqrt_2_over_n():
    """chi = V(<M^2> - <M>^2); for iid M ~ N(0, s^2): chi -> V s^2, error -> V s^2 sqrt(2/N)."""
    rng = np.random.default_rng(21)
    volume, s, n = 64.0, 0.3, 200_000
    m = s * rng.standard_normal(n)
    est = gamma_method_derived(lambda m1, m2: volume * (m2 - m1**2), m, m**2)
    exact_value = volume * s**2
    exact_error = volume * s**2 * math.sqrt(2 / n)
    assert abs(est.value - exact_value) / est.error < 4
    # relative uncertainty of the error: Gamma0 of M^2 fluctuates by sqrt(56/4)/sqrt(N)
    # (Gaussian moments: Var[(M^2 - s^2)^2] = 56 s^8), tau_int by its Madras-Sokal error
    rel = 0.5 * math.hypot(est.tau_int_error / est.tau_int, math.sqrt(14.0 / n))
    assert abs(est.error / exact_error - 1) < 4 * rel
    # exact gradient gives the same answer as finite differences
    exact_grad = gamma_method_derived(
        lambda m1, m2: volume * (m2 - m1**2), m, m**2, gradient=lambda m1, m2: (-2 * volume * m1, volume)
    )
    assert exact_grad.error == pytest.approx(est.error, rel=1e-6)


def test_binder_cumulant_of_gaussian_data_is_zero_within_error():
    rng = np.random.default_rng(22)
    m = ar1(0.5, 5000, 16, rng)
    est = gamma_method_derived(lambda m2, m4: 1 - m4 / (3 * m2**2), m**2, m**4)
    assert est.error > 0
    assert abs(est.value) / est.error < 4


def test_derived_identity_reproduces_primary_gamma_method():
    x = ar1(0.7, 4000, 8, np.random.default_rng(23))
    primary = gamma_method(x)
    derived = gamma_method_derived(lambda a: a, x)
    assert derived.value == pytest.approx(primary.value, rel=1e-12)
    assert derived.error == pytest.approx(primary.error, rel=1e-6)
    assert derived.tau_int == pytest.approx(primary.tau_int, rel=1e-6)


# ---------------------------------------------------------------------- pyerrors cross-check


@pytest.fixture(scope="module")
def pe():
    with warnings.catch_warnings():  # pyerrors imports the deprecated scipy.odr
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip(
            "pyerrors", reason="pyerrors (optional test dependency) provides the reference Gamma method"
        )


def test_primary_agrees_with_pyerrors_on_one_long_chain(pe):
    x = ar1(0.9, 50_000, 1, np.random.default_rng(31))[:, 0]
    ours = gamma_method(x, S=2.0)
    ref = pe.Obs([x], ["ens"])
    ref.gamma_method(S=2.0)
    assert ours.value == pytest.approx(ref.value, rel=1e-12, abs=1e-14)
    assert ours.window == ref.e_windowsize["ens"]
    # same error formula; tau_int differs only in how the O(1/N) bias correction is applied
    assert ours.error == pytest.approx(ref.dvalue, rel=1e-8)
    assert ours.tau_int == pytest.approx(ref.e_tauint["ens"], rel=1e-3)
    assert ours.tau_int_error == pytest.approx(ref.e_dtauint["ens"], rel=1e-2)


def test_derived_susceptibility_and_ratio_agree_with_pyerrors(pe):
    rng = np.random.default_rng(32)
    m = ar1(0.8, 50_000, 1, rng)[:, 0]
    b = 2.0 + ar1(0.5, 50_000, 1, rng)[:, 0]
    volume = 100.0
    pm, pm2, pb = (pe.Obs([v], ["ens"]) for v in (m, m**2, b))

    chi_ref = volume * (pm2 - pm**2)
    chi_ref.gamma_method(S=2.0)
    chi = gamma_method_derived(lambda m1, m2: volume * (m2 - m1**2), m, m**2)
    assert chi.value == pytest.approx(chi_ref.value, rel=1e-12)
    assert chi.error == pytest.approx(chi_ref.dvalue, rel=1e-5)  # finite-difference gradient
    assert chi.tau_int == pytest.approx(chi_ref.e_tauint["ens"], rel=1e-3)

    ratio_ref = pm2 / pb
    ratio_ref.gamma_method(S=2.0)
    ratio = gamma_method_derived(lambda u, v: u / v, m**2, b)
    assert ratio.value == pytest.approx(ratio_ref.value, rel=1e-12)
    assert ratio.error == pytest.approx(ratio_ref.dvalue, rel=1e-5)
    assert ratio.tau_int == pytest.approx(ratio_ref.e_tauint["ens"], rel=1e-3)


# ------------------------------------------------------------------- jackknife and bootstrap


def test_jackknife_and_bootstrap_agree_with_gamma_method_for_uncorrelated_data():
    rng = np.random.default_rng(41)
    x = 1.0 + rng.standard_normal((4000, 5))
    n_bins = 200
    # relative uncertainty of a jackknife error with n bins ~ 1/sqrt(2(n-1)); of a bootstrap
    # error with n_boot samples ~ 1/sqrt(2 n_boot) on top of that of the data; 4 sigma
    tol_jack = 4 / math.sqrt(2 * (n_bins - 1))
    tol_boot = 4 * math.hypot(1 / math.sqrt(2 * 1000), 1 / math.sqrt(2 * x.shape[0]))
    for func, observables in [
        (lambda a: a, (x,)),
        (lambda a, a2: a2 - a**2, (x, x**2)),  # variance: a derived, non-linear quantity
    ]:
        gm = gamma_method_derived(func, *observables)
        jv, je = jackknife(func, *observables, n_bins=n_bins)
        bv, be = bootstrap(func, *observables, n_boot=1000, rng=np.random.default_rng(42))
        assert jv == pytest.approx(gm.value, rel=1e-12) and bv == pytest.approx(gm.value, rel=1e-12)
        assert abs(je / gm.error - 1) < tol_jack
        assert abs(be / gm.error - 1) < tol_boot


def test_binned_jackknife_and_bootstrap_capture_autocorrelation():
    """With bins >> tau_int, binned errors approach the Gamma-method error of correlated data."""
    x = ar1(0.8, 20_000, 4, np.random.default_rng(43))
    gm = gamma_method(x)
    naive = x.std() / math.sqrt(x.size)
    _, je = jackknife(lambda a: a, x, n_bins=40)  # bins of 500 configs, tau_int = 4.5
    _, be = bootstrap(lambda a: a, x, n_boot=800, rng=np.random.default_rng(44), bin_size=500)
    assert je > 2 * naive and be > 2 * naive
    assert abs(je / gm.error - 1) < 4 / math.sqrt(2 * 39)
    assert abs(be / gm.error - 1) < 4 * math.hypot(1 / math.sqrt(2 * 39), 1 / math.sqrt(2 * 800))


def test_bootstrap_is_reproducible_with_the_same_generator_seed():
    x = np.random.default_rng(45).standard_normal((500, 2))
    first = bootstrap(np.mean, x, n_boot=200, rng=np.random.default_rng(9))
    second = bootstrap(np.mean, x, n_boot=200, rng=np.random.default_rng(9))
    assert first == second


# ------------------------------------------------------------------- edge cases, bad input


def test_constant_data_give_zero_error_and_tau_one_half_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for data in (np.full(100, 0.1), np.full((50, 4), -3.0)):
            est = gamma_method(data)
            assert (est.error, est.tau_int, est.tau_int_error) == (0.0, 0.5, 0.0)
            assert est.value == pytest.approx(data.flat[0], rel=1e-15)
        rho = autocorrelation_function(np.ones(40), max_lag=3)
        np.testing.assert_array_equal(rho, [1.0, 0.0, 0.0, 0.0])
        derived = gamma_method_derived(lambda a, b: a * b, np.full(30, 2.0), np.full(30, 3.0))
        assert (derived.value, derived.error) == (6.0, 0.0)


@pytest.mark.parametrize(
    "bad",
    [
        np.array([1.0, 2.0, 3.0]),  # too few samples
        np.array([1.0, np.nan, 2.0, 3.0, 4.0]),
        np.array([1.0, np.inf, 2.0, 3.0, 4.0]),
        np.zeros((10, 2, 3)),  # wrong ndim
        np.zeros(()),
        np.zeros((10, 0)),
        np.ones(10) + 1j,  # complex
        ["a", "b", "c", "d", "e"],
    ],
    ids=["too_few", "nan", "inf", "ndim3", "scalar", "no_chains", "complex", "strings"],
)
def test_bad_input_raises_lftml_error(bad):
    with pytest.raises(LftmlError):
        gamma_method(bad)


def test_bad_arguments_raise_lftml_error():
    x = np.random.default_rng(0).standard_normal(100)
    with pytest.raises(LftmlError, match="different shapes"):
        gamma_method_derived(lambda a, b: a / b, x, x[:50])
    with pytest.raises(LftmlError, match="S="):
        gamma_method(x, S=0)
    with pytest.raises(LftmlError, match="func"):
        gamma_method_derived(lambda a: float("nan"), x)
    with pytest.raises(LftmlError, match="gradient"):
        gamma_method_derived(lambda a, b: a + b, x, x, gradient=lambda a, b: (1.0,))
    with pytest.raises(LftmlError, match="max_lag"):
        autocorrelation_function(x, max_lag=100)
    with pytest.raises(LftmlError, match="n_bins"):
        jackknife(np.mean, x, n_bins=1)
    with pytest.raises(LftmlError, match="rng"):
        bootstrap(np.mean, x, rng=np.random.RandomState(0))
    with pytest.raises(LftmlError, match="bin_size"):
        bootstrap(np.mean, x, rng=np.random.default_rng(0), bin_size=80)
    with pytest.raises(LftmlError, match="no observables"):
        jackknife(np.mean)


# ------------------------------------------------------------------------------ Estimate


def test_estimate_to_dict_is_plain_floats_and_str_is_parenthesised_error():
    est = Estimate(np.float64(1.23456), np.float64(0.0567), 2.5, 0.3, 7, 1000)
    d = est.to_dict()
    assert d == {"value": 1.23456, "error": 0.0567, "tau_int": 2.5, "tau_int_error": 0.3}
    assert all(type(v) is float for v in d.values())
    assert str(est) == "1.235(57)"
    assert format_value_error(-0.5, 0.012) == "-0.500(12)"
    assert format_value_error(1.2345, 0.0996) == "1.23(10)"
    assert format_value_error(1234.5, 56.7) == "1234(57)"
    assert format_value_error(2.0, 0.0) == "2(0)"
