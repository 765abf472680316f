"""Child processes with their CPU time, for the benchmark scripts (one definition, three users).

CPU time (user + system of the child, ``getrusage(RUSAGE_CHILDREN)``), not wall time: on a shared
machine wall time measures the other users as much as the program. ``ONE_THREAD`` pins every
thread pool a child may use to one thread.
"""

from __future__ import annotations

import os
import resource
import subprocess

ONE_THREAD = {v: "1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd`` (output captured as text) with ``env`` (default: this environment, one thread);
    returns the finished process (any exit code) and its CPU seconds."""
    env = {**os.environ, **ONE_THREAD} if env is None else env
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
