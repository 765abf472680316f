"""`lftml diffusion train`: files and faults (issue 10) and the CLI vocabulary (docs/cli.md)."""

from __future__ import annotations

import errno
import os
import signal

import numpy as np
import pytest
import torch

from conftest import run_cli
from lftml.diffusion.model import load_model
from lftml.diffusion.training import TrainConfig, TrainingInterrupted, checkpoint_path, train
from lftml.ensemble import write_ensemble
from lftml.errors import LftmlError
from lftml.lattice import Lattice
from lftml.theories import FreeScalar

THEORY = FreeScalar(Lattice((8, 8)), 0.5)
FAST = ["--preset", "tiny-equi", "--batch-size", "8", "--noise-draws", "1", "--checkpoint-every", "5", "--json"]


@pytest.fixture(scope="module")
def ens(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "free.h5"
    data = THEORY.sample(256, torch.Generator().manual_seed(0)).numpy()
    write_ensemble(p, data.reshape(64, 4, 8, 8), metadata={"kind": "test", "theory": THEORY.to_dict()}, theory=THEORY)
    return p


def _one_line_error(res, *words):
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    err = res.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


def test_existing_output_input_as_output_and_missing_folder_are_refused_before_any_work(tmp_path, ens):
    """Bug caught: an existing model silently replaced, the ensemble replaced by a model, a
    traceback for a missing folder."""
    out = tmp_path / "m.pt"
    out.write_bytes(b"precious")
    _one_line_error(run_cli("diffusion", "train", "--data", ens, "--out", out, *FAST, "--updates", "3"), "--overwrite")
    assert out.read_bytes() == b"precious"
    _one_line_error(run_cli("diffusion", "train", "--data", ens, "--out", ens, "--overwrite", *FAST), "input")
    _one_line_error(run_cli("diffusion", "train", "--data", ens, "--out", tmp_path / "nodir" / "sub" / "m.pt", *FAST),
                    "does not exist")
    _one_line_error(run_cli("diffusion", "train", "--data", ens, "--out", tmp_path / "x.pt", "--seed", "-1", *FAST),
                    "--seed")
    res = run_cli("diffusion", "train", "--data", ens, "--out", out, "--overwrite", *FAST, "--updates", "3")
    assert res.exit_code == 0 and load_model(out).info["training"]["steps_done"] == 3
    assert not list(tmp_path.glob(".*tmp")) and not list(tmp_path.glob("*.lock"))


def test_resume_takes_the_stored_settings_and_refuses_a_changed_one_by_name(tmp_path, ens):
    """Bug caught: resume by default, a changed lr/sigma/t-sampling silently mixed into a resumed run,
    options that must be repeated to resume."""
    out = tmp_path / "m.pt"
    cfg = TrainConfig(steps=10, preset="tiny-equi", batch_size=8, noise_draws=1, lr=5e-3, checkpoint_every=5,
                      t_sampling="mixed", seed=3)
    from lftml.diffusion.data import load_configs

    d = load_configs(ens)
    train(d.configs, tmp_path / "full.pt", cfg, theory=d.theory, progress=False, device="cpu")
    train(d.configs, out, cfg, theory=d.theory, progress=False, device="cpu", max_steps_this_call=5)
    _one_line_error(run_cli("diffusion", "train", "--data", ens, "--out", out, "--json"), "--resume", "--overwrite")
    _one_line_error(run_cli("diffusion", "train", "--data", ens, "--out", out, "--resume", "--lr", "1e-3"), "lr")
    _one_line_error(run_cli("diffusion", "train", "--data", ens, "--out", out, "--resume", "--sigma", "10"), "sigma")
    _one_line_error(run_cli("diffusion", "train", "--data", ens, "--out", out, "--resume", "--t-sampling", "low"),
                    "t_sampling")
    res = run_cli("diffusion", "train", "--data", ens, "--out", out, "--resume", "--json", check=True).json()
    assert res["resumed_from"] == 5 and res["steps"] == 10 and res["settings"]["lr"] == 5e-3
    a, b = load_model(tmp_path / "full.pt"), load_model(out)
    for k, v in a.net.state_dict().items():
        assert torch.equal(v, b.net.state_dict()[k]), k
    _one_line_error(run_cli("diffusion", "train", "--data", ens, "--out", tmp_path / "new.pt", "--resume", *FAST),
                    "no checkpoint")


def test_runaway_loss_ends_with_a_one_line_diverged_error(tmp_path, ens):
    """Issue 10: `--lr 1e3` used to end at loss 5e18 with exit 0. Bug caught: only NaN/inf detected."""
    res = run_cli("diffusion", "train", "--data", ens, "--out", tmp_path / "m.pt", "--lr", "1e3", "--updates", "200",
                  *FAST)
    _one_line_error(res, "diverged", "--lr")
    assert not (tmp_path / "m.pt").exists()


def test_interrupt_saves_a_checkpoint_that_resumes_bit_identically(tmp_path, ens, monkeypatch):
    """SIGINT during update 7: training stops after it, the checkpoint holds 7 complete updates and
    the resumed run equals an uninterrupted one. Bug caught: an interrupt that
    loses up to a checkpoint interval or leaves a half-written file."""
    from lftml.diffusion import training as tr
    from lftml.diffusion.data import load_configs

    d = load_configs(ens)
    cfg = TrainConfig(steps=12, preset="tiny-equi", batch_size=8, noise_draws=1, checkpoint_every=100, seed=1)
    full = train(d.configs, tmp_path / "full.pt", cfg, theory=d.theory, progress=False, device="cpu")
    real, calls = tr.train_step, {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:  # a signal arrives in the middle of update 7
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(tr, "train_step", interrupted)
    with pytest.raises(TrainingInterrupted) as info:
        train(d.configs, tmp_path / "m.pt", cfg, theory=d.theory, progress=False, device="cpu")
    assert info.value.step == 7 and checkpoint_path(tmp_path / "m.pt").exists()
    monkeypatch.setattr(tr, "train_step", real)
    res = train(d.configs, tmp_path / "m.pt", cfg, theory=d.theory, progress=False, device="cpu", resume=True)
    assert res.resumed_from == 7
    np.testing.assert_array_equal(res.losses, full.losses)


@pytest.mark.slow
def test_sigterm_on_the_command_line_says_how_to_resume(tmp_path, ens):
    """A real SIGTERM to a running `lftml diffusion train`: exit 130, one line naming --resume
    (slow: a fresh interpreter; the in-process test above covers the mechanics)."""
    import subprocess
    import sys
    import time

    out = tmp_path / "m.pt"
    proc = subprocess.Popen([sys.executable, "-m", "lftml", "diffusion", "train", "--data", str(ens), "--out", str(out),
                             "--updates", "100000", "--preset", "tiny-equi", "--batch-size", "8", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ck = checkpoint_path(out)
    t0 = time.time()
    while time.time() - t0 < 120 and not (tmp_path / "m.pt.lock").exists():
        time.sleep(0.2)
    time.sleep(3.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert ck.exists() and not (tmp_path / "m.pt.lock").exists()


def test_full_disk_leaves_no_temp_file_and_one_line(tmp_path, ens, monkeypatch):
    """ENOSPC while writing the model: one line, no temp file, the checkpoint kept."""
    from lftml.diffusion import model as model_module

    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("format") == model_module.MODEL_FORMAT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    res = run_cli("diffusion", "train", "--data", ens, "--out", tmp_path / "m.pt", "--updates", "5", *FAST)
    _one_line_error(res, "no space left")
    assert not (tmp_path / "m.pt").exists() and checkpoint_path(tmp_path / "m.pt").exists()
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]


def test_old_spellings_warn_once_and_still_work(tmp_path, ens):
    res = run_cli("diffusion", "train", "--data", ens, "--out", tmp_path / "m.pt", "--steps", "2", *FAST)
    assert res.exit_code == 0, res.stderr
    assert res.stderr.count("deprecated") == 1
    assert "warning: --steps is deprecated; use --updates" in res.stderr


def test_no_preset_option_trains_the_recommended_model(tmp_path, ens):
    """`lftml diffusion train` without options trains the documented default: the equivariant,
    Z2-odd `equi` net with the blended target and likelihood weighting."""
    from lftml.diffusion.nets import DEFAULT_PRESET, preset

    run_cli("diffusion", "train", "--data", ens, "--out", tmp_path / "m.pt", "--updates", "2", "--batch-size", "4",
            "--json", check=True)
    m = load_model(tmp_path / "m.pt")
    assert DEFAULT_PRESET == "equi" and m.net.config == preset("equi") and m.net.config.odd
    assert m.info["target_used"] == "tsm" and m.info["train_config"]["weighting"] == "likelihood"


def test_library_refuses_a_stale_checkpoint_without_resume_or_overwrite(tmp_path):
    data = THEORY.sample(64, torch.Generator().manual_seed(1)).numpy()
    cfg = TrainConfig(steps=4, preset="tiny-equi", batch_size=8, noise_draws=1, checkpoint_every=2)
    train(data, tmp_path / "m.pt", cfg, progress=False, device="cpu", max_steps_this_call=2)
    (tmp_path / "m.pt").unlink()
    with pytest.raises(LftmlError, match="interrupted run"):
        train(data, tmp_path / "m.pt", cfg, progress=False, device="cpu")
    assert train(data, tmp_path / "m.pt", cfg, progress=False, device="cpu", overwrite=True).steps == 4
