"""Error bars and layouts of the diffusion monitor, the exp sampler's branch without an analytic part,
the mixture path sampler's component draw, and the baselines' fits and samplers, checked against
exact references (closed forms, numpy/scipy re-computations) with z-score tolerances.

Written against surviving mutants of a mutation pass: each test's docstring names what it catches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2, multivariate_normal

from lftml.diffusion.baselines import GaussianBaseline, MixtureBaseline
from lftml.diffusion.gaussian import GaussianScore
from lftml.diffusion.model import ScoreModel
from lftml.diffusion.monitor import gain_ceiling, likelihood_gain
from lftml.diffusion.sampling import sample_path_weighted
from lftml.diffusion.sde import VESDE
from lftml.lattice import Lattice
from lftml.stats import gamma_method
from lftml.theories import FreeScalar
from test_diffusion_exact import _random_model
from test_diffusion_monitor import _GaussianScoreModel

Z = 4.0  # z-score bound of every statistical check (two-sided, ~6e-5 per check for a Gaussian)


@pytest.fixture(scope="module")
def free_pair():
    """As in tests/test_diffusion_monitor.py: p the free field (m2 = 0.5) on 6x6; q a Gaussian with
    p's power spectrum, each mode off by a random factor in [0.7, 1.3] (no point-group average)."""
    theory = FreeScalar(Lattice((6, 6)), 0.5)
    c_p = 1.0 / theory.spectrum()
    rng = np.random.default_rng(3)
    q = GaussianBaseline(torch.as_tensor(c_p * (1.0 + 0.3 * (2.0 * rng.random(c_p.shape) - 1.0))))
    return theory, c_p, q


