"""Shared test helpers: run the CLI in-process the way a user's shell would."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

torch.set_num_threads(1)  # CI machines have 2 cores; tests are written for one thread each


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def run_cli(*args: str, check: bool = False) -> CliResult:
    """Run ``lftml ARGS`` in-process through the real entry point (argv normalisation included)."""
    from typer.testing import CliRunner

    from lftml.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    out = CliResult(res.exit_code, res.stdout, res.stderr if res.stderr_bytes is not None else "")
    if check and out.exit_code != 0:
        raise AssertionError(f"lftml {' '.join(map(str, args))} exited {out.exit_code}:\n{out.stdout}\n{out.stderr}")
    return out


def run_cli_subprocess(*args: str, timeout: float = 300) -> CliResult:
    """Run ``python -m lftml ARGS`` in a fresh process (exit codes and one-line errors as a user sees them)."""
    proc = subprocess.run(
        [sys.executable, "-m", "lftml", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def write_tiny_inputs(d) -> None:
    """Tiny real inputs of the three file kinds the writers read, into folder ``d``: an HMC ensemble
    ``ens.h5`` (8x8, 2 chains x 8), an analytic Gaussian RBM ``rbm.pt`` and a 2-update diffusion model
    ``dm.pt`` (with its checkpoint and loss files beside it)."""
    run_cli("hmc", "--shape", "8", "8", "--kappa", "0.2", "--lam", "0.02", "--chains", "2", "--therm", "2",
            "--n-configs", "8", "--no-progress", "--out", d / "ens.h5", check=True)
    run_cli("rbm", "train", "--shape", "8", "8", "--m2", "1", "--hidden", "4", "--method", "analytic", "--json",
            "--out", d / "rbm.pt", check=True)
    run_cli("diffusion", "train", "--data", d / "ens.h5", "--preset", "tiny-equi", "--batch-size", "8",
            "--noise-draws", "1", "--updates", "2", "--out", d / "dm.pt", "--json", check=True)


@pytest.fixture(scope="session")
def tiny_inputs(tmp_path_factory):
    """One folder of :func:`write_tiny_inputs` for the whole session (read-only for the tests that
    share it: about 10 s to make, so the fault modules make it once)."""
    d = tmp_path_factory.mktemp("tiny-inputs")
    write_tiny_inputs(d)
    return d


@pytest.fixture
def cli():
    return run_cli
