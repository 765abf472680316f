"""`lftml cl run` / `lftml cl diagnose`: JSON contract, ensemble files, bad input -> one line, exit 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lftml.ensemble import Ensemble


def _entry(d, name):
    o = d["observables"][name]
    assert set(o) >= {"value", "error", "exact"}
    assert len(o["value"]) == 2 and len(o["error"]) == 2
    return o


def test_cl_run_gaussian_json_has_estimates_exact_values_and_diagnostics(cli):
    res = cli("cl", "run", "--model", "gaussian", "--sigma", "1+1j", "--dt", "0.05", "--chains", "64",
              "--steps", "1000", "--seed", "3", "--json", check=True)
    d = res.json()
    z2 = _entry(d, "z2")
    assert z2["exact"] == [0.5, -0.5]
    euler = 1 / ((1 + 1j) * (1 - 0.05 * (1 + 1j) / 2))
    assert np.allclose(z2["exact_at_step_size"], [euler.real, euler.imag])
    assert abs(z2["value"][0] - euler.real) < 5 * z2["error"][0]
    diag = d["diagnostics"]
    assert isinstance(diag["suspicious"], bool)
    for key in ("criterion", "criterion_max_zscore", "boundary_terms", "boundary_max_zscore", "drift_tail_exponent"):
        assert key in diag
    assert d["seed"] == 3 and d["n_chains"] == 64


def test_cl_run_writes_complex_ensemble_and_diagnose_reads_it(cli, tmp_path):
    out = tmp_path / "u1.h5"
    run = cli("cl", "run", "--model", "u1", "--beta", "0", "--kappa", "1", "--mu", "2", "--dt", "0.05", "--adaptive",
              "--scheme", "heun", "--chains", "32", "--steps", "800", "--seed", "1", "--out", str(out), "--json", check=True).json()
    assert run["out"] == str(out)
    with Ensemble.open(out) as ens:
        assert ens.metadata["kind"] == "complex_langevin"
        assert ens.metadata["seed"] == 1
        assert ens.metadata["model"] == {"model": "u1", "beta": 0.0, "kappa": 1.0, "mu": 2.0}
        assert ens.metadata["sampler"]["adaptive"] is True
        assert np.iscomplexobj(ens.load_configs()) and ens.configs.shape[1:] == (32, 1)
        assert np.iscomplexobj(ens.observables["exp_ix"])
    diag = cli("cl", "diagnose", str(out), "--json", check=True).json()
    assert diag["observables"] == run["observables"]
    assert diag["diagnostics"]["suspicious"] == run["diagnostics"]["suspicious"]
    assert set(diag["observables"]) == {"exp_ix", "exp_minus_ix"}
    assert diag["observables"]["exp_ix"]["exact"][0] == pytest.approx(0.0604123, abs=1e-6)


def test_cl_run_bose_gas_table_output_and_plot(cli, tmp_path):
    png = tmp_path / "diag.png"
    res = cli("cl", "run", "--model", "bose-gas", "--shape", "2", "2", "4", "--m", "1", "--lam", "0", "--mu", "0.5",
              "--dt", "0.05", "--scheme", "heun", "--chains", "8", "--steps", "200", "--bins", "20", "--plot", str(png), check=True)
    assert "density" in res.stdout and "phi2" in res.stdout and "exact" in res.stdout
    assert png.exists() and png.stat().st_size > 10_000


def test_cl_diagnose_plot_flags_wrong_quartic_run(cli, tmp_path):
    out = tmp_path / "q.h5"
    cli("cl", "run", "--model", "quartic", "--sigma=-1+4j", "--lam", "1", "--dt", "0.01", "--adaptive", "--chains", "64",
        "--steps", "1000", "--seed", "2", "--out", str(out), check=True)
    res = cli("cl", "diagnose", str(out), "--plot", str(tmp_path / "q.png"), check=True)
    assert "SUSPICIOUS" in res.stdout
    assert (tmp_path / "q.png").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model", "quartic", "--sigma", "one+i"], "cannot parse sigma"),
        (["--model", "magic"], "unknown model"),
        (["--model", "gaussian", "--sigma", "-1+1j"], "Re sigma > 0"),
        (["--model", "u1", "--shape", "4", "4"], "--shape only applies"),
        (["--model", "gaussian", "--dt", "-0.1"], "--dt must be positive"),
        (["--model", "bose-gas", "--shape", "4", "4", "--mu", "1.2"], "does not exist at mu"),
        (["--model", "gaussian", "--kappa", "1"], "--kappa does not apply"),
        (["--model", "quartic", "--lam", "-1"], "quartic integral does not exist"),
        (["--model", "u1", "--lam", "5"], "--lam does not apply"),
    ],
)
def test_cl_run_bad_input_is_one_line_error_with_exit_2(cli, args, needle):
    res = cli("cl", "run", *args, "--steps", "10")
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert err.startswith("error:") and needle in err and "\n" not in err, err
    assert "Traceback" not in res.stdout + res.stderr


def test_cl_runaway_is_reported_in_one_line_with_the_cure(cli):
    res = cli("cl", "run", "--model", "quartic", "--sigma", "-1+4j", "--dt", "0.01", "--scheme", "heun",
              "--chains", "256", "--steps", "2000", "--seed", "1")
    assert res.exit_code == 2
    assert "runaway" in res.stderr and "--adaptive" in res.stderr and res.stderr.count("\n") <= 1


def test_cl_diagnose_rejects_missing_and_foreign_files(cli, tmp_path):
    res = cli("cl", "diagnose", str(tmp_path / "nope.h5"))
    assert res.exit_code == 2 and "does not exist" in res.stderr
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    res = cli("cl", "diagnose", str(junk))
    assert res.exit_code == 2 and res.stderr.startswith("error:")
    from lftml.ensemble import write_ensemble

    real = tmp_path / "real.h5"
    write_ensemble(real, np.zeros((4, 2, 3)), metadata={"kind": "hmc"})
    res = cli("cl", "diagnose", str(real))
    assert res.exit_code == 2 and "not a complex Langevin run" in res.stderr


def test_cl_unparsable_sigma_exit_code_in_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "lftml", "cl", "run", "--model", "quartic", "--sigma", "1+ij"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


def test_cl_run_refuses_to_overwrite_an_existing_output(cli, tmp_path):
    out = tmp_path / "exists.h5"
    out.write_bytes(b"keep me")
    res = cli("cl", "run", "--model", "gaussian", "--steps", "40", "--chains", "2", "--out", str(out))
    assert res.exit_code == 2 and "exists; pass --overwrite" in res.stderr and res.stderr.count("\n") == 1
    assert out.read_bytes() == b"keep me"
    res = cli("cl", "run", "--model", "gaussian", "--steps", "40", "--chains", "2", "--out", str(out), "--overwrite", "--json")
    assert res.exit_code == 0, res.stderr
    assert Ensemble.open(out).metadata["kind"] == "complex_langevin"


def test_cl_run_too_few_steps_names_the_flag(cli):
    res = cli("cl", "run", "--model", "gaussian", "--steps", "3")
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert err.startswith("error:") and "--steps" in err and "\n" not in err, err


def test_cl_run_device_is_resolved_and_recorded(cli):
    """--device auto (the default) resolves to a real device and is recorded; an unknown or absent device
    is one line before any work."""
    import torch

    res = cli("cl", "run", "--model", "gaussian", "--steps", "40", "--chains", "2", "--json", check=True)
    assert res.json()["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    res = cli("cl", "run", "--model", "gaussian", "--steps", "40", "--chains", "2", "--device", "tpu9")
    assert res.exit_code == 2 and "unknown device" in res.stderr and res.stderr.count("\n") == 1
    if not torch.cuda.is_available():
        res = cli("cl", "run", "--model", "gaussian", "--steps", "40", "--device", "cuda")
        assert res.exit_code == 2 and "no CUDA device" in res.stderr


def test_cl_run_options_follow_the_vocabulary(cli):
    """docs/cli.md: lower-case options, --plot/--out/--overwrite/--resume/--device/--progress/--chains."""
    import re

    text = cli("cl", "run", "--help").stdout
    for flag in ("--plot", "--out", "--overwrite", "--resume", "--device", "--progress", "--no-progress", "--chains",
                 "--steps", "--therm", "--seed", "--json"):
        assert flag in text, flag
    assert not re.findall(r"--[A-Z]", text)
