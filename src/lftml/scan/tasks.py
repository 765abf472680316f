"""One task per point: the registered ``lftml hmc`` command, run with the point's options.

A point is executed by invoking the very click command the shell runs (``lftml hmc --shape 8,8
--kappa 0.25 ... --out DIR/NAME.h5 --json``), so a point's file is, by construction, the file
``lftml hmc`` writes for the same options, and options added to ``lftml hmc`` later work in scans
without changes here. A task is idempotent: a finished file is left alone, a partial one is
continued with the engine's bit-identical ``--resume``, so a task retried after its worker died
(or a scan rerun after an interrupt) gives the same file as an undisturbed run.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from lftml.errors import LftmlError, WriteError
from lftml.scan.grid import Point, check_minimum, click_command, command_options

log = logging.getLogger(__name__)

__all__ = ["PointTask", "prepare_point", "run_point", "file_state", "expected_metadata"]

THEORY_KEYS = ("shape", "kappa", "lam", "m2", "lam4", "g")
#: RunConfig field <- command option
RUN_KEYS = {"n_chains": "chains", "n_configs": "n_configs", "n_therm": "therm", "every": "every", "seed": "seed",
            "start": "start", "adapt": "adapt", "target_acceptance": "target_acceptance", "device": "device",
            "dtype": "dtype"}
_stdout_lock = threading.Lock()


@dataclass(frozen=True)
class PointTask:
    """What a worker needs to run one point (plain data: it travels to Dask workers by pickle)."""

    name: str
    command: str
    argv: tuple[str, ...]  # the command's options, without --out/--resume/--json/--progress
    path: str
    n_configs: int
    threads: int = 1

    def command_line(self) -> str:
        """The equivalent shell command (what a user types to make this file by hand)."""
        return " ".join(["lftml", self.command, *self.argv, "--out", self.path])


def _to_argv(options: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    argv: list[str] = []
    for key, value in options.items():
        param = params[key]
        if value is None:
            continue
        if getattr(param, "is_flag", False):
            if not isinstance(value, bool):
                raise LftmlError(f"{key} must be true or false, got {value!r}")
            opts = param.opts if value else param.secondary_opts
            if not opts:
                raise LftmlError(f"{key} cannot be set to {value!r}")
            argv.append(opts[0])
            continue
        long = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        if isinstance(value, (list, tuple)):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, float):
            text = repr(value)
        else:
            text = str(value)
        argv += [long, text]
    return argv


def prepare_point(point: Point, command: str, directory: str | Path, threads: int = 1) -> tuple[PointTask, dict[str, Any]]:
    """Validate a point without running anything; return its task and its resolved options.

    Checks, each a one-line :class:`LftmlError` naming the point and the key: values the command's
    option parser rejects, values out of range (lambda < 0, a non-positive lattice extent, ...), a
    theory the engine refuses, run settings :class:`lftml.run.RunConfig` refuses.
    """
    from lftml.cli.common import parse_shape
    from lftml.cli.engine import build_theory
    from lftml.run import RunConfig

    params = command_options(command)
    argv = _to_argv(point.options, params)
    cmd = click_command(command)
    try:
        with cmd.make_context(f"lftml {command}", [*argv, "--out", "unused.h5"], resilient_parsing=False) as ctx:
            resolved = dict(ctx.params)
    except Exception as exc:  # click's usage errors (typer vendors click: match by interface, not class)
        if not hasattr(exc, "format_message"):
            raise
        raise LftmlError(f"point {point.name}: {exc.format_message()}") from None
    for key in ("out", "resume", "as_json", "progress", "overwrite"):
        resolved.pop(key, None)
    resolved = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in resolved.items()}
    try:
        shape = parse_shape(resolved["shape"])
    except LftmlError as exc:
        raise LftmlError(f"point {point.name}: shape {resolved['shape']!r} is out of range: {exc}") from None
    resolved["shape"] = list(shape)
    for key, value in resolved.items():
        check_minimum(point.name, key, value)
    try:
        build_theory(",".join(map(str, shape)), *(resolved.get(k) for k in THEORY_KEYS[1:]))
        RunConfig(**{f: resolved[o] for f, o in RUN_KEYS.items() if o in resolved})
    except LftmlError as exc:
        raise LftmlError(f"point {point.name}: {exc}") from None
    path = Path(directory) / point.filename
    task = PointTask(name=point.name, command=command, argv=tuple(argv), path=str(path),
                     n_configs=int(resolved.get("n_configs", 0)), threads=threads)
    return task, resolved


def expected_metadata(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The ``theory`` and ``run`` records an ensemble of these options carries (for contradiction checks)."""
    from lftml.cli.engine import build_theory
    from lftml.run import RunConfig

    theory = build_theory(",".join(map(str, resolved["shape"])), *(resolved.get(k) for k in THEORY_KEYS[1:]))
    config = RunConfig(**{f: resolved[o] for f, o in RUN_KEYS.items() if o in resolved})
    return {"theory": theory.to_dict(), "run": config.to_dict()}


