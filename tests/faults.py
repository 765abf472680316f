"""Fault injection for lftml's writers (importable by every test module; no timing races).

A *fault* is ``(point, at, action)``: at the ``at``-th call (1-based) of an injection ``point`` the
``action`` happens instead of (or, for signals and pauses, before) the call.

Points (what a writer does)::

    append      EnsembleWriter.append           one call per stored configuration row
    flush       EnsembleWriter._flush           one call per flush of an ensemble
    h5write     h5py.Dataset.__setitem__         every dataset write (rows, checkpoints)
    fsync       lftml.ensemble._fsync           the fsync that precedes moving the counters
    reserve     lftml.undo._reserve             the space reservation before a flush
    replace     os.replace                      atomic renames (new files, one-shot writers)
    h5open      lftml.ensemble.h5open           every open of an ensemble file
    <mod>:<attr>  any other function, e.g. "lftml.diffusion.training:save_checkpoint"

Actions::

    enospc / eio / erofs   raise OSError with that errno
    sigint / sigterm       send the signal to this process (delivered at that point)
    pause                  create the file $LFTML_FAULT_READY, wait until $LFTML_FAULT_GO exists
    interrupt              raise KeyboardInterrupt
    a callable             call it (in-process only), then let the call proceed: e.g. run a reader
                           while the writer sits at exactly that point

In-process: ``with inject("fsync", 2, "enospc"): ...`` (a context manager; nests).
In a subprocess: :func:`run_lftml` runs ``python -m lftml ARGS`` with faults given by the
environment variable ``LFTML_FAULTS`` (JSON list of ``[point, at, action]``), which
``python tests/faults.py ARGS`` installs before calling the CLI.

A real full disk: :func:`tmpfs_available` / :func:`run_in_tmpfs` mount a small tmpfs in a private
mount namespace (``unshare -rm``, no privileges needed where user namespaces are enabled) and run a
shell script there; tests skip where that is not possible.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

_ERRNOS = {"enospc": errno.ENOSPC, "eio": errno.EIO, "erofs": errno.EROFS}

_POINTS: dict[str, tuple[str, str]] = {
    "append": ("lftml.ensemble", "EnsembleWriter.append"),
    "flush": ("lftml.ensemble", "EnsembleWriter._flush"),
    "h5write": ("h5py", "Dataset.__setitem__"),
    "fsync": ("lftml.ensemble", "_fsync"),
    "reserve": ("lftml.undo", "_reserve"),
    "replace": ("os", "replace"),
    "h5open": ("lftml.ensemble", "h5open"),
}


def _resolve(point: str) -> tuple[Any, str]:
    """(object holding the attribute, attribute name) for a point."""
    module, attr = _POINTS.get(point) or tuple(point.split(":", 1))  # type: ignore[misc]
    obj: Any = importlib.import_module(module)
    *owners, name = attr.split(".")
    for o in owners:
        obj = getattr(obj, o)
    return obj, name


def _act(action: str | Callable[[], Any], point: str, count: int) -> None:
    if callable(action):
        action()
        return
    if action in _ERRNOS:
        code = _ERRNOS[action]
        raise OSError(code, f"{os.strerror(code)} (injected at {point} #{count})")
    if action == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
    elif action == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    elif action == "interrupt":
        raise KeyboardInterrupt
    elif action == "pause":
        ready, go = os.environ["LFTML_FAULT_READY"], os.environ["LFTML_FAULT_GO"]
        Path(ready).write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not os.path.exists(go):
            if time.monotonic() > deadline:
                raise RuntimeError("fault pause: nobody released the pause within 120 s")
            time.sleep(0.01)
    else:
        raise ValueError(f"unknown fault action {action!r}")


@contextlib.contextmanager
def inject(point: str, at: int | Callable[..., bool], action: str | Callable[[], Any],
           counter: dict | None = None) -> Iterator[dict]:
    """Patch ``point`` so that its ``at``-th call performs ``action``; yields the call counter
    ``{"calls": n, "fired": bool}``. Signals/pauses then let the call proceed; errors replace it.
    ``at`` may instead be a predicate of the call's arguments: the first call it accepts fires (e.g.
    the rename onto one named file, whatever else was renamed before)."""
    owner, name = _resolve(point)
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    state = counter if counter is not None else {"calls": 0, "fired": False}
    raw = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state["calls"] += 1
        hit = at(*args, **kwargs) if callable(at) else state["calls"] == at
        if hit and not state["fired"]:
            state["fired"] = True
            _act(action, point, state["calls"])
        return raw(*args, **kwargs)

    setattr(owner, name, wrapper)
    try:
        yield state
    finally:
        setattr(owner, name, original)


def install_from_env() -> list[contextlib.AbstractContextManager]:
    """Install the faults of ``$LFTML_FAULTS`` for the rest of the process (subprocess use)."""
    managers = []
    for point, at, action in json.loads(os.environ.get("LFTML_FAULTS", "[]")):
        cm = inject(point, int(at), action)
        cm.__enter__()
        managers.append(cm)
    return managers


# ------------------------------------------------------------------ subprocess helpers


def lftml_env(faults: list | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    if faults:
        env["LFTML_FAULTS"] = json.dumps(faults)
    env.update(extra)
    return env


def lftml_command(*args: Any) -> list[str]:
    """argv that runs the CLI with the faults of $LFTML_FAULTS installed."""
    return [sys.executable, str(HERE / "faults.py"), *map(str, args)]


def run_lftml(*args: Any, faults: list | None = None, cwd: str | os.PathLike | None = None, timeout: float = 300,
              **env: str) -> subprocess.CompletedProcess:
    """Run ``lftml ARGS`` in a fresh interpreter with ``faults``; returns the completed process."""
    return subprocess.run(lftml_command(*args), env=lftml_env(faults, **env), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


class Paused:
    """A writer subprocess stopped at a fault ``pause`` (use as a context manager).

    ``Paused(tmp, args, point, at)`` starts ``lftml ARGS`` and returns once it sits at the ``at``-th
    call of ``point``; :meth:`release` lets it continue; :meth:`wait` returns its completed state."""

    def __init__(self, tmp: Path, args: list[Any], point: str, at: int, timeout: float = 120):
        self.ready, self.go = tmp / f"ready-{point}-{at}", tmp / f"go-{point}-{at}"
        for p in (self.ready, self.go):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        self.proc = subprocess.Popen(
            lftml_command(*args), env=lftml_env([[point, at, "pause"]], LFTML_FAULT_READY=str(self.ready),
                                                LFTML_FAULT_GO=str(self.go)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f"writer exited ({self.proc.returncode}) before the pause:\n{out}\n{err}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("writer never reached the pause")
            time.sleep(0.01)

    def release(self) -> None:
        self.go.write_text("go")

    def wait(self, timeout: float = 300) -> subprocess.CompletedProcess:
        out, err = self.proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def __enter__(self) -> "Paused":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.release()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class HeldOpen:
    """Another process (a bare interpreter: h5py only, well under a second to start) that opens
    ``path`` read-only with HDF5's default file locking and holds it open until :meth:`close` (a
    context manager). ``n_configs`` is the file's committed count when it was opened. A reader in
    the test's own process cannot stand in for it: HDF5 refuses to open one file twice in one
    process with different locking flags, which no user's separate reader ever meets."""

    _SCRIPT = ("import sys, h5py\n"
               "f = h5py.File(sys.argv[1], 'r')\n"
               "print(int(f.attrs['n_configs']), flush=True)\n"
               "sys.stdin.read()\n"
               "print(int(f.attrs['n_configs']), f['configs'].shape[0], flush=True)\n")

    def __init__(self, path: str | os.PathLike, timeout: float = 60):
        self.proc = subprocess.Popen([sys.executable, "-c", self._SCRIPT, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the reader could not open {path}: {self.proc.communicate(timeout=timeout)[1]}")
        self.n_configs = int(line)
        self.later: tuple[int, int] | None = None

    def close(self, timeout: float = 60) -> None:
        """Let the reader go; it reads the header once more (``later``: n_configs, rows) and exits."""
        if self.proc.poll() is None:
            out, err = self.proc.communicate("", timeout=timeout)
            if self.proc.returncode != 0:
                raise AssertionError(f"the held reader failed: {err}")
            a, b = out.split()
            self.later = (int(a), int(b))

    def __enter__(self) -> "HeldOpen":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.close()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


# ------------------------------------------------------------------ a real full disk


def tmpfs_available() -> bool:
    """Whether an unprivileged private tmpfs can be mounted here (``unshare -rm``)."""
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    try:
        r = subprocess.run(["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k none $d"],
                           capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def run_in_tmpfs(script: str, size: str, workdir_var: str = "DISK", timeout: float = 600,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a shell ``script`` with ``$DISK`` a fresh tmpfs of ``size`` (e.g. "300k"); ``$LFTML``
    runs the CLI (with faults from $LFTML_FAULTS, if set). The mount vanishes with the script, so
    the script copies out whatever the test inspects."""
    prologue = (f'{workdir_var}=$(mktemp -d) && mount -t tmpfs -o size={size} none ${workdir_var} || exit 99\n'
                f'LFTML="{sys.executable} {HERE / "faults.py"}"\n')
    return subprocess.run(["unshare", "-rm", "sh", "-c", prologue + script], capture_output=True, text=True,
                          timeout=timeout, env=lftml_env(**(env or {})))


def leftovers(folder: str | os.PathLike, keep: Callable[[Path], bool] = lambda p: False) -> list[str]:
    """Temporary or lock files left in ``folder`` (``*.tmp``, ``*.partial``, ``.*``, ``*.lock``)."""
    bad = []
    for p in Path(folder).iterdir():
        if keep(p):
            continue
        if p.name.startswith(".") or p.suffix in (".tmp", ".partial", ".lock") or ".tmp" in p.name:
            bad.append(p.name)
    return sorted(bad)


if __name__ == "__main__":  # python tests/faults.py ARGS: the CLI with $LFTML_FAULTS installed
    sys.path.insert(0, str(SRC))
    _installed = install_from_env()  # keep the managers alive: collecting them would undo the patches
    from lftml.cli.main import main

    main(sys.argv[1:])
