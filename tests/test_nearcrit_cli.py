"""`lftml hmc --algorithm fa-hmc [--mass-from ENS] --cluster wolff|sw --cluster-every N`: metadata,
bit-identical resume (the cluster schedule continues across the resume point), one-line errors with
nothing written."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from conftest import run_cli

BASE = ["--shape", "8", "8", "--kappa", "0.2705", "--lam", "0.022", "--chains", "3", "--therm", "5", "--every", "2",
        "--seed", "4", "--no-progress", "--json"]


def _file(path):
    with h5py.File(path, "r") as f:
        n = int(f.attrs["n_configs"])
        import json

        meta = json.loads(f.attrs["metadata"])
        return f["configs"][:n], {k: f["records"][k][: int(f.attrs["n_records"])] for k in f["records"]}, meta


@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    path = tmp_path_factory.mktemp("pilot") / "pilot.h5"
    run_cli("hmc", *BASE, "--n-configs", "12", "--out", path, check=True)
    return path


@pytest.mark.parametrize("extra", [
    ["--cluster", "sw", "--cluster-every", "3"],
    ["--algorithm", "fa-hmc", "--traj-length", "1.5708", "--md-steps", "4", "--cluster", "wolff"],
    ["--algorithm", "fa-hmc", "--traj-length", "1.5708", "--md-steps", "4", "--mass-from", "PILOT"],
], ids=["hmc+sw/3", "fa-hmc+wolff", "fa-hmc-pilot"])
def test_cluster_and_fa_hmc_runs_resume_bit_identically(tmp_path, pilot, extra):
    """--every 2 with --cluster-every 3: the resume point (after 5 + 2*7 = 19 trajectories) falls between
    cluster moves, so a resumed run that restarted the schedule would differ."""
    extra = [str(pilot) if e == "PILOT" else e for e in extra]
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    run_cli("hmc", *BASE, *extra, "--n-configs", "7", "--out", a, check=True)
    run_cli("hmc", *BASE, *extra, "--n-configs", "15", "--out", a, "--resume", check=True)
    run_cli("hmc", *BASE, *extra, "--n-configs", "15", "--out", b, check=True)
    ca, ra, meta = _file(a)
    cb, rb, _ = _file(b)
    assert ca.shape == (15, 3, 8, 8) and np.array_equal(ca, cb)
    assert set(ra) == set(rb) and all(np.array_equal(ra[k], rb[k], equal_nan=True) for k in ra)
    s = meta["sampler"]
    if "--cluster" in extra:
        assert s["cluster"] == extra[extra.index("--cluster") + 1]
        assert s["cluster_every"] == (3 if "--cluster-every" in extra else 1)
        moved = ra["cluster_size"] > 0
        assert moved.any() and (moved.all() if s["cluster_every"] == 1 else not moved.all())
    if "fa-hmc" in extra:
        assert s["algorithm"] == "fa-hmc" and s["mass"]["kind"] == "fourier"
        assert s["mass"]["source"] == ("pilot" if "--mass-from" in extra else "action")


def test_resume_with_another_pilot_is_refused(tmp_path, pilot):
    other = tmp_path / "other.h5"
    run_cli("hmc", *BASE, "--n-configs", "12", "--seed", "9", "--out", other, check=True)
    a = tmp_path / "a.h5"
    fa = ["--algorithm", "fa-hmc", "--traj-length", "1.5708", "--md-steps", "4"]
    run_cli("hmc", *BASE, *fa, "--mass-from", pilot, "--n-configs", "5", "--out", a, check=True)
    res = run_cli("hmc", *BASE, *fa, "--mass-from", other, "--n-configs", "8", "--out", a, "--resume")
    assert res.exit_code == 2 and "cannot resume" in res.stderr and "mass" in res.stderr


def _bad(tmp_path, *args):
    out = tmp_path / "out.h5"
    res = run_cli("hmc", *BASE, "--n-configs", "5", "--out", out, *args)
    assert res.exit_code == 2, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir() if p.name != "keep") == []
    return lines[0]


def test_bad_mass_from_files_are_one_line_errors_and_nothing_is_written(tmp_path, pilot):
    (tmp_path / "keep").mkdir()
    assert "no such file" in _bad(tmp_path, "--algorithm", "fa-hmc", "--mass-from", tmp_path / "keep" / "none.h5")
    junk = tmp_path / "keep" / "junk.h5"
    junk.write_text("not hdf5")
    assert "--mass-from" in _bad(tmp_path, "--algorithm", "fa-hmc", "--mass-from", junk)
    small = tmp_path / "keep" / "small.h5"
    run_cli("hmc", *BASE, "--shape", "4", "4", "--n-configs", "5", "--out", small, check=True)
    assert "lattice" in _bad(tmp_path, "--algorithm", "fa-hmc", "--mass-from", small)
    other_form = tmp_path / "keep" / "m2.h5"
    run_cli("hmc", "--shape", "8", "8", "--m2", "0.5", "--lam4", "0.1", "--chains", "2", "--therm", "2",
            "--n-configs", "5", "--no-progress", "--json", "--out", other_form, check=True)
    assert "normalisation" in _bad(tmp_path, "--algorithm", "fa-hmc", "--mass-from", other_form)
    assert "fa-hmc" in _bad(tmp_path, "--mass-from", pilot)  # plain HMC has no mass to take
    assert "fused" in _bad(tmp_path, "--algorithm", "fa-hmc", "--backend", "fused")
    assert "--algorithm" in _bad(tmp_path, "--algorithm", "nuts")


def test_bad_cluster_options_are_one_line_errors_and_nothing_is_written(tmp_path, monkeypatch):
    (tmp_path / "keep").mkdir()
    assert "--cluster-every" in _bad(tmp_path, "--cluster", "sw", "--cluster-every", "-1")
    assert "--cluster-every" in _bad(tmp_path, "--cluster", "wolff", "--cluster-every", "0")
    assert "needs --cluster" in _bad(tmp_path, "--cluster-every", "2")
    assert "wolff or sw" in _bad(tmp_path, "--cluster", "metropolis")

    # every action `lftml hmc` can build today admits the embedding; one that does not must be refused
    import lftml.cli.engine as engine

    real = engine.build_theory

    class OddPotential:
        """phi^4 plus an odd term: no coefficients, no embedding."""

        def __init__(self, inner):
            self.inner, self.lattice = inner, inner.lattice

        def describe(self):
            return "phi^4 with an external field"

        def __getattr__(self, name):
            if name == "coefficients":
                raise AttributeError(name)
            return getattr(self.inner, name)

    monkeypatch.setattr(engine, "build_theory", lambda *a, **k: OddPotential(real(*a, **k)))
    assert "--cluster needs an action" in _bad(tmp_path, "--cluster", "wolff")
