"""Defaults that converge, the exact held-out likelihood against Monte Carlo, and the training
guards of issues 10-12 (unbounded likelihood, runaway divergence, interrupts, analytic reporting)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lftml.cli.main import app
from lftml.rbm import GaussianRBM, optimal_spectrum
from lftml.rbm.io import load_model
from lftml.theories import FreeScalar
from lftml.lattice import Lattice

runner = CliRunner()
LAM = FreeScalar(Lattice(10), 4.0).eigenvalues()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("nh", [9, 8, 7, 6])
def test_default_exact_training_reaches_the_ml_optimum(tmp_path, nh):
    """Acceptance (issue 12): `lftml rbm train --shape 10 --m2 4 --hidden N_h --out m.pt` with every
    other option at its default reaches the harmonic-mean mu^2 and the N_h infrared modes to 1e-3
    relative (the old default stopped at mu^2 = 7.525 for N_h = 9, where the answer is 8). Also
    catches convergence to a saddle with a dead hidden unit (N_h = 8 gave the N_h = 7 mu^2)."""
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--hidden", str(nh), "--log-every", "1000",
               "--out", str(tmp_path / "m.pt"), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    pred, mu2 = optimal_spectrum(LAM, nh)
    assert out["converged"] and out["n_updates"] < 1000 and out["grad_max"] < 1e-6
    assert out["mu2"] == pytest.approx(mu2, rel=1e-3)
    ev = np.array(out["model_eigenvalues"])
    assert np.all(np.abs(ev[:nh] - pred[:nh]) / pred[:nh] < 1e-3)


def test_reference_recipe_keeps_the_papers_fixed_schedule(tmp_path):
    """--recipe reference: exactly --updates updates of the reference schedule (short of the optimum)."""
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--hidden", "9", "--recipe", "reference", "--updates", "200",
               "--log-every", "200", "--out", str(tmp_path / "m.pt"), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n_updates"] == 200 and out["recipe"] == "reference" and abs(out["mu2"] - 8.0) > 1e-2
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--hidden", "9", "--recipe", "converge", "--lr", "0.1",
               "--out", str(tmp_path / "x.pt"))
    assert r.exit_code == 2 and "--recipe reference" in r.stderr
    # schedule options without --recipe (the old README command): that schedule, with one warning line
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--hidden", "9", "--lr", "0.1", "--updates", "20",
               "--out", str(tmp_path / "y.pt"), "--json")
    assert r.exit_code == 0 and "--recipe reference is used" in r.stderr and json.loads(r.stdout)["n_updates"] == 20


def test_huge_learning_rate_is_a_one_line_divergence_error(tmp_path):
    """Issue 10: --lr 1e6 ended at KL = 7e240 with exit 0. Runaway growth is now 'diverged', exit 2."""
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--hidden", "6", "--recipe", "reference", "--lr", "1e6",
               "--out", str(tmp_path / "m.pt"))
    assert r.exit_code == 2 and "diverged" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.pt").exists()


def test_analytic_method_reports_no_update_count(tmp_path):
    """Issue 11: --method analytic printed '1000 updates' for a closed-form result."""
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--hidden", "6", "--method", "analytic", "--out", str(tmp_path / "a.pt"))
    assert r.exit_code == 0, r.output
    assert "updates" not in r.stdout.replace("no updates", "") and "closed-form" in r.stdout
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--hidden", "6", "--method", "analytic", "--out",
               str(tmp_path / "b.pt"), "--json")
    assert json.loads(r.stdout)["n_updates"] is None
    # nor does the model file: it records no update schedule (it stored the default n_updates = 1000)
    _, rec = load_model(tmp_path / "a.pt")
    assert rec["meta"]["train_config"] == {"method": "analytic", "n_updates": 0}
    assert rec["history"]["n_updates"] == 0


def test_analytic_method_warns_that_typed_update_options_are_not_used(tmp_path):
    """`--method analytic --updates 500 --lr 0.1`: the options have no effect, so they are named in one
    warning line, and '500 updates' is reported nowhere (stdout, JSON, model file)."""
    args = ["rbm", "train", "--shape", "10", "--m2", "4", "--hidden", "6", "--method", "analytic", "--updates", "500",
            "--lr", "0.1"]
    r = invoke(*args, "--out", str(tmp_path / "a.pt"))
    assert r.exit_code == 0, r.output
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "--updates" in warn[0] and "--lr" in warn[0] and "not used" in warn[0], r.stderr
    assert "500" not in r.stdout
    _, rec = load_model(tmp_path / "a.pt")
    assert "500" not in json.dumps(rec["meta"]["train_config"])
    r = invoke(*args, "--out", str(tmp_path / "b.pt"), "--json")
    assert json.loads(r.stdout)["n_updates"] is None
    # without typed update options: no warning
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--hidden", "6", "--method", "analytic", "--out",
               str(tmp_path / "c.pt"))
    assert "warning" not in r.stderr


def test_unbounded_likelihood_is_detected(tmp_path):
    """Data with exact zero modes and a learned mu^2: <log p> -> inf as mu^2 -> inf once every mode
    the hidden layer cannot keep has zero variance. Refused with the fix named (not a drift)."""
    rng = np.random.default_rng(0)
    x = np.zeros((200, 6))
    x[:, :4] = rng.normal(size=(200, 4))  # two constant pixels: 2 zero modes, N_v - zero = 4
    np.save(tmp_path / "x.npy", x)
    base = ["rbm", "train", "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "m.pt")]
    r = invoke(*base, "--hidden", "4")
    assert r.exit_code == 2 and "unbounded" in r.stderr and "--mu2" in r.stderr and "2 exact zero modes" in r.stderr
    r = invoke(*base, "--hidden", "2", "--learn-mu2", "site")
    assert r.exit_code == 2 and "unbounded" in r.stderr
    r = invoke(*base, "--hidden", "3", "--json")  # one mode with variance is dropped: bounded, harmonic mean
    assert r.exit_code == 0, r.output
    r = invoke(*base, "--hidden", "4", "--mu2", "50", "--method", "analytic", "--overwrite")
    assert r.exit_code == 0, r.output


def test_closed_form_loglik_agrees_with_a_direct_monte_carlo_estimate():
    """log p(phi) of the Gaussian RBM (closed form, marginal over h) against a direct Monte Carlo
    integral over the hidden field: p(phi) = (2 pi s^2)^{N_h/2} E_{h ~ N(eta, s^2)}[exp(-mu^2 phi^2/2
    + phi W h)] / Z, with Z the joint Gaussian normalisation (2 pi)^{(N_v+N_h)/2} det(A)^{-1/2} of
    the joint precision A (independent of the marginal's formula). Catches a missing log det / 2,
    a wrong 2 pi power, a sign of J. z-score with the delta-method error of the MC mean."""
    g = torch.Generator().manual_seed(3)
    nv, nh, s = 3, 2, 0.8
    m = GaussianRBM(nv, nh, mu2=torch.tensor([2.0, 2.5, 3.0], dtype=torch.float64), sigma_h=s,
                    weights=0.6 * torch.randn((nv, nh), generator=g, dtype=torch.float64),
                    eta=torch.tensor([0.3, -0.5], dtype=torch.float64))
    m.check_positive_definite()
    mu2 = m.mu2_vector().numpy()
    W, eta = m.W.detach().numpy(), m.eta.detach().numpy()
    A = np.block([[np.diag(mu2), -W], [-W.T, np.eye(nh) / s**2]])
    b = np.concatenate([np.zeros(nv), eta / s**2])  # S = z^T A z/2 - b.z + eta^2/(2 s^2)
    logZ = 0.5 * (nv + nh) * math.log(2 * math.pi) - 0.5 * np.linalg.slogdet(A)[1] + 0.5 * b @ np.linalg.solve(A, b) \
        - 0.5 * eta @ eta / s**2
    rng = np.random.default_rng(5)
    phis = m.sample_exact(4, torch.Generator().manual_seed(7)).numpy()
    closed = m.log_prob(phis).detach().numpy()
    n = 400_000
    for phi, lp in zip(phis, closed):
        h = eta + s * rng.standard_normal((n, nh))
        w = np.exp(-0.5 * mu2 @ phi**2 + (phi @ W) @ h.T)
        mean, err = w.mean(), w.std(ddof=1) / math.sqrt(n)
        mc = 0.5 * nh * math.log(2 * math.pi * s**2) + math.log(mean) - logZ
        assert abs(mc - lp) < 5 * err / mean, (mc, lp, err / mean)


def test_interrupt_keeps_the_last_consistent_model_and_says_how_to_continue(tmp_path, monkeypatch):
    """SIGINT/SIGTERM (both KeyboardInterrupt inside the command) during training: the model after
    the last completed learning-curve point is written, marked interrupted, and --init continues
    from it; exit 130 with one line saying so (the reference recipe can also --resume: see test_rbm_resume)."""
    import lftml.rbm.workflows as wf

    real = wf.train

    def interrupted(model, target, config, **kw):
        cb = kw.pop("callback")

        def cb2(step, m):
            cb(step, m)
            if step >= 20:
                raise KeyboardInterrupt

        return real(model, target, config, callback=cb2, **kw)

    monkeypatch.setattr(wf, "train", interrupted)
    out = tmp_path / "m.pt"
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--hidden", "6", "--recipe", "reference", "--log-every", "10",
               "--out", str(out))
    assert r.exit_code == 130 and "--init" in r.stderr and "after update 20" in r.stderr
    model, rec = load_model(out)
    assert rec["meta"]["interrupted_at_update"] == 20
    model.check_positive_definite()
    monkeypatch.setattr(wf, "train", real)
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--init", str(out), "--out", str(tmp_path / "more.pt"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mu2"] == pytest.approx(optimal_spectrum(LAM, 6)[1], rel=1e-3)


def test_digit_grid_and_heldout_likelihood_commands(tmp_path):
    """rbm train --data digits --heldout: train/held-out exact log-likelihood per image; rbm sample
    --grid draws digits; rbm likelihood re-scores the same held-out split (same seed) to the same number."""
    model = tmp_path / "d.pt"
    r = invoke("rbm", "train", "--data", "digits", "--hidden", "16", "--mu2", "100", "--method", "analytic",
               "--heldout", "0.2", "--seed", "2", "--out", str(model), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    ho = out["heldout_loglik_per_image"]
    assert ho["n"] == 359 and out["heldout_gap"] > 0 and ho["error"] > 0
    r = invoke("rbm", "likelihood", str(model), "--data", "digits", "--heldout", "0.2", "--seed", "2", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mean"] == pytest.approx(ho["mean"], rel=1e-12)
    r = invoke("rbm", "sample", str(model), "--grid", str(tmp_path / "g.png"), "--grid-size", "9", "--therm", "50")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g.png").stat().st_size > 0


def test_pcd_persistence_matters_on_a_slowly_mixing_target():
    """Issue 11: removing PCD's persistence passed every PCD test (those targets mix in 3 sweeps).
    Here the infrared mode (k = 0.3 at mu^2 = 5) relaxes by (4.7/5)^2 per sweep: from a fresh start
    3 sweeps reach only ~30 % of its variance. Started at the exact optimum, persistent PCD stays
    within 5 sigma of pcd_tolerance (measured pulls <= 1.3 over 3 seeds); the same run with the
    chains re-initialised at every update (the mutation) runs away (K indefinite) -- checked here as
    the negative control, so the test demonstrably fails without persistence."""
    from lftml.errors import LftmlError
    from lftml.rbm import GaussianRBM, Target, TrainConfig, optimal_weights, pcd_tolerance, train

    theory = FreeScalar(Lattice(4), 0.3)
    lam, target = theory.eigenvalues(), Target.from_theory(theory)
    W, _ = optimal_weights(theory.kernel_matrix(), 4, 5.0)
    cfg = TrainConfig(method="pcd", n_updates=300, k=3, n_chains=64, l2=0.0, lr=0.002, lr_decay=1.0, log_every=300)
    pred, _ = optimal_spectrum(lam, 4, 5.0)
    sigma, _ = pcd_tolerance(lam, 4, cfg, mu2=5.0)

    def run(reset: bool) -> np.ndarray:
        m = GaussianRBM(4, 4, mu2=5.0, weights=W)
        if reset:
            gibbs = m.gibbs
            m.gibbs = lambda x, n, g: gibbs(torch.zeros_like(x), n, g)
        train(m, target, cfg, sampling_generator=torch.Generator().manual_seed(2))
        return m.eigenvalues()

    ev = run(reset=False)
    assert np.all(np.abs(ev - pred) < 5 * sigma), (ev - pred) / sigma
    try:
        ev_reset = run(reset=True)
    except LftmlError:
        return  # diverged: persistence was needed
    assert np.any(np.abs(ev_reset - pred) > 5 * sigma)


@pytest.mark.parametrize("when", ["before", "after"])
def test_interrupt_outside_the_training_loop_says_whether_the_model_was_written(tmp_path, monkeypatch, when):
    """An interrupt while the run is set up (or after the model is saved) left the generic "use --resume"
    line, wrong for a run that wrote nothing. Now the line says what the output file holds."""
    import lftml.rbm.workflows as w

    out = tmp_path / "m.pt"
    real = w.run_training

    def interrupted(*args, **kwargs):
        if when == "after":
            real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(w, "run_training", interrupted)
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--hidden", "6", "--recipe", "reference", "--updates", "20",
               "--out", str(out))
    assert r.exit_code == 130
    if when == "before":
        assert r.stderr.strip() == f"interrupted before training: nothing was written ({out} untouched); rerun the command"
        assert not out.exists()
    else:
        assert r.stderr.strip() == f"interrupted after training: the complete model was written to {out}"
        assert load_model(out)[1]["meta"].get("interrupted_at_update") is None
    assert not (tmp_path / "m.pt.lock").exists()


def test_interrupt_caught_after_an_exec_still_exits_130_under_python_m(tmp_path):
    """CI saw ``python -m lftml rbm train`` exit -2 (killed by SIGINT) on a SIGTERM although it printed
    its one line and asked for 130: CPython marks the process as SIGINT-killed once a
    KeyboardInterrupt has passed out of any ``exec`` of a string (the SIGTERM landed in a dataclass
    being built by torch's lazy import of torch._dynamo), even when it is caught later. Here the
    interrupt comes out of such an exec deterministically; the run must still end with status 130."""
    import subprocess
    import sys

    (tmp_path / "interrupted_in_exec.py").write_text(
        "import sys\n"
        "import lftml.rbm.workflows as w\n"
        "def train(*args, **kwargs):\n"
        "    exec('raise KeyboardInterrupt')\n"
        "w.train = train\n"
        "from lftml.cli.main import main\n"
        "main(sys.argv[1:])\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    out = tmp_path / "m.pt"
    res = subprocess.run([sys.executable, "-m", "interrupted_in_exec", "rbm", "train", "--shape", "10", "--m2", "4",
                          "--hidden", "6", "--recipe", "reference", "--updates", "50", "--out", str(out)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert res.stderr.strip() == f"interrupted at update 0: nothing was written ({out} untouched)"
    assert not out.exists() and not (tmp_path / "m.pt.lock").exists()


@pytest.mark.slow
def test_sigterm_stops_rbm_train_like_sigint(tmp_path):
    """Issue 10: rbm train ignored SIGTERM (killed without a message). Now SIGTERM is an interrupt:
    exit 130, one line saying what was kept, no lock or temporary file left. Waits for the run lock
    (taken just before training starts) instead of sleeping a fixed time."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "m.pt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-m", "lftml", "rbm", "train", "--shape", "10", "--m2", "4", "--hidden", "6",
                          "--recipe", "reference", "--updates", "10000000", "--log-every", "5", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lock = tmp_path / "m.pt.lock"
    t0 = time.monotonic()
    while not lock.exists() and time.monotonic() - t0 < 60 and p.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err and len(err.strip().splitlines()) == 1
    assert not lock.exists() and not list(tmp_path.glob(".*tmp"))
    if out.exists():
        assert load_model(out)[1]["meta"]["interrupted_at_update"] > 0
