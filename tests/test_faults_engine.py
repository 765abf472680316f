"""Faults injected into the engine's writers (hmc, langevin): full disks and I/O errors at each kind
of write, interrupts at a chosen configuration, a second writer, a live reader. For each: one line on
stderr, the exit status stated, the file at its last good checkpoint, no temporary or lock file left,
and a resume that is bit-identical to an uninterrupted run.

Exit statuses: 2 for a write error (``error: cannot write FILE: <reason>``) and for a refused second
writer; 130 for SIGINT/SIGTERM (``interrupted: ...``).
"""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest

from conftest import run_cli
from faults import Paused, inject, leftovers, run_in_tmpfs, run_lftml, tmpfs_available

ARGS = ["--shape", "6", "6", "--kappa", "0.21", "--lam", "0.022", "--chains", "2", "--therm", "4", "--every", "1",
        "--seed", "5", "--checkpoint-every", "3", "--no-progress", "--json"]
N = 12


def _content(path):
    """Committed configurations and records: what a resume must reproduce bit for bit."""
    with h5py.File(path, "r", locking=False) as f:
        n, nr = int(f.attrs["n_configs"]), int(f.attrs["n_records"])
        return f["configs"][:n], {k: f["records"][k][:nr] for k in f["records"]}, n


def _same(a, b):
    ca, ra, na = _content(a)
    cb, rb, nb = _content(b)
    return na == nb and np.array_equal(ca, cb) and set(ra) == set(rb) and all(
        np.array_equal(ra[k], rb[k], equal_nan=True) for k in ra)


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The uninterrupted reference run."""
    path = tmp_path_factory.mktemp("clean") / "clean.h5"
    run_cli("hmc", *ARGS, "--n-configs", N, "--out", path, check=True)
    return path


def _assert_last_good(path, clean_path):
    """The file opens, its counters match its checkpoint, and its rows are the clean run's prefix."""
    from lftml.ensemble import Ensemble, read_checkpoint

    with Ensemble.open(path) as ens:
        n = ens.n_configs
    ck = read_checkpoint(path)
    assert ck is None or int(ck["n_configs"]) == n
    c, _, _ = _content(path)
    c_clean, _, _ = _content(clean_path)
    assert np.array_equal(c, c_clean[:n])
    return n


@pytest.mark.parametrize("point,at,action", [
    ("h5write", 1, "enospc"),    # the first rows of the first flush
    ("h5write", 9, "enospc"),    # observables/records of a flush
    ("h5write", 30, "enospc"),   # a later flush, checkpoint datasets
    ("fsync", 2, "enospc"),      # rows written, not yet on the disk: counters must not move
    ("reserve", 3, "enospc"),    # the reservation refuses before HDF5 writes anything
    ("h5write", 17, "eio"),      # an I/O error is handled like a full disk
])
def test_write_error_stops_with_one_line_and_resumes_bit_identically(tmp_path, clean, point, at, action):
    """Catches: counters committed before the data reached the disk (resume then finds holes), a
    traceback or interpreter crash after HDF5's error, a buffer re-flushed on close after the error,
    temporary files left behind, a resume that is not the clean run's continuation."""
    out = tmp_path / "a.h5"
    with inject(point, at, action) as state:
        res = run_cli("hmc", *ARGS, "--n-configs", N, "--out", out)
    assert state["fired"]
    assert res.exit_code == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {out}")
    assert ("no space left" if action == "enospc" else "error") in lines[0].lower()
    if out.exists():
        _assert_last_good(out, clean)
    assert leftovers(tmp_path) == []
    run_cli("hmc", *ARGS, "--n-configs", N, "--out", out, "--resume" if out.exists() else "--overwrite", check=True)
    assert _same(out, clean)


def test_failed_rename_of_a_new_file_leaves_nothing(tmp_path, clean):
    """ENOSPC at the atomic rename that creates the ensemble: no file, no temporary; a rerun works."""
    out = tmp_path / "a.h5"
    with inject("replace", 1, "enospc"):
        res = run_cli("hmc", *ARGS, "--n-configs", N, "--out", out)
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists() and leftovers(tmp_path) == []
    run_cli("hmc", *ARGS, "--n-configs", N, "--out", out, check=True)
    assert _same(out, clean)


