"""phi^4 on the visible nodes: the exact rejection sampler of p(phi_i | h) against direct numerical
integration of the one-site conditional."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from lftml.errors import LftmlError
from lftml.rbm.phi4 import Phi4VisibleRBM, sample_phi4_conditional


def _moments_by_quadrature(b: float, mu2: float, lam: float) -> list[float]:
    w = lambda x: math.exp(-mu2 * x * x / 2 - lam * x**4 / 24 + b * x)  # noqa: E731
    z = integrate.quad(w, -np.inf, np.inf)[0]
    return [integrate.quad(lambda x: x**n * w(x), -np.inf, np.inf)[0] / z for n in (1, 2, 4)]


@pytest.mark.parametrize("b,mu2,lam", [(0.0, 1.0, 1.0), (1.5, 0.5, 2.0), (-2.0, 2.0, 24.0), (0.7, 1.0, 0.0)])
def test_conditional_sampler_matches_quadrature(b, mu2, lam):
    """<phi>, <phi^2>, <phi^4> of 200,000 i.i.d. draws against quadrature, z < 4 with the exact
    i.i.d. standard errors. Catches accepting with exp(-lam phi^4/4) (wrong 4!), a proposal centred
    at b instead of b/mu^2, or keeping rejected proposals."""
    n = 200_000
    phi, acc = sample_phi4_conditional(torch.full((n,), b, dtype=torch.float64), torch.tensor(mu2, dtype=torch.float64),
                                       lam, torch.Generator().manual_seed(1))
    x = phi.numpy()
    assert 0 < acc <= 1 and (acc == 1 if lam == 0 else acc < 1)
    for k, exact in zip((1, 2, 4), _moments_by_quadrature(b, mu2, lam)):
        v = x**k
        assert abs(v.mean() - exact) < 4 * v.std() / math.sqrt(n), (k, v.mean(), exact)


def test_phi4_rbm_gibbs_reports_acceptance_and_rejects_negative_lam():
    m = Phi4VisibleRBM(4, 3, mu2=2.0, lam=6.0, generator=torch.Generator().manual_seed(0), init_std=0.5)
    x = m.gibbs(torch.zeros((50, 4), dtype=torch.float64), 20, torch.Generator().manual_seed(1))
    assert x.shape == (50, 4) and torch.isfinite(x).all() and 0 < m.last_acceptance < 1
    with pytest.raises(LftmlError, match="lam"):
        Phi4VisibleRBM(4, 3, mu2=2.0, lam=-1.0, generator=torch.Generator())
