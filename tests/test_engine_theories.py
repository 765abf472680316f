"""Free and phi^4 actions: forces, parametrisations, free-field closed forms, exact sampler.

Exact identities are tested to round-off (1e-12); the exact FFT sampler is tested statistically
with z-scores from per-entry standard errors of independent samples.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lftml.errors import LftmlError
from lftml.lattice import Lattice
from lftml.stats import gamma_method, gamma_method_derived
from lftml.theories import FreeScalar, Phi4, theory_from_dict

SHAPES = {1: (7,), 2: (4, 5), 3: (3, 4, 2)}


def theories_for(shape):
    lat = Lattice(shape)
    return {
        "free": FreeScalar(lat, 0.7),
        "hopping": Phi4.hopping(lat, kappa=0.21, lam=0.35),
        "m2_lam4": Phi4.m2_lam4(lat, m2=-0.8, lam=1.3),
        "m2_g": Phi4.m2_g(lat, m2=0.4, g=2.5),
    }


CASES = [(d, name) for d in (1, 2, 3) for name in ("free", "hopping", "m2_lam4", "m2_g")]


def random_field(shape, n=3, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn((n, *shape), generator=g, dtype=torch.float64)


# ------------------------------------------------------------------ force = -dS/dphi


@pytest.mark.parametrize(("d", "name"), CASES, ids=[f"{d}d-{n}" for d, n in CASES])
def test_force_equals_minus_autograd_gradient_of_action(d, name):
    theory = theories_for(SHAPES[d])[name]
    phi = random_field(SHAPES[d], scale=1.5).requires_grad_(True)
    S = theory.action(phi)
    assert S.shape == (3,)
    (grad,) = torch.autograd.grad(S.sum(), phi)
    force = theory.force(phi.detach())
    assert force.shape == phi.shape
    assert torch.max(torch.abs(force + grad)).item() < 1e-12 * max(1.0, torch.max(torch.abs(grad)).item())


@pytest.mark.parametrize(("d", "name"), CASES, ids=[f"{d}d-{n}" for d, n in CASES])
def test_force_equals_central_finite_difference_of_action(d, name):
    """Independent of autograd: (S(phi + h e_x) - S(phi - h e_x)) / 2h at every site of one chain."""
    shape = SHAPES[d]
    theory = theories_for(shape)[name]
    phi = random_field(shape, n=1, seed=1, scale=1.5)
    force = theory.force(phi)[0].reshape(-1)
    h = 1e-5
    V = int(np.prod(shape))
    shifts = torch.eye(V, dtype=torch.float64).reshape(V, *shape) * h
    fd = (theory.action(phi + shifts) - theory.action(phi - shifts)) / (2 * h)
    # truncation error h^2 S'''/6 ~ 1e-10 * (c_4 phi) and round-off ~ 1e-16 |S| / h
    np.testing.assert_allclose(fd.numpy(), -force.numpy(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_free_action_is_half_phi_K_phi_and_equals_phi4_with_zero_coupling(d):
    shape = SHAPES[d]
    free = FreeScalar(Lattice(shape), 0.7)
    phi = random_field(shape)
    flat = phi.reshape(3, -1).numpy()
    K = free.kernel_matrix()
    expected = 0.5 * np.einsum("ci,ij,cj->c", flat, K, flat)
    np.testing.assert_allclose(free.action(phi).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(free.force(phi).reshape(3, -1).numpy(), -flat @ K.T, atol=1e-12)
    np.testing.assert_allclose(
        Phi4.m2_g(free.lattice, 0.7, 0.0).action(phi).numpy(), expected, rtol=1e-12
    )


# ------------------------------------------------------------------ parametrisations

FORMS = ("hopping", "m2_lam4", "m2_g")


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("start", ["hopping", "m2_lam4", "m2_g"])
@pytest.mark.parametrize("target", FORMS)
def test_action_is_invariant_under_form_conversion_with_the_returned_field_scale(d, start, target):
    shape = SHAPES[d]
    theory = theories_for(shape)[start]
    new, s = theory.to_form(target)
    assert new.form == target
    phi = random_field(shape, seed=5)
    np.testing.assert_allclose(new.action(s * phi).numpy(), theory.action(phi).numpy(), rtol=1e-12)
    # forces transform as the gradient: F_new(s phi) = F_old(phi) / s
    np.testing.assert_allclose((s * new.force(s * phi)).numpy(), theory.force(phi).numpy(), atol=1e-11)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_round_trip_hopping_to_m2_lam4_to_m2_g_to_hopping_is_the_identity(d):
    lat = Lattice(SHAPES[d])
    h0 = Phi4.hopping(lat, kappa=0.18, lam=0.047)
    a, s1 = h0.to_form("m2_lam4")
    b, s2 = a.to_form("m2_g")
    h1, s3 = b.to_form("hopping")
    assert h1.form == "hopping"
    assert abs(h1["kappa"] - 0.18) < 1e-12 and abs(h1["lam"] - 0.047) < 1e-12
    assert abs(s1 * s2 * s3 - 1.0) < 1e-12
    assert abs(s2 - 1.0) < 1e-15  # m2_lam4 and m2_g share the field normalisation
    assert abs(b["g"] - 6 * a["lam"]) < 1e-12 and abs(b["m2"] - a["m2"]) < 1e-12


def test_known_conversion_kappa_0p21_lambda_0p022_in_2d():
    h = Phi4.hopping(Lattice((8, 8)), kappa=0.21, lam=0.022)
    c, s = h.to_form("m2_lam4")
    assert abs(c["m2"] - ((1 - 0.044) / 0.21 - 4)) < 1e-12
    assert abs(c["lam"] - 0.022 / 0.21**2) < 1e-12
    assert abs(s - math.sqrt(2 * 0.21)) < 1e-15
    g, _ = h.to_form("m2_g")
    assert abs(g["g"] - 6 * 0.022 / 0.21**2) < 1e-12
    # coefficients of the common form
    assert h.coefficients == pytest.approx((0.42, 1 - 0.044, 0.022), abs=1e-15)


@pytest.mark.parametrize(
    "make",
    [
        lambda lat: Phi4.hopping(lat, kappa=0.2, lam=-0.1),
        lambda lat: Phi4.hopping(lat, kappa=-0.2, lam=0.1),
        lambda lat: Phi4.m2_lam4(lat, m2=1.0, lam=-0.5),
        lambda lat: Phi4.m2_g(lat, m2=1.0, g=-1.0),
        lambda lat: Phi4.m2_lam4(lat, m2=-1.0, lam=0.0),
        lambda lat: Phi4.m2_g(lat, m2=0.0, g=0.0),
        lambda lat: Phi4.m2_lam4(lat, m2=float("nan"), lam=1.0),
        lambda lat: FreeScalar(lat, 0.0),
        lambda lat: FreeScalar(lat, -0.5),
        lambda lat: FreeScalar(lat, float("inf")),
        lambda lat: Phi4.m2_lam4(lat, 1.0, 1.0).to_form("kappa"),
        lambda lat: Phi4.hopping(lat, kappa=0.0, lam=0.1).to_form("m2_lam4"),
    ],
    ids=["neg_lambda_hop", "neg_kappa", "neg_lambda_lam4", "neg_g", "lam0_m2neg", "g0_m2zero", "nan",
         "free_m2_zero", "free_m2_neg", "free_m2_inf", "unknown_form", "zero_hopping"],
)
def test_bad_couplings_raise_lftml_error(make):
    with pytest.raises(LftmlError):
        make(Lattice((4, 4)))


@pytest.mark.parametrize("name", ["free", "hopping", "m2_lam4", "m2_g"])
def test_theory_from_dict_rebuilds_the_same_action(name):
    theory = theories_for((4, 5))[name]
    rebuilt = theory_from_dict(theory.to_dict())
    assert rebuilt == theory
    phi = random_field((4, 5))
    assert torch.equal(rebuilt.action(phi), theory.action(phi))


# ------------------------------------------------------------------ free field: exact results

FREE_SHAPES = [(9,), (6, 4), (5, 5), (4, 3, 4)]


@pytest.mark.parametrize("shape", FREE_SHAPES, ids=str)
def test_free_propagator_is_the_inverse_of_the_dense_kernel(shape):
    free = FreeScalar(Lattice(shape), 0.6)
    K = free.kernel_matrix()
    Kinv = np.linalg.inv(K)
    G = free.propagator()
    V = free.lattice.volume
    # translation invariance: K^-1[x, y] = G(x - y) for every pair
    coords = np.array(np.unravel_index(np.arange(V), shape)).T
    diff = (coords[:, None, :] - coords[None, :, :]) % np.array(shape)
    G_xy = G[tuple(diff[..., mu] for mu in range(len(shape)))]
    np.testing.assert_allclose(G_xy, Kinv, atol=1e-12)
    np.testing.assert_allclose(free.eigenvalues(), np.linalg.eigvalsh(K), atol=1e-12)
    assert abs(free.phi2() - np.trace(Kinv) / V) < 1e-12
    assert abs(G.sum() - 1 / 0.6) < 1e-12 and abs(free.susceptibility() - 1 / 0.6) < 1e-15
    sign, logdet = np.linalg.slogdet(K)
    assert sign == 1 and abs(free.log_partition() - (0.5 * V * math.log(2 * math.pi) - 0.5 * logdet)) < 1e-10


@pytest.mark.parametrize("shape", [(10,), (12, 3), (8, 3, 2), (7, 4)], ids=str)
@pytest.mark.parametrize("m2", [0.3, 1.7])
def test_zero_momentum_correlator_closed_form_and_cosh_effective_mass(shape, m2):
    free = FreeScalar(Lattice(shape), m2)
    C = free.zero_momentum_correlator()
    T = shape[0]
    t = np.arange(T)
    p0 = 2 * np.pi * np.arange(T) / T
    closed = (np.cos(np.outer(t, p0)) / (4 * np.sin(p0 / 2) ** 2 + m2)).sum(axis=1) / T
    np.testing.assert_allclose(C, closed, atol=1e-12)
    assert abs(C.sum() - 1 / m2) < 1e-12
    m_eff = free.effective_mass()
    assert abs(math.cosh(m_eff) - (1 + m2 / 2)) < 1e-14
    # C(t-1) + C(t+1) = 2 cosh(m_eff) C(t) at every t != 0 (periodically): a pure cosh; at t = 0
    # the source: (2 + m2) C(0) - C(-1) - C(1) = 1 (K C = delta in the time direction)
    lhs = np.roll(C, 1) + np.roll(C, -1)
    np.testing.assert_allclose(lhs[1:], 2 * math.cosh(m_eff) * C[1:], atol=1e-12)
    assert abs((2 + m2) * C[0] - lhs[0] - 1.0) < 1e-12
    np.testing.assert_allclose(C, C[0] * np.cosh(m_eff * (t - T / 2)) / math.cosh(m_eff * T / 2), atol=1e-12)


def test_exact_sampler_covariance_matches_inverse_kernel_entry_by_entry():
    """Independent samples: per-entry standard error of <phi_x phi_y> from the sample itself."""
    shape = (4, 3)
    free = FreeScalar(Lattice(shape), 0.5)
    n = 40_000
    phi = free.sample(n, torch.Generator().manual_seed(11)).reshape(n, -1).numpy()
    assert phi.dtype == np.float64
    prod = phi[:, :, None] * phi[:, None, :]
    mean = prod.mean(axis=0)
    se = prod.std(axis=0, ddof=1) / math.sqrt(n)
    z = (mean - np.linalg.inv(free.kernel_matrix())) / se
    iu = np.triu_indices(free.lattice.volume)
    # 78 distinct entries: max |z| < 4.5 (all-entry false-alarm rate ~ 5e-4), and the sum of z^2
    # is chi^2-like (correlated entries, so only a loose consistency check on the scale: a 10%
    # normalisation error gives z ~ 10 on the diagonal).
    assert np.max(np.abs(z[iu])) < 4.5
    assert np.mean(z[iu] ** 2) < 2.0
    # first moment: <phi_x> = 0
    zm = phi.mean(axis=0) / (phi.std(axis=0, ddof=1) / math.sqrt(n))
    assert np.max(np.abs(zm)) < 4.5


@pytest.mark.parametrize("shape", [(16,), (6, 6), (4, 4, 4)], ids=str)
def test_exact_sampler_magnetisation_gives_chi_one_over_m2_and_binder_zero(shape):
    m2 = 0.4
    free = FreeScalar(Lattice(shape), m2)
    V = free.lattice.volume
    M = free.sample(20_000, torch.Generator().manual_seed(12)).mean(dim=tuple(range(1, len(shape) + 1))).numpy()
    chi = gamma_method_derived(lambda m2_, m: V * (m2_ - m * m), M**2, M)
    U = gamma_method_derived(lambda m4, m2_: 1 - m4 / (3 * m2_**2), M**4, M**2)
    assert abs(chi.value - 1 / m2) < 4 * chi.error
    assert abs(U.value - 0.0) < 4 * U.error
    # samples are independent: tau_int consistent with 1/2 within its Madras-Sokal error
    tau = gamma_method(M)
    assert abs(tau.tau_int - 0.5) < 4 * tau.tau_int_error


def test_exact_sampler_is_reproducible_from_its_generator_and_rejects_n_below_one():
    free = FreeScalar(Lattice((4, 4)), 1.0)
    a = free.sample(5, torch.Generator().manual_seed(3))
    b = free.sample(5, torch.Generator().manual_seed(3))
    c = free.sample(5, torch.Generator().manual_seed(4))
    assert a.shape == (5, 4, 4) and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(LftmlError):
        free.sample(0, torch.Generator().manual_seed(3))