def test_resuming_a_valid_file_on_a_full_disk_does_not_change_a_byte(tmp_path, clean):
    """A full disk at the first reservation of a resume: the file's bytes stay exactly as they were."""
    out = tmp_path / "a.h5"
    run_cli("hmc", *ARGS, "--n-configs", 6, "--out", out, check=True)
    before = _md5(out)
    with inject("reserve", 1, "enospc"):
        res = run_cli("hmc", *ARGS, "--n-configs", N, "--out", out, "--resume")
    assert res.exit_code == 2 and "no space left" in res.stderr
    assert _md5(out) == before and leftovers(tmp_path) == []
    run_cli("hmc", *ARGS, "--n-configs", N, "--out", out, "--resume", check=True)
    assert _same(out, clean)


@pytest.mark.parametrize("at", [1, 5, 10])
def test_interrupt_at_a_chosen_configuration_keeps_the_last_checkpoint(tmp_path, clean, at):
    """KeyboardInterrupt (what SIGINT and, via safeio, SIGTERM raise) as configuration `at` is stored:
    exit 130, one line, the file at its last flush, resume bit-identical."""
    out = tmp_path / "a.h5"
    with inject("append", at, "interrupt"):
        res = run_cli("hmc", *ARGS, "--n-configs", N, "--out", out)
    assert res.exit_code == 130 and res.stderr.strip().startswith("interrupted:")
    n = _assert_last_good(out, clean)
    assert n % 3 == 0 and n < at
    assert leftovers(tmp_path) == []
    run_cli("hmc", *ARGS, "--n-configs", N, "--out", out, "--resume", check=True)
    assert _same(out, clean)


def test_interrupt_line_offers_resume_only_where_the_command_has_it(tmp_path, monkeypatch):
    """The catch-all interrupt line said "use --resume to continue" after any command, also after
    `analyze`, which has no --resume (the user's retry then fails with a usage error). Now the line
    names --resume for a command that has it (hmc) and says to rerun the others."""
    out = tmp_path / "a.h5"
    with inject("append", 5, "interrupt"):
        res = run_cli("hmc", *ARGS, "--n-configs", N, "--out", out)
    assert res.exit_code == 130 and "--resume" in res.stderr
    import lftml.analysis

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lftml.analysis, "analyze", interrupted)
    res = run_cli("analyze", out)
    assert res.exit_code == 130
    assert res.stderr.strip() == "interrupted: every output is written whole or not at all; rerun the command"
    import lftml.diffusion.workflows  # a command inside a group (`diffusion train` has --resume)

    monkeypatch.setattr(lftml.diffusion.workflows, "train_from_file", interrupted)
    res = run_cli("diffusion", "train", "--data", out, "--out", tmp_path / "m.pt")
    assert res.exit_code == 130 and "--resume" in res.stderr, res.stderr


@pytest.mark.parametrize("signal_name", ["sigterm", pytest.param("sigint", marks=pytest.mark.slow)])
def test_real_signal_at_a_chosen_configuration(tmp_path, clean, signal_name):
    """A real signal delivered to a subprocess at configuration 7 (no sleeps): exit 130, one line,
    resumable bit-identically. Catches SIGTERM killing the run without flushing or a message."""
    out = tmp_path / "a.h5"
    res = run_lftml("hmc", *ARGS, "--n-configs", N, "--out", out, faults=[["append", 7, signal_name]])
    assert res.returncode == 130, res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.strip()][-1].startswith("interrupted:")
    assert _assert_last_good(out, clean) == 6
    assert leftovers(tmp_path) == []
    run_cli("hmc", *ARGS, "--n-configs", N, "--out", out, "--resume", check=True)
    assert _same(out, clean)


