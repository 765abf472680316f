"""Interacting phi^4: independent algorithms agree, cold starts, and a published reference point.

No closed forms exist, so correctness is shown by agreement of algorithms with different
systematics: HMC (exact for any step) with two integrators, and Langevin (Heun, O(dt^2) bias)
extrapolated to dt = 0. Agreement is |a - b| < 4 sqrt(err_a^2 + err_b^2) with Gamma-method errors.
The slow test reproduces Schaich & Loinaz, Phys. Rev. D 79 (2009) 056008 [arXiv:0902.0045].
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lftml.analysis import summarize
from lftml.lattice import Lattice
from lftml.observables import measure
from lftml.run import RunConfig, initial_field, run
from lftml.samplers import HMC, Langevin, extrapolate
from lftml.theories import Phi4

K_SIGMA = 4.0

# 2d, 6x6, symmetric phase at this volume but strongly interacting (|M| ~ 0.17, chi ~ 1.6 vs the
# free-field 1/m2 < 0): the quartic term matters at the 100% level.
THEORY = Phi4.m2_lam4(Lattice((6, 6)), m2=-0.5, lam=1.5)


def assert_agree(a, ea, b, eb, what, k=K_SIGMA):
    sigma = math.hypot(ea, eb)
    assert sigma > 0
    z = (a - b) / sigma
    assert abs(z) < k, f"{what}: {a} +- {ea} vs {b} +- {eb} (z = {z:.2f})"


def chi_and_action(configs, theory):
    per = [measure(c, theory) for c in configs]
    M = np.stack([p["M"] for p in per])
    s = summarize(M, theory.lattice.volume, action_density=np.stack([p["action_density"] for p in per]))
    return s


def hmc_summary(integrator, n_steps, seed, n_configs=1000, theory=THEORY):
    # cold start: see the report on hot starts of strongly coupled theories
    sampler = HMC.from_trajectory(theory, traj_length=1.0, n_steps=n_steps, integrator=integrator)
    result = run(sampler, RunConfig(n_chains=32, n_configs=n_configs, n_therm=200, seed=seed, start="cold"))
    assert result.acceptance > 0.6
    return chi_and_action(result.configs, theory)


@pytest.fixture(scope="module")
def hmc_omelyan():
    return hmc_summary("omelyan", 5, seed=101)


def test_hmc_leapfrog_and_omelyan_agree_on_chi_action_density_and_binder(hmc_omelyan):
    lf = hmc_summary("leapfrog", 8, seed=102)
    for key in ("susceptibility", "action_density", "binder", "abs_magnetisation"):
        assert_agree(hmc_omelyan[key]["value"], hmc_omelyan[key]["error"], lf[key]["value"], lf[key]["error"], key)


def test_hmc_and_heun_langevin_extrapolated_to_zero_step_agree_on_chi_and_action_density(hmc_omelyan):
    dts = (0.03, 0.05, 0.07)
    lang = []
    for i, dt in enumerate(dts):
        result = run(Langevin(THEORY, dt, "heun"),
                     RunConfig(n_chains=32, n_configs=600, n_therm=round(5 / dt), every=round(0.5 / dt), seed=200 + i, start="cold"))
        lang.append(chi_and_action(result.configs, THEORY))
    for key in ("susceptibility", "action_density"):
        fit = extrapolate(dts, [s[key]["value"] for s in lang], [s[key]["error"] for s in lang], order=2)
        assert_agree(fit.value, fit.error, hmc_omelyan[key]["value"], hmc_omelyan[key]["error"], f"{key} HMC vs Langevin(dt->0)")
    # the test has teeth: the raw <S>/V at the largest step differs from HMC by many sigma
    raw = lang[-1]["action_density"]
    ref = hmc_omelyan["action_density"]
    assert abs(raw["value"] - ref["value"]) > 8 * math.hypot(raw["error"], ref["error"])


@pytest.mark.parametrize(
    "theory",
    [Phi4.m2_lam4(Lattice((6, 5)), m2=-1.0, lam=0.5), Phi4.hopping(Lattice((4, 4, 4)), kappa=0.3, lam=0.02),
     Phi4.m2_g(Lattice((8,)), m2=-2.0, g=3.0)],
    ids=["m2_lam4_2d", "hopping_3d", "m2_g_1d"],
)
def test_cold_start_is_plus_or_minus_the_mean_field_vev_with_a_random_sign_per_chain(theory):
    n_chains = 24
    phi = initial_field(theory, RunConfig(n_chains=n_chains, start="cold", seed=3), torch.device("cpu"))
    assert phi.shape == (n_chains, *theory.lattice.shape) and phi.dtype == torch.float64
    v = theory.mean_field_vev()
    # v minimises the constant-field potential (c_2 - d c_hop) v^2 + c_4 v^4, so the force on the
    # constant field +-v vanishes
    c_hop, c2, c4 = theory.coefficients
    d = theory.lattice.ndim
    assert v > 0 and abs(v - math.sqrt((c_hop * d - c2) / (2 * c4))) < 1e-14
    assert torch.max(torch.abs(theory.force(phi))).item() < 1e-12
    signs = phi.reshape(n_chains, -1)[:, 0] / v
    assert torch.equal(phi, signs.view(-1, *([1] * d)) * torch.full_like(phi, v))  # each chain constant
    assert set(signs.tolist()) == {1.0, -1.0}  # both vacua occur
    # per-chain streams: chain i's sign does not depend on how many chains are run
    few = initial_field(theory, RunConfig(n_chains=5, start="cold", seed=3), torch.device("cpu"))
    assert torch.equal(few, phi[:5])


def test_cold_start_vev_is_form_independent_and_zero_in_the_mean_field_symmetric_phase():
    lat = Lattice((4, 4))
    hop = Phi4.hopping(lat, kappa=0.3, lam=0.02)
    cont, s = hop.to_form("m2_lam4")
    assert abs(cont.mean_field_vev() - s * hop.mean_field_vev()) < 1e-12
    assert abs(cont.mean_field_vev() - math.sqrt(-cont["m2"] / cont["lam"])) < 1e-12
    sym = Phi4.m2_lam4(lat, m2=0.5, lam=1.0)
    assert sym.mean_field_vev() == 0.0
    phi = initial_field(sym, RunConfig(n_chains=3, start="cold"), torch.device("cpu"))
    assert torch.equal(phi, torch.zeros_like(phi))


@pytest.mark.slow
def test_schaich_loinaz_2d_L32_lambda_0p5_m2_minus_0p7_abs_magnetisation_and_binder():
    """Schaich & Loinaz, PRD 79 (2009) 056008: L = 32, lambda = 0.5, mu_0^2 = -0.7 in the
    (m2, lambda/4) normalisation (their eq. 1 is our m2_lam4 form): <|phi|> = 0.4346(64), where
    their phi is the volume-averaged field (our |M|), and U_L = 0.524. No error is quoted for U_L:
    that comparison uses our error only.

    Near-critical point: with trajectory length 3 (omelyan, 10 steps, acceptance ~ 0.9) the
    measured tau_int(|M|) is ~ 15 trajectories (short pilot run); 32 chains x 4000 trajectories
    give an error on <|M|> of ~ 0.003, below the published one.
    """
    theory = Phi4.m2_lam4(Lattice((32, 32)), m2=-0.7, lam=0.5)
    sampler = HMC.from_trajectory(theory, traj_length=3.0, n_steps=10, integrator="omelyan")
    result = run(sampler, RunConfig(n_chains=32, n_configs=4000, n_therm=400, seed=2009, start="cold"))
    M = np.stack([measure(c)["M"] for c in result.configs])
    s = summarize(M, theory.lattice.volume)
    absM, U = s["abs_magnetisation"], s["binder"]
    # our own error must be trustworthy: many tau_int in the run
    assert 4000 > 50 * absM["tau_int"]
    assert_agree(absM["value"], absM["error"], 0.4346, 0.0064, "<|M|> vs Schaich-Loinaz")
    assert_agree(U["value"], U["error"], 0.524, 0.0, "U_L vs Schaich-Loinaz (no published error)")


def test_schaich_loinaz_default_sibling_short_run_agrees_within_errors():
    """The default-suite sibling of the slow Schaich-Loinaz test: the same point (L = 32, lambda = 0.5,
    mu_0^2 = -0.7), 16 chains x 300 trajectories (~10 s). Our error on <|M|> (~0.017) is then larger
    than the published 0.0064, so the comparison is weaker than the slow test's, but it still fails
    for a wrong normalisation of the quartic term (lambda vs lambda/4 moves <|M|> by far more), a
    wrong sign of m2 (symmetric phase, <|M|> ~ 0.05), or a broken sampler. Measured: 0.448(17), U_L
    0.539(17), tau_int(|M|) ~ 22 trajectories."""
    theory = Phi4.m2_lam4(Lattice((32, 32)), m2=-0.7, lam=0.5)
    sampler = HMC.from_trajectory(theory, traj_length=3.0, n_steps=10, integrator="omelyan")
    result = run(sampler, RunConfig(n_chains=16, n_configs=300, n_therm=100, seed=2009, start="cold"))
    M = np.stack([measure(c)["M"] for c in result.configs])
    s = summarize(M, theory.lattice.volume)
    absM, U = s["abs_magnetisation"], s["binder"]
    assert 300 > 10 * absM["tau_int"]
    assert_agree(absM["value"], absM["error"], 0.4346, 0.0064, "<|M|> vs Schaich-Loinaz (short run)")
    assert_agree(U["value"], U["error"], 0.524, 0.0, "U_L vs Schaich-Loinaz (short run)")
