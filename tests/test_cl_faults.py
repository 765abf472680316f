"""`lftml cl run` under faults: kill -9 and --resume (bit-identical), SIGTERM/SIGINT (one line, exit 130,
what was kept), a full disk (one line, no temporary left, last checkpoint kept), a second writer, and
resume refusals that name the differing setting."""

from __future__ import annotations

import errno
import shutil
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import run_cli

ARGS = ["cl", "run", "--model", "gaussian", "--sigma", "1+1j", "--dt", "0.01", "--scheme", "heun", "--chains", "3",
        "--steps", "4000", "--bins", "100", "--seed", "4", "--no-progress", "--json"]


def _data(path):
    with h5py.File(path, "r") as f:
        obs = {k: f["observables"][k][()] for k in f["observables"]}
        return f["configs"][()], obs


def _same_run(a, b):
    ca, oa = _data(a)
    cb, ob = _data(b)
    assert np.array_equal(ca, cb)
    assert set(oa) == set(ob) and all(np.array_equal(oa[k], ob[k]) for k in oa)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "clean.h5"
    run_cli(*ARGS, "--out", out, check=True)
    return out


def _start_and_wait_for_checkpoint(out, extra=()):
    proc = subprocess.Popen([sys.executable, "-m", "lftml", *ARGS, "--checkpoint-every", "3", *extra, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ck = out.with_name(out.name + ".ckpt")
    deadline = time.time() + 240
    while not ck.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    return proc, ck


def test_killed_run_resumes_bit_identically(tmp_path, clean):
    """SIGKILL mid-run (no clean-up possible), then --resume: the same bits as one uninterrupted run.
    Catches: a checkpoint missing a piece of state (an RNG stream, the partial bin, <K_max>)."""
    out = tmp_path / "killed.h5"
    proc, ck = _start_and_wait_for_checkpoint(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists() and ck.exists()
    res = run_cli(*ARGS, "--out", out, "--resume")
    assert res.exit_code == 0, res.stderr
    _same_run(out, clean)
    assert not ck.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["killed.h5"]


def test_sigterm_stops_with_one_line_saying_what_was_kept_and_resume_continues(tmp_path, clean):
    out = tmp_path / "term.h5"
    proc, ck = _start_and_wait_for_checkpoint(out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted:") and "bins per chain" in lines[0] and "--resume" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["term.h5.ckpt"]  # no lock, no temporary, no half file
    run_cli(*ARGS, "--out", out, "--resume", check=True)
    _same_run(out, clean)


def test_sigint_without_out_says_that_nothing_was_kept(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "lftml", *ARGS[:-6], "--steps", "2000000", "--progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    os.set_blocking(proc.stderr.fileno(), False)
    seen, deadline = b"", time.time() + 240
    while b"complex Langevin" not in seen:  # the run loop has started (its progress bar is drawn)
        assert proc.poll() is None and time.time() < deadline, seen
        seen += proc.stderr.read() or b""
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    last = err.decode().strip().splitlines()[-1]
    assert last.startswith("interrupted:") and "nothing was kept" in last and "use --resume" not in last


def test_full_disk_at_a_checkpoint_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch):
    """ENOSPC injected at the second checkpoint write: one-line error, exit 2, the first checkpoint intact
    (it resumes), no temporary file left."""
    import lftml.complex.runner as runner

    real = np.savez
    calls = {"n": 0}

    def savez(fh, **arrays):
        calls["n"] += 1
        if calls["n"] == 2:
            fh.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fh, **arrays)

    monkeypatch.setattr(np, "savez", savez)
    out = tmp_path / "full.h5"
    short = [a if a != "4000" else "2000" for a in ARGS]
    res = run_cli(*short, "--checkpoint-every", "10", "--out", out)
    assert res.exit_code == 2 and res.stderr.strip() == f"error: cannot write {out}.ckpt: no space left on the device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.h5.ckpt"]
    monkeypatch.setattr(np, "savez", real)
    assert runner.read_checkpoint(out.with_name("full.h5.ckpt"), _identity_of(short))["done"].min() == 10


def _identity_of(args):
    from lftml.complex.runner import _identity, build_model
    from lftml.complex.langevin import ComplexLangevin

    s = ComplexLangevin(step_size=0.01, scheme="heun", thermalisation_time=400 * 0.01, bin_time=2000 * 0.01 / 100, n_bins=100)
    return _identity(build_model("gaussian", sigma="1+1j"), s, 3, 4, True)


def test_full_disk_at_the_final_write_leaves_no_partial_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    import lftml.ensemble as ensemble

    def append(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ensemble.EnsembleWriter, "append", append)
    out = tmp_path / "final.h5"
    short = [a if a != "4000" else "2000" for a in ARGS]
    res = run_cli(*short, "--checkpoint-every", "10", "--out", out)
    assert res.exit_code == 2 and res.stderr.strip() == f"error: cannot write {out}: no space left on the device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.h5.ckpt"]


def test_resume_refusals_name_the_problem(tmp_path):
    out = tmp_path / "r.h5"
    short = [a if a != "4000" else "2000" for a in ARGS]
    res = run_cli(*short, "--out", out, "--resume")
    assert res.exit_code == 2 and "no checkpoint" in res.stderr and res.stderr.count("\n") == 1
    # an interrupted run's checkpoint: a fresh run is refused, a resume with another --dt names it
    import lftml.complex.runner as runner
    from lftml.complex.langevin import ComplexLangevin

    s = ComplexLangevin(step_size=0.01, scheme="heun", thermalisation_time=4.0, bin_time=0.2, n_bins=100)
    runner.write_checkpoint(out.with_name("r.h5.ckpt"), {"done": np.zeros(3)}, runner._identity(
        runner.build_model("gaussian", sigma="1+1j"), s, 3, 4, True))
    res = run_cli(*short, "--out", out)
    assert res.exit_code == 2 and "--resume" in res.stderr and "--overwrite" in res.stderr
    res = run_cli(*[a if a != "0.01" else "0.02" for a in short], "--out", out, "--resume")
    assert res.exit_code == 2 and "step_size (stored 0.01, given 0.02)" in res.stderr and res.stderr.count("\n") == 1


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    from lftml.safeio import OutputLock

    out = tmp_path / "busy.h5"
    with OutputLock(out):
        res = run_cli(*[a if a != "4000" else "2000" for a in ARGS], "--out", out)
    assert res.exit_code == 2 and f"pid {os.getpid()}" in res.stderr and not out.exists()


# ------------------------------------------------------------------ live readers (issue 10 leftover)

LIVE = [*[a if a != "4000" else "800" for a in ARGS], "--checkpoint-every", "10"]


@pytest.fixture(scope="module")
def live_runs(tmp_path_factory):
    """The undisturbed short run, and an earlier file (another seed) for --overwrite to replace."""
    d = tmp_path_factory.mktemp("live")
    run_cli(*LIVE, "--out", d / "clean.h5", check=True)
    run_cli(*[a if a != "4" else "5" for a in LIVE], "--out", d / "earlier.h5", check=True)
    return d / "clean.h5", d / "earlier.h5"


def _seed_of(path):
    import json

    with h5py.File(path, "r") as f:  # HDF5's default file locking
        return json.loads(f.attrs["metadata"])["seed"]


@pytest.mark.parametrize("existing", [False, True], ids=["new-out", "overwrite"])
@pytest.mark.parametrize("point", ["lftml.complex.runner:write_checkpoint", "lftml.ensemble:write_ensemble"],
                         ids=["at-a-checkpoint", "at-the-final-write"])
def test_live_reader_while_cl_run_writes(tmp_path, live_runs, point, existing):
    """Writer first: while `cl run` sits at its second checkpoint or at its final write, `lftml cl
    diagnose OUT` and `lftml analyze OUT` run. No OUT yet: one line "being written by another lftml
    process (pid ...)", exit 2 (it said "does not exist"); with --overwrite: the earlier file, whole
    (seed 5), also through h5py with default locking, and `analyze` says in one line that it is a
    complex Langevin run. The writer is not disturbed: its file equals the undisturbed run's."""
    from faults import inject

    clean, earlier = live_runs
    out = tmp_path / "live.h5"
    args = [*LIVE, "--out", out]
    if existing:
        shutil.copy(earlier, out)
        args.append("--overwrite")
    seen = {}

    def reader():
        seen["diagnose"] = run_cli("cl", "diagnose", out, "--json")
        seen["analyze"] = run_cli("analyze", out)
        if existing:
            seen["seed"] = _seed_of(out)

    with inject(point, 2 if "checkpoint" in point else 1, reader) as state:
        res = run_cli(*args)
    assert state["fired"] and res.exit_code == 0, res.stderr
    if existing:
        assert seen["diagnose"].exit_code == 0 and seen["diagnose"].json()["seed"] == 5 and seen["seed"] == 5
        lines = seen["analyze"].stderr.strip().splitlines()
        assert seen["analyze"].exit_code == 2 and len(lines) == 1 and "lftml cl diagnose" in lines[0], lines
    else:
        for key in ("diagnose", "analyze"):
            r = seen[key]
            lines = r.stderr.strip().splitlines()
            assert r.exit_code == 2 and len(lines) == 1, (key, r.exit_code, r.stderr)
            assert "is being written by another lftml process" in lines[0] and f"pid {os.getpid()}" in lines[0]
    _same_run(out, clean)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.h5"]


def test_live_reader_first_does_not_stop_cl_run(tmp_path, live_runs):
    """Reader first: h5py (default locking) holds the earlier OUT open while `cl run --overwrite`
    runs: the run finishes with the undisturbed content and the reader still reads the earlier file."""
    clean, earlier = live_runs
    out = tmp_path / "live.h5"
    shutil.copy(earlier, out)
    with h5py.File(out, "r") as held:
        before = held["configs"][()]
        res = run_cli(*LIVE, "--out", out, "--overwrite")
        assert res.exit_code == 0, res.stderr
        assert np.array_equal(held["configs"][()], before)
    _same_run(out, clean)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.h5"]


@pytest.mark.slow
def test_live_reader_of_a_paused_cl_run_process(tmp_path, live_runs):
    """A `cl run` process paused at its second checkpoint: `cl diagnose OUT` in this process names
    the writer's PID ("being written"); released, the writer finishes with the undisturbed content."""
    from faults import Paused

    clean, _ = live_runs
    out = tmp_path / "live.h5"
    with Paused(tmp_path, [*LIVE, "--out", out], "lftml.complex.runner:write_checkpoint", 2) as w:
        r = run_cli("cl", "diagnose", out)
        assert r.exit_code == 2 and f"being written by another lftml process (pid {w.proc.pid} " in r.stderr, r.stderr
        w.release()
        done = w.wait()
    assert done.returncode == 0, done.stderr
    _same_run(out, clean)
