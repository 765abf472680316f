"""Scalar-Bernoulli RBM: PCD training on data, induced couplings against finite differences of
S_eff, AIS log Z against exact enumeration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lftml.rbm.bernoulli import ScalarBernoulliRBM
from lftml.rbm.bernoulli_training import BernoulliTrainConfig, ais_log_partition, induced_couplings, train_bernoulli


def _model(seed: int, nv: int = 6, nh: int = 8, eta: bool = True) -> ScalarBernoulliRBM:
    g = torch.Generator().manual_seed(seed)
    W = 0.5 * torch.randn((nv, nh), generator=g, dtype=torch.float64)
    e = 0.2 * torch.randn(nh, generator=g, dtype=torch.float64) if eta else None
    return ScalarBernoulliRBM(W, mu2=1.5, eta=e)


@pytest.mark.parametrize("seed", [0, 1])
def test_ais_log_partition_agrees_with_enumeration_within_its_error(seed):
    """AIS (500 runs, 200 temperatures) vs log Z by summing the 2^8 hidden states exactly: within
    4 sigma of the AIS error. Catches a wrong log Z_0 (missing 2^N_h or 2 pi/mu^2), a weight update
    with the wrong sign, or a transition not at the current beta."""
    m = _model(seed)
    est, err = ais_log_partition(m, 500, 200, torch.Generator().manual_seed(10 + seed))
    assert 0 < err < 0.1
    assert abs(est - m.log_partition()) < 4 * err, (est, m.log_partition(), err)


def test_induced_couplings_match_finite_differences_of_the_effective_action():
    """Two-point: Hessian of F at phi = 0 (central differences) = mu^2 - W W^T; four-point along
    random directions v: d^4/dt^4 F(t v) at 0 (five-point stencil) = sum T_ijkl v^4 = 2 sum_a (v.W_a)^4.
    Catches a wrong sign or factor of the quartic term (log cosh x = x^2/2 - x^4/12)."""
    m = _model(3, eta=False)
    c = induced_couplings(m)
    F = lambda x: float(m.free_energy(torch.as_tensor(x).reshape(1, -1))[0])  # noqa: E731
    n, h = m.n_visible, 1e-4
    H = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            e_i, e_j = np.eye(n)[i] * h, np.eye(n)[j] * h
            H[i, j] = (F(e_i + e_j) - F(e_i - e_j) - F(-e_i + e_j) + F(-e_i - e_j)) / (4 * h * h)
    assert np.allclose(H, c["kernel"].numpy(), atol=1e-6)
    rng = np.random.default_rng(0)
    T = c["four_point"].numpy()
    for _ in range(3):
        v = rng.normal(size=n)
        s = 0.05
        d4 = (F(2 * s * v) - 4 * F(s * v) + 6 * F(0 * v) - 4 * F(-s * v) + F(-2 * s * v)) / s**4
        exact = float(np.einsum("ijkl,i,j,k,l->", T, v, v, v, v))
        # the stencil's leading error is s^2 d^6F/6, d^6 F ~ 16 sum (v.W)^6 (log cosh's x^6 term is 1/45)
        bound = s**2 * 16 * float(np.sum((v @ m.W.numpy()) ** 6)) / 6 * 2
        assert abs(d4 - exact) < bound + 1e-3, (d4, exact, bound)
    assert c["norm_four"] > 0 and c["norm_two"] > 0


def test_pcd_training_learns_a_teacher_bernoulli_rbm():
    """Data from a teacher (6 visible, 3 hidden); a student trained by PCD (2,000 updates) reaches
    the teacher's held-out log-likelihood: the exact (enumerated) KL estimate mean(log p_teacher -
    log p_student) on held-out data is below 5 paired standard errors + 0.01 nats (measured
    0.065(28) nats, PCD noise at lr 0.01 included; the untrained student is at 15 nats). Catches a gradient with the wrong sign or a trainer that
    learns nothing."""
    g = torch.Generator().manual_seed(7)
    teacher = ScalarBernoulliRBM(0.8 * torch.randn((6, 3), generator=g, dtype=torch.float64), mu2=1.0)
    x = teacher.sample(30, 100, torch.Generator().manual_seed(3), n_therm=200, every=5).reshape(-1, 6)
    train_x, held = x[:2000], x[2000:]
    student = ScalarBernoulliRBM(0.01 * torch.randn((6, 3), generator=g, dtype=torch.float64), mu2=1.0)
    untrained = float((teacher.log_prob(held) - student.log_prob(held)).mean())
    train_bernoulli(student, train_x, BernoulliTrainConfig(n_updates=2000, lr=0.01),
                    sampling_generator=torch.Generator().manual_seed(4), data_generator=torch.Generator().manual_seed(5))
    d = (teacher.log_prob(held) - student.log_prob(held)).numpy()
    kl, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))
    assert untrained > 1.0
    assert kl < 5 * se + 0.01, (kl, se)


def test_cli_bernoulli_hidden_units_train_and_likelihood(tmp_path):
    """rbm train --hidden-units bernoulli: PCD on data, log-likelihood per image with log Z by
    enumeration; rbm likelihood re-scores the same held-out split to the same number; Gaussian-only
    commands refuse the file with one line."""
    import json

    from typer.testing import CliRunner

    from lftml.cli.main import app

    runner = CliRunner()
    x = np.random.default_rng(0).normal(size=(300, 5))
    np.save(tmp_path / "x.npy", x)
    r = runner.invoke(app, ["rbm", "train", "--data", str(tmp_path / "x.npy"), "--hidden-units", "bernoulli", "--hidden", "4",
                            "--mu2", "1", "--updates", "100", "--heldout", "0.2", "--out", str(tmp_path / "b.pt"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    ho = out["heldout_loglik_per_image"]
    assert ho["log_z_method"] == "enumeration" and ho["n"] == 60
    r = runner.invoke(app, ["rbm", "likelihood", str(tmp_path / "b.pt"), "--data", str(tmp_path / "x.npy"), "--heldout", "0.2", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mean"] == pytest.approx(ho["mean"], rel=1e-12)
    r = runner.invoke(app, ["rbm", "spectrum", str(tmp_path / "b.pt")])
    assert r.exit_code == 2 and "Bernoulli" in r.stderr
    r = runner.invoke(app, ["rbm", "train", "--data", str(tmp_path / "x.npy"), "--hidden-units", "bernoulli", "--hidden", "4",
                            "--out", str(tmp_path / "c.pt")])
    assert r.exit_code == 2 and "--mu2" in r.stderr


def test_bernoulli_digits_command_chain_grid_and_likelihood_ais_vs_enumeration(tmp_path):
    """`rbm train --hidden-units bernoulli --data digits` -> `rbm sample --grid` -> `rbm likelihood` with log Z
    by enumeration and by AIS on the same held-out images: the two log-likelihoods differ only by log Z, so
    they must agree within AIS's own error (z < 4). Catches an AIS weight with the wrong sign or a missing
    log Z_0 term, a grid that ignores Bernoulli files, or a likelihood scored on the training part."""
    import json

    from conftest import run_cli

    m = tmp_path / "b.pt"
    common = ["--data", "digits", "--heldout", "0.2", "--seed", "1"]
    run_cli("rbm", "train", "--hidden-units", "bernoulli", *common, "--hidden", "8", "--mu2", "20", "--updates", "200",
            "--out", m, check=True)
    g = tmp_path / "grid.png"
    r = run_cli("rbm", "sample", m, "--grid", g, "--therm", "50", "--grid-size", "16", "--seed", "2", "--json", check=True)
    assert g.stat().st_size > 0 and json.loads(r.stdout)["grid"]["hidden_units"] == "bernoulli"
    enum = json.loads(run_cli("rbm", "likelihood", m, *common, "--log-z", "enumeration", "--json", check=True).stdout)
    ais = json.loads(run_cli("rbm", "likelihood", m, *common, "--log-z", "ais", "--ais-runs", "200", "--ais-betas", "300",
                             "--json", check=True).stdout)
    assert enum["log_z_method"] == "enumeration" and ais["log_z_method"] == "ais" and enum["n"] == ais["n"] == 359
    assert 0 < ais["log_z_error"] < 0.5
    assert abs(enum["mean"] - ais["mean"]) < 4 * ais["log_z_error"], (enum, ais)
    assert np.isfinite(enum["mean"]) and enum["part"] == "held-out"
    r = run_cli("rbm", "sample", m, "--out", tmp_path / "e.h5", "--n-configs", "5")
    assert r.exit_code == 2 and "Bernoulli" in r.stderr and not (tmp_path / "e.h5").exists()
