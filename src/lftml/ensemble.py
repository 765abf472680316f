"""Ensembles on disk: one HDF5 file per run, appendable along Monte Carlo time.

Layout (``format = "lftml-ensemble"``, ``format_version = 1``)::

    /configs                 (n_configs, n_chains, *lattice_shape), chunked, resizable
    /observables/<name>      (n_configs, n_chains, ...)   per-configuration observables
    /records/<name>          (n_steps, n_chains)          per-update sampler records (dH, accepted, ...)
    /checkpoint_a, _b        sampler state for --resume (double-buffered)
    /log_weights             (n_configs, n_chains) float64, optional: importance log weights
                             log w = -S(phi) - log q(phi) (+ any constant) of configurations drawn
                             from a proposal q (generative models); written by :func:`write_ensemble`
                             only. When present, :func:`lftml.analysis.analyze` reweights every
                             observable (self-normalised) and reports ``ess_fraction``.
    attrs: format, format_version, metadata (JSON), n_configs, n_records, lattice_shape, n_chains,
           checkpoint (name of the current checkpoint group or ""), wall_time_s

Crash safety: every change to an existing file (a flush, a metadata update, the trim of a resume)
goes through :func:`lftml.undo.atomic_update`, an undo journal under HDF5: it reaches the file whole
or not at all, however the process ends (SIGKILL included). HDF5 rewrites its own metadata in place,
so without it a kill inside a flush can leave a file that opens but cannot grow. A journal left by a
kill is undone by the next writer (which holds the file's lock) or reader (which takes the lock for
the rollback, unless a live writer holds it). Rows beyond the ``n_configs`` / ``n_records``
attributes are not part of the ensemble. The checkpoint is double-buffered and only becomes current
after its data are written. One-shot writers (:func:`write_ensemble`) write a temporary file and
rename it, so they never leave a half-written file under the target name.

Full disks and write errors: before a flush the writer reserves room for it (``posix_fallocate``
beyond the file's end; HDF5 writes into the reserved tail and truncates it away on close), so a
full disk is refused cleanly before HDF5 has written anything. Each flush writes rows and the new
checkpoint, flushes and ``fsync``s them, and only then moves the committed counters and the
checkpoint pointer, so a reader of a live file never sees counters that name rows not yet written.
Any write error undoes the flush and becomes one-line :class:`~lftml.errors.LftmlError`.

Readers and writers open the file with HDF5's own file locking off: the writer is protected from a
second writer by :class:`lftml.safeio.OutputLock`, and a reader of a live file (``lftml analyze``
during a run) reads only the committed prefix and retries a read that raced with a flush, so it
never blocks or kills the writer. The store keeps data: callers measure observables
(:func:`lftml.observables.measure_history`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np
import torch

import lftml
from lftml.errors import FileFormatError, LftmlError
from lftml.safeio import OutputLock, write_error
from lftml.undo import atomic_update, in_progress_here, journal_path, rollback
from lftml.theories.base import Theory, theory_from_dict

log = logging.getLogger(__name__)

FORMAT = "lftml-ensemble"
FORMAT_VERSION = 1
_CHUNK_BYTES = 1 << 20


def _git_revision() -> str | None:
    """The git commit of the lftml source tree, if it is a checkout (else None)."""
    try:
        import subprocess

        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=2,
        )
        if out.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True,
            text=True,
            timeout=2,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except Exception:
        return None


def provenance() -> dict[str, Any]:
    """Code version and environment recorded in every output file."""
    import platform

    return {
        "lftml_version": lftml.__version__,
        "git_revision": _git_revision(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"metadata value {obj!r} is not JSON-serialisable")


def _chunks(shape_per_config: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunk one configuration row at a time, splitting chains so a chunk is <= ~1 MiB."""
    n_chains, *site_shape = shape_per_config
    per_chain = int(np.prod(site_shape, dtype=np.int64)) * itemsize
    c = max(1, min(n_chains, _CHUNK_BYTES // max(per_chain, 1)))
    return (1, c, *site_shape)


#: Extra bytes reserved per flush for HDF5's metadata (chunk index, object headers, free space).
RESERVE_OVERHEAD_BYTES = 64 * 1024

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def h5open(path: str | os.PathLike, mode: str) -> h5py.File:
    """``h5py.File`` with HDF5 file locking off (see the module docstring for why that is safe)."""
    return h5py.File(path, mode, locking=False)


def _not_hdf5_reason(path: Path) -> str:
    """Why ``path`` cannot be opened, in words a user recognises (a model checkpoint, an empty file ...)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not head:
        return "is empty"
    if head[:2] == b"PK" or path.suffix in (".pt", ".pth"):
        return "is not an HDF5 file (it looks like a PyTorch model file; lftml ensembles are .h5)"
    if head[:6] == b"\x93NUMPY":
        return "is not an HDF5 file (it is a NumPy .npy array)"
    if head != _HDF5_SIGNATURE:
        return "is not an HDF5 file"
    if journal_path(path).exists():
        return ("cannot be read: a write to it was interrupted and could not be undone yet; open it once "
                "with write permission to the file and its folder, and no lftml process writing it")
    return "is an HDF5 file that cannot be read; it is damaged (truncated or overwritten)"


def recover(path: str | os.PathLike) -> bool:
    """Undo a write to ``path`` that a kill interrupted (its undo journal is still there), when no live
    writer holds the file; returns True when the file was restored.

    Safe to call from a reader: with a live writer (the journal is that of a flush in progress) it
    does nothing; otherwise it takes the file's lock for the rollback, so no writer starts meanwhile."""
    path = Path(path)
    if not journal_path(path).exists() or in_progress_here(path):
        return False
    try:
        if OutputLock.held_by_this_process(path):
            return rollback(path)
        try:
            lock = OutputLock(path, "recovery").acquire()
        except LftmlError:
            return False  # a live writer: readers read its committed prefix, as always
        try:
            return rollback(path)
        finally:
            lock.release()
    except OSError as exc:  # e.g. a read-only file or folder: read what is there
        log.warning("%s: an interrupted write could not be undone (%s)", path, exc.strerror or exc)
        return False


def open_checked(path: str | os.PathLike, mode: str) -> h5py.File:
    """Open an lftml ensemble (``mode`` ``"r"`` or ``"a"``); one-line :class:`FileFormatError` otherwise."""
    path = Path(path)
    if not path.exists():
        from lftml.safeio import lock_holder

        holder = lock_holder(path)
        if holder is not None:
            raise FileFormatError(f"ensemble file {path} is being written by another lftml process ({holder}); "
                                  "it appears when that run finishes")
        raise FileFormatError(f"ensemble file {path} does not exist")
    if path.is_dir():
        raise FileFormatError(f"ensemble file {path} is a directory, expected a file")
    recover(path)
    try:
        f = h5open(path, mode)
    except OSError:
        raise FileFormatError(f"{path} {_not_hdf5_reason(path)}") from None
    except Exception as exc:  # h5py raises RuntimeError/ValueError on some damaged files
        raise FileFormatError(f"{path} is a damaged HDF5 file ({type(exc).__name__})") from None
    try:
        fmt = f.attrs.get("format")
    except Exception:
        f.close()
        raise FileFormatError(f"{path} is a damaged HDF5 file (its attributes cannot be read)") from None
    if fmt != FORMAT:
        f.close()
        raise FileFormatError(f"{path} is an HDF5 file but not an lftml ensemble (no format='{FORMAT}' attribute)")
    version = int(f.attrs.get("format_version", -1))
    if version > FORMAT_VERSION:
        f.close()
        raise FileFormatError(f"{path} has ensemble format version {version}; this lftml reads up to {FORMAT_VERSION}")
    return f


_open_checked = open_checked  # old private name, kept for callers not yet updated


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _abandon(f: h5py.File) -> None:
    """Close an h5py file after a failed write without letting HDF5's close errors escape."""
    with contextlib.suppress(Exception):
        f.close()


#: Target size of one chunk of an observable or record dataset (rows along Monte Carlo time).
_SERIES_CHUNK_BYTES = 4 * 1024


def _series_chunks(row_shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunks for an appendable per-configuration series: ~4 KiB, so a flush allocates little."""
    row = max(int(np.prod(row_shape, dtype=np.int64)) * itemsize, 1)
    return (max(1, min(1024, _SERIES_CHUNK_BYTES // row)), *row_shape)


def _nbytes(parts: Any) -> int:
    return int(sum(np.asarray(p).nbytes for p in parts))


class EnsembleWriter:
    """Appends configurations, observables and sampler records to an ensemble file.

    Rows are buffered in memory and written by :meth:`flush` (also on :meth:`close` and when the
    buffer holds ``flush_every`` configurations or ``flush_seconds`` have passed). Each flush opens the
    file, appends, updates the committed counters, writes the checkpoint (if given) and closes.
    """

    def __init__(self, path: Path, theory: Theory | None, flush_every: int, flush_seconds: float):
        self.path = Path(path)
        self.theory = theory
        self.flush_every = int(flush_every)
        self.flush_seconds = float(flush_seconds)
        self._configs: list[np.ndarray] = []
        self._obs: dict[str, list[np.ndarray]] = {}
        self._rec: dict[str, list[np.ndarray]] = {}
        self._checkpoint: dict[str, Any] | None = None
        self._uses_checkpoints = False
        self._last_flush = time.monotonic()
        self._extra_wall = 0.0
        self._failed = False
        with open_checked(self.path, "r") as f:
            self.n_chains = int(f.attrs["n_chains"])
            self.lattice_shape = tuple(int(s) for s in f.attrs["lattice_shape"])
            self.dtype = f["configs"].dtype
            self._n_committed = int(f.attrs["n_configs"])

    # ------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        lattice_shape: tuple[int, ...],
        n_chains: int,
        metadata: Mapping[str, Any],
        dtype: Any = np.float64,
        theory: Theory | None = None,
        overwrite: bool = False,
        flush_every: int = 50,
        flush_seconds: float = 30.0,
    ) -> "EnsembleWriter":
        """Create a new ensemble file (refuses to overwrite unless ``overwrite``).

        The empty file is written under a temporary name and renamed: a failure (a full disk
        included) leaves neither a temporary file nor a half-made ``path``."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise LftmlError(f"{path} already exists; pass --resume to extend it or choose another --out")
        if path.parent and not path.parent.exists():
            raise LftmlError(f"directory {path.parent} does not exist")
        n_chains = int(n_chains)
        if n_chains < 1:
            raise LftmlError(f"n_chains must be >= 1, got {n_chains}")
        meta = {**provenance(), **dict(metadata)}
        if theory is not None and "theory" not in meta:
            meta["theory"] = theory.to_dict()
        dtype = np.dtype(dtype)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with h5open(tmp, "w") as f:
                f.attrs["format"] = FORMAT
                f.attrs["format_version"] = FORMAT_VERSION
                f.attrs["metadata"] = json.dumps(meta, default=_json_default)
                f.attrs["n_configs"] = 0
                f.attrs["n_records"] = 0
                f.attrs["n_chains"] = n_chains
                f.attrs["lattice_shape"] = np.asarray(lattice_shape, dtype=np.int64)
                f.attrs["checkpoint"] = ""
                f.attrs["wall_time_s"] = 0.0
                row = (n_chains, *lattice_shape)
                f.create_dataset(
                    "configs", shape=(0, *row), maxshape=(None, *row), dtype=dtype, chunks=_chunks(row, dtype.itemsize)
                )
                f.create_group("observables")
                f.create_group("records")
            _fsync(tmp)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:
            raise write_error(exc, path) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return cls(path, theory, flush_every, flush_seconds)

    @classmethod
    def resume(
        cls, path: str | os.PathLike, theory: Theory | None = None, flush_every: int = 50, flush_seconds: float = 30.0
    ) -> "EnsembleWriter":
        """Open an existing ensemble for appending at its current checkpoint (or its counters when it
        has none); rows beyond them are dropped. Nothing is written when there is nothing to drop, so
        opening a valid file on a full disk cannot damage it."""
        path = Path(path)
        with open_checked(path, "r") as f:
            n, nr = int(f.attrs["n_configs"]), int(f.attrs["n_records"])
            name = str(f.attrs.get("checkpoint", ""))
            if name and name in f:
                n = min(n, int(f[name].attrs.get("n_configs", n)))
                nr = min(nr, int(f[name].attrs.get("n_records", nr)))
            stale = (f["configs"].shape[0] != n or int(f.attrs["n_configs"]) != n
                     or any(ds.shape[0] != n for ds in f["observables"].values())
                     or any(ds.shape[0] != nr for ds in f["records"].values()))
        if stale:
            try:
                with atomic_update(path) as f:
                    f["configs"].resize(n, axis=0)
                    for ds in f["observables"].values():
                        ds.resize(n, axis=0)
                    for ds in f["records"].values():
                        ds.resize(nr, axis=0)
                    f.attrs["n_configs"] = n
                    f.attrs["n_records"] = nr
            except (OSError, RuntimeError) as exc:
                raise write_error(exc, path) from None
        return cls(path, theory, flush_every, flush_seconds)

    # ------------------------------------------------------------ appending
    @property
    def n_configs(self) -> int:
        """Configurations committed to disk plus those buffered."""
        return self._n_committed + sum(len(c) for c in self._configs)

    def append(
        self,
        configs: np.ndarray | torch.Tensor,
        observables: Mapping[str, np.ndarray] | None = None,
        records: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Buffer ``configs`` of shape ``(n_new, n_chains, *lattice_shape)`` (or one ``(n_chains, ...)``
        row) with their observables ``(n_new, n_chains, ...)``, measured by the caller
        (:func:`lftml.observables.measure_history`); without ``observables`` none are stored."""
        c = configs.detach().cpu().numpy() if isinstance(configs, torch.Tensor) else np.asarray(configs)
        row = (self.n_chains, *self.lattice_shape)
        if c.shape == row:
            c = c[None]
            if observables is not None:
                observables = {k: np.asarray(v)[None] for k, v in observables.items()}
        if c.shape[1:] != row:
            raise LftmlError(f"configurations of shape {c.shape[1:]} do not fit this ensemble's rows {row}")
        self._configs.append(c.astype(self.dtype, copy=False))
        for k, v in (observables or {}).items():
            v = np.asarray(v)
            if v.shape[:2] != (len(c), self.n_chains):
                raise LftmlError(f"observable {k} has shape {v.shape}, expected ({len(c)}, {self.n_chains}, ...)")
            self._obs.setdefault(k, []).append(v)
        if records:
            self.add_records(records)
        self._maybe_flush()

    def add_records(self, records: Mapping[str, np.ndarray]) -> None:
        """Buffer per-update sampler records, each ``(n_new, n_chains)``."""
        for k, v in records.items():
            v = np.asarray(v)
            if v.ndim == 1:
                v = v[None]
            self._rec.setdefault(k, []).append(v)

    def set_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Sampler state matching the configurations appended so far; written with the next flush."""
        self._checkpoint = dict(state)
        self._uses_checkpoints = True

    def flush_due(self, n_new: int = 1) -> bool:
        """Whether appending ``n_new`` more configurations will trigger a flush."""
        buffered = sum(len(c) for c in self._configs) + n_new
        return buffered >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_seconds

    def _maybe_flush(self) -> None:
        if self._uses_checkpoints and self._checkpoint is None:
            return  # a sampler's rows are flushed together with the checkpoint that matches them
        if self.flush_due(0):
            self.flush()

    def discard_buffer(self) -> None:
        """Forget rows and the checkpoint buffered since the last flush (the file keeps its last flushed state)."""
        self._configs.clear()
        self._obs.clear()
        self._rec.clear()
        self._checkpoint = None

    def add_wall_time(self, seconds: float) -> None:
        self._extra_wall += float(seconds)

    def _pending_bytes(self) -> int:
        n = _nbytes(self._configs) + sum(_nbytes(p) for p in self._obs.values()) + sum(_nbytes(p) for p in self._rec.values())
        if self._checkpoint is not None:
            n += sum(np.asarray(v).nbytes for v in self._checkpoint.values() if not isinstance(v, (bytes, str)))
        # each dataset may start a new chunk in this flush; configs chunks hold one row
        n_series = len(self._obs) + len(self._rec)
        row = self.n_chains * int(np.prod(self.lattice_shape, dtype=np.int64)) * self.dtype.itemsize
        return 2 * n + n_series * 2 * _SERIES_CHUNK_BYTES + row + RESERVE_OVERHEAD_BYTES

    def flush(self) -> None:
        """Write buffered rows and the checkpoint, ``fsync``, then move the counters (crash-ordered).

        On any write error (a full disk, EIO) the file keeps its previous committed state, the
        buffer is dropped and one-line :class:`LftmlError` is raised."""
        if self._failed:
            raise LftmlError(f"{self.path}: an earlier write failed; the file holds its last flushed state")
        if not (self._configs or self._rec or self._checkpoint is not None or self._extra_wall):
            return
        try:
            self._flush()
        except LftmlError:
            self._failed = True
            self.discard_buffer()
            raise
        except (OSError, RuntimeError) as exc:
            self._failed = True
            self.discard_buffer()
            log.debug("write to %s failed", self.path, exc_info=True)
            raise write_error(exc, self.path) from None

    def _flush(self) -> None:
        n_new = sum(len(c) for c in self._configs)
        with atomic_update(self.path, reserve=self._pending_bytes()) as f:
            n0 = int(f.attrs["n_configs"])
            nr0 = int(f.attrs["n_records"])
            n_rec_new = 0
            if self._configs:
                new = np.concatenate(self._configs)
                ds = f["configs"]
                ds.resize(n0 + len(new), axis=0)
                ds[n0:] = new
                for k, parts in self._obs.items():
                    arr = np.concatenate(parts)
                    if k not in f["observables"]:
                        if n0 != 0:
                            raise LftmlError(f"observable {k} appears for the first time after {n0} configurations")
                        f["observables"].create_dataset(
                            k, shape=(0, *arr.shape[1:]), maxshape=(None, *arr.shape[1:]), dtype=arr.dtype,
                            chunks=_series_chunks(arr.shape[1:], arr.dtype.itemsize),
                        )
                    o = f["observables"][k]
                    o.resize(n0 + len(arr), axis=0)
                    o[n0:] = arr
            if self._rec:
                lengths = set()
                for k, parts in self._rec.items():
                    arr = np.concatenate(parts)
                    lengths.add(len(arr))
                    if k not in f["records"]:
                        f["records"].create_dataset(
                            k, shape=(nr0, *arr.shape[1:]), maxshape=(None, *arr.shape[1:]), dtype=arr.dtype,
                            chunks=_series_chunks(arr.shape[1:], arr.dtype.itemsize),
                            fillvalue=np.nan if arr.dtype.kind == "f" else 0,
                        )
                    r = f["records"][k]
                    r.resize(nr0 + len(arr), axis=0)
                    r[nr0:] = arr
                if len(lengths) != 1:
                    raise LftmlError(f"sampler records of unequal lengths {sorted(lengths)}")
                n_rec_new = lengths.pop()
            target = None
            if self._checkpoint is not None:
                current = str(f.attrs.get("checkpoint", ""))
                target = "checkpoint_b" if current == "checkpoint_a" else "checkpoint_a"
                if target in f:
                    del f[target]
                g = f.create_group(target)
                for k, v in self._checkpoint.items():
                    if isinstance(v, (bytes, str)) or np.isscalar(v):
                        g.attrs[k] = v
                    else:
                        g.create_dataset(k, data=np.asarray(v))
                g.attrs["n_configs"] = n0 + n_new
                g.attrs["n_records"] = nr0 + n_rec_new
            f.flush()
            _fsync(self.path)  # rows and checkpoint are on the disk before the counters name them
            f.attrs["n_configs"] = n0 + n_new
            f.attrs["n_records"] = nr0 + n_rec_new
            f.attrs["wall_time_s"] = float(f.attrs.get("wall_time_s", 0.0)) + self._extra_wall
            if target is not None:
                f.attrs["checkpoint"] = target
        self._n_committed += n_new
        self.discard_buffer()
        self._extra_wall = 0.0
        self._last_flush = time.monotonic()

    def update_metadata(self, **items: Any) -> None:
        """Merge ``items`` into the file's JSON metadata (written immediately)."""
        try:
            with atomic_update(self.path, reserve=RESERVE_OVERHEAD_BYTES) as f:
                meta = json.loads(f.attrs["metadata"])
                meta.update(items)
                f.attrs["metadata"] = json.dumps(meta, default=_json_default)
        except (OSError, RuntimeError) as exc:
            self._failed = True
            raise write_error(exc, self.path) from None

    @property
    def failed(self) -> bool:
        """True after a write error: the file holds its last flushed state and takes no more writes."""
        return self._failed

    def close(self) -> None:
        """Flush what is buffered (nothing after a failed write: the file keeps its last good state)."""
        if not self._failed:
            self.flush()

    def __enter__(self) -> "EnsembleWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            self.discard_buffer()
            self._failed = True
        self.close()


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    """The current checkpoint of an ensemble (None if it has none)."""
    with open_checked(Path(path), "r") as f:
        name = str(f.attrs.get("checkpoint", ""))
        if not name or name not in f:
            return None
        g = f[name]
        out: dict[str, Any] = {k: g[k][()] for k in g.keys()}
        out.update({k: g.attrs[k] for k in g.attrs.keys()})
        return out


def write_ensemble(
    path: str | os.PathLike,
    configs: np.ndarray | torch.Tensor,
    *,
    metadata: Mapping[str, Any],
    theory: Theory | None = None,
    observables: Mapping[str, np.ndarray] | None = None,
    overwrite: bool = True,
    log_weights: np.ndarray | None = None,
    wall_time_s: float = 0.0,
) -> Path:
    """Write a whole ensemble ``(n_configs, n_chains, *shape)`` at once, atomically (temp + rename).

    ``observables`` ``{name: (n_configs, n_chains, ...)}`` are the caller's measurements
    (:func:`lftml.observables.measure_history`); the store does not compute them. ``log_weights``
    (``(n_configs, n_chains)``, finite) are stored as ``/log_weights``. ``wall_time_s``: the
    seconds it took to produce the configurations (the file's ``wall_time_s``, from which
    ``lftml analyze`` reports the cost per independent configuration). On any error the temporary
    file is removed and ``path`` keeps its previous content."""
    path = Path(path)
    c = configs.detach().cpu().numpy() if isinstance(configs, torch.Tensor) else np.asarray(configs)
    if c.ndim < 3:
        raise LftmlError(f"configs must be (n_configs, n_chains, *lattice_shape), got shape {c.shape}")
    if not overwrite and path.exists():
        raise LftmlError(f"{path} already exists")
    if log_weights is not None:
        lw = np.asarray(log_weights, dtype=np.float64).reshape(c.shape[:2])
        if not np.all(np.isfinite(lw)):
            raise LftmlError("log weights contain NaN/inf; the proposal does not cover the target")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        w = EnsembleWriter.create(
            tmp, lattice_shape=c.shape[2:], n_chains=c.shape[1], metadata=metadata, dtype=c.dtype, theory=theory,
            overwrite=True, flush_every=max(len(c), 1), flush_seconds=1e9,
        )
        w.append(c, observables=observables)
        w.add_wall_time(wall_time_s)
        w.close()
        if log_weights is not None:
            with h5open(tmp, "a") as f:
                f.create_dataset("log_weights", data=lw)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise write_error(exc, path) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path


@dataclass
class Ensemble:
    """Read access to an ensemble file. ``configs`` is lazy (an h5py dataset) while the file is open."""

    path: Path
    metadata: dict[str, Any]
    n_configs: int
    n_chains: int
    lattice_shape: tuple[int, ...]
    observables: dict[str, np.ndarray] = field(repr=False)
    records: dict[str, np.ndarray] = field(repr=False)
    wall_time_s: float = 0.0
    _file: h5py.File | None = field(default=None, repr=False)
    log_weights: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike, *, retries: int = 5) -> "Ensemble":
        """Open for reading; only the committed prefix (``n_configs`` rows) counts. A read that races
        with a live writer's flush is retried (``retries`` times, 0.2 s apart)."""
        path = Path(path)
        for attempt in range(retries + 1):
            try:
                return cls._open_once(path)
            except FileFormatError:
                if attempt == retries or not path.exists():
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")  # pragma: no cover

    @classmethod
    def _open_once(cls, path: Path) -> "Ensemble":
        f = open_checked(path, "r")
        try:
            n = int(f.attrs["n_configs"])
            nr = int(f.attrs["n_records"])
            metadata = json.loads(f.attrs["metadata"])
            obs = {k: ds[:n] for k, ds in f["observables"].items()}
            rec = {k: ds[:nr] for k, ds in f["records"].items()}
            if any(len(v) != n for v in obs.values()) or f["configs"].shape[0] < n:
                raise ValueError(f"fewer stored rows than the {n} configurations its header counts")
            ens = cls(
                path=path,
                metadata=metadata,
                n_configs=n,
                n_chains=int(f.attrs["n_chains"]),
                lattice_shape=tuple(int(s) for s in f.attrs["lattice_shape"]),
                observables=obs,
                records=rec,
                wall_time_s=float(f.attrs.get("wall_time_s", 0.0)),
                _file=f,
                log_weights=f["log_weights"][:n] if "log_weights" in f else None,
            )
        except Exception as exc:
            _abandon(f)
            raise FileFormatError(f"{path} is a damaged lftml ensemble ({type(exc).__name__}: {exc})".split("\n")[0]) from None
        return ens

    @property
    def configs(self) -> h5py.Dataset:
        """Lazy ``(n_configs_on_disk, n_chains, *shape)`` dataset; only the first ``n_configs`` rows count."""
        if self._file is None or not self._file.id.valid:
            self._file = open_checked(self.path, "r")
        return self._file["configs"]

    def load_configs(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Configurations ``[start, stop)`` as a numpy array."""
        stop = self.n_configs if stop is None else min(stop, self.n_configs)
        return self.configs[start:stop]

    @property
    def theory(self) -> Theory | None:
        d = self.metadata.get("theory")
        return theory_from_dict(d) if d else None

    @property
    def volume(self) -> int:
        return int(np.prod(self.lattice_shape))

    def close(self) -> None:
        if self._file is not None and self._file.id.valid:
            self._file.close()
        self._file = None

    def __enter__(self) -> "Ensemble":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


@contextmanager
def open_ensemble(path: str | os.PathLike) -> Iterator[Ensemble]:
    ens = Ensemble.open(path)
    try:
        yield ens
    finally:
        ens.close()
