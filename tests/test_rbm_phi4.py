"""phi^4 on the visible nodes: the exact rejection sampler of p(phi_i | h) against direct numerical
integration of the one-site conditional."""

from __future__ import annotations

import json
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


# ----------------------------------------------------------------- trained on an engine ensemble
from lftml.rbm.phi4 import compare_observables, sample_chains  # noqa: E402


def test_envelope_mode_solves_the_cubic():
    """The envelope centre c (mode of the conditional) solves lam c^3/6 + mu2 c = b: catches a wrong
    Cardano branch (acceptance would still be exact but collapse for large |b|/mu^2)."""
    from lftml.rbm.phi4 import _mode

    b = torch.tensor([-50.0, -1.0, 0.0, 0.3, 40.0], dtype=torch.float64)
    c = _mode(b, torch.full_like(b, 2.0), 6.0)
    assert torch.allclose(6.0 * c**3 / 6 + 2.0 * c, b, atol=1e-9)


def test_conditional_sampler_large_field_keeps_high_acceptance():
    """|b|/mu^2 = 20 with lam = 24: plain rejection from the Gaussian conditional accepts ~exp(-20^4) (never);
    the mode-centred envelope accepts most proposals, and the draws still match quadrature."""
    n = 100_000
    phi, acc = sample_phi4_conditional(torch.full((n,), 20.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64),
                                       24.0, torch.Generator().manual_seed(3))
    assert acc > 0.5
    x = phi.numpy()
    for k, exact in zip((1, 2, 4), _moments_by_quadrature(20.0, 1.0, 24.0)):
        v = x**k
        assert abs(v.mean() - exact) < 4 * v.std() / math.sqrt(n), (k, v.mean(), exact)


def test_sign_flip_sweeps_leave_the_exact_gaussian_distribution_invariant():
    """The phi -> -phi flips added to the Gibbs sweeps (eta = 0) keep the stationary distribution: on a
    Gaussian RBM (lam = 0) the sampled second moment matches the exact propagator K^-1 (z < 4 per entry
    on the diagonal, errors by the Gamma method). Catches a flip applied per site instead of per chain."""
    from lftml.stats import gamma_method

    W = torch.tensor([[0.8, 0.2], [0.6, -0.5], [0.1, 0.7]], dtype=torch.float64)
    m = Phi4VisibleRBM(3, 2, mu2=1.5, lam=0.0, weights=W)
    m.check_positive_definite()
    s = sample_chains(m, 2000, 16, 50, torch.Generator().manual_seed(1))
    exact = m.propagator().detach().numpy()
    assert abs(exact[0, 1]) > 0.3  # a per-site flip would drive <phi_0 phi_1> to 0
    for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2)):
        e = gamma_method(s[:, :, i] * s[:, :, j])
        assert abs(e.value - exact[i, j]) < 4 * e.error, (i, j, e.value, exact[i, j], e.error)


def _ensemble(tmp_path, run_cli, n_configs=500, chains=8):
    ens = tmp_path / "ens.h5"
    run_cli("hmc", "--shape", "4", "4", "--m2", "-1.0", "--g", "6", "--chains", str(chains), "--n-configs", str(n_configs), "--therm", "100",
            "--every", "2", "--seed", "1", "--out", ens, "--no-progress", "--json", check=True)
    return ens


def test_visible_phi4_cli_runs_reports_acceptance_and_refuses_bad_input(tmp_path):
    """Mechanics in seconds: --visible-phi4 trains a few PCD updates, writes the model, reports the sampler's
    acceptance and the three observables with z-scores; a non-ensemble --data or --mu2 is one error line, exit 2."""
    from conftest import run_cli

    ens = _ensemble(tmp_path, run_cli, n_configs=100, chains=4)
    out = tmp_path / "p.pt"
    r = run_cli("rbm", "train", "--data", ens, "--visible-phi4", "--hidden", "16", "--updates", "20", "--k", "1",
                "--seed", "1", "--out", out, "--json", check=True)
    d = json.loads(r.stdout)
    assert out.exists() and 0 < d["acceptance"] <= 1 and d["g"] >= 0
    assert set(d["comparison"]) == {"absM", "chi2", "U_L"} and all(np.isfinite(v["z"]) for v in d["comparison"].values())
    for bad, match in ((["--data", "digits"], "ensemble"), (["--data", ens, "--mu2", "5"], "mu0")):
        r = run_cli("rbm", "train", *bad, "--visible-phi4", "--hidden", "4", "--out", tmp_path / "x.pt")
        assert r.exit_code == 2 and match in r.stderr and not (tmp_path / "x.pt").exists()
    with pytest.raises(Exception, match="phi\\^4-visible"):
        from lftml.rbm.io import load_model

        load_model(out)


@pytest.mark.slow
def test_phi4_rbm_reproduces_binder_cumulant_where_the_gaussian_rbm_cannot(tmp_path):
    """2d phi^4 on 4x4 at m^2 = -1, g = 6 (U_L ~ 0.4: far from Gaussian). The Gaussian RBM (exact ML, same
    data) has U_L = 0 by construction and its samples' U_L is excluded (z > 10); the PCD-trained phi^4 RBM's
    <|M|>, chi_2 and U_L agree with the ensemble's (|z| < 4, Gamma-method errors of both). Catches a wrong sign
    or 4! in the lam gradient, chains not using the phi^4 sampler, or a Gaussian-only model passing."""
    from conftest import run_cli

    from lftml.datasets import load_ensemble_history

    ens = _ensemble(tmp_path, run_cli)
    r = run_cli("rbm", "train", "--data", ens, "--visible-phi4", "--hidden", "16", "--updates", "2500", "--k", "1",
                "--pcd-chains", "1024", "--batch-size", "1024", "--seed", "1", "--out", tmp_path / "p.pt", "--json", check=True)
    d = json.loads(r.stdout)
    assert d["acceptance"] > 0.5
    for name, c in d["comparison"].items():
        assert abs(c["z"]) < 4, (name, c)
    run_cli("rbm", "train", "--data", ens, "--hidden", "16", "--seed", "1", "--out", tmp_path / "g.pt", check=True)
    run_cli("rbm", "sample", tmp_path / "g.pt", "--method", "exact", "--n-configs", "500", "--chains", "8", "--seed", "2",
            "--out", tmp_path / "g.h5", check=True)
    ref = load_ensemble_history(ens)
    gauss = compare_observables(load_ensemble_history(tmp_path / "g.h5").reshape(500, 8, -1), ref.reshape(500, 8, -1))
    assert abs(gauss["U_L"]["model"]) < 4 * gauss["U_L"]["model_error"]  # Gaussian: U_L = 0 within its error
    assert gauss["U_L"]["z"] < -10  # ... and the ensemble's U_L is excluded
    assert abs(gauss["chi2"]["z"]) < 4  # the Gaussian ML fit does get the second moment right (the trivial baseline)
