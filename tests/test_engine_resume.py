"""Ensembles on disk: provenance, bit-identical resume (also after SIGKILL), clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from lftml.ensemble import Ensemble, EnsembleWriter, read_checkpoint, write_ensemble
from lftml.errors import FileFormatError, LftmlError

from conftest import run_cli

COMMON = ["--shape", "8", "8", "--kappa", "0.21", "--lam", "0.022", "--chains", "4", "--therm", "10", "--every", "2",
          "--seed", "3", "--no-progress", "--json"]


def _configs(path):
    with h5py.File(path, "r") as f:
        n = int(f.attrs["n_configs"])
        return f["configs"][:n], {k: f["records"][k][: int(f.attrs["n_records"])] for k in f["records"]}


@pytest.mark.parametrize("extra", [[], ["--adapt", "--integrator", "leapfrog"]])
def test_resume_extends_run_bit_identically(tmp_path, extra):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    run_cli("hmc", *COMMON, *extra, "--n-configs", "20", "--out", a, check=True)
    run_cli("hmc", *COMMON, *extra, "--n-configs", "40", "--out", a, "--resume", check=True)
    run_cli("hmc", *COMMON, *extra, "--n-configs", "40", "--out", b, check=True)
    ca, ra = _configs(a)
    cb, rb = _configs(b)
    assert ca.shape == (40, 4, 8, 8)
    assert np.array_equal(ca, cb)
    assert set(ra) == set(rb) and all(np.array_equal(ra[k], rb[k], equal_nan=True) for k in ra)


def test_langevin_resume_bit_identical(tmp_path):
    args = ["--shape", "6", "6", "--m2", "0.5", "--lam4", "0.3", "--dt", "0.05", "--scheme", "heun", "--chains", "3",
            "--therm", "20", "--every", "3", "--seed", "9", "--no-progress", "--json"]
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    run_cli("langevin", *args, "--n-configs", "10", "--out", a, check=True)
    run_cli("langevin", *args, "--n-configs", "25", "--out", a, "--resume", check=True)
    run_cli("langevin", *args, "--n-configs", "25", "--out", b, check=True)
    assert np.array_equal(_configs(a)[0], _configs(b)[0])


def test_killed_run_leaves_valid_file_and_resumes_bit_identically(tmp_path):
    """SIGKILL a run mid-flight (no chance to clean up), then --resume: same bits as one clean run."""
    args = ["hmc", "--shape", "32", "32", "--kappa", "0.21", "--lam", "0.022", "--chains", "8", "--therm", "5",
            "--md-steps", "20", "--every", "1", "--seed", "11", "--no-progress", "--checkpoint-every", "5", "--json"]
    killed, clean = tmp_path / "killed.h5", tmp_path / "clean.h5"
    never_finishes = 10**6
    proc = subprocess.Popen([sys.executable, "-m", "lftml", *args, "--n-configs", str(never_finishes), "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        committed = 0
        while time.time() < deadline and proc.poll() is None and committed < 20:
            time.sleep(0.05)
            try:
                with h5py.File(killed, "r") as f:
                    committed = int(f.attrs["n_configs"])
            except (OSError, KeyError):
                continue
        assert proc.poll() is None, "the run ended before it could be killed"
        assert committed >= 20, "the run committed nothing in time"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with Ensemble.open(killed) as ens:  # still a valid ensemble
        n_after_kill = ens.n_configs
        assert n_after_kill >= 20
        assert ens.load_configs().shape[0] == n_after_kill
    ck = read_checkpoint(killed)
    assert ck is not None and int(ck["n_configs"]) == n_after_kill
    n_total = n_after_kill + 30
    res = run_cli(*args, "--n-configs", str(n_total), "--out", killed, "--resume", check=True)
    assert res.json()["n_configs"] == n_total
    run_cli(*args, "--n-configs", str(n_total), "--out", clean, check=True)
    assert np.array_equal(_configs(killed)[0], _configs(clean)[0])


def test_file_records_provenance(tmp_path):
    out = tmp_path / "p.h5"
    run_cli("hmc", *COMMON, "--n-configs", "5", "--out", out, check=True)
    with Ensemble.open(out) as ens:
        meta = ens.metadata
        assert meta["kind"] == "hmc" and meta["seed"] == 3
        assert meta["theory"] == {"name": "phi4", "form": "hopping", "shape": [8, 8], "kappa": 0.21, "lam": 0.022}
        assert meta["sampler"]["integrator"] == "omelyan" and meta["run"]["n_chains"] == 4
        assert meta["lftml_version"] and meta["torch_version"] and "created" in meta
        assert {"dH", "accepted", "exp_minus_dH"} <= set(ens.records)
        assert ens.records["dH"].shape == (10, 4)  # every trajectory after thermalisation
        assert ens.wall_time_s > 0


def test_resume_with_other_parameters_is_refused(tmp_path):
    out = tmp_path / "a.h5"
    run_cli("hmc", *COMMON, "--n-configs", "5", "--out", out, check=True)
    args = [a if a != "0.21" else "0.22" for a in COMMON]
    res = run_cli("hmc", *args, "--n-configs", "10", "--out", out, "--resume")
    assert res.exit_code == 2 and "other settings" in res.stderr and "kappa" in res.stderr


def test_existing_output_is_not_overwritten_without_resume(tmp_path):
    out = tmp_path / "a.h5"
    run_cli("hmc", *COMMON, "--n-configs", "5", "--out", out, check=True)
    before = _configs(out)[0]
    res = run_cli("hmc", *COMMON, "--n-configs", "5", "--out", out)
    assert res.exit_code == 2 and "already exists" in res.stderr
    assert np.array_equal(_configs(out)[0], before)


def test_foreign_and_damaged_files_are_refused(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(FileFormatError, match="not an lftml ensemble"):
        Ensemble.open(foreign)
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(FileFormatError, match="damaged"):
        Ensemble.open(damaged)
    with pytest.raises(FileFormatError, match="does not exist"):
        Ensemble.open(tmp_path / "missing.h5")


def test_uncommitted_rows_are_ignored_and_dropped_on_resume(tmp_path):
    """Rows written after the last counter update (a kill between the two) are not data."""
    out = tmp_path / "e.h5"
    w = EnsembleWriter.create(out, lattice_shape=(4,), n_chains=2, metadata={"kind": "test"})
    w.append(np.ones((3, 2, 4)))
    w.close()
    with h5py.File(out, "a") as f:  # simulate a kill after resize+write, before the counter
        f["configs"].resize(5, axis=0)
        f["configs"][3:] = 7.0
    with Ensemble.open(out) as ens:
        assert ens.n_configs == 3 and ens.load_configs().max() == 1.0
    w = EnsembleWriter.resume(out)
    w.append(np.full((1, 2, 4), 2.0))
    w.close()
    with Ensemble.open(out) as ens:
        assert ens.n_configs == 4 and np.array_equal(ens.load_configs()[:, 0, 0], [1, 1, 1, 2])


def test_write_ensemble_is_atomic_and_checks_shapes(tmp_path):
    with pytest.raises(LftmlError, match="n_configs, n_chains"):
        write_ensemble(tmp_path / "x.h5", np.zeros((3, 4)), metadata={})
    assert not (tmp_path / "x.h5").exists()
    p = write_ensemble(tmp_path / "y.h5", np.zeros((3, 2, 4)), metadata={"kind": "t"})
    assert Ensemble.open(p).n_configs == 3 and not list(tmp_path.glob("*.partial"))
