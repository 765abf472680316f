"""The engine's command line: JSON contracts, exact free-field values, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from lftml.cli.common import normalize_argv, parse_shape
from lftml.errors import LftmlError
from lftml.lattice import Lattice
from lftml.theories import FreeScalar

from conftest import run_cli, run_cli_subprocess

ANALYSIS_KEYS = {"magnetisation", "abs_magnetisation", "susceptibility", "susceptibility_abs", "binder"}


def test_shape_accepts_space_comma_and_x_forms():
    assert normalize_argv(["hmc", "--shape", "32", "16", "--chains", "4"]) == ["hmc", "--shape", "32,16", "--chains", "4"]
    assert parse_shape("32,16") == parse_shape("32x16") == parse_shape("32 16") == (32, 16)
    with pytest.raises(LftmlError):
        parse_shape("32,-1")


@pytest.mark.parametrize("command", [
    ["rbm", "train", "--m2", "1", "--hidden", "4", "--method", "analytic", "--out", "{tmp}/r.pt"],
    ["hmc", "--kappa", "0.2", "--lam", "0.02", "--out", "{tmp}/h.h5"],
    ["langevin", "--m2", "1", "--out", "{tmp}/l.h5"],
    ["free", "--m2", "1"],
    ["cl", "run", "--model", "bose-gas", "--steps", "100"],
])
@pytest.mark.parametrize("shape", [["x", "8"], ["8", "x"], ["8x8x"], [",8"], ["8", "8", "junk"]])
def test_a_bad_shape_is_named_by_every_command_that_takes_one(tmp_path, command, shape):
    """`--shape x 8` (issue 10 leftover): every --shape user says "--shape must be ...", exit 2,
    nothing written. Catches argv normalisation stopping at a non-number (click then reported a
    stray argument "8" without naming --shape) and `x,8` being read silently as the 1d shape (8,)
    (the empty part dropped: rbm train trained an 8-site model, exit 0)."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    res = run_cli(*args, "--shape", *shape)
    assert res.exit_code == 2, (res.exit_code, res.stdout)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --shape must be positive integers"), lines
    assert list(tmp_path.iterdir()) == []


def test_analyze_json_has_the_documented_keys(tmp_path):
    out = tmp_path / "e.h5"
    run_cli("hmc", "--shape", "6", "6", "--kappa", "0.2", "--lam", "0.02", "--chains", "4", "--n-configs", "30",
            "--therm", "10", "--seed", "1", "--out", out, "--no-progress", "--json", check=True)
    res = run_cli("analyze", out, "--json", check=True)
    data = res.json()
    assert ANALYSIS_KEYS <= set(data)
    for key in ANALYSIS_KEYS:
        assert {"value", "error", "tau_int"} <= set(data[key])
        assert data[key]["error"] > 0 and data[key]["tau_int"] > 0
        # tau_int < 1/2 (anticorrelated) is possible but must be significant or flagged
        assert data[key]["tau_int"] + 2 * data[key]["tau_int_error"] >= 0.5 or "warning" in data[key]
    assert data["n_configs"] == 30 and data["n_chains"] == 4 and data["volume"] == 36
    assert 0.0 < data["acceptance"] <= 1.0
    table = run_cli("analyze", out, check=True).stdout
    assert "chi_2" in table and "tau_int" in table and "U_L" in table


