"""Fourier-accelerated HMC (issue 9) and the HMC fixes of issue 11, against exact answers.

* the kinetic term: dense-matrix identities (energy = pi M^-1 pi / 2, velocity = M^-1 pi) to 1e-12 and
  the momentum covariance <|F pi|^2>/V = m(p) mode by mode;
* FA-HMC on the free field: exact propagator and chi_2 = 1/m^2 within 4 sigma; tau_int(M) = 0.5 at
  trajectory length pi/2 (plain HMC at the same length: far from 0.5); reversibility 1e-12; dH ~ eps^2;
* the stability bound: max over phi = 0 and the mean-field vacuum (broken phase), and with a mass;
* float32 fields: dH formed in float64 (agrees with an exact recomputation at V = 16384).
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
from lftml.samplers import HMC, ChainRNG
from lftml.samplers.integrators import INTEGRATORS
from lftml.samplers.kinetic import FourierMass, IdentityMass
from lftml.samplers.stability import max_stable_step, omega2_max
from lftml.stats import gamma_method
from lftml.theories import FreeScalar, Phi4

K_SIGMA = 4.0


class BatchRNG:
    """Stand-in for ChainRNG with one generator for a large batch (independent samples)."""

    def __init__(self, n: int, seed: int):
        self.n, self.g = n, torch.Generator().manual_seed(seed)

    def normal(self, shape, dtype=torch.float64):
        return torch.randn((self.n, *shape), generator=self.g, dtype=dtype)


def dense_operator(lattice: Lattice, spectrum: np.ndarray) -> np.ndarray:
    """The real V x V matrix F^-1 diag(spectrum) F in row-major site order."""
    V = lattice.volume
    eye = np.eye(V).reshape(V, *lattice.shape)
    axes = tuple(range(1, lattice.ndim + 1))
    cols = np.fft.ifftn(np.fft.fftn(eye, axes=axes) * spectrum, axes=axes)
    assert np.abs(cols.imag).max() < 1e-12
    return cols.real.reshape(V, V)


@pytest.mark.parametrize("shape", [(5, 6), (3, 4, 5), (7,)], ids=lambda s: f"{len(s)}d")
def test_fourier_mass_energy_and_velocity_equal_the_dense_matrix_expressions(shape):
    """Catches a wrong rfft normalisation, a dropped Nyquist/odd-extent mode, or sqrt(m) used where m is meant."""
    lat = Lattice(shape)
    theory = Phi4.hopping(lat, 0.27, 0.022)
    mass = FourierMass.from_action(theory)
    M = dense_operator(lat, mass.spectrum)
    assert np.allclose(M, M.T, atol=1e-13) and np.linalg.eigvalsh(M).min() > 0
    pi = torch.randn((3, *shape), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    flat = pi.reshape(3, -1).numpy()
    minv_pi = np.linalg.solve(M, flat.T).T
    assert np.abs(mass.velocity(pi).reshape(3, -1).numpy() - minv_pi).max() < 1e-12
    energy = 0.5 * np.einsum("ci,ci->c", flat, minv_pi)
    assert np.abs(mass.energy(pi, lat.dims).numpy() - energy).max() < 1e-12 * energy.max()


def test_fourier_mass_momenta_have_covariance_m_of_p_mode_by_mode():
    """<|F pi|^2>/V must equal m(p) at every p (independent draws, so the errors are exact); catches
    drawing with covariance m^2 or 1, or a wrong FFT normalisation."""
    lat = Lattice((6, 5))
    mass = FourierMass.from_action(Phi4.hopping(lat, 0.27, 0.022))
    pi = mass.sample(BatchRNG(20000, 7), lat.shape, torch.float64)
    power = (torch.fft.fftn(pi, dim=lat.dims).abs() ** 2 / lat.volume).numpy()
    mean, err = power.mean(axis=0), power.std(axis=0, ddof=1) / math.sqrt(power.shape[0])
    z = (mean - mass.spectrum) / err
    assert np.abs(z).max() < 4.5, f"max |z| = {np.abs(z).max():.2f}"
    assert mass.spectrum.max() / mass.spectrum.min() > 3  # the test distinguishes m from 1


def test_default_mass_is_the_exact_inverse_propagator_of_the_free_field():
    theory = FreeScalar(Lattice((6, 4)), 0.3)
    mass = FourierMass.from_action(theory)
    assert np.allclose(mass.spectrum, theory.spectrum(), rtol=1e-14)
    # every mode has omega = 1: the leapfrog bound is 2 whatever m^2 is
    hmc = HMC(theory, 0.5, 3, "leapfrog", kinetic=mass)
    assert hmc.omega2_max() == pytest.approx(1.0, rel=1e-12)
    assert hmc.max_stable_step() == pytest.approx(2.0, rel=1e-9)
    HMC(theory, 1.7, 1, "leapfrog", kinetic=mass, step_jitter=0.1)
    with pytest.raises(LftmlError, match="unstable"):
        HMC(theory, 1.9, 1, "leapfrog", kinetic=mass, step_jitter=0.1)


def _two_point(configs: torch.Tensor, lattice: Lattice) -> np.ndarray:
    f = torch.fft.fftn(configs, dim=lattice.dims)
    return (torch.fft.ifftn(f.conj() * f, dim=lattice.dims).real / lattice.volume).numpy()


@pytest.fixture(scope="module")
def free_light():
    """A light free field (m^2 = 0.05 on 8x8): plain HMC's zero mode has omega = 0.22."""
    theory = FreeScalar(Lattice((8, 8)), 0.05)
    config = RunConfig(n_chains=16, n_configs=400, n_therm=20, every=1, seed=77, start="hot")
    fa = run(HMC.from_trajectory(theory, math.pi / 2, 3, kinetic=FourierMass.from_action(theory)), config)
    return theory, fa


