"""A careless user's bad inputs to the engine commands (hmc, langevin, analyze, extrapolate, free, demo).

Each must end with exactly one line ``error: ...`` on stderr, exit status 2, nothing on stdout, and
the folder unchanged: no file created (not even an empty one), none modified or destroyed, no
temporary or lock file left. A traceback fails the test (the CLI runs with catch_exceptions=False).
"""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from conftest import run_cli

RUN = ["--chains", "2", "--therm", "2", "--n-configs", "4", "--no-progress"]
HMC = ["hmc", "--shape", "4", "4", "--kappa", "0.2", "--lam", "0.02", *RUN]
LGV = ["langevin", "--shape", "4", "4", "--m2", "0.5", *RUN]

# (command line with placeholders, a fragment the message must contain)
CASES = [
    # theory
    (["hmc", "--shape", "8", "8", "--kappa", "0.3", "--lam", "0", *RUN, "--out", "{new}"], "unbounded below"),
    (["hmc", "--shape", "4", "4", "4", "--kappa", "0.17", "--lam", "0", *RUN, "--out", "{new}"], "unbounded below"),
    (["langevin", "--shape", "8", "8", "--kappa", "0.26", "--lam", "0", *RUN, "--out", "{new}"], "unbounded below"),
    (["hmc", "--shape", "8", "8", "--kappa", "1e308", "--lam", "0.01", *RUN, "--out", "{new}"], "kappa"),
    (["hmc", "--shape", "8", "8", "--kappa", "-0.1", "--lam", "0.01", *RUN, "--out", "{new}"], "kappa"),
    (["hmc", "--shape", "8", "8", "--kappa", "0.2", "--lam", "-1", *RUN, "--out", "{new}"], "lambda"),
    (["hmc", "--shape", "8", "8", "--kappa", "nan", "--lam", "0.1", *RUN, "--out", "{new}"], "finite"),
    (["hmc", "--shape", "8", "8", "--kappa", "inf", "--lam", "0.1", *RUN, "--out", "{new}"], "finite"),
    (["hmc", "--shape", "8", "8", "--kappa", "0.2", *RUN, "--out", "{new}"], "--lam"),
    (["hmc", "--shape", "8", "8", "--lam", "0.2", *RUN, "--out", "{new}"], "--kappa"),
    (["hmc", "--shape", "8", "8", "--kappa", "0.2", "--lam", "0.1", "--m2", "1", *RUN, "--out", "{new}"], "mixing"),
    (["hmc", "--shape", "8", "8", "--m2", "1", "--lam4", "1", "--g", "1", *RUN, "--out", "{new}"], "one quartic"),
    (["hmc", "--shape", "8", "8", "--lam4", "1", *RUN, "--out", "{new}"], "--m2"),
    (["hmc", "--shape", "8", "8", *RUN, "--out", "{new}"], "no theory"),
    (["hmc", "--shape", "8", "8", "--m2", "-1", *RUN, "--out", "{new}"], "m2"),
    (["hmc", "--shape", "8", "8", "--m2", "0", *RUN, "--out", "{new}"], "m2"),
    (["hmc", "--shape", "8", "8", "--m2", "-1", "--lam4", "0", *RUN, "--out", "{new}"], "bounded"),
    (["hmc", "--shape", "8", "8", "--m2", "1", "--g", "-2", *RUN, "--out", "{new}"], "g must be"),
    (["hmc", "--shape", "8", "8", "--kappa", "abc", "--lam", "0.1", *RUN, "--out", "{new}"], "--kappa"),
    # shape
    (["hmc", "--shape", "8.5", "8", "--kappa", "0.2", "--lam", "0.1", *RUN, "--out", "{new}"], "--shape"),
    (["hmc", "--shape", "0", "8", "--kappa", "0.2", "--lam", "0.1", *RUN, "--out", "{new}"], "--shape"),
    (["hmc", "--shape", "-4", "4", "--kappa", "0.2", "--lam", "0.1", *RUN, "--out", "{new}"], "--shape"),
    (["hmc", "--shape", "1e3", "--kappa", "0.2", "--lam", "0.1", *RUN, "--out", "{new}"], "--shape"),
    (["hmc", "--shape", "x", "--kappa", "0.2", "--lam", "0.1", *RUN, "--out", "{new}"], "--shape"),
    (["hmc", "--kappa", "0.2", "--lam", "0.1", *RUN, "--out", "{new}"], "--shape"),
    (["hmc", "--shape", "100000", "100000", "--kappa", "0.2", "--lam", "0.1", *RUN, "--out", "{new}"], "memory"),
    (["langevin", "--shape", "300000", "300000", "--m2", "1", *RUN, "--out", "{new}"], "memory"),
    # run settings
    ([*HMC, "--seed", "-1", "--out", "{new}"], "seed"),
    ([*HMC, "--seed", "1.5", "--out", "{new}"], "--seed"),
    ([*HMC, "--seed", "99999999999999999999999", "--out", "{new}"], "seed"),
    (["hmc", "--shape", "4", "4", "--kappa", "0.2", "--lam", "0.02", "--n-configs", "0", "--out", "{new}"], "n-configs"),
    (["hmc", "--shape", "4", "4", "--kappa", "0.2", "--lam", "0.02", "--n-configs", "-5", "--out", "{new}"], "n-configs"),
    (["hmc", "--shape", "4", "4", "--kappa", "0.2", "--lam", "0.02", "--chains", "0", "--out", "{new}"], "chains"),
    ([*HMC, "--therm", "-1", "--out", "{new}"], "therm"),
    ([*HMC, "--every", "0", "--out", "{new}"], "every"),
    ([*HMC, "--start", "warm", "--out", "{new}"], "start"),
    ([*HMC, "--dtype", "float16", "--out", "{new}"], "dtype"),
    ([*HMC, "--device", "tpu", "--out", "{new}"], "device"),
    ([*HMC, "--device", "cuda:7", "--out", "{new}"], "cuda"),
    ([*HMC, "--checkpoint-every", "0", "--out", "{new}"], "checkpoint-every"),
    ([*HMC, "--md-steps", "0", "--out", "{new}"], "MD steps"),
    ([*HMC, "--traj-length", "0", "--out", "{new}"], "trajectory length"),
    ([*HMC, "--traj-length", "-1", "--out", "{new}"], "trajectory length"),
    ([*HMC, "--integrator", "rk4", "--out", "{new}"], "integrator"),
    ([*HMC, "--target-acceptance", "1.5", "--adapt", "--out", "{new}"], "acceptance"),
    ([*HMC, "--backend", "gpu", "--out", "{new}"], "backend"),
    ([*LGV, "--dt", "0", "--out", "{new}"], "dt"),
    ([*LGV, "--dt", "-0.1", "--out", "{new}"], "dt"),
    ([*LGV, "--scheme", "rk4", "--out", "{new}"], "scheme"),
    ([*HMC, "--bogus", "--out", "{new}"], "No such option"),
    (["hmc"], "--out"),
    (["nosuchcommand"], "No such command"),
    # outputs
    ([*HMC, "--out", "{dir}"], "is a directory"),
    ([*HMC, "--out", "{missing_dir}/a.h5"], "does not exist"),
    ([*HMC, "--out", "{ens}"], "already exists"),
    ([*LGV, "--out", "{ens}"], "already exists"),
    ([*HMC, "--out", "{ens}", "--resume", "--overwrite"], "contradict"),
    ([*LGV, "--out", "{ens}", "--resume"], "hmc ensemble"),
    ([*HMC, "--out", "{pt}", "--resume"], "PyTorch"),
    ([*HMC, "--out", "{text}", "--resume"], "not an HDF5"),
    ([*HMC, "--out", "{empty}", "--resume"], "empty"),
    ([*HMC, "--out", "{ens}", "--resume", "--n-configs", "2"], "already holds"),
    (["hmc", "--out", "{ens}", "--resume", "--chains", "3", "--no-progress"], "n_chains"),
    (["hmc", "--out", "{ens}", "--resume", "--seed", "9", "--no-progress"], "seed"),
    (["hmc", "--out", "{ens}", "--resume", "--shape", "6", "6", "--no-progress"], "theory"),
    (["demo", "--out", "{ens}"], "--overwrite"),
    (["demo", "--out", "{dir}"], "is a directory"),
    # analyze
    (["analyze", "{new}"], "does not exist"),
    (["analyze", "{dir}"], "directory"),
    (["analyze", "{pt}"], "PyTorch"),
    (["analyze", "{npy}"], "NumPy"),
    (["analyze", "{text}"], "not an HDF5"),
    (["analyze", "{empty}"], "empty"),
    (["analyze", "{foreign_h5}"], "not an lftml ensemble"),
    (["analyze", "{truncated}"], "damaged"),
    (["analyze", "{ens}", "--plot", "{tmp}/x.h5"], "png"),
    (["analyze", "{ens}", "--plot", "{ens}"], "png"),
    (["analyze", "{ens}", "--plot", "{missing_dir}/x.png"], "does not exist"),
    (["analyze", "{ens}", "--plot", "{dir}"], "png"),
    (["analyze", "{ens}", "--discard", "-1"], "--discard"),
    (["analyze", "{ens}", "--discard", "100"], "at least 4"),
    (["analyze", "{ens}", "--window-factor", "0"], "S="),
    (["analyze", "{ens}", "--window-factor", "-1"], "S="),
    (["analyze", "{ens}", "--window-factor", "nan"], "S="),
    (["analyze"], "Missing argument"),
    # extrapolate
    (["extrapolate", "{lgv1}", "{lgv2}", "--degree", "-1"], "--degree"),
    (["extrapolate", "{lgv1}", "{lgv2}", "--degree", "0"], "--degree"),
    (["extrapolate", "{lgv1}", "{lgv2}", "--degree", "3"], "--dt"),
    (["extrapolate", "{lgv1}"], "two or more"),
    (["extrapolate", "{lgv1}", "{lgv1}"], "share a step size"),
    (["extrapolate", "{lgv1}", "{ens}"], "Langevin"),
    (["extrapolate", "{lgv1}", "{pt}"], "PyTorch"),
    (["extrapolate", "{lgv1}", "{lgv2}", "--observable", "nonsense"], "unknown observable"),
    (["extrapolate", "{lgv1}", "{lgv2}", "--discard", "-3"], "--discard"),
    # free
    (["free", "--shape", "4", "4", "--m2", "0"], "m2"),
    (["free", "--shape", "4", "4", "--m2", "-1"], "m2"),
    (["free", "--shape", "4", "4", "--m2", "nan"], "m2"),
    (["free", "--shape", "4.5", "--m2", "1"], "--shape"),
    (["free", "--m2", "1"], "--shape"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One folder of inputs a careless user has lying around."""
    d = tmp_path_factory.mktemp("inputs")
    ens = d / "ens.h5"
    run_cli(*HMC, "--out", ens, check=True)
    for i, dt in enumerate((0.1, 0.05), start=1):
        run_cli(*LGV, "--dt", str(dt), "--out", d / f"lgv{i}.h5", check=True)
    import h5py
    import torch

    torch.save({"weights": torch.zeros(3)}, d / "model.pt")
    np.save(d / "data.npy", np.zeros((4, 4)))
    (d / "notes.txt").write_text("not an ensemble\n")
    (d / "empty.h5").write_bytes(b"")
    with h5py.File(d / "foreign.h5", "w") as f:
        f["x"] = np.arange(3)
    raw = ens.read_bytes()
    (d / "truncated.h5").write_bytes(raw[: len(raw) // 2])
    (d / "folder").mkdir()
    return d


def _snapshot(folder):
    return {p.name: (hashlib.md5(p.read_bytes()).hexdigest() if p.is_file() else "dir") for p in folder.iterdir()}


@pytest.mark.parametrize("args,fragment", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path, files, args, fragment):
    """Catches tracebacks, misleading messages (the fragment names the argument or the fix), files
    created before validation (an empty file that blocks the rerun), files destroyed or modified."""
    work = tmp_path / "work"
    shutil.copytree(files, work)
    names = {"new": work / "new.h5", "dir": work / "folder", "missing_dir": work / "nodir", "ens": work / "ens.h5",
             "pt": work / "model.pt", "npy": work / "data.npy", "text": work / "notes.txt",
             "empty": work / "empty.h5", "foreign_h5": work / "foreign.h5", "truncated": work / "truncated.h5",
             "lgv1": work / "lgv1.h5", "lgv2": work / "lgv2.h5", "tmp": work}
    argv = [a.format(**names) for a in args]
    before = _snapshot(work)
    res = run_cli(*argv)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert res.stdout == ""
    assert _snapshot(work) == before


def test_there_are_at_least_80_cases():
    assert len(CASES) >= 80


def test_resume_without_options_takes_them_from_the_file_and_says_when_nothing_is_left(tmp_path):
    """`hmc --resume --out F` alone (no --shape, couplings, chains or seed repeated) continues F with
    its stored settings; once complete, a further --resume says so on stderr (not silent)."""
    out, ref = tmp_path / "a.h5", tmp_path / "ref.h5"
    base = ["hmc", "--shape", "4", "4", "--kappa", "0.2", "--lam", "0.02", "--chains", "2", "--therm", "2",
            "--seed", "7", "--md-steps", "7", "--no-progress", "--json"]
    run_cli(*base, "--n-configs", "4", "--out", out, check=True)
    run_cli("hmc", "--resume", "--out", out, "--n-configs", "8", "--no-progress", "--json", check=True)
    run_cli(*base, "--n-configs", "8", "--out", ref, check=True)
    import h5py

    with h5py.File(out, "r") as a, h5py.File(ref, "r") as b:
        assert np.array_equal(a["configs"][:], b["configs"][:])
    again = run_cli("hmc", "--resume", "--out", out, "--no-progress", "--json")
    assert again.exit_code == 0 and "nothing to do" in again.stderr
