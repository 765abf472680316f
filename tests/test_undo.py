"""The undo journal under every in-place write of an ensemble (lftml.undo): a kill at any instant of a
flush leaves a file that is, after the rollback, byte for byte the file before that flush.

A kill is real here: a forked child runs the flush and ends itself with ``os._exit`` just before its
k-th low-level file operation (a journal or in-place ``pwrite``, a truncation, an ``fsync``, the unlink
that commits), for every k the flush has. Without the journal (pages written in place as HDF5 asks)
some of these kills leave files that HDF5 cannot extend: CI saw "addr overflow" on a resume after a
worker was killed by ``kill -9`` inside a flush.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from lftml import undo
from lftml.ensemble import EnsembleWriter, open_checked, recover
from lftml.errors import LftmlError

SHAPE, CHAINS = (4, 4), 3


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, CHAINS, *SHAPE))


def _append(w: EnsembleWriter, seed: int, n: int = 5) -> None:
    c = _rows(seed, n)
    w.set_checkpoint({"phi": c[-1], "step": np.int64(seed)})
    w.append(c, observables={"m": c.mean(axis=(2, 3))}, records={"dH": c[:, :, 0, 0]})
    w.flush()


@pytest.fixture
def ensemble(tmp_path):
    """An ensemble with two committed flushes (5 rows each, observables, records, checkpoints)."""
    path = tmp_path / "e.h5"
    w = EnsembleWriter.create(path, lattice_shape=SHAPE, n_chains=CHAINS, metadata={"seed": 1}, flush_every=10**6)
    _append(w, 1)
    _append(w, 2)
    return path


def _killed_flush(path, k: int) -> bool:
    """Fork; in the child resume ``path``, flush 5 more rows and die before file operation ``k``.
    Returns True when the child died there (False: the flush has fewer than ``k`` operations)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            count = [0]

            def dies(fn):
                def op(*a, **kw):
                    count[0] += 1
                    if count[0] == k:
                        os._exit(9)  # the kill: no cleanup, no finally, no atexit
                    return fn(*a, **kw)
                return op

            undo._pwrite = dies(undo._pwrite)
            undo.os.ftruncate = dies(os.ftruncate)
            undo.os.fsync = dies(os.fsync)
            undo.os.unlink = dies(os.unlink)
            w = EnsembleWriter.resume(path, flush_every=10**6)
            _append(w, 3)
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 9), f"the child failed ({code})"
    return code == 9


def _committed(path) -> tuple[int, np.ndarray, str]:
    with open_checked(path, "r") as f:
        n = int(f.attrs["n_configs"])
        return n, f["configs"][:n], str(f.attrs["checkpoint"])


def test_a_kill_before_any_file_operation_of_a_flush_is_undone_to_the_byte(ensemble, tmp_path):
    """For every k: die before the flush's k-th file operation; the rollback gives the file before the
    flush, byte for byte, and resuming then writes exactly what an uninterrupted flush writes.
    Catches pages written in place before their old content is journaled (and fsync'd), a torn
    record applied, a rollback that does not cut the new chunks off, a commit before the last write."""
    before = _digest(ensemble)
    done = tmp_path / "done.h5"
    done.write_bytes(ensemble.read_bytes())
    assert not _killed_flush(done, 10**6)  # an uninterrupted flush in the same child code
    n_ops_seen = committed_kills = 0
    for k in range(1, 200):
        trial = tmp_path / f"k{k}.h5"
        trial.write_bytes(ensemble.read_bytes())
        if not _killed_flush(trial, k):
            break
        n_ops_seen = k
        if not undo.journal_path(trial).exists():  # died after the commit (the journal's unlink)
            assert _digest(trial) == _digest(done), f"kill before operation {k}: committed, but not the whole flush"
            committed_kills += 1
            trial.unlink()
            continue
        undo.rollback(trial, announce=False)
        assert _digest(trial) == before, f"kill before operation {k}: the rollback did not restore the file"
        assert not undo.journal_path(trial).exists()
        w = EnsembleWriter.resume(trial, flush_every=10**6)
        _append(w, 3)
        n, c, ck = _committed(trial)
        n_ref, c_ref, ck_ref = _committed(done)
        assert (n, ck) == (n_ref, ck_ref) == (15, "checkpoint_a") and np.array_equal(c, c_ref)
        trial.unlink()
    assert n_ops_seen >= 8, n_ops_seen  # journal, pages, new chunks, truncation, fsyncs, the commit
    assert committed_kills == 1  # only the directory's fsync follows the commit


