"""The one output policy every writer uses (lftml.safeio)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys

import pytest

from lftml.errors import LftmlError
from lftml.safeio import OutputLock, atomic_output, check_output, write_error


def test_check_output_refuses_existing_file_unless_overwrite(tmp_path):
    out = tmp_path / "a.h5"
    out.write_text("keep")
    with pytest.raises(LftmlError, match="--overwrite"):
        check_output(out)
    assert check_output(out, overwrite=True) == out
    assert check_output(out, resume=True) == out
    assert out.read_text() == "keep"


def test_check_output_refuses_an_input_even_with_overwrite(tmp_path):
    data = tmp_path / "ens.h5"
    data.write_text("data")
    with pytest.raises(LftmlError, match="also an input"):
        check_output(tmp_path / "." / "ens.h5", overwrite=True, inputs=[data])


def test_check_output_names_directory_and_missing_folder(tmp_path):
    with pytest.raises(LftmlError, match="is a directory"):
        check_output(tmp_path)
    with pytest.raises(LftmlError, match="does not exist"):
        check_output(tmp_path / "nodir" / "sub" / "m.pt")


def test_atomic_output_keeps_old_content_and_leaves_no_temp_on_error(tmp_path):
    out = tmp_path / "m.pt"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    with atomic_output(out) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_atomic_output_gives_new_files_the_umask_mode_and_keeps_a_replaced_files_mode(tmp_path):
    """mkstemp creates its temporary 0600, so every model, figure and CSV written through it was
    private to its owner (colleagues on a shared cluster could not read them) while the HDF5 files
    were 0644: a new file gets 0666 less the umask, a replaced file keeps its own mode."""
    old_mask = os.umask(0o022)
    try:
        new = tmp_path / "new.pt"
        with atomic_output(new) as tmp:
            tmp.write_text("x")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        os.umask(0o077)
        with atomic_output(tmp_path / "private.pt") as tmp:
            tmp.write_text("x")
        assert stat.S_IMODE((tmp_path / "private.pt").stat().st_mode) == 0o600
        new.chmod(0o640)
        with atomic_output(new) as tmp:
            tmp.write_text("y")
        assert stat.S_IMODE(new.stat().st_mode) == 0o640 and new.read_text() == "y"
    finally:
        os.umask(old_mask)


def test_atomic_output_turns_enospc_into_one_line(tmp_path):
    out = tmp_path / "m.pt"
    with pytest.raises(LftmlError, match="no space left") as info:
        with atomic_output(out):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert "\n" not in str(info.value)
    assert not any(tmp_path.iterdir())


def test_write_error_is_one_line():
    msg = str(write_error(OSError(errno.EROFS, "Read-only file system"), "/x/y.h5"))
    assert msg == "cannot write /x/y.h5: the file system is read-only"


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    out = tmp_path / "ens.h5"
    code = (
        "import sys, time; from lftml.safeio import OutputLock; "
        f"l = OutputLock({str(out)!r}).acquire(); print('held', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LftmlError, match=f"pid {proc.pid}"):
            OutputLock(out).acquire()
    finally:
        proc.kill()  # SIGKILL: the kernel drops the lock
        proc.wait()
    with OutputLock(out) as lock:  # a dead holder's stale lock file does not block
        assert lock.held
    assert not (tmp_path / "ens.h5.lock").exists()


def test_lock_is_exclusive_within_one_process(tmp_path):
    out = tmp_path / "x.h5"
    with OutputLock(out):
        with pytest.raises(LftmlError, match=f"pid {os.getpid()}"):
            OutputLock(out).acquire()


def test_the_lock_holder_removes_what_a_killed_writer_left_and_nothing_else(tmp_path, caplog):
    """Bugs caught: temporaries of a SIGKILLed writer piling up beside an output forever (atomic
    temps, write_ensemble's .partial, both nested, their undo journals); a sweep that deletes the
    output's own journal (it undoes an interrupted flush), the output, another file's temporaries
    or a user's look-alike file; a sweep by someone who does not hold the lock (a live writer's
    temporaries are its own)."""
    import logging

    from lftml.safeio import leftovers_of

    out = tmp_path / "out.h5"
    stale = [".out.h5.k2x_9abc.tmp", ".out.h5.abcd1234.h5", ".out.h5.4242.partial", "..out.h5.4242.partial.undo",
             "..out.h5.abcd1234.h5.77.partial", "...out.h5.abcd1234.h5.77.partial.undo", "..out.h5.abcd1234.h5.undo",
             ".out.h5.q0q0q0q0.pt.tmp"]
    kept = ["out.h5", ".out.h5.undo", ".out.h5.backup_1", ".out.h5.ABCD1234.tmp", ".out.h5x.77.partial", "out.h5.lock.bak", ".out.h5.12x.partial", "notes.txt"]
    for n in stale + kept + [".other.h5.abcd1234.tmp"]:
        (tmp_path / n).write_text("x")
    (tmp_path / ".out.h5.dir12345.tmp").mkdir()  # a folder is never removed
    assert [p.name for p in leftovers_of(out)] == sorted(stale)
    held = OutputLock(tmp_path / "other.h5").acquire()  # another output's lock sweeps only its own
    held.release()
    assert all((tmp_path / n).exists() for n in stale) and not (tmp_path / ".other.h5.abcd1234.tmp").exists()
    with caplog.at_level(logging.WARNING, logger="lftml.safeio"):
        with OutputLock(out):
            pass
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(kept + [".out.h5.dir12345.tmp"]), left
    assert "removed 8 temporary file(s) that a killed writer of" in caplog.text
