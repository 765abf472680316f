"""HMC on the free field against its exact results, reproducibility, stability and adaptation.

Every Monte Carlo comparison is |estimate - exact| < 4 sigma with sigma from the Gamma method
(chains are replicas). Exact values come from :class:`lftml.theories.FreeScalar`, whose closed
forms are tested to round-off in ``test_engine_theories.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import erfcinv

from lftml.analysis import correlator, summarize
from lftml.errors import LftmlError
from lftml.lattice import Lattice
from lftml.observables import measure
from lftml.run import RunConfig, run
from lftml.samplers import HMC, HMCState
from lftml.samplers.integrators import INTEGRATORS
from lftml.samplers.stability import max_stable_step, omega2_max
from lftml.stats import gamma_method
from lftml.theories import FreeScalar, Phi4

K_SIGMA = 4.0


def assert_within(est_value, est_error, exact, what, k=K_SIGMA):
    assert est_error > 0, what
    z = (est_value - exact) / est_error
    assert abs(z) < k, f"{what}: {est_value} +- {est_error} vs exact {exact} (z = {z:.2f})"


def histories(configs: torch.Tensor, theory) -> dict[str, np.ndarray]:
    """measure() over a (n_configs, n_chains, *shape) history -> dict of (n_configs, n_chains, ...)."""
    per = [measure(c, theory) for c in configs]
    return {k: np.stack([p[k] for p in per]) for k in per[0]}


def two_point(configs: torch.Tensor, lattice: Lattice) -> np.ndarray:
    """Per configuration G(x) = (1/V) sum_y phi(y + x) phi(y), shape (n_configs, n_chains, *shape)."""
    f = torch.fft.fftn(configs, dim=lattice.dims)
    return (torch.fft.ifftn(f.conj() * f, dim=lattice.dims).real / lattice.volume).numpy()


# --------------------------------------------------------------------------- free field, 2d


@pytest.fixture(scope="module")
def free2d_run():
    # trajectory length 0.9: every mode rotates by an MD angle in (0.2, 0.85) pi per trajectory,
    # away from the resonance omega tau = pi (see the resonance test below)
    theory = FreeScalar(Lattice((8, 8)), 0.5)
    sampler = HMC.from_trajectory(theory, traj_length=0.9, n_steps=3, integrator="omelyan")
    result = run(sampler, RunConfig(n_chains=32, n_configs=1000, n_therm=100, every=1, seed=2024, start="hot"))
    assert result.configs.shape == (1000, 32, 8, 8) and result.configs.dtype == torch.float64
    assert 0.7 < result.acceptance < 1.0
    return theory, result, histories(result.configs, theory)


def test_hmc_free_field_phi_squared_and_propagator_match_exact_within_4_sigma(free2d_run):
    theory, result, _ = free2d_run
    G_mc = two_point(result.configs, theory.lattice)
    G_exact = theory.propagator()
    for x in [(0, 0), (0, 1), (1, 0), (1, 1), (0, 4), (2, 3), (4, 4)]:
        est = gamma_method(G_mc[(slice(None), slice(None), *x)])
        assert_within(est.value, est.error, G_exact[x], f"G{x}")
    # <phi^2> = G(0): once more through the site average of phi^2
    phi2 = (result.configs**2).mean(dim=(-2, -1)).numpy()
    est = gamma_method(phi2)
    assert_within(est.value, est.error, theory.phi2(), "<phi^2>")


def test_hmc_free_field_susceptibility_is_one_over_m2_and_binder_is_zero(free2d_run):
    theory, result, obs = free2d_run
    summary = summarize(obs["M"], theory.lattice.volume, action_density=obs["action_density"])
    assert_within(summary["magnetisation"]["value"], summary["magnetisation"]["error"], 0.0, "<M>")
    assert_within(summary["susceptibility"]["value"], summary["susceptibility"]["error"], 1 / 0.5, "chi_2")
    assert_within(summary["binder"]["value"], summary["binder"]["error"], 0.0, "U_L")
    # <S>/V = 1/2 exactly (equipartition: S = phi^T K phi / 2 has <S> = V/2)
    assert_within(summary["action_density"]["value"], summary["action_density"]["error"], 0.5, "<S>/V")


def test_hmc_free_field_connected_correlator_and_effective_mass_match_exact(free2d_run):
    theory, _, obs = free2d_run
    out = correlator(obs["slice_mean"], obs["M"], theory.lattice.volume)
    exact = theory.zero_momentum_correlator()
    assert [c["t"] for c in out["correlator"]] == list(range(5))
    for c in out["correlator"]:
        assert_within(c["value"], c["error"], exact[c["t"]], f"C({c['t']})")
    assert len(out["effective_mass"]) >= 2
    for m in out["effective_mass"]:
        assert_within(m["value"], m["error"], theory.effective_mass(), f"m_eff({m['t']})")


def test_hmc_free_field_3d_chi_and_phi2_match_exact():
    theory = FreeScalar(Lattice((4, 4, 4)), 0.8)
    sampler = HMC.from_trajectory(theory, traj_length=0.7, n_steps=5, integrator="leapfrog")  # omega_max tau < 0.85 pi
    result = run(sampler, RunConfig(n_chains=16, n_configs=800, n_therm=50, seed=5))
    obs = histories(result.configs, theory)
    summary = summarize(obs["M"], theory.lattice.volume)
    assert_within(summary["susceptibility"]["value"], summary["susceptibility"]["error"], 1 / 0.8, "chi_2 (3d)")
    phi2 = gamma_method((result.configs**2).mean(dim=(-3, -2, -1)).numpy())
    assert_within(phi2.value, phi2.error, theory.phi2(), "<phi^2> (3d)")


def test_metropolis_step_removes_the_md_bias_which_these_tolerances_detect():
    """Negative control with an exact prediction. Without accept/reject, leapfrog with momentum
    refresh samples the shadow Hamiltonian it conserves exactly on each mode of curvature k,
    H~ = pi^2/2 + (k/2)(1 - eps^2 k/4) phi^2 (kick-drift-kick), so
    <phi^2>_MD = (1/V) sum_p 1 / (k_p (1 - eps^2 k_p / 4)). The MD-only chain must match that
    biased value and miss the exact one by > 4 sigma; HMC at the same step must hit the exact one."""
    theory = FreeScalar(Lattice((8, 8)), 0.5)
    eps, n_steps = 0.3, 2

    class MDWithoutMetropolis(HMC):
        def step(self, state, rng):
            pi = rng.normal(state.phi.shape[1:], dtype=state.phi.dtype)
            phi, _ = INTEGRATORS[self.integrator](state.phi, pi, self.theory.force, self.step_size, self.n_steps)
            return HMCState(phi, self.theory.action(phi)), {}

    cfg = RunConfig(n_chains=32, n_configs=600, n_therm=100, seed=12)
    k = theory.spectrum()
    shadow = float(np.mean(1.0 / (k * (1.0 - eps**2 * k / 4.0))))
    md = gamma_method((run(MDWithoutMetropolis(theory, eps, n_steps, "leapfrog"), cfg).configs ** 2).mean(dim=(-2, -1)).numpy())
    hmc = gamma_method((run(HMC(theory, eps, n_steps, "leapfrog"), cfg).configs ** 2).mean(dim=(-2, -1)).numpy())
    assert_within(md.value, md.error, shadow, "MD-only <phi^2> vs shadow-Hamiltonian value")
    assert abs(md.value - theory.phi2()) > K_SIGMA * md.error
    assert_within(hmc.value, hmc.error, theory.phi2(), "HMC <phi^2> at the same step")


@pytest.mark.parametrize("start", ["hot", "cold"])
def test_step_jitter_makes_hmc_ergodic_at_a_resonant_trajectory_length(start):
    """Leapfrog on a harmonic mode of frequency w rotates phase space by theta per step with
    cos theta = 1 - eps^2 w^2 / 2. With 4 steps and theta = pi/4 the trajectory maps the modes with
    p_hat^2 = 4 (w^2 = 4.5: p = (pi, 0), (pi/2, pi/2), ...) to phi -> -phi whatever the momenta, so
    without randomisation those modes keep their starting amplitudes forever (zero for a cold start)
    and <phi^2> is wrong by many sigma. HMC's default per-chain step-size jitter (Mackenzie, Phys.
    Lett. B 226 (1989) 369) restores ergodicity; the control run without jitter shows the test can fail."""
    theory = FreeScalar(Lattice((8, 8)), 0.5)
    eps = math.sqrt(2 * (1 - math.cos(math.pi / 4)) / 4.5)
    cfg = RunConfig(n_chains=16, n_configs=400, n_therm=200, seed=3, start=start)
    result = run(HMC(theory, eps, 4, "leapfrog"), cfg)
    est = gamma_method((result.configs**2).mean(dim=(-2, -1)).numpy())
    assert_within(est.value, est.error, theory.phi2(), "<phi^2> at a resonant trajectory length")
    if start == "cold":
        stuck = run(HMC(theory, eps, 4, "leapfrog", step_jitter=0.0), cfg)
        bad = gamma_method((stuck.configs**2).mean(dim=(-2, -1)).numpy())
        assert abs(bad.value - theory.phi2()) > 8 * bad.error, "without jitter the resonant modes must stay frozen"


# --------------------------------------------------------------------------- reproducibility


def test_chain_i_is_the_same_markov_chain_whatever_the_number_of_chains():
    theory = FreeScalar(Lattice((6, 6)), 0.7)
    sampler = HMC.from_trajectory(theory, 1.0, 5, "omelyan")
    small = run(sampler, RunConfig(n_chains=2, n_configs=15, n_therm=5, seed=9))
    big = run(sampler, RunConfig(n_chains=5, n_configs=15, n_therm=5, seed=9))
    assert torch.equal(small.configs, big.configs[:, :2])
    # the chains differ from one another (not one stream copied)
    assert not torch.equal(big.configs[:, 0], big.configs[:, 1])


def test_same_seed_gives_bit_identical_output_and_another_seed_does_not():
    theory = FreeScalar(Lattice((6, 6)), 0.7)
    sampler = HMC.from_trajectory(theory, 1.0, 5, "leapfrog")
    cfg = RunConfig(n_chains=3, n_configs=10, n_therm=5, seed=31)
    a, b = run(sampler, cfg), run(sampler, cfg)
    c = run(sampler, RunConfig(n_chains=3, n_configs=10, n_therm=5, seed=32))
    assert torch.equal(a.configs, b.configs)
    assert not torch.equal(a.configs, c.configs)


# --------------------------------------------------------------------------- stability


@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
def test_unstable_md_step_size_raises_lftml_error_and_stable_one_does_not(integrator):
    theory = FreeScalar(Lattice((8, 8)), 0.5)
    w2 = omega2_max(theory)
    # for an even lattice the stiffest mode p = (pi, pi) exists: omega_max^2 = max eigenvalue of K
    assert abs(w2 - theory.eigenvalues().max()) < 1e-12
    eps_max = max_stable_step(integrator, w2)
    if integrator == "leapfrog":
        assert abs(eps_max - 2 / math.sqrt(w2)) < 1e-9  # harmonic leapfrog: stable iff eps omega < 2
    HMC(theory, 0.99 * eps_max, 3, integrator, step_jitter=0.0)  # fine
    with pytest.raises(LftmlError, match="unstable"):
        HMC(theory, 1.01 * eps_max, 3, integrator, step_jitter=0.0)
    # with jitter the largest step drawn, (1 + j) eps, must be stable
    HMC(theory, 0.99 * eps_max / 1.1, 3, integrator, step_jitter=0.1)
    with pytest.raises(LftmlError, match="unstable"):
        HMC(theory, 1.01 * eps_max / 1.1, 3, integrator, step_jitter=0.1)
    # and the limit is real: just beyond it the stiffest mode grows exponentially
    V = theory.lattice.volume
    stiff = torch.tensor([(-1.0) ** (i + j) for i in range(8) for j in range(8)], dtype=torch.float64).reshape(1, 8, 8)
    phi, _ = INTEGRATORS[integrator](stiff, torch.zeros_like(stiff), theory.force, 1.05 * eps_max, 200)
    assert phi.abs().max() > 1e3 * math.sqrt(V)
    phi, _ = INTEGRATORS[integrator](stiff, torch.zeros_like(stiff), theory.force, 0.95 * eps_max, 200)
    assert phi.abs().max() < 100


@pytest.mark.parametrize("bad", [dict(step_size=0.0, n_steps=3), dict(step_size=0.1, n_steps=0),
                                 dict(step_size=float("nan"), n_steps=3), dict(step_size=0.1, n_steps=3, integrator="rk4")],
                         ids=["zero_step", "zero_steps", "nan_step", "unknown_integrator"])
def test_bad_hmc_settings_raise_lftml_error(bad):
    with pytest.raises(LftmlError):
        HMC(FreeScalar(Lattice((4, 4)), 1.0), **bad)


# --------------------------------------------------------------------------- step-size adaptation


def recording_hmc_class():
    """An HMC whose step() records the step size it used and the acceptance probabilities.
    The driver adapts with dataclasses.replace, which keeps the subclass."""
    log: list[tuple[float, np.ndarray]] = []

    class RecordingHMC(HMC):
        def step(self, state, rng):
            new, info = super().step(state, rng)
            log.append((self.step_size, info["acceptance_probability"].numpy().copy()))
            return new, info

    return RecordingHMC, log


@pytest.mark.parametrize("eps0", [0.05, 0.6], ids=["start_too_small", "start_too_large"])
def test_step_size_adaptation_reaches_target_acceptance_then_freezes_and_chain_is_exact(eps0):
    theory = FreeScalar(Lattice((8, 8)), 0.5)
    target, n_therm, n_chains = 0.8, 500, 32
    cls, log = recording_hmc_class()
    result = run(cls(theory, eps0, 4, "leapfrog"),
                 RunConfig(n_chains=n_chains, n_configs=600, n_therm=n_therm, seed=77, adapt=True, target_acceptance=target))
    eps = np.array([e for e, _ in log])
    acc = np.array([a for _, a in log])  # (updates, chains)
    assert len(eps) == n_therm + 600
    # adapted during thermalisation ...
    assert eps[0] == eps0 and abs(math.log(eps[n_therm] / eps0)) > 0.3
    # ... and frozen afterwards: every production trajectory uses the same step, the one reported
    assert np.all(eps[n_therm:] == eps[n_therm]) and result.step_size == eps[n_therm]
    assert result.sampler["step_size"] == eps[n_therm]

    # target reached: production mean Metropolis probability vs target. Two error sources:
    # the Monte Carlo error of the production mean (Gamma method), and the jitter of the frozen
    # step: Robbins-Monro with gain g_t = (t+5)^-0.6 leaves Var(log eps) ~ g_T Var(a) / (2|s|),
    # i.e. Var(acc) ~ g_T |s| Var(a) / 2, where Var(a) is the variance of one update's chain-mean
    # acceptance and s = d acc / d log eps. For Gaussian dH with variance 2 <dH> (Creutz),
    # acc = erfc(mu / 2) with mu = sqrt(<dH>) ~ eps^2 at fixed trajectory length (Gupta, Kilcup,
    # Sharpe 1988), so |s| = 2 mu exp(-mu^2/4) / sqrt(pi) with mu = 2 erfcinv(acc).
    prod = acc[n_therm:]
    est = gamma_method(prod)
    var_a = float(np.var(prod.mean(axis=1)))
    mu = 2 * erfcinv(target)
    s = 2 * mu * math.exp(-mu * mu / 4) / math.sqrt(math.pi)
    sigma_rm = math.sqrt((n_therm + 5) ** -0.6 * s * var_a / 2)
    sigma = math.hypot(est.error, sigma_rm)
    assert_within(est.value, sigma, target, "production acceptance")

    # the production chain is exact (frozen step): chi_2 = 1/m2
    obs = histories(result.configs, theory)
    chi = summarize(obs["M"], theory.lattice.volume)["susceptibility"]
    assert_within(chi["value"], chi["error"], 2.0, "chi_2 after adaptation")


def test_deep_double_well_without_stiff_quadratic_mode_is_accepted_and_sampled():
    """lambda > 1/2 + d kappa makes every quadratic curvature at phi = 0 negative; the stiffness then
    sits at the mean-field vacuum, whose Hessian 8 d c_hop - 4 c_2 at p = (pi, pi) = 12.8 now bounds the
    step (issue 11; it used to be infinite, and before that NaN: 'needs a step < 0'). HMC below the
    bound runs and accepts."""
    from lftml.samplers import Langevin
    from lftml.samplers.stability import langevin_max_step

    theory = Phi4.hopping(Lattice((6, 6)), 0.15, 1.5)
    c_hop, c2, _ = theory.coefficients
    assert 2 * c2 + 4 * c_hop <= 0  # no stiff mode at phi = 0
    assert omega2_max(theory) == pytest.approx(8 * 2 * c_hop - 4 * c2, rel=1e-12)
    assert max_stable_step("leapfrog", omega2_max(theory)) == pytest.approx(2 / math.sqrt(12.8), rel=1e-9)
    assert langevin_max_step(theory) == pytest.approx(2 / 12.8, rel=1e-12)
    result = run(HMC.from_trajectory(theory, 0.5, 10), RunConfig(n_chains=4, n_configs=50, n_therm=50, seed=1))
    assert result.acceptance > 0.5
    Langevin(theory, 0.01, "heun")  # accepted as well
