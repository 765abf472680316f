"""The two numbers the diffusion monitor reports in nats, checked against closed forms on Gaussians:
the held-out ELBO gain (:func:`lftml.diffusion.monitor.likelihood_gain`) and its ceiling
``KL(p || q)`` (:func:`lftml.diffusion.monitor.gain_ceiling`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lftml.diffusion.baselines import GaussianBaseline
from lftml.diffusion.monitor import gain_ceiling, likelihood_gain
from lftml.diffusion.sde import VESDE
from lftml.errors import LftmlError
from lftml.lattice import Lattice
from lftml.theories import FreeScalar


def kl_gauss(a: np.ndarray, b: np.ndarray) -> float:
    """``KL(N(0, diag a) || N(0, diag b))`` summed over modes."""
    r = a / b
    return float(0.5 * np.sum(r - 1.0 - np.log(r)))


@pytest.fixture(scope="module")
def free_pair():
    """p: the free field (m2 = 0.5) on 6x6; q: a Gaussian whose power spectrum is p's, each mode
    off by a random factor in [0.7, 1.3] (then made even in p by the baseline; not point-group averaged)."""
    theory = FreeScalar(Lattice((6, 6)), 0.5)
    c_p = 1.0 / theory.spectrum()
    rng = np.random.default_rng(3)
    q = GaussianBaseline(torch.as_tensor(c_p * (1.0 + 0.3 * (2.0 * rng.random(c_p.shape) - 1.0))))
    return theory, c_p, q


def test_gain_ceiling_is_the_closed_form_kl_and_log_z_of_two_gaussians(free_pair):
    """``KL(p || q)`` from held-out samples of p and importance samples of q against the closed form
    ``sum_p (r - 1 - log r)/2``, ``r = c_p / c_q``; ``log Z`` against the free field's exact
    ``log Z = (V/2) log 2 pi - (1/2) log det K``. Both within 4 of their reported errors, and the KL many
    errors away from 0 and from twice itself (the test can tell). Bugs caught: a sign of S or log q, a
    missing ``- log Z`` (off by ~40 nats here), a factor 2, a log-sum-exp without its ``- log N``, an error bar
    that ignores the importance-sampling part."""
    theory, c_p, q = free_pair
    c_q = q.power_spectrum.numpy()
    exact = kl_gauss(c_p, c_q)
    phi = theory.sample(4000, torch.Generator().manual_seed(1)).numpy()
    out = gain_ceiling(q, theory, phi, n_samples=8000, seed=2)
    print(f"KL {out['value']:.4f}({out['error']:.4f}) exact {exact:.4f}; log Z {out['log_z']:.4f}"
          f"({out['log_z_error']:.4f}) exact {theory.log_partition():.4f}; ESS/N {out['ess_fraction']:.3f}")
    assert abs(out["value"] - exact) < 4.0 * out["error"], (out, exact)
    assert abs(out["log_z"] - theory.log_partition()) < 4.0 * out["log_z_error"]
    assert exact > 10.0 * out["error"]  # a KL of 0 (or 2x) would fail by many errors
    assert abs(out["kl_reverse"] - kl_gauss(c_q, c_p)) < 0.1 * exact  # no error reported for it: a loose cross-check
    assert out["jeffreys"] == pytest.approx(out["value"] + out["kl_reverse"], abs=1e-9)
    with pytest.raises(LftmlError, match="n_samples"):
        gain_ceiling(q, theory, phi, n_samples=1)


class _GaussianScoreModel:
    """Just what :func:`likelihood_gain` reads of a score model: the analytic part is the exact
    diffused score of ``N(0, c_q)`` and the full model that of ``N(0, c_p)`` (model units); ``scale``
    the model-unit factor, ``theory`` a theory record or None."""

    training = False

    def __init__(self, c_p: np.ndarray, c_q: np.ndarray, sde: VESDE, scale: float = 1.0, theory: dict | None = None):
        self.c_p = torch.as_tensor(c_p, dtype=torch.float32)
        self.c_q = torch.as_tensor(c_q, dtype=torch.float32)
        self.lattice_shape = tuple(c_p.shape)
        self.volume = int(c_p.size)
        self.sde = sde
        self.theory = theory
        self.power_spectrum = self.c_p  # the data's two-point function (the TSM blend uses it)
        self.sigma_data = float(np.sqrt(c_p.mean()))
        self.scaling = type("Scaling", (), {"scale": scale})()
        self.net = torch.nn.Linear(1, 1)

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def _score(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        s2 = (self.sde.std(t.double()) ** 2).float().reshape(-1, 1, 1)
        return -torch.fft.ifft2(torch.fft.fft2(x) / (c + s2)).real

    def score_parts(self, x, t):
        a = self._score(x, t, self.c_q)
        return a, self._score(x, t, self.c_p) - a

    def __call__(self, x, t):
        return self._score(x, t, self.c_p)


def test_held_out_gain_of_the_exact_score_is_the_closed_form_kl_difference(free_pair):
    """With the exact score of p as the model and q's as its analytic part, the ELBO gain is
    ``(1/2) int g^2 E_p |grad log p_t - grad log q_t|^2 dt = KL(p_eps || q_eps) - KL(p_1 || q_1)``
    (de Bruijn's identity for the common forward process; ``p_t = N(0, c_p + std(t)^2)``). The estimate
    (paired noise draws, ``low`` t-sampling with its importance weights, TSM target) must match the
    closed form within 4 of its errors. Bugs caught: a wrong nats factor ``V ln(sigma_max/sigma_min)``
    (a volume of sites vs modes, a factor 2), t-sampling weights that do not integrate to the
    g^2 weighting, a missing ``s`` in the residual; any of them moves the gain by many errors."""
    theory, c_p, q = free_pair
    c_q = q.power_spectrum.numpy()
    sde = VESDE()
    s_lo = float(sde.std(torch.tensor(sde.eps, dtype=torch.float64)))
    exact = kl_gauss(c_p + s_lo**2, c_q + s_lo**2) - kl_gauss(c_p + sde.sigma_max**2, c_q + sde.sigma_max**2)
    model = _GaussianScoreModel(c_p, c_q, sde)
    phi = theory.sample(2048, torch.Generator().manual_seed(4)).numpy()
    force = theory.force(torch.as_tensor(phi)).numpy()
    out = likelihood_gain(model, phi, force=force, draws=8, seed=5)
    print(f"gain {out['value']:.4f}({out['error']:.4f}) exact {exact:.4f}")
    assert abs(out["value"] - exact) < 4.0 * out["error"], (out, exact)
    assert exact > 10.0 * out["error"]