def _log_ratio(theory, q, x) -> np.ndarray:
    """``-S - log q`` per configuration, computed here (float64)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    return (-theory.action(x) - q.log_prob(x)).numpy()


# ------------------------------------------------------------------ gain_ceiling


def test_gain_ceiling_error_adds_the_importance_sampling_error_and_matches_the_seed_spread(free_pair):
    """``error`` must be the quadrature sum of the held-out part's and the importance-sampling part's
    errors (``error**2 == e_p_error**2 + log_z_error**2``, rel 1e-12), and ``log_z_error`` must be the
    real spread: with the held-out configurations fixed, ``value`` varies between IS seeds only by
    ``log Z``, so the standard deviation of ``value`` over 20 seeds divided by the mean ``log_z_error``
    must lie in the central 99.8% of ``sqrt(chi2_19 / 19)`` (about 0.53-1.52; measured 0.66-1.24 over
    9 sets of 20 seeds at n_samples 100-1000, ESS/N ~ 0.78). Catches: an ``error`` that drops the IS part (``error = e_p_error``),
    a ``log_z_error`` off by a power of N."""
    theory, _, q = free_pair
    phi = theory.sample(200, torch.Generator().manual_seed(1)).numpy()
    outs = [gain_ceiling(q, theory, phi, n_samples=200, seed=s) for s in range(20)]
    for o in outs:
        assert o["log_z_error"] > 0.1 * o["e_p_error"]  # the IS part is not negligible here
        assert o["error"] ** 2 == pytest.approx(o["e_p_error"] ** 2 + o["log_z_error"] ** 2, rel=1e-12)
    values = np.array([o["value"] for o in outs])
    assert np.ptp([o["e_p"] for o in outs]) == 0.0  # the seed moves only log Z
    ratio = values.std(ddof=1) / np.mean([o["log_z_error"] for o in outs])
    dof = len(outs) - 1
    lo, hi = math.sqrt(chi2.ppf(1e-3, dof) / dof), math.sqrt(chi2.ppf(1 - 1e-3, dof) / dof)
    assert lo < ratio < hi, (ratio, lo, hi)


def test_gain_ceiling_log_z_is_the_delta_method_of_its_importance_weights(free_pair):
    """``log Z`` and ``log_z_error`` re-computed here from the same importance draws (``n_samples``
    below ``batch_size``: one ``q.sample(n, Generator().manual_seed(seed))``): ``log mean exp w`` and
    ``std(r, ddof=1) / mean(r) / sqrt(N)`` with ``r = exp(w - max w)``, rel 1e-12. At N = 3 the
    sample standard deviation with ``ddof=0`` is off by sqrt(2/3). Catches: ``r.std(ddof=0)``."""
    theory, _, q = free_pair
    phi = theory.sample(50, torch.Generator().manual_seed(2)).numpy()
    for n, seed in ((3, 7), (5, 8)):
        out = gain_ceiling(q, theory, phi, n_samples=n, seed=seed)
        w = _log_ratio(theory, q, q.sample(n, torch.Generator().manual_seed(seed)))
        r = np.exp(w - w.max())
        assert out["log_z"] == pytest.approx(w.max() + math.log(r.mean()), rel=1e-12)
        assert out["log_z_error"] == pytest.approx(r.std(ddof=1) / r.mean() / math.sqrt(n), rel=1e-12)


def test_gain_ceiling_with_chains_axis_reads_phi_as_configs_by_chains(free_pair):
    """``phi`` of shape ``(T, C, *lattice)`` with ``chains_axis``: ``e_p_error`` must be the Gamma
    method of ``a = -S - log q`` (computed here) as a ``(T, C)`` history, rel 1e-12. Each chain
    repeats every configuration 4 times along T (tau_int ~ 2), so the transposed layout ``(C, T)``
    gives a clearly different error (asserted, so the test can tell). Catches: ``shape[1::-1]``."""
    theory, _, q = free_pair
    T, C, rep = 64, 4, 4
    base = theory.sample(T // rep * C, torch.Generator().manual_seed(3)).numpy().reshape(T // rep, C, 6, 6)
    phi = np.repeat(base, rep, axis=0)  # phi[t, c] = base[t // rep, c]
    a = _log_ratio(theory, q, phi.reshape(-1, 6, 6))
    right = gamma_method(a.reshape(T, C)).error
    wrong = gamma_method(a.reshape(C, T)).error
    assert abs(wrong / right - 1.0) > 0.05
    out = gain_ceiling(q, theory, phi, n_samples=100, seed=4, chains_axis=True)
    assert out["e_p_error"] == pytest.approx(right, rel=1e-12)
    assert out["e_p"] == pytest.approx(a.mean(), rel=1e-12)
    assert out["n"] == T * C


# ------------------------------------------------------------------ exp sampler, no analytic part


def test_path_weights_without_an_analytic_part_give_the_free_field_log_z():
    """The exp sampler's reference branch (a plain function wrapping the exact GaussianScore of the
    2x2 free field, no ``analytic_power_spectrum``: prior ``N(0, s_N^2)``, white step noise): the
    path weights ``log w = -S(x / a) - V log a + log r/q`` (model units ``x = a phi``, ``a = 0.5``,
    with the Jacobian as in test_diffusion_exact) are exact importance weights, so their log-mean-exp
    is the exact ``log Z`` within 4 of its delta-method errors (100 steps, 4000 paths: ESS/N 0.28,
    z = -0.66 here; 10 other seeds: -2.9 to 1.7). Catches: the prior's or a step's ``log det`` without the factor V (offsets of
    O(10) nats), a prior ``s_N^2 z`` instead of ``s_N z``, step noise ``d z`` instead of ``sqrt(d) z``."""
    scale = 0.5
    theory = FreeScalar(Lattice((2, 2)), 0.5)
    sde = VESDE(25.0)
    gs = GaussianScore(theory, sde, scale)

    def score(x, t):  # no analytic_power_spectrum / score_parts: the reference branch
        return gs(x, t)

    x, log_ratio, info = sample_path_weighted(score, sde, (4000, 2, 2), steps=100,
                                              generator=torch.Generator().manual_seed(1))
    assert info["nfe"] == 100
    log_w = (-theory.action(x.double() / scale) - 4 * math.log(scale) + log_ratio).numpy()
    m = log_w.max()
    r = np.exp(log_w - m)
    log_z = m + math.log(r.mean())
    err = r.std(ddof=1) / r.mean() / math.sqrt(r.size)
    assert err < 0.1  # the weights are usable (measured 0.026)
    assert abs(log_z - theory.log_partition()) < Z * err, (log_z, err, theory.log_partition())


# ------------------------------------------------------------------ mixture path sampler


def _untrained_mixture_model(shape=(4, 4)) -> ScoreModel:
    """test_diffusion_exact's ``mixture`` model with its network's output zeroed: its score is the
    exact diffused score of ``1/2 N(mu, C) + 1/2 N(-mu, C)``."""
    model = _random_model("mixture", shape)
    model.net.zero_output_layers()
    return model


def _mixture_m_moments(mu: float, s2: float) -> tuple[float, float]:
    """``E M^2`` and ``var M^2`` for ``M ~ 1/2 N(mu, s2) + 1/2 N(-mu, s2)``."""
    m2 = mu**2 + s2
    m4 = mu**4 + 6 * mu**2 * s2 + 3 * s2**2
    return m2, m4 - m2**2


def test_mixture_path_sampler_draws_each_component_by_its_responsibility():
    """The untrained ``mixture`` model run through the exp sampler at 20 steps: each step draws the
    component by its responsibility at x_k and then that component's exact posterior, so the
    *unweighted* samples are exact draws of the mixture and ``<M^2> = mu^2 + c_0 / V`` within 4
    standard errors (z = -0.42 here; 10 other seeds: -0.8 to 1.9). Drawing the component with the other one's probability
    pulls the samples to M ~ 0 (z ~ -120) while the path weights, which use the same densities,
    cannot tell. Catches: ``_draw_sign(exp(log_pm))`` instead of ``exp(log_pp)``."""
    model = _untrained_mixture_model()
    mu = model.vacuum
    c0 = float(GaussianBaseline(model.power_spectrum.double(), mu).power_spectrum.flatten()[0])
    with torch.no_grad():
        x, _, _ = sample_path_weighted(model, model.sde, (2000, 4, 4), steps=20,
                                       generator=torch.Generator().manual_seed(5))
    M = x.double().reshape(-1, 16).mean(1).numpy()
    m2, var_m2 = _mixture_m_moments(mu, c0 / 16)
    z = (np.mean(M**2) - m2) / math.sqrt(var_m2 / M.size)
    assert abs(z) < Z, z


# ------------------------------------------------------------------ baselines


def _dense_cov(c: np.ndarray) -> np.ndarray:
    """The covariance matrix (sites in C order) of the translation-invariant Gaussian with spectrum c."""
    C = np.real(np.fft.ifftn(c))
    idx = np.array(np.unravel_index(np.arange(c.size), c.shape)).T
    return np.array([[C[tuple((a - b) % np.array(c.shape))] for b in idx] for a in idx])


def test_gaussian_fit_without_point_group_is_the_raw_two_point_function_about_zero():
    """``GaussianBaseline.fit(point_group=False)`` on data with a nonzero mean (``data + 1.0``, 2x3):
    the spectrum is ``mean_n |fftn(phi_n)|^2 / V`` about zero (the Z2-symmetric fit has mean 0, so the
    data's mean stays in the zero mode) against numpy, atol 1e-12. Catches: a missing ``/ V``, a
    ``/ (V - 1)``, the data's mean subtracted first."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(300, 2, 3)) + 0.3 * np.roll(rng.normal(size=(300, 2, 3)), 1, axis=2) + 1.0
    base = GaussianBaseline.fit(data, point_group=False)
    ref = (np.abs(np.fft.fftn(data, axes=(1, 2))) ** 2).mean(0) / 6
    assert base.mean == 0.0
    assert np.allclose(base.power_spectrum.numpy(), ref, rtol=0, atol=1e-12)


def test_gaussian_baseline_with_a_mean_has_the_dense_density_and_samples_around_it():
    """``GaussianBaseline(c, mean=0.7)`` on 2x3: ``log_prob`` against scipy's dense
    ``N(0.7 * 1, C)`` (atol 1e-10), and the sampled magnetisation ``M ~ N(0.7, c_0 / V)`` has its mean
    within 4 standard errors of 0.7 (4000 draws, SE 0.006, z = 0.04 here). Catches: ``log_prob`` of ``x + mean``,
    samples around ``-mean``."""
    rng = np.random.default_rng(1)
    c = rng.random((2, 3)) + 0.3
    base = GaussianBaseline(torch.as_tensor(c), 0.7)
    c = base.power_spectrum.numpy()  # symmetrised (c_p = c_-p)
    x = base.sample(4000, torch.Generator().manual_seed(2))
    ref = multivariate_normal(np.full(6, 0.7), _dense_cov(c)).logpdf(x[:20].numpy().reshape(20, -1))
    assert np.allclose(base.log_prob(x[:20]).numpy(), ref, rtol=0, atol=1e-10)
    M = x.reshape(x.shape[0], -1).mean(1).numpy()
    se = math.sqrt(c.flat[0] / 6 / M.size)
    assert abs(M.mean() - 0.7) < Z * se, (M.mean(), se)


def test_mixture_baseline_samples_both_vacua_with_equal_weight():
    """``MixtureBaseline(N(mu, C)).sample`` on 2x3 (mu = 0.8, 4000 draws): the fraction with M > 0
    within 4 sigma of 1/2 (binomial), the raw ``<M>`` within 4 sigma of 0 (``var M = mu^2 + c_0/V``),
    and ``<M^2>`` within 4 sigma of ``mu^2 + c_0 / V``. Catches: a sign drawn with probability 0.8,
    the sign never applied (one vacuum only)."""
    rng = np.random.default_rng(4)
    c = rng.random((2, 3)) + 0.3
    mix = MixtureBaseline(GaussianBaseline(torch.as_tensor(c), 0.8))
    mu, c0 = mix.component.mean, float(mix.component.power_spectrum.flatten()[0])
    x = mix.sample(4000, torch.Generator().manual_seed(3))
    M = x.reshape(x.shape[0], -1).mean(1).numpy()
    n = M.size
    m2, var_m2 = _mixture_m_moments(mu, c0 / 6)
    frac = (M > 0).mean()
    assert abs(frac - 0.5) < Z * math.sqrt(0.25 / n), frac
    assert abs(M.mean()) < Z * math.sqrt(m2 / n), M.mean()
    assert abs(np.mean(M**2) - m2) < Z * math.sqrt(var_m2 / n), (np.mean(M**2), m2)


# ------------------------------------------------------------------ likelihood_gain


@pytest.fixture(scope="module")
def gain_setup():
    """4x4 free field (m2 = 0.5), model units x = 0.5 phi; q's spectrum off by factors in [0.7, 1.3]."""
    theory = FreeScalar(Lattice((4, 4)), 0.5)
    scale = 0.5
    c_p = scale**2 / theory.spectrum()
    rng = np.random.default_rng(5)
    c_q = c_p * (1.0 + 0.3 * (2.0 * rng.random(c_p.shape) - 1.0))
    c_q = 0.5 * (c_q + np.roll(np.flip(c_q, (0, 1)), (1, 1), (0, 1)))
    phi = theory.sample(192, torch.Generator().manual_seed(6)).numpy()
    return theory, scale, c_p, c_q, phi


def test_likelihood_gain_is_the_difference_of_the_two_reported_analytic_losses(gain_setup):
    """Paired draws (same seed, same t-sampling scale): the gain of model A (analytic q, full p) is
    A's analytic loss minus that of model B (analytic p, full p), since B's analytic part is A's full
    model: ``value_A == loss_analytic_nats_A - loss_analytic_nats_B`` to rounding; and for B (network
    0) the gain is exactly 0. Catches: ``loss_analytic_nats`` accumulated from the full model's loss."""
    theory, scale, c_p, c_q, phi = gain_setup
    sde = VESDE()
    force = theory.force(torch.as_tensor(phi)).numpy()
    a = likelihood_gain(_GaussianScoreModel(c_p, c_q, sde, scale), phi, force=force, draws=2, seed=7)
    b = likelihood_gain(_GaussianScoreModel(c_p, c_p, sde, scale), phi, force=force, draws=2, seed=7)
    assert b["value"] == 0.0
    assert abs(a["value"]) > Z * a["error"]  # A and B differ, so a wrong loss_analytic would show
    assert a["value"] == pytest.approx(a["loss_analytic_nats"] - b["loss_analytic_nats"], rel=1e-9, abs=1e-9)


def test_likelihood_gain_explicit_force_is_converted_to_model_units_like_the_theory_force(gain_setup):
    """With ``scale = 0.5`` an explicit engine-unit ``force`` must enter as ``force / scale`` (model
    units, ``d/dx = (1/a) d/dphi``), exactly like the force the monitor computes from ``model.theory``:
    both calls (same draws) give the same result to rounding, and a force times ``scale`` (a factor 4
    off) moves the TSM-blended gain by many errors (asserted). Catches: ``force * scale``."""
    theory, scale, c_p, c_q, phi = gain_setup
    sde = VESDE()
    force = theory.force(torch.as_tensor(phi)).numpy()
    model = _GaussianScoreModel(c_p, c_q, sde, scale, theory=theory.to_dict())
    explicit = likelihood_gain(model, phi, force=force, draws=2, seed=8)
    implied = likelihood_gain(model, phi, draws=2, seed=8)
    assert explicit["target"] == implied["target"] == "tsm"
    assert explicit["value"] == pytest.approx(implied["value"], rel=1e-9)
    assert explicit["error"] == pytest.approx(implied["error"], rel=1e-9)
    off = likelihood_gain(model, phi, force=force * scale**2, draws=2, seed=8)  # = force * scale in model units
    assert abs(off["value"] - implied["value"]) > Z * implied["error"]


def test_likelihood_gain_with_chains_axis_reads_phi_as_configs_by_chains(gain_setup):
    """``phi`` as ``(T, 1, *lattice)`` with ``chains_axis`` is the same history as ``(T, *lattice)``
    without it (same flat order, same draws): identical value, error and tau_int. Catches: the
    ``(C, T)`` layout ``shape[1::-1]`` (one configuration of T chains)."""
    theory, scale, c_p, c_q, phi = gain_setup
    model = _GaussianScoreModel(c_p, c_q, VESDE(), scale)
    force = theory.force(torch.as_tensor(phi)).numpy()
    flat = likelihood_gain(model, phi, force=force, draws=1, seed=9)
    chains = likelihood_gain(model, phi[:, None], force=force[:, None], draws=1, seed=9, chains_axis=True)
    for k in ("value", "error", "tau_int"):
        assert chains[k] == pytest.approx(flat[k], rel=1e-12), k