def test_a_reader_undoes_a_dead_writers_flush_but_never_a_live_one(ensemble):
    """A journal whose writer is alive (holds the file's lock, here in another process) is left alone by
    a reader; once the writer is gone the next reader undoes it and reads the committed ensemble.
    Catches a reader that rolls back a live flush (it would undo pages the writer goes on from)."""
    before = _digest(ensemble)
    assert _killed_flush(ensemble, 6)
    journal = undo.journal_path(ensemble)
    assert journal.exists()
    code = ("import sys, time; from lftml.safeio import OutputLock; OutputLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(ensemble)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert recover(ensemble) is False and journal.exists()
    finally:
        holder.kill()
        holder.wait()
    n, c, _ = _committed(ensemble)  # open_checked recovers first
    assert not journal.exists() and _digest(ensemble) == before
    assert n == 10 and np.array_equal(c[5:], _rows(2, 5))


def test_a_journal_is_never_applied_to_another_file_under_the_same_name(ensemble, tmp_path):
    """The file was replaced (e.g. --overwrite renames a new file into place) after a kill: the old
    journal names another inode and is dropped, the new file is untouched. Catches a rollback that
    trusts the name (it would write old pages into an unrelated file)."""
    assert _killed_flush(ensemble, 6)
    other = tmp_path / "other.h5"
    w = EnsembleWriter.create(other, lattice_shape=SHAPE, n_chains=CHAINS, metadata={"seed": 9}, flush_every=10**6)
    _append(w, 7)
    digest = _digest(other)
    os.replace(other, ensemble)
    assert undo.rollback(ensemble, announce=False) is False
    assert _digest(ensemble) == digest and not undo.journal_path(ensemble).exists()


def test_a_failed_update_leaves_the_file_as_it_was(ensemble, monkeypatch):
    """A full disk while the journal is written (after HDF5 has written pages and new chunks): the
    flush fails with one line and the file is byte for byte as before; the next flush goes through.
    Catches an abort that keeps HDF5's half-flushed pages or the new chunks."""
    before = _digest(ensemble)
    w = EnsembleWriter.resume(ensemble, flush_every=10**6)
    real = undo._pwrite
    journal_fd = {}

    def full(fd, data, offset):
        if fd == journal_fd.get("fd"):
            raise OSError(28, "No space left on device")
        return real(fd, data, offset)

    real_init = undo.JournaledFile.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        journal_fd["fd"] = self._jfd

    monkeypatch.setattr(undo.JournaledFile, "__init__", init)
    monkeypatch.setattr(undo, "_pwrite", full)
    with pytest.raises(LftmlError, match="no space left"):
        _append(w, 3)
    assert _digest(ensemble) == before and not undo.journal_path(ensemble).exists()
    monkeypatch.setattr(undo, "_pwrite", real)
    w = EnsembleWriter.resume(ensemble, flush_every=10**6)
    _append(w, 3)
    assert _committed(ensemble)[0] == 15


def test_a_flush_through_the_journal_writes_a_plain_hdf5_file(ensemble):
    """What the file-object driver writes is an ordinary HDF5 file: h5py's default driver (and HDF5's
    own locking) reads every row and the metadata back. Catches a driver that leaves the reserved tail
    or a page unwritten (the file would not open, or read zeros)."""
    with h5py.File(ensemble, "r") as f:
        assert f.driver == "sec2"
        assert int(f.attrs["n_configs"]) == 10
        np.testing.assert_array_equal(f["configs"][:], np.concatenate([_rows(1, 5), _rows(2, 5)]))
        np.testing.assert_array_equal(f["records/dH"][:], np.concatenate([_rows(1, 5), _rows(2, 5)])[:, :, 0, 0])
    assert os.path.getsize(ensemble) < 64 * 1024  # the reservation was cut off again


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_file_object_reads_and_ends_as_a_plain_file_under_random_writes_and_truncations(tmp_path, seed):
    """Random writes across the old end, truncations below and above it, commit points and reads, the
    same on a plain file: every read agrees, a commit leaves the plain file's bytes, an abort the old
    bytes. Catches held pages served stale, a truncation carried out before its pages are journaled,
    new bytes beyond the old end cut by a later truncation, whole pages written past the end."""
    import random

    rng = random.Random(seed)
    ours, plain = tmp_path / "ours", tmp_path / "plain"
    for trial in range(150):
        base = rng.randbytes(rng.randrange(0, 30000))
        ours.write_bytes(base)
        plain.write_bytes(base)
        jf = undo.JournaledFile(ours)
        with open(plain, "r+b") as ref:
            for _ in range(rng.randrange(1, 30)):
                op, off = rng.random(), rng.randrange(0, 40000)
                if op < 0.6:
                    data = rng.randbytes(rng.randrange(1, 9000))
                    jf.seek(off), jf.write(data), ref.seek(off), ref.write(data)
                elif op < 0.75:
                    jf.truncate(off), ref.truncate(off)
                elif op < 0.85:
                    jf.flush()
                else:
                    n = rng.randrange(0, 9000)
                    jf.seek(off), ref.seek(off)
                    assert jf.read(n) == ref.read(n), trial
            assert jf.seek(0, 2) == ref.seek(0, 2)
        if rng.random() < 0.5:
            jf.commit()
            assert ours.read_bytes() == plain.read_bytes(), trial
        else:
            jf.abort()
            assert ours.read_bytes() == base, trial
        assert not undo.journal_path(ours).exists()