def file_state(path: str | Path) -> dict[str, Any] | None:
    """``{"n_configs", "metadata"}`` of an existing ensemble file, or None when it cannot be read
    (damaged by something else than a kill: a flush a kill interrupted is undone first, unless a live
    writer holds the file)."""
    from lftml.ensemble import h5open, recover

    try:
        recover(path)
        with h5open(path, "r") as f:  # no HDF5 file lock: a live writer's flush must not fail because of us
            return {"n_configs": int(f.attrs["n_configs"]), "metadata": json.loads(f.attrs["metadata"])}
    except (OSError, KeyError, ValueError):
        return None


def _invoke(command: str, argv: list[str]) -> str:
    """Run ``lftml COMMAND ARGV`` in this process; return what it printed on stdout."""
    cmd = click_command(command)
    buf = io.StringIO()
    quiet = [logging.getLogger(n) for n in ("lftml.stats", "lftml.analysis")]
    levels = [q.level for q in quiet]
    with _stdout_lock, contextlib.redirect_stdout(buf):
        for q in quiet:  # the command's closing summary; `lftml scan-analyze` is the analysis of a scan
            q.setLevel(logging.ERROR)
        with cmd.make_context(f"lftml {command}", argv) as ctx:
            try:
                cmd.invoke(ctx)
            finally:
                for q, lv in zip(quiet, levels):
                    q.setLevel(lv)
    return buf.getvalue()


def run_point(task: PointTask) -> dict[str, Any]:
    """Run (or finish) one point; safe to call again on the same file at any time.

    Returns ``{"name", "status": "done", "ran": bool, "n_configs", "acceptance", "wall_time_s"}``.
    Raises :class:`LftmlError` when the engine refuses (the message names the point).
    """
    import torch

    from lftml.safeio import OutputLock

    torch.set_num_threads(task.threads)
    path = Path(task.path)
    t0 = time.perf_counter()
    try:
        # the task's own lock (the engine locks PATH itself for the run inside): one task per point
        with OutputLock(path.with_name(path.name + ".task"), what="scan point"):
            resume = False
            if path.exists():
                state = file_state(path)
                if state is None:
                    # unreadable: the run is deterministic, so starting it again gives the same file
                    damaged = path.with_name(f"{path.name}.damaged-{int(time.time())}")
                    os.replace(path, damaged)
                    log.warning("%s could not be read (moved to %s); running the point from the start", path, damaged)
                elif state["n_configs"] >= task.n_configs:
                    return {"name": task.name, "status": "done", "ran": False, "n_configs": state["n_configs"]}
                else:
                    resume = True
            argv = [*task.argv, "--out", str(path), "--no-progress", "--json", *(["--resume"] if resume else [])]
            summary = json.loads(_invoke(task.command, argv))
    except WriteError as exc:  # kept a WriteError: the scan stops at a full disk instead of failing every point
        raise WriteError(f"point {task.name}: {exc}", exc.errno) from None
    except LftmlError as exc:
        raise LftmlError(f"point {task.name}: {exc}") from None
    return {
        "name": task.name, "status": "done", "ran": True, "resumed": resume, "n_configs": summary.get("n_configs"),
        "acceptance": summary.get("acceptance"), "wall_time_s": time.perf_counter() - t0,
    }
