r"""Langevin dynamics on the free field: the exact finite-step-size stationary distribution, and
zero-step-size extrapolation.

For the free field the force is -K phi, diagonal in momentum space with curvature
k_p = p_hat^2 + m^2. Each Fourier mode (unitary normalisation) is an AR(1) process; with
a = k dt and xi ~ N(0, 1):

* Euler:  phi' = (1 - a) phi + sqrt(2 dt) xi, so the stationary variance v solves
  v = (1 - a)^2 v + 2 dt, i.e. v = 2 dt / (2a - a^2) = 1 / (k (1 - a/2)).
* Heun:   pred = (1 - a) phi + n, phi' = phi - (a/2)(phi + pred) + n with n = sqrt(2 dt) xi, i.e.
  phi' = (1 - a + a^2/2) phi + (1 - a/2) n, so v = 2 dt (1 - a/2)^2 / (1 - (1 - a + a^2/2)^2)
  = (1/k) (1 - a + a^2/4) / (1 - a + a^2/2 - a^3/8)  [1 - (1 - a + a^2/2)^2 = 2a (1 - a + a^2/2 - a^3/8)].

Hence <phi_x^2>(dt) = (1/V) sum_p v(k_p, dt) and chi_2(dt) = V <M^2> = v(m^2, dt) (the zero
mode). Both are checked at a step where the bias is many sigma, then the continuum values are
recovered by :func:`lftml.samplers.extrapolate`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lftml.analysis import summarize
from lftml.errors import LftmlError
from lftml.lattice import Lattice
from lftml.observables import measure
from lftml.run import RunConfig, run
from lftml.samplers import ChainRNG, Langevin, extrapolate
from lftml.samplers.stability import langevin_max_step
from lftml.stats import gamma_method
from lftml.theories import FreeScalar, Phi4

K_SIGMA = 4.0
M2 = 1.0
THEORY = FreeScalar(Lattice((6, 6)), M2)


def v_euler(k, dt):
    return 1.0 / (k * (1.0 - k * dt / 2.0))


def v_heun(k, dt):
    a = k * dt
    return (1.0 / k) * (1 - a + a * a / 4) / (1 - a + a * a / 2 - a**3 / 8)


V_EXACT = {"euler": v_euler, "heun": v_heun}


def exact_phi2(scheme, dt, theory=THEORY):
    return float(np.mean(V_EXACT[scheme](theory.spectrum(), dt)))


def exact_chi(scheme, dt, theory=THEORY):
    return float(V_EXACT[scheme](theory.m2, dt))


def assert_within(value, error, exact, what, k=K_SIGMA):
    assert error > 0, what
    z = (value - exact) / error
    assert abs(z) < k, f"{what}: {value} +- {error} vs {exact} (z = {z:.2f})"


def langevin_estimates(scheme, dt, n_configs=1000, n_chains=32, seed=0, theory=THEORY):
    """<phi^2> and chi_2 from a Langevin run: thermalise 5 / m^2 in Langevin time, measure every 0.5."""
    every = max(1, round(0.5 / dt))
    result = run(Langevin(theory, dt, scheme),
                 RunConfig(n_chains=n_chains, n_configs=n_configs, n_therm=round(5.0 / (theory.m2 * dt)), every=every, seed=seed))
    phi2 = gamma_method((result.configs**2).mean(dim=theory.lattice.dims).numpy())
    M = np.stack([measure(c)["M"] for c in result.configs])
    chi = summarize(M, theory.lattice.volume)["susceptibility"]
    return phi2, chi


def test_stationary_variance_formulas_follow_from_the_per_mode_linear_recursions():
    """The closed forms above versus iterating the exact second-moment recursion of one mode."""
    for k in (0.3, 1.0, 4.5, 8.9):
        for dt in (0.01, 0.1, 0.2):
            a = k * dt
            for scheme, (c, b) in {"euler": (1 - a, 1.0), "heun": (1 - a + a * a / 2, 1 - a / 2)}.items():
                v = 0.0
                for _ in range(20000):
                    v = c * c * v + 2 * dt * b * b
                assert abs(v - V_EXACT[scheme](k, dt)) < 1e-10 * v


@pytest.mark.parametrize("scheme", ["euler", "heun"])
def test_langevin_finite_step_phi2_and_chi_equal_exact_finite_dt_values_not_continuum(scheme):
    dt = 0.15  # a k_max = 1.35: a strongly biased regime, below the stability limit 2/9
    phi2, chi = langevin_estimates(scheme, dt, n_configs=1000, seed=1)
    assert_within(phi2.value, phi2.error, exact_phi2(scheme, dt), f"{scheme} <phi^2>(dt)")
    assert_within(chi["value"], chi["error"], exact_chi(scheme, dt), f"{scheme} chi(dt)")
    # the test can fail: the continuum value is many sigma away (Euler above, Heun below)
    assert abs(phi2.value - THEORY.phi2()) > 20 * phi2.error
    if scheme == "euler":
        assert abs(chi["value"] - THEORY.susceptibility()) > 4 * chi["error"]


# Euler: <phi^2>(dt) has a resolvable dt^2 term at these steps (premise checked below), so the fit
# is a0 + a1 dt + a2 dt^2; Heun: a0 + a2 dt^2.
EXTRAPOLATIONS = {
    "euler": dict(dts=(0.02, 0.04, 0.06, 0.08), order=1, degree=2),
    "heun": dict(dts=(0.03, 0.05, 0.07), order=2, degree=1),
}


@pytest.mark.parametrize("scheme", ["euler", "heun"])
def test_extrapolation_to_zero_step_recovers_continuum_phi2_and_chi(scheme):
    spec = EXTRAPOLATIONS[scheme]
    runs = [langevin_estimates(scheme, dt, n_configs=800, seed=10 + i) for i, dt in enumerate(spec["dts"])]
    for name, values, errors, exact, exact_dt in [
        ("<phi^2>", [p.value for p, _ in runs], [p.error for p, _ in runs], THEORY.phi2(), exact_phi2),
        ("chi_2", [c["value"] for _, c in runs], [c["error"] for _, c in runs], THEORY.susceptibility(), exact_chi),
    ]:
        fit = extrapolate(spec["dts"], values, errors, order=spec["order"], degree=spec["degree"])
        assert_within(fit.value, fit.error, exact, f"{scheme} extrapolated {name}")
        # premise: the same fit to the EXACT finite-dt values is unbiased at this precision, so
        # a failure above means wrong dynamics, not a too-simple fit model
        ideal = extrapolate(spec["dts"], [exact_dt(scheme, dt) for dt in spec["dts"]], errors,
                            order=spec["order"], degree=spec["degree"])
        assert abs(ideal.value - exact) < 0.5 * fit.error
    # and the raw <phi^2> at the largest step is far from the continuum (extrapolation is needed)
    p_last = runs[-1][0]
    assert abs(p_last.value - THEORY.phi2()) > 10 * p_last.error


def test_extrapolate_recovers_intercept_of_exact_polynomial_data_and_validates_input():
    dts = np.array([0.05, 0.1, 0.2])
    fit = extrapolate(dts, 1.5 + 3.0 * dts**2, [0.01] * 3, order=2)
    assert abs(fit.value - 1.5) < 1e-12 and abs(fit.coefficients[1] - 3.0) < 1e-10 and fit.dof == 1
    assert fit.chi2 < 1e-20
    # error propagation: intercept error of a straight-line fit through two points
    fit2 = extrapolate([1.0, 2.0], [3.0, 4.0], [0.1, 0.1], order=1)
    assert abs(fit2.value - 2.0) < 1e-12 and abs(fit2.error - 0.1 * math.sqrt(5.0)) < 1e-12
    with pytest.raises(LftmlError):
        extrapolate([0.1, 0.2], [1.0, 1.1], [0.1, 0.1], order=1, degree=2)
    with pytest.raises(LftmlError):
        extrapolate([0.1, 0.2], [1.0, 1.1], [0.1, 0.0])
    with pytest.raises(LftmlError):
        extrapolate([0.1, 0.2], [1.0], [0.1, 0.1])


@pytest.mark.parametrize("scheme", ["euler", "heun"])
def test_unstable_langevin_step_raises_lftml_error_and_stable_one_does_not(scheme):
    dt_max = langevin_max_step(THEORY)
    assert abs(dt_max - 2.0 / THEORY.eigenvalues().max()) < 1e-12  # a k_max = 2 at the limit
    Langevin(THEORY, 0.99 * dt_max, scheme)
    with pytest.raises(LftmlError, match="unstable"):
        Langevin(THEORY, 1.01 * dt_max, scheme)
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(LftmlError):
            Langevin(THEORY, bad, scheme)
    with pytest.raises(LftmlError):
        Langevin(THEORY, 0.1, "rk4")


def test_diverging_langevin_field_raises_lftml_error_not_nan():
    """The phi^4 force grows like phi^3: a field far from the vacuum explodes at a step that is
    linearly stable at phi = 0. The sampler must stop with a clear error."""
    theory = Phi4.m2_lam4(Lattice((4, 4)), m2=0.5, lam=2.0)
    sampler = Langevin(theory, 0.9 * langevin_max_step(theory), "euler")
    state = sampler.init(torch.full((2, 4, 4), 30.0, dtype=torch.float64))
    rng = ChainRNG.from_seed(0, 2)
    with pytest.raises(LftmlError, match="diverged"):
        with np.errstate(all="ignore"):
            for _ in range(50):
                state, _ = sampler.step(state, rng)


def test_langevin_chain_i_is_independent_of_the_number_of_chains_and_seeded():
    sampler = Langevin(THEORY, 0.1, "heun")
    a = run(sampler, RunConfig(n_chains=2, n_configs=5, n_therm=3, every=2, seed=4))
    b = run(sampler, RunConfig(n_chains=4, n_configs=5, n_therm=3, every=2, seed=4))
    c = run(sampler, RunConfig(n_chains=2, n_configs=5, n_therm=3, every=2, seed=5))
    assert torch.equal(a.configs, b.configs[:, :2]) and not torch.equal(a.configs, c.configs)


def exact_propagator(scheme, dt, theory=THEORY):
    """G_dt(x) = (1/V) sum_p e^{ipx} v(k_p, dt): the finite-step propagator, per mode as above."""
    return np.fft.ifftn(V_EXACT[scheme](theory.spectrum(), dt)).real


def propagator_and_binder(configs, separations):
    """Per-configuration G(x) estimators (averaged over sources) and M; shapes (n_configs, n_chains)."""
    G = {x: (configs * torch.roll(configs, shifts=(-x[0], -x[1]), dims=(-2, -1))).mean(dim=(-2, -1)).numpy()
         for x in separations}
    M = configs.mean(dim=(-2, -1)).numpy()
    return G, M


SEPARATIONS = [(1, 0), (1, 1), (2, 1), (3, 3)]


def test_langevin_propagator_at_finite_step_is_the_exact_finite_step_one_and_binder_is_zero():
    """G(x) at dt = 0.15 (Euler) equals the finite-dt propagator, not the continuum one; U_L = 0 at any dt
    (the stationary distribution of linear Langevin dynamics is Gaussian)."""
    dt = 0.15
    result = run(Langevin(THEORY, dt, "euler"),
                 RunConfig(n_chains=32, n_configs=1000, n_therm=round(5.0 / dt), every=3, seed=21))
    G, M = propagator_and_binder(result.configs, SEPARATIONS)
    exact_dt, exact_0 = exact_propagator("euler", dt), THEORY.propagator()
    far = 0
    for x in SEPARATIONS:
        e = gamma_method(G[x])
        assert_within(e.value, e.error, exact_dt[x], f"euler G{x}(dt)")
        far += abs(e.value - exact_0[x]) > 4 * e.error
    assert far >= 1, "the continuum propagator must be resolvably different at this step"
    U = summarize(M, THEORY.lattice.volume)["binder"]
    assert_within(U["value"], U["error"], 0.0, "Binder cumulant of the Gaussian stationary state")


def test_euler_propagator_extrapolated_to_zero_step_matches_the_exact_propagator():
    spec = EXTRAPOLATIONS["euler"]
    runs = []
    for i, dt in enumerate(spec["dts"]):
        every = max(1, round(0.5 / dt))
        res = run(Langevin(THEORY, dt, "euler"),
                  RunConfig(n_chains=32, n_configs=800, n_therm=round(5.0 / dt), every=every, seed=30 + i))
        runs.append(propagator_and_binder(res.configs, SEPARATIONS)[0])
    exact = THEORY.propagator()
    for x in SEPARATIONS:
        est = [gamma_method(r[x]) for r in runs]
        fit = extrapolate(spec["dts"], [e.value for e in est], [e.error for e in est], order=1, degree=2)
        assert_within(fit.value, fit.error, exact[x], f"extrapolated G{x}")