def test_second_writer_is_refused_while_the_lock_is_held(tmp_path):
    """In-process: a held run lock refuses `hmc --resume` with one line naming PID and host, and the
    file is untouched. Catches a writer that does not take the lock."""
    import os
    import socket

    from lftml.safeio import OutputLock

    out = tmp_path / "a.h5"
    run_cli("hmc", *ARGS, "--n-configs", 3, "--out", out, check=True)
    before = _md5(out)
    with OutputLock(out):
        res = run_cli("hmc", *ARGS, "--n-configs", N, "--out", out, "--resume")
        res2 = run_cli("hmc", *ARGS, "--n-configs", N, "--out", out, "--overwrite")
    for r in (res, res2):
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in r.stderr
    assert _md5(out) == before and leftovers(tmp_path) == []


@pytest.mark.slow
def test_second_writer_is_refused_naming_the_holder(tmp_path, clean):
    """Two --resume writers on one file: the second is refused with the holder's PID and host while
    the first (paused at a chosen configuration) runs on and finishes with exactly N configurations.
    Catches the 642-of-600 duplicated-rows mix."""
    out = tmp_path / "a.h5"
    run_cli("hmc", *ARGS, "--n-configs", 3, "--out", out, check=True)
    with Paused(tmp_path, ["hmc", *ARGS, "--n-configs", N, "--out", out, "--resume"], "append", 4) as writer:
        second = run_cli("hmc", *ARGS, "--n-configs", N, "--out", out, "--resume")
        assert second.exit_code == 2
        assert "in use by another lftml process" in second.stderr and f"pid {writer.proc.pid}" in second.stderr
        writer.release()
        done = writer.wait()
    assert done.returncode == 0, done.stderr
    assert _same(out, clean) and leftovers(tmp_path) == []


@pytest.mark.parametrize("at", [20, 70, 80])
def test_sigkill_inside_a_flush_is_undone_and_the_resume_is_bit_identical(tmp_path, clean, at):
    """`lftml hmc` killed by SIGKILL inside a flush, at its `at`-th low-level write (20: new chunks beyond
    the file's end; 70: the first pages written in place; 80: half of a flush's in-place pages, the
    write CI saw end in "addr overflow" on resume): `analyze` reads the last committed flush (undoing
    the dead writer's), and --resume ends bit-identical to the clean run with nothing left over.
    Catches a flush that is not all or nothing under a kill, a reader that cannot open the file."""
    out = tmp_path / "a.h5"
    writer = Paused(tmp_path, ["hmc", *ARGS, "--n-configs", N, "--out", out], "lftml.undo:_pwrite", at)
    writer.proc.kill()
    writer.wait()
    assert (tmp_path / ".a.h5.undo").exists()
    from lftml.ensemble import Ensemble

    with Ensemble.open(out) as ens:  # a reader: it undoes the dead writer's flush
        assert ens.n_configs in (0, 3, 6, 9) and ens.configs.shape[0] >= ens.n_configs
        np.testing.assert_array_equal(ens.configs[:ens.n_configs], _content(clean)[0][:ens.n_configs])
    assert not (tmp_path / ".a.h5.undo").exists()
    run_cli("hmc", *ARGS, "--n-configs", N, "--out", out, "--resume", check=True)
    assert _same(out, clean) and leftovers(tmp_path, keep=lambda p: p.name.startswith(("ready-", "go-"))) == []


def test_live_reader_writer_first_reads_the_committed_prefix(tmp_path, clean):
    """Writer paused between writing a flush's rows and moving the counters; `analyze` then reads
    the committed prefix only (n = 6, not 9) and the writer, released, finishes cleanly.
    Catches a reader that trusts dataset shapes, or a reader whose HDF5 lock kills the writer."""
    out = tmp_path / "a.h5"
    # fsyncs: #1 creation; one per flush, before the counters move (the commit's own fsync is the undo
    # journal's): #2 thermalisation, #3 rows 0-2, #4 rows 3-5, #5 rows 6-8 written but not committed
    with Paused(tmp_path, ["hmc", *ARGS, "--n-configs", N, "--out", out], "fsync", 5) as writer:
        res = run_cli("analyze", out, "--json")
        assert res.exit_code == 0, res.stderr
        assert res.json()["n_configs"] == 6
        with h5py.File(out, "r") as held:  # a default-locking reader held open across the next flush
            assert int(held.attrs["n_configs"]) == 6
            writer.release()
            done = writer.wait()
    assert done.returncode == 0, done.stderr
    assert _same(out, clean)


