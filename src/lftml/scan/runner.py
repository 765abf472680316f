"""The scan driver: validate every point, lock the folder, run what is missing, keep the index."""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lftml
from lftml.errors import LftmlError, WriteError
from lftml.safeio import OutputLock, interrupts_as_keyboard_interrupt
from lftml.scan.executor import Backend, check_backend, execute, open_executor
from lftml.scan.grid import ScanSpec
from lftml.scan.index import FORMAT, INDEX, read_index, write_config, write_index
from lftml.scan.tasks import PointTask, expected_metadata, file_state, prepare_point, run_point

log = logging.getLogger(__name__)

__all__ = ["ScanResult", "plan_scan", "run_scan"]

#: options whose change does not change a point's Markov chains (n_configs may grow: the file is extended)
_HARMLESS = ("checkpoint_every", "n_configs")


@dataclass(frozen=True)
class ScanResult:
    out: Path
    n_points: int
    n_ran: int
    n_skipped: int
    failed: dict[str, str] = field(default_factory=dict)
    wall_time_s: float = 0.0
    backend: str = ""
    dashboard: str | None = None


def _contradiction(name: str, path: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    for key in sorted(set(old) & set(new)):  # an option added to the command later: its default
        if key in _HARMLESS:
            continue
        if old.get(key) != new.get(key):
            raise LftmlError(
                f"point {name}: {path} was made with {key} = {old.get(key)!r}, this scan has {key} = {new.get(key)!r}; "
                "use another --out folder or move the file away")


def plan_scan(spec: ScanSpec, out: str | Path) -> list[tuple[PointTask, dict[str, Any]]]:
    """Validate every point (nothing is written): its task and resolved options."""
    return [prepare_point(p, spec.command, out, spec.threads) for p in spec.points()]


def _check_existing(task: PointTask, resolved: dict[str, Any], index: dict[str, Any]) -> str:
    """Status of a point's existing file ("pending", "partial", "done"); refuses a file made with other settings."""
    path = Path(task.path)
    entry = index["points"].get(task.name)
    if entry is not None and path.exists():
        _contradiction(task.name, path, entry.get("options", {}), resolved)
    if not path.exists():
        return "pending"
    state = file_state(path)
    if state is None:
        return "partial"  # unreadable: the task moves it aside and reruns the point
    meta, want = state["metadata"], expected_metadata(resolved)
    if meta.get("kind") != task.command:
        raise LftmlError(f"point {task.name}: {path} is a {meta.get('kind')} ensemble, this scan runs {task.command}")
    if meta.get("theory") != want["theory"]:
        raise LftmlError(f"point {task.name}: {path} holds theory {meta.get('theory')}, this point is {want['theory']}; "
                         "use another --out folder or move the file away")
    for key, value in want["run"].items():
        if key in _HARMLESS or key not in meta.get("run", {}):
            continue  # n_configs may grow (the file is extended); a record the file predates
        if meta["run"][key] != value:
            raise LftmlError(f"point {task.name}: {path} was made with run setting {key} = {meta['run'].get(key)!r}, "
                             f"this scan has {value!r}; use another --out folder or move the file away")
    if state["n_configs"] > task.n_configs:
        raise LftmlError(f"point {task.name}: {path} holds {state['n_configs']} configurations per chain, this scan "
                         f"asks for {task.n_configs}; raise n_configs or use another --out folder")
    return "done" if state["n_configs"] == task.n_configs else "partial"


def run_scan(
    spec: ScanSpec,
    out: str | Path,
    *,
    executor: Any = None,
    cluster: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = False,
    on_backend: Callable[[Backend], None] | None = None,
) -> ScanResult:
    """Run every point of ``spec`` into folder ``out``; points already complete are not run again.

    ``executor``: any ``concurrent.futures.Executor`` or Dask ``Client`` (then ``cluster``,
    ``workers`` and ``scheduler`` are ignored); else one is opened from those options (see
    :func:`lftml.scan.executor.open_executor`). ``on_backend`` receives the opened backend (its
    description and dashboard address) before the first task. Raises :class:`LftmlError` before
    anything is written for a bad point or a file that contradicts its point; at the end, when some
    points failed (the others are complete; a rerun retries the failed ones).
    """
    out = Path(out)
    _check_out(out)
    planned = plan_scan(spec, out)
    if executor is None:
        check_backend(cluster, workers=workers, scheduler=scheduler, cluster_table=spec.cluster)
    created = _make_folder(out)
    lock = OutputLock(out / INDEX, what="scan")
    t0 = time.perf_counter()
    try:
        lock.acquire()
        index = read_index(out)
        statuses = {task.name: _check_existing(task, resolved, index) for task, resolved in planned}
    except BaseException:
        lock.release()
        if created:
            with contextlib.suppress(OSError):  # not empty: another scan that started at once works in it
                out.rmdir()
        raise
    try:
        _write_plan(out, spec, planned, index, statuses, lock, created)
        todo = [t for t, _ in planned if statuses[t.name] != "done"]
        skipped = len(planned) - len(todo)
        recorder, backend = _run_points(
            out, spec, todo, index, len(planned), skipped, executor=executor, cluster=cluster, workers=workers,
            scheduler=scheduler, progress=progress, on_backend=on_backend)
    finally:
        lock.release()
    failed = recorder.failed
    result = ScanResult(out=out, n_points=len(planned), n_ran=recorder.ran, n_skipped=skipped, failed=failed,
                        wall_time_s=time.perf_counter() - t0, backend=backend.description, dashboard=backend.dashboard)
    if failed:
        first = next(iter(failed.items()))
        raise LftmlError(f"{len(failed)} of {len(planned)} points failed (first: {first[1]}); the others are complete "
                         f"and {out / INDEX} lists every point; fix the cause and rerun to retry the failed ones")
    return result


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file or whose parent folder does not exist."""
    if out.exists() and not out.is_dir():
        raise LftmlError(f"--out {out} is a file; a scan writes a folder")
    parent = out.parent if str(out.parent) else Path(".")
    if not out.exists() and not parent.is_dir():
        raise LftmlError(f"--out {out}: folder {parent} does not exist; create it first")


def _make_folder(out: Path) -> bool:
    """Create the scan folder if it does not exist yet; whether this scan created it."""
    created = not out.exists()
    if created:
        try:
            out.mkdir()
        except OSError as exc:
            from lftml.safeio import write_error

            raise write_error(exc, out, "create the folder") from None
    return created


def _undo_new_folder(out: Path, lock: OutputLock) -> None:
    """A folder this scan made holds nothing but its config yet: leave no trace of the attempt."""
    lock.release()  # its lock file is in the folder (release is idempotent)
    for name in ("scan.json", "scan.toml", INDEX):
        (out / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        out.rmdir()


def _write_plan(out: Path, spec: ScanSpec, planned: list[tuple[PointTask, dict[str, Any]]], index: dict[str, Any],
                statuses: dict[str, str], lock: OutputLock, created: bool) -> None:
    """Write the scan's config and the index with every point's status (a new folder is removed if that fails)."""
    config = {**spec.to_dict(), "lftml_version": lftml.__version__,
              "fixed_resolved": _common(planned), "points": [t.name for t, _ in planned]}
    try:
        write_config(out, config)
        points = index["points"]
        parameters = {p.name: p.parameters for p in spec.points()}
        for task, resolved in planned:
            entry = points.get(task.name, {})
            points[task.name] = {
                "file": Path(task.path).name, "parameters": _plain(parameters[task.name]),
                "options": resolved, "command": task.command_line(), "status": statuses[task.name],
                "n_configs": entry.get("n_configs"), **{k: entry[k] for k in ("acceptance", "wall_time_s") if k in entry},
            }
            points[task.name].pop("error", None)
        index.update(format=FORMAT, format_version=1, command=spec.command, lftml_version=lftml.__version__)
        write_index(out, index)
    except BaseException:
        if created:
            _undo_new_folder(out, lock)
        raise


class _Recorder:
    """Records each point's outcome in the index as it arrives; a write error stops the scan."""

    def __init__(self, out: Path, index: dict[str, Any], bar: Any) -> None:
        self.out, self.index, self.bar = out, index, bar
        self.ran = 0
        self.failed: dict[str, str] = {}
        self.last_write = time.monotonic()

    def __call__(self, task: PointTask, result: Any, error: BaseException | None) -> None:
        """The ``on_result`` callback of :func:`lftml.scan.executor.execute`."""
        entry = self.index["points"][task.name]
        if error is not None:
            msg = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            entry.update(status="failed", error=msg)
            if isinstance(error, WriteError):
                # a full disk or an I/O error: every further point would fail the same way (and start
                # files that cannot grow); stop here. The point's file keeps its last checkpoint.
                fix = "free space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
                raise WriteError(f"{msg}; the scan stopped there (finished points are kept, unfinished ones "
                                 f"resume bit-identically): {fix}, then rerun the scan", error.errno)
            self.failed[task.name] = msg
            log.warning("point %s failed: %s", task.name, msg)
        else:
            entry.update(status="done", n_configs=result.get("n_configs"))
            for k in ("acceptance", "wall_time_s", "resumed"):
                if result.get(k) is not None:
                    entry[k] = result[k]
            self.ran += int(bool(result.get("ran")))
        self.bar.update(1)
        if error is not None or time.monotonic() - self.last_write > 2.0:
            # at most every 2 s (a 1,000-point index is ~1 MB): the files are the truth for "done"
            write_index(self.out, self.index)
            self.last_write = time.monotonic()


def _run_points(out: Path, spec: ScanSpec, todo: list[PointTask], index: dict[str, Any], n_points: int, skipped: int,
                *, executor: Any, cluster: str | None, workers: int | None, scheduler: str | None, progress: bool,
                on_backend: Callable[[Backend], None] | None) -> tuple[_Recorder, Backend]:
    """Run the points ``todo``, keeping the index; on an error or interrupt mark where the others stopped."""
    from tqdm.auto import tqdm

    bar = tqdm(total=n_points, initial=skipped, unit="point", desc="scan", disable=None if progress else True,
               smoothing=0.1)
    recorder = _Recorder(out, index, bar)
    try:
        backend = _execute(spec, todo, recorder, executor=executor, cluster=cluster, workers=workers,
                           scheduler=scheduler, on_backend=on_backend)
    except BaseException as exc:
        _mark_unfinished(todo, index["points"])
        try:
            write_index(out, index)
        except WriteError:
            if not isinstance(exc, WriteError):
                raise
            # the disk that stopped the scan refuses the index too: the files are the truth for "done"
            # (a rerun reads them), and the first error is the one to report
        raise
    else:
        write_index(out, index)
    finally:
        bar.close()
    return recorder, backend


def _execute(spec: ScanSpec, todo: list[PointTask], recorder: _Recorder, *, executor: Any, cluster: str | None,
             workers: int | None, scheduler: str | None, on_backend: Callable[[Backend], None] | None) -> Backend:
    """Run ``todo`` on the given executor or on one opened from the options; the backend used."""
    backend = Backend(executor, "the given executor")
    with interrupts_as_keyboard_interrupt():
        if not todo:
            pass
        elif executor is not None:
            execute(run_point, todo, executor, recorder, key=lambda t: t.name)
        else:
            with open_executor(cluster, workers=workers, scheduler=scheduler, cluster_table=spec.cluster) as be:
                backend = be
                if on_backend is not None:
                    on_backend(be)
                execute(run_point, todo, be.executor, recorder, key=lambda t: t.name)
    return backend


def _mark_unfinished(todo: list[PointTask], points: dict[str, Any]) -> None:
    """Points neither done nor failed: "interrupted" (with their committed count) if a file exists, else "pending"."""
    for task in todo:
        if points[task.name]["status"] not in ("done", "failed"):
            st = file_state(task.path) if Path(task.path).exists() else None
            points[task.name]["status"] = "interrupted" if st is not None else "pending"
            if st is not None:
                points[task.name]["n_configs"] = st["n_configs"]


def _plain(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_plain(v) for v in d]
    return d


def _common(planned: list[tuple[PointTask, dict[str, Any]]]) -> dict[str, Any]:
    """Options with one value over the whole scan (the resolved [fixed], defaults included)."""
    if not planned:
        return {}
    first = planned[0][1]
    return {k: _plain(v) for k, v in first.items() if all(r.get(k) == v for _, r in planned)}
