"""Where the points of a scan run: any ``concurrent.futures.Executor``, a Dask cluster, or this process.

* ``cluster="local"`` (default): an embedded ``distributed.LocalCluster`` with ``workers`` worker
  processes (default: the machine's cores), one thread each. Without Dask installed the points run
  in this process one after another (one log line says how to get parallelism).
* ``scheduler="tcp://HOST:PORT"``: an existing Dask scheduler (``dask scheduler`` / ``dask worker``).
* ``cluster="slurm"`` or ``"pbs"`` (or ``[cluster] type = ...`` in the scan file): dask-jobqueue's
  ``SLURMCluster`` / ``PBSCluster``; the other ``[cluster]`` keys are passed to it (``cores``,
  ``memory``, ``queue``, ``walltime``, ``account``, ...) and ``jobs`` (default 1) batch jobs are
  requested.
* ``cluster="serial"``: this process, one point after another.

Dask retries a task whose worker died (``distributed.scheduler.allowed-failures``, default 3);
tasks are idempotent (:func:`lftml.scan.tasks.run_point`), so a retry finishes the same file.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from lftml.errors import LftmlError

log = logging.getLogger(__name__)

__all__ = ["open_executor", "check_backend", "execute", "Backend", "CLUSTERS", "dask_available"]

CLUSTERS = ("local", "serial", "slurm", "pbs")
NO_DASK = ("dask is not installed: the points run in this process one after another; "
           "pip install 'lftml[dask]' to run them in parallel")


def dask_available() -> bool:
    return importlib.util.find_spec("distributed") is not None


@dataclass
class Backend:
    """An open executor (None: this process) and a one-line description of it for the user."""

    executor: Any
    description: str
    dashboard: str | None = None


def _dashboard(client: Any) -> str | None:
    if not _has_bokeh():
        return None  # distributed serves no dashboard pages without bokeh
    return getattr(client, "dashboard_link", None)


def check_backend(cluster: str | None = "local", *, workers: int | None = None, scheduler: str | None = None,
                  cluster_table: Mapping[str, Any] | None = None) -> str:
    """Validate the executor options before anything is written; return the cluster kind."""
    table = dict(cluster_table or {})
    kind = cluster or table.get("type") or "local"
    if kind not in CLUSTERS:
        raise LftmlError(f"--cluster {kind!r} is unknown; use one of {', '.join(CLUSTERS)}")
    if workers is not None and workers < 1:
        raise LftmlError(f"--workers must be >= 1, got {workers}")
    if workers is not None and kind != "local":
        raise LftmlError(f"--workers applies to --cluster local; --cluster {kind} "
                         + ("runs every point in this process" if kind == "serial" else "takes its jobs from [cluster] jobs"))
    if scheduler is not None and not dask_available():
        raise LftmlError("--scheduler needs Dask: pip install 'lftml[dask]'")
    if kind in ("slurm", "pbs") and importlib.util.find_spec("dask_jobqueue") is None:
        raise LftmlError(f"--cluster {kind} (or [cluster] type = \"{kind}\") needs dask-jobqueue: "
                         "pip install 'lftml[dask]' dask-jobqueue")
    unknown = set(table) - {"type", "jobs"} if kind in ("local", "serial") else set()
    if unknown:
        raise LftmlError(f"[cluster] {sorted(unknown)[0]} is a dask-jobqueue setting; it needs type = \"slurm\" or \"pbs\"")
    return kind


@contextlib.contextmanager
def open_executor(
    cluster: str | None = "local",
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    cluster_table: Mapping[str, Any] | None = None,
) -> Iterator[Backend]:
    """Open (and finally close) the executor the options name."""
    table = dict(cluster_table or {})
    kind = cluster or table.pop("type", None) or "local"
    table.pop("type", None)
    if kind not in CLUSTERS:
        raise LftmlError(f"--cluster {kind!r} is unknown; use one of {', '.join(CLUSTERS)}")
    if workers is not None and workers < 1:
        raise LftmlError(f"--workers must be >= 1, got {workers}")
    if scheduler is not None:
        if not dask_available():
            raise LftmlError("--scheduler needs Dask: pip install 'lftml[dask]'")
        from distributed import Client

        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise LftmlError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
        try:
            n = len(client.scheduler_info().get("workers", {}))
            yield Backend(client, f"Dask scheduler {scheduler} ({n} workers now)", _dashboard(client))
        finally:
            client.close()
        return
    if kind == "serial":
        yield Backend(None, "this process, one point after another")
        return
    if not dask_available():
        if kind != "local":
            raise LftmlError(f"--cluster {kind} needs dask-jobqueue: pip install 'lftml[dask]' dask-jobqueue")
        log.warning(NO_DASK)
        yield Backend(None, "this process, one point after another (dask is not installed)")
        return
    from distributed import Client

    if kind == "local":
        from distributed import LocalCluster

        n = workers or os.cpu_count() or 1
        dlog = logging.getLogger("distributed")
        level = dlog.level
        dlog.setLevel(logging.ERROR)  # the scheduler's INFO lines are not for a scan's user
        try:
            # ":0": a free port, so scans of several users on one machine do not collide on 8787
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                              silence_logs=logging.ERROR) as lc, Client(lc) as client:
                yield Backend(client, f"Dask LocalCluster, {n} worker processes x 1 thread", _dashboard(client))
        finally:
            dlog.setLevel(level)
        return
    try:
        import dask_jobqueue
    except ImportError:
        raise LftmlError(f"--cluster {kind} needs dask-jobqueue: pip install dask-jobqueue") from None
    jobs = int(table.pop("jobs", 1))
    cls = dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.PBSCluster
    try:
        jq = cls(**table)
    except (TypeError, ValueError) as exc:
        raise LftmlError(f"[cluster] type = {kind!r}: {exc}") from None
    with jq, Client(jq) as client:
        jq.scale(jobs=jobs)
        yield Backend(client, f"dask-jobqueue {cls.__name__}, {jobs} job(s)", _dashboard(client))


def _has_bokeh() -> bool:
    return importlib.util.find_spec("bokeh") is not None


def _is_dask(executor: Any) -> bool:
    try:
        from distributed import Client
    except ImportError:
        return False
    return isinstance(executor, Client)


def execute(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    executor: Any,
    on_result: Callable[[Any, Any, BaseException | None], None],
    *,
    key: Callable[[Any], str] = str,
) -> None:
    """Run ``fn(item)`` for every item, one task each, calling ``on_result(item, result, error)``
    as each finishes (in completion order). ``executor``: None (this process, in order), a Dask
    ``Client`` or any ``concurrent.futures.Executor``. On an interrupt the pending tasks are
    cancelled and the ``KeyboardInterrupt`` propagates."""
    if executor is None:
        for item in items:
            try:
                result = fn(item)
            except Exception as exc:  # noqa: BLE001  (reported per point; the scan goes on)
                on_result(item, None, exc)
            else:
                on_result(item, result, None)
        return
    if _is_dask(executor):
        import uuid

        from distributed import as_completed

        token = uuid.uuid4().hex[:8]
        futures = {executor.submit(fn, item, key=f"lftml-scan-{key(item)}-{token}", pure=False): item for item in items}
        completed = as_completed(list(futures))
    else:
        futures = {executor.submit(fn, item): item for item in items}
        completed = concurrent.futures.as_completed(list(futures))
    try:
        for fut in completed:
            item = futures[fut]
            try:
                result = fut.result()
            except Exception as exc:  # noqa: BLE001
                on_result(item, None, exc)
            else:
                on_result(item, result, None)
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
