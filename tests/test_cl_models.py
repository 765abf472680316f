"""Complex actions: drift = -dS/dz (holomorphic), L_c O formulas, observables, parsing."""

from __future__ import annotations

import pytest
import torch

from lftml.complex.bose_gas import BoseGas
from lftml.complex.models import GaussianModel, QuarticModel, U1OneLinkModel, model_from_dict, parse_complex
from lftml.errors import LftmlError


def _random_complex(shape, seed=0, scale=0.7):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)) * scale


ONE_SITE = [GaussianModel(1 + 1j), QuarticModel(-1 + 4j, 1.0), QuarticModel(1 + 1j, 0.5 - 0.2j), U1OneLinkModel(0.3, 1.2, 0.8)]


def _numerical_derivative(f, z, h=1e-6):
    """Holomorphic derivative along the real direction per component (central differences)."""
    grad = torch.zeros_like(z)
    flat = z.reshape(z.shape[0], -1)
    for i in range(flat.shape[1]):
        dz = torch.zeros_like(flat)
        dz[:, i] = h
        grad.reshape(z.shape[0], -1)[:, i] = (f((flat + dz).reshape(z.shape)) - f((flat - dz).reshape(z.shape))) / (2 * h)
    return grad


@pytest.mark.parametrize("model", ONE_SITE, ids=lambda m: m.name)
def test_one_site_drift_is_minus_holomorphic_derivative_of_action(model):
    z = _random_complex((5, 1))
    numeric = -_numerical_derivative(model.action, z)
    assert torch.allclose(model.drift(z), numeric, atol=1e-7)
    # holomorphic: the derivative along i equals i times the derivative along 1
    h = 1e-6
    along_i = (model.action(z + 1j * h) - model.action(z - 1j * h)) / (2 * h)
    assert torch.allclose(along_i, -1j * model.drift(z)[:, 0], atol=1e-6)


@pytest.mark.parametrize("model", ONE_SITE, ids=lambda m: m.name)
def test_one_site_criterion_is_langevin_operator_on_observables(model):
    z = _random_complex((4, 1), seed=1)
    k = model.drift(z)
    crit = model.criterion(z, k)
    h = 1e-4
    for name, lc in crit.items():
        def o(x, name=name):
            return model.observables(x)[name]

        d1 = (o(z + h) - o(z - h)) / (2 * h)
        d2 = (o(z + h) - 2 * o(z) + o(z - h)) / (h * h)
        assert torch.allclose(lc, d2 + k[:, 0] * d1, rtol=1e-5, atol=1e-5), name


def test_bose_gas_drift_is_minus_gradient_of_action():
    model = BoseGas((2, 3, 4), m=0.8, lam=0.7, mu=0.6)
    z = _random_complex((2, *model.field_shape), seed=2, scale=0.5)
    numeric = -_numerical_derivative(model.action, z, h=1e-6)
    assert torch.allclose(model.drift(z), numeric, atol=1e-6)


def test_bose_gas_criterion_matches_numerical_langevin_operator():
    model = BoseGas((2, 2, 3), m=1.0, lam=0.5, mu=0.7)
    z = _random_complex((2, *model.field_shape), seed=3, scale=0.5)
    k = model.drift(z)
    crit = model.criterion(z, k)
    h = 1e-4
    for name in ("density", "phi2"):
        def o(x, name=name):
            return model.observables(x)[name]

        total = torch.zeros(z.shape[0], dtype=torch.complex128)
        flat = z.reshape(z.shape[0], -1)
        kf = k.reshape(z.shape[0], -1)
        for i in range(flat.shape[1]):
            dz = torch.zeros_like(flat)
            dz[:, i] = h
            up, dn = o((flat + dz).reshape(z.shape)), o((flat - dz).reshape(z.shape))
            total += (up - 2 * o(z) + dn) / h**2 + kf[:, i] * (up - dn) / (2 * h)
        assert torch.allclose(crit[name], total, atol=1e-6), name


def test_bose_gas_at_zero_mu_has_real_action_and_zero_density_operator_symmetry():
    model = BoseGas((3, 4), m=1.0, lam=0.3, mu=0.0)
    phi = _random_complex((3, *model.field_shape)).real.to(torch.complex128)
    assert torch.allclose(model.action(phi).imag, torch.zeros(3, dtype=torch.float64))
    # complex-conjugation symmetry: at real mu the action of real fields satisfies S(mu)* = S(-mu)
    m_plus, m_minus = BoseGas((3, 4), 1.0, 0.3, 0.5), BoseGas((3, 4), 1.0, 0.3, -0.5)
    assert torch.allclose(m_plus.action(phi).conj(), m_minus.action(phi))


def test_phase_quenched_bose_gas_stays_real_and_has_unit_modulus_phase():
    pq = BoseGas((2, 4), m=1.0, lam=1.0, mu=1.0).phase_quenched()
    z = _random_complex((3, *pq.field_shape)).real.to(torch.complex128)
    assert torch.all(pq.drift(z).imag == 0)
    phase = pq.observables(z)["phase_factor"]
    assert torch.allclose(phase.abs(), torch.ones(3, dtype=torch.float64))
    assert model_from_dict(pq.to_dict()) == pq


@pytest.mark.parametrize("text,value", [("1+1j", 1 + 1j), ("-1+4i", -1 + 4j), ("0.5", 0.5), (" 2j ", 2j), ("-1-1J", -1 - 1j)])
def test_parse_complex_accepts_common_spellings(text, value):
    assert parse_complex(text) == value


@pytest.mark.parametrize("text", ["abc", "1+", "nan", ""])
def test_parse_complex_rejects_garbage_with_hint(text):
    with pytest.raises(LftmlError, match="1\\+1j|finite"):
        parse_complex(text, "sigma")


def test_models_round_trip_through_dict():
    for model in ONE_SITE + [BoseGas((4, 4), 1.0, 0.5, 0.3)]:
        assert model_from_dict(model.to_dict()) == model


def test_model_validation_messages():
    with pytest.raises(LftmlError, match="Re sigma > 0"):
        GaussianModel(-1 + 1j)
    with pytest.raises(LftmlError, match="time extent"):
        BoseGas((4, 1))
    with pytest.raises(LftmlError, match="lam must be >= 0"):
        BoseGas((4, 4), lam=-1.0)
