"""`lftml rbm train --resume`: an interrupted PCD run continues bit-identically (like `lftml hmc --resume`)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli
from faults import inject
from lftml.rbm.io import load_model

COMMON = ["--shape", "10", "--m2", "4", "--hidden", "6", "--updates", "60", "--log-every", "10", "--seed", "3"]


@pytest.mark.parametrize("method,at", [("pcd", 4), ("cd", 6)])
def test_interrupted_training_resumes_bit_identically(tmp_path, method, at):
    """Interrupt at the `at`-th learning-curve evaluation (update 10 (at - 1), inside the loop), then --resume:
    W, mu and the whole learning curve equal an uninterrupted run's bit for bit. Catches a resume that
    restarts the persistent chains, the data order or a generator stream, or loses the optimizer's momentum.
    PCD runs on the free-field target (chains + sampling stream), CD on data (minibatch order stream)."""
    args = COMMON + ["--method", method]
    if method == "cd":
        args = ["--data", "digits", "--max-samples", "200", "--hidden", "6", "--mu2", "20", "--updates", "60",
                "--log-every", "10", "--seed", "3", "--method", "cd", "--lr", "0.001"]
    full, part = tmp_path / "full.pt", tmp_path / "part.pt"
    run_cli("rbm", "train", *args, "--out", full, check=True)
    with inject("lftml.rbm.training:kl_and_loglik", at, "interrupt") as st:
        r = run_cli("rbm", "train", *args, "--out", part)
    assert st["fired"] and r.exit_code == 130 and "--resume" in r.stderr, r.stderr
    stopped = load_model(part)[1]["meta"]["interrupted_at_update"]
    assert stopped == 10 * (at - 2)  # the last completed learning-curve point before the interrupted one
    r = run_cli("rbm", "train", *args, "--out", part, "--resume", "--json", check=True)
    assert json.loads(r.stdout)["resumed_from_update"] == stopped
    (a, ra), (b, rb) = load_model(full), load_model(part)
    assert torch.equal(a.W, b.W) and (a.mu is None or torch.equal(a.mu, b.mu))
    assert ra["history"] == rb["history"]
    assert "resume_state" not in rb["meta"]


def test_resume_refuses_a_finished_run_and_changed_options(tmp_path):
    """--resume on a finished model, or with options that differ from the interrupted run: one error line, exit 2."""
    out = tmp_path / "m.pt"
    run_cli("rbm", "train", *COMMON, "--method", "pcd", "--out", out, check=True)
    r = run_cli("rbm", "train", *COMMON, "--method", "pcd", "--out", out, "--resume")
    assert r.exit_code == 2 and "resume" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    part = tmp_path / "p.pt"
    with inject("lftml.rbm.training:kl_and_loglik", 4, "interrupt"):
        assert run_cli("rbm", "train", *COMMON, "--method", "pcd", "--out", part).exit_code == 130
    r = run_cli("rbm", "train", *COMMON[:-2], "--seed", "4", "--method", "pcd", "--out", part, "--resume")
    assert r.exit_code == 2 and "--seed" in r.stderr
    r = run_cli("rbm", "train", *COMMON, "--method", "pcd", "--k", "1", "--out", part, "--resume")
    assert r.exit_code == 2 and "differ" in r.stderr and "k" in r.stderr


def test_resume_takes_the_options_from_the_file(tmp_path):
    """`--out part.pt --resume` alone takes every training option from the interrupted file and finishes
    bit-identically; a matching explicit option is accepted, a contradicting one refused by name.
    Catches a resume that falls back to the CLI defaults (--updates 1000, --k 3, seed 0, no target) or
    that silently overrides stored options with typed ones."""
    args = COMMON + ["--method", "pcd", "--k", "2"]  # --k 2 differs from the default, so a default fallback shows
    full, part = tmp_path / "full.pt", tmp_path / "part.pt"
    run_cli("rbm", "train", *args, "--out", full, check=True)
    with inject("lftml.rbm.training:kl_and_loglik", 4, "interrupt"):
        assert run_cli("rbm", "train", *args, "--out", part).exit_code == 130
    r = run_cli("rbm", "train", "--out", part, "--resume", "--k", "3")
    assert r.exit_code == 2 and "--k" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_cli("rbm", "train", "--out", part, "--resume", "--updates", "100")
    assert r.exit_code == 2 and "--updates" in r.stderr, r.stderr
    r = run_cli("rbm", "train", "--out", part, "--resume", "--seed", "3", "--k", "2", "--json", check=True)
    assert json.loads(r.stdout)["resumed_from_update"] == 20
    (a, ra), (b, rb) = load_model(full), load_model(part)
    assert torch.equal(a.W, b.W) and torch.equal(a.mu, b.mu) and ra["history"] == rb["history"]


def test_resume_with_no_options_is_bit_identical(tmp_path):
    """Only --out and --resume: the finished model equals the uninterrupted run's bit for bit."""
    args = ["--data", "digits", "--max-samples", "200", "--hidden", "6", "--mu2", "20", "--updates", "60",
            "--log-every", "10", "--seed", "5", "--method", "cd", "--lr", "0.001"]
    full, part = tmp_path / "full.pt", tmp_path / "part.pt"
    run_cli("rbm", "train", *args, "--out", full, check=True)
    with inject("lftml.rbm.training:kl_and_loglik", 5, "interrupt"):
        assert run_cli("rbm", "train", *args, "--out", part).exit_code == 130
    run_cli("rbm", "train", "--out", part, "--resume", check=True)
    (a, ra), (b, rb) = load_model(full), load_model(part)
    assert torch.equal(a.W, b.W) and (a.mu is None or torch.equal(a.mu, b.mu)) and ra["history"] == rb["history"]
    assert "resume_state" not in rb["meta"]
