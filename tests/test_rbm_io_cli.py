"""Model files (bit-identical round trip, clear errors for damaged/foreign files) and the
``lftml rbm train|spectrum|sample`` commands."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lftml.cli.main import app
from lftml.errors import FileFormatError
from lftml.lattice import Lattice
from lftml.rbm import GaussianRBM, Target, TrainConfig, train
from lftml.rbm.io import load_model, save_model
from lftml.theories import FreeScalar

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("mode", ["fixed", "global", "site"])
def test_model_round_trip_is_bit_identical(tmp_path, mode):
    target = Target.from_theory(FreeScalar(Lattice((2, 5)), 4.0))
    m = GaussianRBM(10, 6, mu2=9.0, mu2_mode=mode, generator=torch.Generator().manual_seed(1), lattice_shape=(2, 5),
                    learn_eta=True)
    hist = train(m, target, TrainConfig(n_updates=20, log_every=5))
    p = save_model(tmp_path / "m.pt", m, target=target, history=hist, meta={"seed": 1})
    m2, rec = load_model(p)
    assert torch.equal(m2.W, m.W) and torch.equal(m2.eta, m.eta)
    assert torch.equal(m2.mu2, m.mu2) and torch.equal(m2.kernel(), m.kernel())
    if m.mu is not None:
        assert torch.equal(m2.mu, m.mu)
    assert m2.config() == m.config()
    assert rec["history"] == hist and rec["meta"] == {"seed": 1}
    assert torch.equal(rec["target"].kernel, target.kernel) and rec["target"].theory == target.theory
    # saving the loaded model again gives the same tensors again
    save_model(tmp_path / "m2.pt", m2, target=rec["target"], history=rec["history"], meta=rec["meta"])
    m3, _ = load_model(tmp_path / "m2.pt")
    assert torch.equal(m3.W, m.W) and torch.equal(m3.mu2, m.mu2)


def test_damaged_foreign_and_missing_model_files_give_file_format_error(tmp_path):
    m = GaussianRBM(4, 2, generator=torch.Generator().manual_seed(0))
    good = save_model(tmp_path / "good.pt", m)
    raw = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.pt").write_text("hello")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    (tmp_path / "pickle.pt").write_bytes(pickle.dumps({"a": 1}))
    for name in ("trunc.pt", "text.pt", "foreign.pt", "pickle.pt", "missing.pt"):
        with pytest.raises(FileFormatError):
            load_model(tmp_path / name)
    obj = torch.load(good, weights_only=True)
    obj["state"].pop("W")
    torch.save(obj, tmp_path / "nokey.pt")
    with pytest.raises(FileFormatError, match="damaged"):
        load_model(tmp_path / "nokey.pt")


def test_cli_train_spectrum_sample_json(tmp_path):
    model = tmp_path / "model.pt"
    r = invoke("rbm", "train", "--target", "free", "--shape", "10", "--m2", "4", "--hidden", "8", "--learn-mu2", "global",
               "--method", "exact", "--recipe", "reference", "--optimizer", "adam", "--lr", "0.02", "--lr-decay", "0.95", "--l2", "0",
               "--updates", "1500", "--log-every", "100", "--seed", "3", "--out", str(model), "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["mu2"] == pytest.approx(7.804346174928165, rel=1e-4)
    r = invoke("rbm", "spectrum", str(model), "--json", "--plot", str(tmp_path / "s.png"))
    assert r.exit_code == 0, r.output
    spec = json.loads(r.stdout)
    for key in ("target_eigenvalues", "model_eigenvalues", "singular_values", "mu2", "kl"):
        assert key in spec
    assert spec["model_eigenvalues"] == sorted(spec["model_eigenvalues"])
    assert spec["target_eigenvalues"] == sorted(spec["target_eigenvalues"])
    assert len(spec["singular_values"]) == 8 and isinstance(spec["mu2"], float)
    assert np.allclose(spec["model_eigenvalues"][:8], spec["target_eigenvalues"][:8], rtol=1e-3)
    assert spec["kl"] > 0
    assert (tmp_path / "s.png").stat().st_size > 1000

    ens = tmp_path / "ens.h5"
    r = invoke("rbm", "sample", str(model), "--n", "50", "--chains", "3", "--out", str(ens), "--seed", "2", "--json")
    assert r.exit_code == 0, r.output
    from lftml.ensemble import Ensemble

    with Ensemble.open(ens) as e:
        assert e.load_configs().shape == (50, 3, 10)
        assert e.metadata["kind"] == "rbm"
        assert e.theory is not None and e.theory.to_dict()["m2"] == 4.0
    r = invoke("analyze", str(ens), "--json")
    assert r.exit_code == 0, r.output


def test_cli_per_site_mu2_json_is_a_list_and_fixed_mu2(tmp_path):
    r = invoke("rbm", "train", "--shape", "4", "4", "--m2", "1", "--hidden", "8", "--learn-mu2", "site",
               "--updates", "20", "--out", str(tmp_path / "a.pt"), "--mu0", "3.5")
    assert r.exit_code == 0, r.output
    spec = json.loads(invoke("rbm", "spectrum", str(tmp_path / "a.pt"), "--json").stdout)
    assert isinstance(spec["mu2"], list) and len(spec["mu2"]) == 16
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--hidden", "10", "--mu2", "7.8", "--updates", "10",
               "--out", str(tmp_path / "b.pt"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mu2"] == 7.8
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--hidden", "4", "--method", "pcd", "--updates", "20",
               "--out", str(tmp_path / "c.pt"))
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "args, match",
    [
        (["--hidden", "0"], "n_hidden >= 1"),
        (["--hidden", "4", "--mu2", "7", "--learn-mu2", "global"], "not both"),
        (["--hidden", "4", "--learn-mu2", "local"], "global or site"),
        (["--hidden", "4", "--method", "magic"], "method"),
        (["--hidden", "4", "--mu2", "0.5", "--init-std", "1"], "not positive definite"),
        (["--hidden", "4", "--target", "mnist"], "--data"),
    ],
)
def test_cli_train_bad_input_exits_2_with_one_line(tmp_path, args, match):
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--out", str(tmp_path / "x.pt"), *args)
    assert r.exit_code == 2, r.output
    assert match in r.stderr and "Traceback" not in r.output


def test_cli_spectrum_and_sample_on_foreign_file_exit_2(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a model")
    for args in (["rbm", "spectrum", str(bad)], ["rbm", "sample", str(bad), "--n", "3", "--out", str(tmp_path / "e.h5")]):
        r = invoke(*args)
        assert r.exit_code == 2 and "error:" in r.stderr
    r = invoke("rbm", "spectrum", str(tmp_path / "nope.pt"))
    assert r.exit_code == 2


def test_cli_train_from_data_file(tmp_path):
    data = FreeScalar(Lattice(6), 2.0).sample(500, torch.Generator().manual_seed(0)).numpy()
    np.save(tmp_path / "d.npy", data)
    r = invoke("rbm", "train", "--target", "data", "--data", str(tmp_path / "d.npy"), "--hidden", "6", "--method", "cd",
               "--updates", "30", "--out", str(tmp_path / "m.pt"), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["kl"] is None and len(out["target_eigenvalues"]) == 6


def test_cli_analytic_method_on_image_data(tmp_path):
    from lftml.rbm.spectrum import synthetic_digits

    np.save(tmp_path / "img.npy", synthetic_digits(200, np.random.default_rng(0), size=10))
    r = invoke("rbm", "train", "--target", "data", "--data", str(tmp_path / "img.npy"), "--hidden", "100", "--mu2", "100",
               "--method", "analytic", "--out", str(tmp_path / "a.pt"), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert max(out["model_eigenvalues"]) == pytest.approx(100.0)
    finite = [k for k in out["target_eigenvalues"] if k is not None and k < 100]
    assert np.allclose(out["model_eigenvalues"][: len(finite)], finite, rtol=1e-8)


def test_cli_sample_exact_method_keeps_the_lattice_shape(tmp_path):
    model = tmp_path / "m.pt"
    r = invoke("rbm", "train", "--shape", "4", "4", "--m2", "1", "--hidden", "16", "--mu2", "10", "--method", "analytic",
               "--out", str(model))
    assert r.exit_code == 0, r.output
    r = invoke("rbm", "sample", str(model), "--n", "20", "--chains", "2", "--method", "exact", "--out", str(tmp_path / "e.h5"))
    assert r.exit_code == 0, r.output
    from lftml.ensemble import Ensemble

    with Ensemble.open(tmp_path / "e.h5") as e:
        assert e.load_configs().shape == (20, 2, 4, 4)
        assert e.metadata["sampler"]["name"] == "rbm-exact"


def test_cli_init_continues_training_and_extends_the_learning_curve(tmp_path):
    warm = tmp_path / "warm.pt"
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--hidden", "6", "--updates", "30", "--log-every", "10",
               "--out", str(warm))
    assert r.exit_code == 0, r.output
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--init", str(warm), "--method", "pcd", "--updates", "20",
               "--log-every", "10", "--out", str(tmp_path / "more.pt"))
    assert r.exit_code == 0, r.output
    _, rec = load_model(tmp_path / "more.pt")
    assert rec["history"]["update"] == [0, 10, 20, 30, 40, 50]
    assert rec["meta"]["init_from"] == str(warm)
    r = invoke("rbm", "train", "--shape", "10", "--m2", "4", "--init", str(warm), "--mu2", "8", "--out", str(tmp_path / "x.pt"))
    assert r.exit_code == 2 and "--init" in r.stderr
    r = invoke("rbm", "train", "--shape", "8", "--m2", "4", "--init", str(warm), "--out", str(tmp_path / "x.pt"))
    assert r.exit_code == 2 and "n_visible" in r.stderr


def test_cli_sample_refuses_to_overwrite_an_existing_ensemble(tmp_path):
    model = tmp_path / "m.pt"
    r = invoke("rbm", "train", "--shape", "4", "--m2", "1", "--hidden", "4", "--mu2", "10", "--method", "analytic",
               "--out", str(model))
    assert r.exit_code == 0, r.output
    out = tmp_path / "e.h5"
    out.write_bytes(b"keep me")
    r = invoke("rbm", "sample", str(model), "--n-configs", "5", "--out", str(out))
    assert r.exit_code == 2 and "exists; pass --overwrite" in r.stderr
    assert out.read_bytes() == b"keep me"


def test_cli_data_target_rejects_free_field_flags(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((10, 6)))
    r = invoke("rbm", "train", "--target", "data", "--data", str(tmp_path / "d.npy"), "--m2", "4", "--hidden", "3",
               "--out", str(tmp_path / "m.pt"))
    assert r.exit_code == 2 and "--target free" in r.stderr