@pytest.mark.slow
def test_live_reader_reader_first_does_not_stop_the_writer(tmp_path, clean):
    """A reader (h5py with HDF5's default file locking) holds the file open before a --resume writer
    starts: the writer must not die at its first flush and must end bit-identical."""
    out = tmp_path / "a.h5"
    run_cli("hmc", *ARGS, "--n-configs", 3, "--out", out, check=True)
    with h5py.File(out, "r") as held:
        res = run_lftml("hmc", *ARGS, "--n-configs", N, "--out", out, "--resume")
        assert int(held.attrs["n_configs"]) in (3, N)
    assert res.returncode == 0, res.stderr
    assert _same(out, clean)


def test_langevin_write_error_and_resume(tmp_path):
    """The same contract for langevin: ENOSPC mid-run, one line, resume bit-identical."""
    args = ["--shape", "4", "4", "--m2", "0.5", "--lam4", "0.3", "--dt", "0.05", "--chains", "2", "--therm", "5",
            "--every", "2", "--seed", "2", "--checkpoint-every", "2", "--no-progress", "--json"]
    ref, out = tmp_path / "ref.h5", tmp_path / "a.h5"
    run_cli("langevin", *args, "--n-configs", 8, "--out", ref, check=True)
    with inject("fsync", 4, "enospc"):
        res = run_cli("langevin", *args, "--n-configs", 8, "--out", out)
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert leftovers(tmp_path) == []
    run_cli("langevin", *args, "--n-configs", 8, "--out", out, "--resume", check=True)
    assert _same(out, ref)


@pytest.mark.slow
@pytest.mark.skipif(not tmpfs_available(), reason="no unprivileged tmpfs (unshare -rm) on this machine")
def test_real_full_disk_tmpfs(tmp_path, clean):
    """A real 300 KB tmpfs: the run stops with one line (no segfault, exit 2), the file stays valid at
    a checkpoint, a resume on the still-full disk changes no byte, and the file copied to a disk with
    room resumes bit-identically. (The issue's 200 KB tmpfs segfaulted and left zero rows.)"""
    script = f"""
cd $DISK
$LFTML hmc {' '.join(ARGS)} --n-configs 400 --out a.h5 > /dev/null 2> err1; echo "rc1=$?"
md5sum a.h5 | cut -d' ' -f1 > md5a
$LFTML hmc {' '.join(ARGS)} --n-configs 400 --out a.h5 --resume > /dev/null 2> err2; echo "rc2=$?"
md5sum a.h5 | cut -d' ' -f1 > md5b
ls -a > listing
cp a.h5 err1 err2 md5a md5b listing {tmp_path}/
"""
    res = run_in_tmpfs(script, "300k")
    assert "rc1=2" in res.stdout and "rc2=2" in res.stdout, res.stdout + res.stderr
    for name in ("err1", "err2"):
        lines = (tmp_path / name).read_text().strip().splitlines()
        assert len(lines) == 1 and "no space left on the device" in lines[0], lines
    assert (tmp_path / "md5a").read_text() == (tmp_path / "md5b").read_text()
    assert sorted((tmp_path / "listing").read_text().split()) == [".", "..", "a.h5", "err1", "err2", "listing", "md5a", "md5b"]
    out = tmp_path / "a.h5"
    n = _content(out)[2]
    assert n >= 3 and n % 3 == 0
    longer = tmp_path / "longer.h5"
    run_cli("hmc", *ARGS, "--n-configs", n + 3, "--out", longer, check=True)
    run_cli("hmc", *ARGS, "--n-configs", n + 3, "--out", out, "--resume", check=True)
    assert _same(out, longer)
