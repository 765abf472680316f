"""VE SDE closed forms and the periodic U-Net's symmetries."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from scipy.integrate import quad

from lftml.diffusion.nets import UNet, UNetConfig, preset
from lftml.diffusion.sde import VESDE, check_sigma_max
from lftml.errors import LftmlError


def test_perturbation_kernel_std_is_the_integral_of_g_squared():
    sde = VESDE(25.0)
    for t in (1e-4, 0.1, 0.5, 1.0):
        integral, _ = quad(lambda s: sde.sigma ** (2 * s), 0.0, t)
        assert float(sde.std(torch.tensor(t, dtype=torch.float64))) ** 2 == pytest.approx(integral, rel=1e-10)
    assert sde.sigma_max == pytest.approx(math.sqrt((25.0**2 - 1) / (2 * math.log(25.0))))


def test_perturb_and_prior_have_the_stated_moments():
    sde = VESDE(10.0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(20000, 4, dtype=torch.float64)
    t = torch.full((20000,), 0.3, dtype=torch.float64)
    xt, z, std = sde.perturb(x0, t, g)
    s = float(sde.std(torch.tensor(0.3)))
    assert torch.allclose(xt, std * z)
    assert float(xt.std()) == pytest.approx(s, rel=0.02)
    p = sde.prior_sample((20000, 4), g, dtype=torch.float64)
    assert float(p.std()) == pytest.approx(sde.sigma_max, rel=0.02)
    # prior log density is the normalised Gaussian
    lp = sde.prior_log_prob(torch.zeros(1, 4, dtype=torch.float64))
    assert float(lp) == pytest.approx(-2 * math.log(2 * math.pi * sde.sigma_max**2))


def test_bad_sigma_is_rejected():
    with pytest.raises(LftmlError, match="sigma > 1"):
        VESDE(0.5)


def test_warns_when_sigma_max_is_far_below_the_largest_pairwise_distance(caplog):
    sde = VESDE(2.0)  # sigma_max ~ 1.47
    x = torch.cat([torch.full((5, 16), 1.0), torch.full((5, 16), -1.0)])  # two "vacua" 8 apart
    with caplog.at_level(logging.WARNING, logger="lftml.diffusion.sde"):
        d = check_sigma_max(sde, x)
    assert d == pytest.approx(8.0)
    assert "far below" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lftml.diffusion.sde"):
        check_sigma_max(VESDE(25.0), x)
    assert "far below" not in caplog.text


def test_stride_one_unet_commutes_with_every_lattice_translation():
    cfg = UNetConfig(channels=(4, 8), strides=(1, 1), embed_dim=16, linear_skip=2, zero_mode_head=True)
    net = UNet(cfg, torch.Generator().manual_seed(0)).double()
    net.reset_parameters(torch.Generator().manual_seed(0))  # output layers are zero-initialised: randomise them
    x = torch.randn(3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    c = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    y = net(x, c)
    for shift in [(1, 0), (0, 1), (2, 3)]:
        y_shift = net(torch.roll(x, shift, dims=(1, 2)), c)
        assert torch.allclose(y_shift, torch.roll(y, shift, dims=(1, 2)), atol=1e-12)


def test_stride_two_unet_commutes_with_even_translations():
    net = UNet(preset("tiny"), torch.Generator().manual_seed(0)).double()
    net.reset_parameters(torch.Generator().manual_seed(0))
    x = torch.randn(2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    c = torch.zeros(2, dtype=torch.float64)
    y = net(x, c)
    assert torch.allclose(net(torch.roll(x, (2, 4), dims=(1, 2)), c), torch.roll(y, (2, 4), dims=(1, 2)), atol=1e-12)


@pytest.mark.parametrize("name", ["tiny", "fast", "paper"])
def test_presets_map_fields_to_fields(name):
    net = UNet(preset(name), torch.Generator().manual_seed(0))
    x = torch.randn(2, 8, 8)
    assert net(x, torch.zeros(2)).shape == x.shape


def test_paper_preset_is_the_reference_architecture():
    cfg = preset("paper")
    assert cfg.channels == (32, 64, 128, 256) and cfg.strides == (1, 1, 1, 1)


def test_lattice_not_divisible_by_the_total_stride_is_rejected():
    with pytest.raises(LftmlError, match="divisible"):
        preset("fast").check_lattice((10, 10))


def test_untrained_network_outputs_exactly_zero():
    net = UNet(preset("fast"), torch.Generator().manual_seed(0))
    assert torch.count_nonzero(net(torch.randn(2, 8, 8), torch.zeros(2))) == 0


def test_initialisation_is_reproducible_from_the_generator():
    a = UNet(preset("tiny"), torch.Generator().manual_seed(5))
    b = UNet(preset("tiny"), torch.Generator().manual_seed(5))
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), k