def test_fa_hmc_free_field_propagator_and_chi2_match_exact_within_4_sigma(free_light):
    """Catches a kinetic term that is not the one the Metropolis step uses (biased G(x)), a missing
    factor in M^-1, or a wrong zero mode."""
    theory, fa = free_light
    G = _two_point(fa.configs, theory.lattice)
    exact = theory.propagator()
    for idx in np.ndindex(*theory.lattice.shape):
        e = gamma_method(G[(slice(None), slice(None), *idx)])
        z = (e.value - exact[idx]) / e.error
        assert abs(z) < K_SIGMA, f"G{idx}: {e} vs {exact[idx]:.6f} (z = {z:.2f})"
    obs = [measure(c) for c in fa.configs]
    M = np.stack([o["M"] for o in obs])
    chi = summarize(M, theory.lattice.volume)["susceptibility"]
    z = (chi["value"] - 1 / theory.m2) / chi["error"]
    assert abs(z) < K_SIGMA, f"chi_2 {chi} vs {1 / theory.m2} (z = {z:.2f})"
    assert fa.acceptance > 0.95


def test_fa_hmc_decorrelates_every_free_mode_in_one_trajectory_of_length_pi_over_2(free_light):
    """tau_int(M) = 0.5 within its error for FA-HMC; the same trajectory length with unit mass gives
    tau_int >> 0.5 (so the test notices an FA-HMC that is not accelerated, e.g. M = 1 or M = K^2)."""
    theory, fa = free_light
    M = fa.configs.mean(dim=(-2, -1)).numpy()
    e = gamma_method(M)
    print(f"FA-HMC tau_int(M) = {e.tau_int:.4f}({e.tau_int_error:.4f})")
    assert abs(e.tau_int - 0.5) < K_SIGMA * e.tau_int_error, f"FA-HMC tau_int(M) {e.tau_int}({e.tau_int_error})"
    plain = run(HMC.from_trajectory(theory, math.pi / 2, 6),
                RunConfig(n_chains=16, n_configs=400, n_therm=20, every=1, seed=77, start="hot"))
    e_plain = gamma_method(plain.configs.mean(dim=(-2, -1)).numpy())
    assert e_plain.tau_int > 0.5 + K_SIGMA * e_plain.tau_int_error and e_plain.tau_int > 3


@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
def test_fa_md_is_reversible_to_1e_12_and_second_order(integrator):
    """Reversibility with the FA drift, and rms dH ~ eps^2 at fixed length (slope 2 +- 0.15): catches a
    kinetic energy that is not the one the drift conserves (slope 0) or an asymmetric drift."""
    lat = Lattice((8, 8))
    theory = Phi4.hopping(lat, 0.2705, 0.022)
    mass = FourierMass.from_action(theory)
    rng = BatchRNG(8, 3)
    phi0 = 1.2 * rng.normal(lat.shape)
    pi0 = mass.sample(rng, lat.shape, torch.float64)
    integ = INTEGRATORS[integrator]
    phi1, pi1 = integ(phi0, pi0, theory.force, 0.2, 8, mass.velocity)
    assert (phi1 - phi0).abs().max() > 0.1
    phi2, pi2 = integ(phi1, -pi1, theory.force, 0.2, 8, mass.velocity)
    assert (phi2 - phi0).abs().max().item() < 1e-12 and (pi2 + pi0).abs().max().item() < 1e-12

    def rms_dh(n):
        p1, q1 = integ(phi0, pi0, theory.force, 1.0 / n, n, mass.velocity)
        h0 = mass.energy(pi0, lat.dims) + theory.action(phi0)
        h1 = mass.energy(q1, lat.dims) + theory.action(p1)
        return float(((h1 - h0) ** 2).mean().sqrt())

    ns = np.array([8, 16, 32])
    dh = np.array([rms_dh(n) for n in ns])
    slope = np.polyfit(np.log(1.0 / ns), np.log(dh), 1)[0]
    assert abs(slope - 2.0) < 0.15, f"dH ~ eps^{slope:.2f}"