def test_analyze_plot_writes_png(tmp_path):
    out = tmp_path / "e.h5"
    run_cli("hmc", "--shape", "8", "8", "--m2", "0.5", "--chains", "4", "--n-configs", "40", "--therm", "10",
            "--out", out, "--no-progress", "--json", check=True)
    png = tmp_path / "e.png"
    res = run_cli("analyze", out, "--plot", png, "--json", check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.json()["exact"]["susceptibility"] == pytest.approx(2.0)
    # an existing figure is refused without --overwrite (it was replaced silently) and kept intact
    png.write_bytes(b"keep")
    again = run_cli("analyze", out, "--plot", png)
    assert again.exit_code == 2 and "exists; pass --overwrite" in again.stderr and png.read_bytes() == b"keep"
    run_cli("analyze", out, "--plot", png, "--overwrite", check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_free_json_matches_closed_forms():
    data = run_cli("free", "--shape", "8", "8", "--m2", "0.5", "--json", check=True).json()
    theory = FreeScalar(Lattice((8, 8)), 0.5)
    assert data["susceptibility"] == pytest.approx(2.0, rel=1e-14)
    assert data["binder"] == 0.0
    assert data["phi2"] == pytest.approx(np.linalg.inv(theory.kernel_matrix())[0, 0], rel=1e-12)
    assert data["effective_mass"] == pytest.approx(np.arccosh(1.25), rel=1e-14)
    assert data["eigenvalue_min"] == pytest.approx(0.5) and data["eigenvalue_max"] == pytest.approx(8.5)


@pytest.mark.parametrize(
    "args, message",
    [
        (["free", "--shape", "8", "0", "--m2", "1"], "positive integers"),
        (["free", "--shape", "8", "--m2", "-1"], "m2 > 0"),
        (["hmc", "--shape", "8", "--kappa", "0.2", "--out", "X"], "needs both --kappa and --lam"),
        (["hmc", "--shape", "8", "--kappa", "0.2", "--lam", "0.1", "--m2", "1", "--out", "X"], "mixing parametrisations"),
        (["hmc", "--shape", "8", "--m2", "1", "--lam4", "0.1", "--g", "1", "--out", "X"], "one quartic coupling"),
        (["hmc", "--shape", "8", "--lam4", "0.1", "--out", "X"], "need --m2"),
        (["hmc", "--shape", "8", "--m2", "1", "--md-steps", "1", "--traj-length", "3", "--out", "X"], "unstable"),
        (["langevin", "--shape", "8", "--m2", "1", "--dt", "0.5", "--out", "X"], "unstable"),
        (["hmc", "--shape", "8", "--m2", "1", "--integrator", "rk4", "--out", "X"], "unknown integrator"),
        (["langevin", "--shape", "8", "--m2", "1", "--scheme", "rk4", "--out", "X"], "unknown Langevin scheme"),
        (["hmc", "--shape", "8", "--m2", "1", "--chains", "0", "--out", "X"], "--chains (n_chains) must be >= 1"),
        (["hmc", "--shape", "8", "--m2", "1", "--start", "warm", "--out", "X"], "hot' or 'cold"),
        (["analyze", "missing.h5"], "does not exist"),
    ],
)
def test_bad_input_gets_one_line_error_and_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    res = run_cli(*args)
    assert res.exit_code == 2
    assert message in res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "X").exists()


def test_console_entry_point_exit_codes(tmp_path):
    bad = tmp_path / "foreign.h5"
    bad.write_text("not hdf5")
    res = run_cli_subprocess("analyze", bad)
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    ok = run_cli_subprocess("free", "--shape", "4", "4", "--m2", "1", "--json")
    assert ok.exit_code == 0 and ok.stdout.lstrip().startswith("{")


def test_demo_runs_and_prints_an_analysis_table():
    res = run_cli("demo", "--json", check=True)
    data = res.json()
    assert data["analysis"]["n_configs"] == 200 and ANALYSIS_KEYS <= set(data["analysis"])


def test_generated_ensembles_show_the_training_target_not_exact_values(tmp_path):
    """A generative model's ensemble stores its target theory; analyze labels those values 'target'."""
    import torch

    from lftml.analysis import analyze
    from lftml.ensemble import write_ensemble

    theory = FreeScalar(Lattice((6, 6)), 0.5)
    configs = theory.sample(40, torch.Generator().manual_seed(0)).reshape(20, 2, 6, 6)
    for kind, key, other in (("rbm", "target", "exact"), ("hmc", "exact", "target")):
        from lftml.observables import measure_history

        path = write_ensemble(tmp_path / f"{kind}.h5", configs, metadata={"kind": kind}, theory=theory,
                              observables=measure_history(configs, theory))
        result = analyze(path)
        assert key in result and other not in result
        assert result[key]["susceptibility"] == pytest.approx(2.0)
    assert "target" in run_cli("analyze", tmp_path / "rbm.h5", check=True).stdout


def test_a_reader_that_closes_stdout_early_ends_the_command_quietly(tmp_path):
    """`lftml analyze f.h5 | head -1`: the reader closes the pipe and the next write raises
    BrokenPipeError, which the CLI reported as 'error: cannot access a file: Broken pipe', exit 2.
    Here the read end is closed before lftml writes anything: exit 0, nothing on stderr."""
    import subprocess
    import sys

    out = tmp_path / "e.h5"
    run_cli("hmc", "--shape", "4", "4", "--m2", "0.5", "--chains", "2", "--n-configs", "8", "--therm", "2",
            "--out", out, "--no-progress", "--json", check=True)
    proc = subprocess.Popen([sys.executable, "-m", "lftml", "analyze", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "error" not in err, err


def test_resume_of_a_missing_file_starts_a_new_run_and_says_so(tmp_path):
    """`--resume` on a file that does not exist starts a new run (a job script may always pass it)
    but no longer silently: one note on stderr. The run is the same as without --resume."""
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    common = ["hmc", "--shape", "4", "4", "--m2", "0.5", "--chains", "2", "--n-configs", "6", "--therm", "2",
              "--seed", "5", "--no-progress", "--json"]
    res = run_cli(*common, "--out", a, "--resume", check=True)
    assert "does not exist yet, so this starts a new run" in res.stderr
    plain = run_cli(*common, "--out", b, check=True)
    assert "does not exist" not in plain.stderr
    import h5py

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert np.array_equal(fa["configs"][:], fb["configs"][:])


def test_resume_with_one_coupling_typed_compares_it_with_the_file(tmp_path):
    """`--resume --kappa 0.3` on a kappa = 0.2, lam = 0.02 file said 'the hopping form needs both
    --kappa and --lam' (the untyped --lam was not taken from the file); now the file supplies lam and
    the refusal names the contradiction. The same kappa resumes."""
    out = tmp_path / "r.h5"
    base = ["--chains", "2", "--therm", "2", "--no-progress", "--json", "--out", out]
    run_cli("hmc", "--shape", "4", "4", "--kappa", "0.2", "--lam", "0.02", "--n-configs", "6", *base, check=True)
    bad = run_cli("hmc", "--resume", "--kappa", "0.3", "--n-configs", "8", *base)
    assert bad.exit_code == 2 and "cannot resume" in bad.stderr and "'kappa': 0.3" in bad.stderr
    assert "needs both" not in bad.stderr
    ok = run_cli("hmc", "--resume", "--kappa", "0.2", "--n-configs", "8", *base, check=True).json()
    assert ok["n_configs"] == 8
