"""Full disks in the one-shot writers that had no fault test (rbm train, rbm sample, diffusion sample).

Each fault is injected in-process through tests/faults.py (no timing): ENOSPC at the writer's first
dataset write or at its final rename. Contract (issue 10): exit 2, one ``error:`` line, no output
file, no temporary left, and once the disk is back the same command (same seed) writes a file
byte-for-byte equal in content to an undisturbed run's.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli
from faults import inject

RT = ["rbm", "train", "--shape", "8", "8", "--m2", "1", "--hidden", "4", "--method", "analytic", "--json"]


@pytest.fixture(scope="module")
def inputs(tiny_inputs):
    return tiny_inputs


def _commands(d, out):
    return {
        "rbm train": [*RT, "--out", out.with_suffix(".pt")],
        "rbm sample": ["rbm", "sample", d / "rbm.pt", "--n-configs", "4", "--chains", "2", "--therm", "2",
                       "--seed", "3", "--out", out, "--json"],
        "diffusion sample": ["diffusion", "sample", "--model", d / "dm.pt", "--n-configs", "4", "--steps", "4",
                             "--seed", "3", "--out", out, "--json"],
    }


def _configs(path):
    if path.suffix == ".pt":
        import torch

        sd = torch.load(path, weights_only=False)
        return {k: v for k, v in (sd.items() if isinstance(sd, dict) else [])
                if k not in ("meta", "metadata", "created")}
    import h5py

    with h5py.File(path, "r") as f:
        return f["configs"][()]


def _same(a, b):
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    import torch

    if set(a) != set(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor) and not torch.equal(x, y):
            return False
    return True


@pytest.mark.parametrize(("writer", "point"), [
    ("rbm train", "replace"),  # rbm train writes a .pt (torch.save): no HDF5 dataset write to fail
    ("rbm sample", "replace"), ("rbm sample", "h5write"),
    ("diffusion sample", "replace"), ("diffusion sample", "h5write"),
])
def test_full_disk_is_one_line_leaves_nothing_and_the_rerun_is_identical(tmp_path, inputs, writer, point):
    """Bugs caught: a traceback/segfault on ENOSPC, a half-written output or a .tmp/.partial left
    behind (the issue's rbm/diffusion sample), a rerun that differs from an undisturbed run."""
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir(), run_dir.mkdir()
    ref_args = _commands(inputs, ref_dir / "out.h5")[writer]
    run_cli(*ref_args, check=True)
    args = _commands(inputs, run_dir / "out.h5")[writer]
    out = args[args.index("--out") + 1]
    with inject(point, 1, "enospc"):
        res = run_cli(*args)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2, (res.exit_code, res.stderr[-1500:])
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr[-1500:]
    assert [p.name for p in run_dir.iterdir()] == [], list(run_dir.iterdir())
    run_cli(*args, check=True)
    ref_out = ref_args[ref_args.index("--out") + 1]
    assert _same(_configs(out), _configs(ref_out))


@pytest.mark.parametrize("writer", ["rbm train", "rbm sample", "diffusion sample", "diffusion train", "langevin"])
def test_second_writer_is_refused_naming_the_holder(tmp_path, inputs, writer):
    """A held output lock (another run writing this --out) refuses each writer with one line naming
    the holder's PID and host, and --overwrite does not bypass it. Catches a writer that skips the lock
    (the issue's two `diffusion train` on one --out sharing a checkpoint temp)."""
    import os
    import socket

    from lftml.safeio import OutputLock

    out = tmp_path / "out.h5"
    args = {**_commands(inputs, out),
            "diffusion train": ["diffusion", "train", "--data", inputs / "ens.h5", "--preset", "tiny-equi",
                                "--batch-size", "8", "--noise-draws", "1", "--updates", "2",
                                "--out", tmp_path / "out.pt", "--json"],
            "langevin": ["langevin", "--shape", "4", "4", "--m2", "0.5", "--chains", "2", "--therm", "2",
                         "--n-configs", "4", "--no-progress", "--out", out]}[writer]
    target = args[args.index("--out") + 1]
    with OutputLock(target):
        res = run_cli(*args)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2, (res.exit_code, res.stderr[-1500:])
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr[-1500:]
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in lines[0], lines[0]
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())
