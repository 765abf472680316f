"""One policy for every file lftml writes.

* :func:`check_output` — an existing output is refused unless ``overwrite=True``; an output that is
  one of the command's inputs is refused always; a directory, a missing parent folder or an
  unwritable folder is a one-line :class:`~lftml.errors.LftmlError` raised *before* any work starts.
* :func:`atomic_output` — write to a temporary name in the output's folder, ``fsync``, then
  ``os.replace``: readers see the old file or the new one, never half of one; on any error (a full
  disk included) the temporary file is removed and an ``OSError`` becomes one line.
* :class:`OutputLock` — an exclusive advisory lock (``fcntl.flock`` on ``PATH.lock``, which holds the
  holder's PID and host) for the lifetime of a run; a second writer is refused with a message naming
  the holder. The kernel drops the lock when the holder dies (SIGKILL included), so a stale lock file
  never blocks a rerun; the file is removed on release.
* :func:`interrupts_as_keyboard_interrupt` — SIGTERM raised as ``KeyboardInterrupt`` inside the block,
  so SIGINT and SIGTERM stop a command through the same path (flush, one message, exit 130).
* :func:`write_error` — an ``OSError`` from writing, as one line (ENOSPC, EROFS, EACCES named).
* :func:`lock_holder` — who holds a path's lock (readers say "being written" instead of "missing").
* :func:`leftovers_of` — the temporaries a killed writer of a path left beside it; whoever acquires
  the path's :class:`OutputLock` removes them (no live writer of the path can then own them).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import socket
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from lftml.errors import LftmlError, WriteError

__all__ = [
    "check_output",
    "atomic_output",
    "OutputLock",
    "interrupts_as_keyboard_interrupt",
    "write_error",
    "same_file",
    "lock_holder",
    "leftovers_of",
]

log = logging.getLogger(__name__)

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "it is a directory",
}


def write_error(exc: BaseException, path: str | os.PathLike, action: str = "write") -> WriteError:
    """One-line :class:`~lftml.errors.WriteError` (an :class:`LftmlError`) for an ``OSError`` raised
    while writing ``path``."""
    code = getattr(exc, "errno", None)
    reason = _REASONS.get(code) if code is not None else None
    if reason is None:
        reason = str(getattr(exc, "strerror", None) or exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
    return WriteError(f"cannot {action} {os.fspath(path)}: {reason}", code)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file (resolved paths, or the same inode)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def check_output(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    option: str = "--out",
) -> Path:
    """Validate an output path before any work starts; return it as a :class:`Path`.

    Refuses (one line each): an output that is one of ``inputs``; a directory; a missing parent
    folder; a folder we cannot write; an existing file unless ``overwrite`` (or ``resume``, where
    the caller appends to it). ``option`` names the flag in the messages.
    """
    out = Path(path)
    for inp in inputs:
        if inp is not None and same_file(out, inp):
            raise LftmlError(f"{option} {out} is also an input of this command; choose another output file")
    if out.is_dir():
        raise LftmlError(f"{option} {out} is a directory; give a file name inside it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise LftmlError(f"{option} {out}: folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise LftmlError(f"{option} {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LftmlError(f"{option} {out}: cannot write in folder {parent} (permission denied or read-only)")
    if out.exists():
        if resume:
            if not os.access(out, os.R_OK | os.W_OK):
                raise LftmlError(f"{option} {out} exists but cannot be written (permission denied or read-only)")
        elif not overwrite:
            raise LftmlError(f"{option} {out} exists; pass --overwrite to replace it (or choose another file)")
    return out


def _output_mode(path: Path) -> int:
    """Permissions for a file about to replace ``path``: those of the file it replaces, else what
    ``open()`` would give a new file (0666 less the process's umask), as for the HDF5 outputs."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Whatever goes wrong inside the block (an exception, a full disk, an interrupt), the temporary file
    is removed and ``path`` keeps its previous content. ``OSError`` is re-raised as one-line
    :class:`LftmlError`; other exceptions propagate unchanged.
    """
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=suffix or ".tmp", dir=parent)
    except OSError as exc:
        raise write_error(exc, out) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        try:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, _output_mode(out))  # mkstemp's 0600 would make every output private
            os.replace(tmp, out)
        except OSError as exc:
            raise write_error(exc, out) from None
        with contextlib.suppress(OSError):
            dir_fd = os.open(parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as exc:
        raise write_error(exc, out) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


class OutputLock:
    """Exclusive lock on ``PATH.lock`` held for a run's lifetime (context manager).

    ``acquire`` raises :class:`LftmlError` naming the holder (PID, host) when another process holds it.
    The lock is advisory (``fcntl.flock``) and released by the kernel when the holder exits, however
    it exits; the lock file is unlinked while still locked on release, and acquisition re-checks the
    inode, so two processes can never both believe they hold it.
    """

    #: Lock files held by this process (a second ``flock`` of one file in the same process fails too).
    _held_here: set[str] = set()

    def __init__(self, path: str | os.PathLike, what: str = "output"):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.what = what
        self._fd: int | None = None

    @classmethod
    def held_by_this_process(cls, path: str | os.PathLike) -> bool:
        """Whether this process holds the lock on ``path``."""
        path = Path(path)
        return os.path.abspath(path.with_name(path.name + ".lock")) in cls._held_here

    def acquire(self) -> "OutputLock":
        import fcntl

        for _ in range(100):
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise write_error(exc, self.lock_path, "create the lock file") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = ""
                with contextlib.suppress(OSError):
                    holder = os.read(fd, 200).decode(errors="replace").strip()
                os.close(fd)
                raise LftmlError(
                    f"{self.path} is in use by another lftml process ({holder or 'holder unknown'}); "
                    "wait for it to finish or stop it first"
                ) from None
            try:  # the file we locked must still be the one at lock_path
                if os.fstat(fd).st_ino != os.stat(self.lock_path).st_ino:
                    os.close(fd)
                    continue
            except FileNotFoundError:
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
            except OSError:
                pass  # a full disk must not stop the lock itself; the holder is then 'unknown'
            self._fd = fd
            OutputLock._held_here.add(os.path.abspath(self.lock_path))
            _remove_leftovers(self.path)
            return self
        raise LftmlError(f"could not lock {self.lock_path}: it keeps being replaced")  # pragma: no cover

    def release(self) -> None:
        if self._fd is None:
            return
        OutputLock._held_here.discard(os.path.abspath(self.lock_path))
        with contextlib.suppress(OSError):
            os.unlink(self.lock_path)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(path: str | os.PathLike) -> str | None:
    """``"pid N on host H"`` when a live lftml process holds :class:`OutputLock` on ``path``, else None.

    For readers: a one-shot writer creates its output only at the end (atomically), so a reader that
    finds no file but a held lock can say "being written" instead of "does not exist". The probe only
    reads ``PATH.lock`` (it never takes the lock, which could make a starting writer fail); a holder
    on this host counts as live while its PID exists (a SIGKILLed holder leaves the file behind)."""
    lock_path = Path(path).with_name(Path(path).name + ".lock")
    try:
        text = lock_path.read_text(errors="replace").strip()
    except OSError:
        return None
    parts = text.split()
    if len(parts) < 5 or parts[0] != "pid" or not parts[1].isdigit():
        return None
    if parts[4] == socket.gethostname():
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            return None
        except OSError:
            pass  # it exists (another user's process)
    return text


#: the suffixes :func:`atomic_output` is called with (its ``.tmp`` default, ensembles, models, figures)
_TEMP_SUFFIXES = (".tmp", ".h5", ".pt.tmp", ".png", ".pdf", ".svg")
#: mkstemp's random part: 8 characters of lower-case letters, digits and "_"
_TEMP = re.compile(r"^(?P<inner>.+)\.[a-z0-9_]{8}(?:" + "|".join(re.escape(s) for s in _TEMP_SUFFIXES) + r")$")
_PARTIAL = re.compile(r"^(?P<inner>.+)\.\d+\.partial$")  # write_ensemble's .NAME.PID.partial
_JOURNAL = re.compile(r"^(?P<inner>.+)\.undo$")  # lftml.undo's .NAME.undo


def _is_leftover_of(candidate: str, name: str) -> bool:
    """Whether the file name ``candidate`` is a temporary of a writer of ``name``: ``.NAME.XXXXXXXX.SUF``
    (:func:`atomic_output`), ``.NAME.PID.partial`` (``write_ensemble``), or either of those nested in
    or journaled for another such temporary. ``.NAME.undo``, the journal of ``NAME`` itself, is not:
    it undoes an interrupted update of the file (``lftml.ensemble.recover``)."""
    if not candidate.startswith("."):
        return False
    rest = candidate[1:]
    for pattern, direct in ((_TEMP, True), (_PARTIAL, True), (_JOURNAL, False)):
        m = pattern.match(rest)
        if m and ((direct and m["inner"] == name) or _is_leftover_of(m["inner"], name)):
            return True
    return False


def leftovers_of(path: str | os.PathLike) -> list[Path]:
    """The temporaries beside ``path`` that a writer of ``path`` makes and removes when it ends, in any
    way but SIGKILL or a power cut (see :func:`_is_leftover_of`): they hold no data anyone can use
    (the output is only ever renamed into place whole). Only meaningful while holding ``path``'s
    :class:`OutputLock`, when no live writer of ``path`` can own them."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(folder / n for n in names if _is_leftover_of(n, path.name) and (folder / n).is_file())


def _remove_leftovers(path: Path) -> None:
    """Remove :func:`leftovers_of` ``path`` (called by the holder of its lock), saying so."""
    removed = []
    for p in leftovers_of(path):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p.name)
    if removed:
        log.warning("removed %d temporary file(s) that a killed writer of %s left: %s", len(removed), path,
                    ", ".join(removed))


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises ``KeyboardInterrupt`` (as SIGINT does); restored afterwards.
    A no-op outside the main thread (signals can only be handled there)."""

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
