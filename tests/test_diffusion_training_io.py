"""Training mechanics (checkpoints, resume, NaN loss), model files, and bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from lftml.diffusion import training as training_module
from lftml.diffusion.model import load_model
from lftml.diffusion.training import TrainConfig, TrainingDivergedError, checkpoint_path, train
from lftml.errors import FileFormatError, LftmlError
from lftml.lattice import Lattice
from lftml.theories import FreeScalar, Phi4

THEORY = FreeScalar(Lattice((8, 8)), 0.5)


@pytest.fixture(scope="module")
def data():
    return THEORY.sample(512, torch.Generator().manual_seed(0)).numpy()


def _cfg(**kw):
    base = dict(steps=40, batch_size=16, preset="tiny", seed=3, checkpoint_every=10)
    base.update(kw)
    return TrainConfig(**base)


def test_killed_run_resumes_bit_identically(tmp_path, data):
    full = train(data, tmp_path / "full.pt", _cfg(), theory=THEORY.to_dict(), progress=False, device="cpu")
    part = train(data, tmp_path / "part.pt", _cfg(), theory=THEORY.to_dict(), progress=False, device="cpu",
                 max_steps_this_call=20)  # "killed" after 20 steps (checkpoint at 20)
    assert part.steps == 20 and checkpoint_path(tmp_path / "part.pt").exists()
    resumed = train(data, tmp_path / "part.pt", _cfg(), theory=THEORY.to_dict(), progress=False, device="cpu",
                    resume=True)
    assert resumed.resumed_from == 20 and resumed.steps == 40
    np.testing.assert_array_equal(resumed.losses, full.losses)
    a, b = load_model(tmp_path / "full.pt"), load_model(tmp_path / "part.pt")
    for k, v in a.net.state_dict().items():
        assert torch.equal(v, b.net.state_dict()[k]), k


def test_checkpoint_of_another_run_is_refused(tmp_path, data):
    train(data, tmp_path / "m.pt", _cfg(steps=10), progress=False, device="cpu")
    with pytest.raises(LftmlError, match="other settings.*steps, seed"):
        train(data, tmp_path / "m.pt", _cfg(steps=20, seed=4), progress=False, device="cpu", resume=True)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, data, monkeypatch):
    calls = {"n": 0}
    real = training_module.dsm_loss

    def flaky(*args, **kw):
        calls["n"] += 1
        loss = real(*args, **kw)
        return loss * float("nan") if calls["n"] == 25 else loss

    monkeypatch.setattr(training_module, "dsm_loss", flaky)
    with pytest.raises(TrainingDivergedError, match=r"diverged: loss became nan at update 25.*checkpoint .*update 20"):
        train(data, tmp_path / "m.pt", _cfg(), progress=False, device="cpu")
    ck = torch.load(checkpoint_path(tmp_path / "m.pt"), weights_only=True)
    assert ck["step"] == 20 and np.all(np.isfinite(ck["losses"].numpy()))
    assert not (tmp_path / "m.pt").exists()
    monkeypatch.setattr(training_module, "dsm_loss", real)
    res = train(data, tmp_path / "m.pt", _cfg(), progress=False, device="cpu", resume=True)  # the good checkpoint
    assert res.resumed_from == 20 and res.steps == 40


def test_model_file_round_trip_keeps_scaling_theory_and_seeds(tmp_path, data):
    res = train(data * 3.0, tmp_path / "m.pt", _cfg(steps=5), theory=THEORY.to_dict(), progress=False, device="cpu")
    m = load_model(tmp_path / "m.pt")
    assert m.scaling.scale == pytest.approx(1.0 / np.abs(data * 3.0).max())
    assert m.theory == THEORY.to_dict() and m.lattice_shape == (8, 8)
    assert set(m.info["seeds"]) >= {"seed", "init", "data", "noise"}
    x = torch.randn(4, 8, 8)
    t = torch.full((4,), 0.3)
    with torch.no_grad():
        assert torch.allclose(m(x, t), res.model(x, t), atol=1e-6)
    assert (tmp_path / "m_loss.png").exists() and (tmp_path / "m_loss.csv").exists()


def test_foreign_and_damaged_model_files_raise_file_format_error(tmp_path):
    torch.save({"format": "something-else"}, tmp_path / "foreign.pt")
    with pytest.raises(FileFormatError, match="not an lftml diffusion model"):
        load_model(tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(FileFormatError):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(FileFormatError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_wrong_lattice_shape_and_other_theory_are_rejected(tmp_path, data):
    from lftml.diffusion.workflows import likelihood_report
    from lftml.ensemble import write_ensemble

    train(data, tmp_path / "m.pt", _cfg(steps=5), theory=THEORY.to_dict(), progress=False, device="cpu")
    other_shape = FreeScalar(Lattice((4, 4)), 0.5)
    write_ensemble(tmp_path / "small.h5", other_shape.sample(8, torch.Generator().manual_seed(1)).numpy()[:, None],
                   metadata={"kind": "test", "theory": other_shape.to_dict()}, theory=other_shape)
    # the theory differs in its shape too; check the shape message with a theory-less file
    write_ensemble(tmp_path / "small_nt.h5", other_shape.sample(8, torch.Generator().manual_seed(1)).numpy()[:, None],
                   metadata={"kind": "test", "theory": None})
    with pytest.raises(LftmlError, match="trained on a 8x8 lattice"):
        likelihood_report(tmp_path / "m.pt", data=tmp_path / "small_nt.h5", progress=False)
    phi4 = Phi4.hopping(Lattice((8, 8)), 0.21, 0.022)
    write_ensemble(tmp_path / "phi4.h5", data[:8, None], metadata={"kind": "test", "theory": phi4.to_dict()}, theory=phi4)
    with pytest.raises(FileFormatError, match="model was trained on"):
        likelihood_report(tmp_path / "m.pt", data=tmp_path / "phi4.h5", progress=False)


def test_bad_training_data_is_rejected(tmp_path):
    bad = np.ones((10, 8, 8))
    bad[3, 2, 2] = np.nan
    with pytest.raises(LftmlError, match="NaN"):
        train(bad, tmp_path / "m.pt", _cfg(steps=2), progress=False, device="cpu")
    with pytest.raises(LftmlError, match="divisible"):
        train(np.random.default_rng(0).normal(size=(10, 6, 6)), tmp_path / "m.pt", _cfg(steps=2, preset="fast"), progress=False, device="cpu")


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    torch.save({"format": "rbm"}, tmp_path / "rbm.pt")
    out = subprocess.run([sys.executable, "-m", "lftml", "diffusion", "sample", "--model", str(tmp_path / "rbm.pt"),
                          "--n-configs", "4", "--out", str(tmp_path / "g.h5")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error:") and "not an lftml diffusion model" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_likelihood_and_metropolis_produce_their_reports(tmp_path, data):
    from conftest import run_cli
    from lftml.ensemble import write_ensemble

    from lftml.observables import measure_history

    configs = data.reshape(64, 8, 8, 8)
    write_ensemble(tmp_path / "free.h5", configs, metadata={"kind": "test", "theory": THEORY.to_dict()},
                   theory=THEORY, observables=measure_history(configs, THEORY))
    run_cli("diffusion", "train", "--data", tmp_path / "free.h5", "--preset", "tiny", "--updates", "30", "--batch-size", "16",
            "--out", tmp_path / "m.pt", "--json", check=True)
    lk = run_cli("diffusion", "likelihood", "--model", tmp_path / "m.pt", "--data", tmp_path / "free.h5", "--max-configs", "16",
                 "--png", tmp_path / "s.png", "--json", check=True).json()
    assert lk["n"] == 16 and set(lk["fit"]) >= {"slope", "r2"}
    assert (tmp_path / "s.png").exists()
    # --out is written under exactly its name (np.savez on a path appended .npz) and, like every
    # output, refused when it exists unless --overwrite
    lk_args = ["diffusion", "likelihood", "--model", tmp_path / "m.pt", "--data", tmp_path / "free.h5", "--max-configs", "4",
               "--solver", "heun", "--steps", "4", "--out", tmp_path / "lq.npz", "--json"]
    run_cli(*lk_args, check=True)
    with np.load(tmp_path / "lq.npz") as z:
        assert z["action"].shape == (4,) and z["log_q"].shape == (4,)
    before = (tmp_path / "lq.npz").read_bytes()
    again = run_cli(*lk_args)
    assert again.exit_code == 2 and "--overwrite" in again.stderr and (tmp_path / "lq.npz").read_bytes() == before
    run_cli(*lk_args, "--overwrite", check=True)
    mh = run_cli("diffusion", "metropolis", "--model", tmp_path / "m.pt", "--hmc", tmp_path / "free.h5", "--n", "32",
                 "--steps", "10", "--png", tmp_path / "ac.png", "--out", tmp_path / "chain.h5", "--json", check=True).json()
    assert 0.0 <= mh["acceptance"] <= 1.0
    assert {"metropolis", "hmc"} <= set(mh["autocorrelation"]) and mh["reweighted"]["ess"] >= 1.0
    from lftml.ensemble import Ensemble

    with Ensemble.open(tmp_path / "chain.h5") as ens:
        assert ens.n_configs == 32 and ens.metadata["kind"] == "diffusion_metropolis"
        stats = ens.metadata["sampler"]  # the chain's sampler statistics travel with its data
        assert stats["acceptance"] == mh["acceptance"] and stats["acceptance_error"] == mh["acceptance_error"] > 0
        assert stats["ess_fraction"] == mh["reweighted"]["ess_fraction"] and stats["n_proposals"] == 32
        assert stats["tau_int_chain"] == mh["tau_int_chain"] and ens.metadata["lftml_version"]
