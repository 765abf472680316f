"""All-or-nothing in-place updates of an HDF5 file: an undo journal under h5py's file-object driver.

HDF5 rewrites its own metadata in place (chunk index, object headers, the superblock's end-of-file
address), in whatever order its cache evicts it, so a process killed while an HDF5 file is open for
writing can leave a file that opens but cannot grow ("addr overflow") or does not open at all. An
update made through :func:`atomic_update` is all or nothing under SIGKILL, and under power loss as far
as ``fsync`` goes:

- writes beyond the file's size at the start of the update (new chunks) go straight to the file;
  undoing the update cuts them off;
- writes into the old bytes are held in memory, page by page, until a commit point (HDF5's flush and
  the close). There the old content of each page is appended to the journal ``.NAME.undo`` beside the
  file (each record with a CRC32), the journal is ``fsync``'d, and only then are the pages written in
  place;
- after a clean close the file is ``fsync``'d and the journal removed: that is the commit.

A journal left behind (the writer was killed, or the update failed) is undone by :func:`rollback`:
the old bytes go back, the file is cut to its old size, and it is byte for byte what it was before
the update. A record torn by the kill is ignored: its page was never written, since pages are written
only after their records are on the disk. The journal names the file's device and inode, so it is
never applied to another file that later took the same name.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import struct
import threading
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import h5py

log = logging.getLogger(__name__)

PAGE = 4096
_MAGIC = b"LFTMLUNDO1\0\0\0\0\0\0"
_HEADER = struct.Struct("<16sQQQ")  # magic, old size, st_dev, st_ino
_RECORD = struct.Struct("<QII")  # offset, length, crc32 of (offset, length, data)


#: Files with an update in progress in this process (a reader in this process must not undo it).
_active: set[str] = set()


def in_progress_here(path: str | os.PathLike) -> bool:
    """Whether this process is inside :func:`atomic_update` of ``path``."""
    return os.path.abspath(path) in _active


def journal_path(path: str | os.PathLike) -> Path:
    """Where the undo journal of ``path`` lives (a hidden file beside it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.undo")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system can fsync a directory
        fd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pread(fd: int, n: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = os.pread(fd, n - len(out), offset + len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _pwrite(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _reserve(fd: int, offset: int, n_bytes: int) -> int:
    """Allocate ``n_bytes`` beyond ``offset`` (a full disk fails here, before anything is written);
    returns the bytes added, 0 where the file system cannot preallocate."""
    try:
        os.posix_fallocate(fd, offset, int(n_bytes))
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            return 0
        raise
    except AttributeError:  # pragma: no cover - no posix_fallocate on this platform
        return 0
    return max(os.fstat(fd).st_size - offset, 0)


class JournaledFile:
    """A binary file object for ``h5py.File(obj, "r+")`` that keeps an undo journal (see the module doc).

    Not for direct use: :func:`atomic_update` opens, commits and, on failure, undoes it."""

    def __init__(self, path: str | os.PathLike, reserve: int = 0):
        self.path = Path(path)
        self.journal = journal_path(self.path)
        self._fd = os.open(self.path, os.O_RDWR)
        self._jfd: int | None = None
        try:
            st = os.fstat(self._fd)
            self._old = st.st_size
            self._size = st.st_size
            self._jfd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(self._jfd, _HEADER.pack(_MAGIC, self._old, st.st_dev, st.st_ino))
            if reserve > 0:
                self._size += _reserve(self._fd, self._old, reserve)
        except BaseException:
            self._close_fds()
            with contextlib.suppress(OSError):
                rollback(self.path, announce=False)  # a partial reservation is cut off again
            raise
        self._pos = 0
        self._dirty: dict[int, bytearray] = {}  # page -> new content, not yet written in place
        self._saved: set[int] = set()  # pages whose old content is in the journal
        self._truncate_to: int | None = None
        self._synced_dir = False

    # ---------------------------------------------------------------- file-object protocol
    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = base + int(offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # noqa: ANN001 - any writable buffer
        view = memoryview(buf).cast("B")
        pos, end = self._pos, min(self._pos + len(view), self._size)
        if end <= pos:
            return 0
        data = self._base(pos, end - pos)
        for page in range(pos // PAGE, min(end, self._old) // PAGE + 1):
            content = self._dirty.get(page)
            if content is None:
                continue
            lo, hi = max(pos, page * PAGE), min(end, page * PAGE + len(content))
            if lo < hi:
                data[lo - pos:hi - pos] = content[lo - page * PAGE:hi - page * PAGE]
        view[:end - pos] = data
        self._pos = end
        return end - pos

    def read(self, n: int = -1) -> bytes:
        n = self._size - self._pos if n is None or n < 0 else n
        buf = bytearray(max(n, 0))
        got = self.readinto(buf)
        return bytes(buf[:got])

    def write(self, data) -> int:  # noqa: ANN001 - any bytes-like object
        view = memoryview(data).cast("B")
        pos, end = self._pos, self._pos + len(view)
        split = min(max(pos, self._old), end)  # bytes below the old size are held back as pages
        offset = pos
        while offset < split:
            page = offset // PAGE
            content = self._dirty.get(page)
            if content is None:
                content = self._base(page * PAGE, min(PAGE, self._old - page * PAGE))
                self._dirty[page] = content
            lo = offset - page * PAGE
            hi = min(split - page * PAGE, len(content))
            content[lo:hi] = view[offset - pos:offset - pos + hi - lo]
            offset += hi - lo
        if split < end:
            _pwrite(self._fd, view[split - pos:], split)
        self._size = max(self._size, end)
        self._pos = end
        return len(view)

    def _base(self, start: int, length: int) -> bytearray:
        """The file's bytes ``[start, start + length)`` as HDF5 last left them, before the held pages:
        what the file holds, with zeros where a truncation that is not yet carried out cut the old bytes."""
        data = bytearray(_pread(self._fd, length, start))
        data.extend(b"\0" * (length - len(data)))
        if self._truncate_to is not None:
            lo, hi = max(start, self._truncate_to), min(start + length, self._old)
            if lo < hi:
                data[lo - start:hi - start] = bytes(hi - lo)
        return data

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else int(size)
        if size >= self._old:
            os.ftruncate(self._fd, size)
        else:  # the old bytes are cut at the next commit point, after the journal holds them
            os.ftruncate(self._fd, self._old)
            self._truncate_to = size if self._truncate_to is None else min(self._truncate_to, size)
            for page, content in self._dirty.items():  # held bytes beyond the cut are cut too
                cut = size - page * PAGE
                if cut < len(content):
                    content[max(cut, 0):] = bytes(len(content) - max(cut, 0))
        self._size = size
        return size

    def flush(self) -> None:
        """A commit point: journal the old content of the held pages, ``fsync`` it, write them in place."""
        if self._jfd is None:
            return
        truncated = self._truncate_to is not None
        if truncated:  # the cut old bytes become zeros written in place (later writes beyond stay)
            for page in range(self._truncate_to // PAGE, (self._old + PAGE - 1) // PAGE):
                if page not in self._dirty:
                    self._dirty[page] = self._base(page * PAGE, min(PAGE, self._old - page * PAGE))
        pages = set(self._dirty)
        records = bytearray()
        for page in sorted(pages - self._saved):
            start = page * PAGE
            old = _pread(self._fd, min(PAGE, self._old - start), start)
            head = struct.pack("<QI", start, len(old))
            records += _RECORD.pack(start, len(old), zlib.crc32(head + old)) + old
        if records:
            _pwrite(self._jfd, records, os.fstat(self._jfd).st_size)
        os.fsync(self._jfd)
        if not self._synced_dir:
            _fsync_dir(self.path)
            self._synced_dir = True
        self._saved |= pages
        for page, content in sorted(self._dirty.items()):
            _pwrite(self._fd, content, page * PAGE)
        self._dirty.clear()
        self._truncate_to = None
        if truncated or self._size < self._old:  # whole pages may have been written beyond the end
            os.ftruncate(self._fd, self._size)

    def close(self) -> None:  # h5py may call it; the commit is :meth:`commit`
        pass

    # ---------------------------------------------------------------- commit and undo
    def commit(self) -> None:
        """Make the update permanent: write what is held, ``fsync`` the file, remove the journal."""
        self.flush()
        os.fsync(self._fd)
        self._close_fds()
        os.unlink(self.journal)
        _fsync_dir(self.path)

    def abort(self) -> None:
        """Undo everything written since the file was opened (nothing held back reaches the file)."""
        self._dirty.clear()
        self._close_fds()
        rollback(self.path, announce=False)

    def _close_fds(self) -> None:
        for fd in (self._fd, self._jfd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = -1
        self._jfd = None


def rollback(path: str | os.PathLike, announce: bool = True) -> bool:
    """Undo the interrupted update of ``path`` recorded in its journal, if there is one.

    Returns True when the file was restored. Idempotent: a rollback killed half-way is finished by the
    next one. Call it only while no other process writes ``path`` (hold its
    :class:`~lftml.safeio.OutputLock`). A journal of another file that later took the name is removed."""
    path = Path(path)
    journal = journal_path(path)
    try:
        raw = journal.read_bytes()
    except FileNotFoundError:
        return False
    restored = False
    if len(raw) >= _HEADER.size and raw[:len(_MAGIC)] == _MAGIC:
        _, old_size, dev, ino = _HEADER.unpack_from(raw)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == (dev, ino):
            fd = os.open(path, os.O_RDWR)
            try:
                records = list(_records(raw))
                for offset, data in records:
                    _pwrite(fd, data, offset)
                restored = bool(records) or os.fstat(fd).st_size != old_size
                os.ftruncate(fd, old_size)
                os.fsync(fd)
            finally:
                os.close(fd)
        if restored and announce:
            log.warning("%s: an interrupted write was undone (the file is as it was before that write)", path)
        elif st is None or (st.st_dev, st.st_ino) != (dev, ino):
            log.warning("%s: removed an undo journal that belongs to another file", journal)
    # a journal without a whole header: nothing was written in place yet (pages follow the header's fsync)
    journal.unlink()
    _fsync_dir(path)
    return restored


def _records(raw: bytes) -> Iterator[tuple[int, bytes]]:
    """The journal's whole records, up to the first torn one."""
    pos = _HEADER.size
    while pos + _RECORD.size <= len(raw):
        offset, length, crc = _RECORD.unpack_from(raw, pos)
        data = raw[pos + _RECORD.size:pos + _RECORD.size + length]
        if len(data) != length or zlib.crc32(struct.pack("<QI", offset, length) + data) != crc:
            return
        yield offset, data
        pos += _RECORD.size + length


@contextmanager
def atomic_update(path: str | os.PathLike, reserve: int = 0) -> Iterator[h5py.File]:
    """``h5py.File`` open for in-place writing whose changes reach ``path`` all or not at all.

    ``reserve`` bytes are allocated beyond the file's end first (HDF5 writes its new chunks there and
    cuts the rest off on close), so a full disk is refused before anything is written. A clean exit
    commits; an exception (a full disk included) undoes every change and re-raises; a kill leaves a
    journal that :func:`rollback` undoes. Call it only while holding the file's
    :class:`~lftml.safeio.OutputLock`; an older journal is rolled back first."""
    with _signals_deferred():
        with _atomic_update(path, reserve) as f:
            yield f


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block act when it ends. Inside an update HDF5 calls this
    module's file object from C, where h5py swallows an exception (a KeyboardInterrupt would be lost and
    the run would go on); an update takes milliseconds. Main thread only (elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if got:
            signal.raise_signal(got[0])


@contextmanager
def _atomic_update(path: str | os.PathLike, reserve: int) -> Iterator[h5py.File]:
    key = os.path.abspath(path)
    if key in _active:
        raise RuntimeError(f"{path}: atomic_update does not nest")
    rollback(path)
    jf = JournaledFile(path, reserve)
    _active.add(key)
    try:
        f = h5py.File(jf, "r+")
        try:
            yield f
        except BaseException:
            with contextlib.suppress(Exception):  # the caller's error is the one to report
                f.close()
            raise
        f.close()
        jf.commit()
    except BaseException:
        jf.abort()
        raise
    finally:
        _active.discard(key)