@pytest.mark.parametrize("shape", [(8, 8), (4, 3, 5), (9,)], ids=lambda s: f"{len(s)}d")
@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
def test_fa_kernel_path_is_bit_identical_to_the_eager_integrator(shape, integrator):
    """backend auto (numba kicks, in-place FFT drifts: fused.fa_integrate) against backend eager (the torch
    integrator with theory.force and mass.velocity), 12 trajectories with per-chain jitter, 2d (flat kernel),
    3d and 1d (row kernel): the same MD end points bit for bit (so the same fields and decisions); S and dH
    to round-off (auto sums S in the fused kernel's order). Catches a kick coefficient applied to the wrong
    chain or step, a drift without the mass, a force that differs from the eager expression."""
    from dataclasses import replace

    from lftml.samplers import fused

    if not fused.available():
        pytest.skip("numba not installed")
    theory = Phi4.hopping(Lattice(shape), 0.2705 if len(shape) == 2 else 0.15, 0.022)
    mass = FourierMass.from_action(theory)
    auto = HMC.from_trajectory(theory, 1.0, 4 if integrator == "omelyan" else 8, integrator=integrator, kinetic=mass)
    eager = replace(auto, backend="eager")
    phi = 0.8 * torch.randn((3, *shape), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert auto.uses_fa_kernels(phi) and not eager.uses_fa_kernels(phi)
    sa, sb = auto.init(phi.clone()), eager.init(phi.clone())
    ra, rb = ChainRNG.from_seed(3, 3, purpose=1), ChainRNG.from_seed(3, 3, purpose=1)
    moved = 0
    for _ in range(12):
        sa, ia = auto.step(sa, ra)
        sb, ib = eager.step(sb, rb)
        assert torch.equal(ia["accepted"], ib["accepted"]) and torch.equal(sa.phi, sb.phi)
        assert (ia["dH"] - ib["dH"]).abs().max() < 1e-10
        assert ((sa.action - sb.action) / sb.action).abs().max() < 1e-13
        moved += int(ia["accepted"].sum())
    assert moved > 0


@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
def test_batched_stability_scan_decides_every_step_as_the_scalar_check(integrator):
    """The start-up scan of max_stable_step is batched over its grid; every grid step must get the decision
    of the scalar 2x2 product md_stable (catches a lost w2 or lam, or a sub-step of the wrong length)."""
    from lftml.samplers import stability

    for w2 in (1e-3, 0.3, 1.0, 4.2, 6.0, 123.0):
        grid = np.linspace(0.0, 6.0 / np.sqrt(w2), 3001)[1:]
        scalar = np.array([stability.md_stable(integrator, e, w2) for e in grid])
        assert np.array_equal(stability._stable_on_grid(integrator, grid, w2), scalar)
        assert not scalar.all() or w2 < 0.01  # the grid reaches the unstable region


def test_stability_bound_is_the_max_over_zero_and_the_mean_field_vacuum():
    """kappa = 0.3, lambda = 0.05 in 2d: omega^2 = 4.2 at phi = 0, 6.0 at the vacuum; the leapfrog bound
    is 2/sqrt(6) = 0.816, not 0.976 (issue 11). Step 0.9 used to be accepted and blows up from the
    vacuum; 0.75 stays bounded."""
    lat = Lattice((8, 8))
    theory = Phi4.hopping(lat, 0.3, 0.05)
    assert omega2_max(theory) == pytest.approx(6.0, rel=1e-12)
    assert max_stable_step("leapfrog", 6.0) == pytest.approx(2 / math.sqrt(6.0), rel=1e-9)
    with pytest.raises(LftmlError, match="unstable"):
        HMC(theory, 0.9, 10, "leapfrog", step_jitter=0.0)
    HMC(theory, 0.75, 10, "leapfrog", step_jitter=0.0)
    v = math.sqrt(0.3 / 0.1)
    g = torch.Generator().manual_seed(0)
    phi0 = v + 1e-3 * torch.randn((4, *lat.shape), generator=g, dtype=torch.float64)
    pi0 = 1e-3 * torch.randn((4, *lat.shape), generator=g, dtype=torch.float64)
    for eps, blows in ((0.9, True), (0.75, False)):
        phi, _ = INTEGRATORS["leapfrog"](phi0, pi0, theory.force, eps, 40)
        bounded = bool((phi - v).abs().max() < 1.0)  # NaN (overflow) counts as blown up
        assert bounded != blows, eps


def test_fourier_stability_bound_uses_eigenvalues_of_m_inverse_times_hessian():
    """With M = K (free part) the vacuum Hessian K + 12 c_4 v^2 makes omega^2 > 1 in the broken phase."""
    lat = Lattice((8, 8))
    theory = Phi4.hopping(lat, 0.3, 0.05)
    mass = FourierMass.from_action(theory)
    c_hop, c2, c4 = theory.coefficients
    v2 = (2 * c_hop - c2) / (2 * c4)
    hess = 2 * c2 + 12 * c4 * v2 - 2 * c_hop * (2 - 0.5 * lat.p_hat2())
    assert HMC(theory, 0.1, 10, kinetic=mass).omega2_max() == pytest.approx(float(np.max(hess / mass.spectrum)))


@pytest.mark.parametrize("backend", ["eager", "fused"])
def test_float32_hmc_forms_dh_in_float64(backend):
    """At V = 16384 the float32 sums of H ~ 1e4 cancel in dH to ~1e-3 (issue 11). The recorded dH must
    equal H(end) - H(start) recomputed in float64 from the same float32 end points."""
    from lftml.samplers import fused

    if backend == "fused" and not fused.available():
        pytest.skip("numba not installed")
    lat = Lattice((128, 128))
    theory = Phi4.hopping(lat, 0.21, 0.022)
    hmc = HMC(theory, 0.1, 5, "leapfrog", backend=backend, step_jitter=0.0)
    phi0 = (0.7 * torch.randn((2, *lat.shape), generator=torch.Generator().manual_seed(5))).to(torch.float32)
    state = hmc.init(phi0)
    _, info = hmc.step(state, ChainRNG.from_seed(1, 2))
    pi0 = ChainRNG.from_seed(1, 2).normal(lat.shape, dtype=torch.float32)
    phi1, pi1 = INTEGRATORS["leapfrog"](phi0, pi0, theory.force, 0.1, 5)
    d = lambda t: t.to(torch.float64)  # noqa: E731
    h = lambda p, q: 0.5 * (d(q) ** 2).sum(dim=lat.dims) + theory.action(d(p))  # noqa: E731
    exact = h(phi1, pi1) - h(phi0, pi0)
    assert info["dH"].dtype == torch.float64
    # eager: 0 exactly; fused: its float32 MD end points differ from eager ones by ~1 ulp (measured 1.4e-6).
    # The float32 sums of the previous code were off by 5e-4 here.
    tol = 2e-5 if backend == "fused" else 1e-9
    assert (info["dH"] - exact).abs().max().item() < tol, (info["dH"], exact)


def test_identity_mass_hmc_draws_todays_random_numbers():
    """The pluggable kinetic term must not change plain HMC: kinetic=IdentityMass() explicitly and the
    default give the same chain bit for bit, and the same as drawing N(0,1) momenta by hand."""
    lat = Lattice((6, 6))
    theory = Phi4.hopping(lat, 0.2, 0.02)
    phi = torch.zeros((3, *lat.shape), dtype=torch.float64)
    a = HMC(theory, 0.1, 5, backend="eager")
    b = HMC(theory, 0.1, 5, backend="eager", kinetic=IdentityMass())
    sa, sb = a.init(phi), b.init(phi)
    ra, rb = ChainRNG.from_seed(2, 3), ChainRNG.from_seed(2, 3)
    for _ in range(5):
        sa, _ = a.step(sa, ra)
        sb, _ = b.step(sb, rb)
    assert torch.equal(sa.phi, sb.phi) and a.settings() == b.settings() and "mass" not in a.settings()


def test_pilot_mass_bound_ignores_the_mean_field_vacuum_of_a_near_critical_point():
    """Near kappa_c (0.2705; mean field puts the transition at 0.239) a measured m(0) ~ 1/chi is small
    and the mean-field vacuum would make omega^2 = 4a/m(0) ~ 25: every useful FA step refused (found by
    the L = 32 Binder run). A pilot mass is the curvature the chain sees: bound max(1, phi = 0)."""
    lat = Lattice((32, 32))
    theory = Phi4.hopping(lat, 0.2705, 0.022)
    spectrum = 0.02 + 2 * 0.2705 * lat.p_hat2()  # the shape of a near-critical 1/G(p)
    pilot = FourierMass(lat, spectrum, source="pilot")
    hmc = HMC(theory, math.pi / 4, 2, kinetic=pilot)
    assert hmc.omega2_max() == pytest.approx(max(1.0, omega2_max(theory, 1 / spectrum, vacuum=False)))
    with pytest.raises(LftmlError, match="unstable"):
        HMC(theory, math.pi / 4, 2, kinetic=FourierMass(lat, spectrum, source="action"))
