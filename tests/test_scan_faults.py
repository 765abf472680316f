"""`lftml scan` under faults (issue 10 leftovers): a full disk or an I/O error at each of its write
points, and live readers (`lftml scan-analyze DIR`, `lftml analyze DIR`, h5py) while it runs.

Write points of a scan: ``scan.json`` and ``scan.toml`` (the resolved configuration), ``index.json``
(written first, then every few seconds and at the end) and each point's ensemble (the engine's
writer: creation rename, flushes). Faults are injected in-process at a chosen call (tests/faults.py;
the rename onto a named file, or the n-th flush of the first point: no timing). Contract: exit 2,
one ``error:`` line (after the usual "running on ..." line), no temporary or lock left, every point
file at a checkpoint that is a prefix of the undisturbed run, the scan stopped at the first write
error (later points would fail the same way), and the rerun runs only what is missing and gives
files bit-identical to an undisturbed scan.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import run_cli
from faults import HeldOpen, inject, leftovers
from test_scan_run import assert_same_ensemble

from lftml.scan.tasks import file_state

TOML = """[grid]
kappa = [0.2, 0.22]
[fixed]
shape = [6, 6]
lam = 0.02
chains = 2
n_configs = 12
therm = 4
checkpoint_every = 3
seed = 5
"""
POINTS = ["kappa=0.2", "kappa=0.22"]
N = 12


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("toml") / "s.toml"
    p.write_text(TOML)
    return p


@pytest.fixture(scope="module")
def reference(scan_file, tmp_path_factory):
    """The undisturbed scan."""
    out = tmp_path_factory.mktemp("ref") / "DIR"
    run_cli("scan", scan_file, "--out", out, "--cluster", "serial", "--json", check=True)
    return out


def _scan(scan_file, out):
    return run_cli("scan", scan_file, "--out", out, "--cluster", "serial", "--json")


def _error_line(res):
    lines = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("running on ")]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


def _onto(name):
    """Predicate for os.replace(src, dst): the rename onto file ``name``."""
    return lambda src, dst, *a, **k: Path(dst).name == name


def _final_index(out):
    """The rename onto index.json once every point's file is complete (the scan's last write)."""
    def hit(src, dst, *a, **k):
        return Path(dst).name == "index.json" and all(
            (st := file_state(out / f"{p}.h5")) is not None and st["n_configs"] == N for p in POINTS)
    return hit


def _complete(out):
    return [p for p in POINTS if (out / f"{p}.h5").exists() and file_state(out / f"{p}.h5")["n_configs"] == N]


CASES = {  # name: (point, at, action, the file the error names)
    "scan.json": ("replace", _onto("scan.json"), "enospc", "scan.json"),
    "scan.toml": ("replace", _onto("scan.toml"), "eio", "scan.toml"),
    "first-index": ("replace", _onto("index.json"), "enospc", "index.json"),
    "point-created": ("replace", _onto("kappa=0.2.h5"), "enospc", "kappa=0.2.h5"),
    "point-flush": ("fsync", 5, "enospc", "kappa=0.2.h5"),
    "point-h5write": ("h5write", 20, "eio", "kappa=0.2.h5"),
    "second-point-created": ("replace", _onto("kappa=0.22.h5"), "eio", "kappa=0.22.h5"),
    "final-index": ("replace", None, "enospc", "index.json"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_write_error_at_each_write_point_is_one_line_and_the_rerun_completes_what_is_missing(
        tmp_path, scan_file, reference, case):
    """Bugs caught: a traceback, several lines (a warning per point plus the error), the scan going on
    to start every later point on a full disk, a temporary or lock file left in the folder, a point
    file that is not a prefix of the undisturbed run, an empty folder left by a scan that could not
    even write its configuration, a rerun that reruns complete points or differs from an undisturbed
    scan."""
    out = tmp_path / "DIR"
    point, at, action, target = CASES[case]
    with inject(point, at if at is not None else _final_index(out), action) as state:
        res = _scan(scan_file, out)
    assert state["fired"], f"{case}: the fault point was never reached"
    assert res.exit_code == 2, (res.exit_code, res.stderr)
    line = _error_line(res)
    assert f"cannot write {out / target}" in line, line
    assert ("no space left" if action == "enospc" else "input/output error") in line.lower(), line
    if target.endswith(".h5"):
        assert "the scan stopped there" in line and "rerun" in line
    if case in ("scan.json", "scan.toml", "first-index"):
        assert not out.exists(), list(out.iterdir())  # nothing of the attempt remains
    else:
        assert leftovers(out) == []
    if out.exists():
        for p in POINTS:
            f = out / f"{p}.h5"
            if f.exists():
                st = file_state(f)
                assert st is not None and st["n_configs"] % 3 == 0
                with h5py.File(f, "r") as a, h5py.File(reference / f.name, "r") as b:
                    n = st["n_configs"]
                    assert np.array_equal(a["configs"][:n], b["configs"][:n])
    done_before = _complete(out) if out.exists() else []
    mtimes = {p: (out / f"{p}.h5").stat().st_mtime_ns for p in done_before}
    again = _scan(scan_file, out)
    assert again.exit_code == 0, again.stderr
    summary = again.json()
    assert summary["n_skipped"] == len(done_before) and summary["n_ran"] == len(POINTS) - len(done_before)
    for p in POINTS:
        assert_same_ensemble(out / f"{p}.h5", reference / f"{p}.h5")
    assert {p: (out / f"{p}.h5").stat().st_mtime_ns for p in done_before} == mtimes
    index = json.loads((out / "index.json").read_text())
    assert {e["status"] for e in index["points"].values()} == {"done"}
    assert leftovers(out) == []


def test_live_reader_while_the_scan_writes_its_second_point(tmp_path, scan_file, reference, caplog):
    """Writer first: at the first flush of the second point, `lftml scan-analyze DIR` and `lftml
    analyze DIR` analyse the finished first point (the index on disk still says "pending": the files
    are the truth) and say in one warning that a scan is writing the folder and which point is left
    out; h5py (default locking) opens the partial point and holds it while the scan goes on. The scan
    finishes undisturbed. Catches a reader that trusts the stale index ("no finished point"), one
    that analyses a partial point, and a reader whose HDF5 lock makes the writer's next flush fail."""
    caplog.set_level(logging.WARNING)
    out = tmp_path / "DIR"
    second = out / "kappa=0.22.h5"
    seen = {}

    (tmp_path / "ana").mkdir()

    def reader():
        seen["scan-analyze"] = run_cli("scan-analyze", out, "--out", tmp_path / "ana", "--no-figures", "--json")
        seen["analyze"] = run_cli("analyze", out, "--json")
        seen["held"] = HeldOpen(second)  # another process, default HDF5 locking, open across the next flushes

    try:
        with inject("fsync", lambda path, *a: Path(path) == second, reader) as state:
            res = _scan(scan_file, out)
        assert state["fired"] and res.exit_code == 0, res.stderr.splitlines()
    finally:
        if "held" in seen:
            seen["held"].close()
    for key in ("scan-analyze", "analyze"):
        r = seen[key]
        assert r.exit_code == 0, (key, r.stderr)
        assert [row["name"] for row in r.json()["points"]] == ["kappa=0.2"]
    warnings = [r.getMessage() for r in caplog.records if "points are not finished" in r.getMessage()]
    assert len(warnings) == 2 and all("a scan is writing" in w and f"pid {os.getpid()}" in w and "kappa=0.22" in w
                                      for w in warnings), warnings
    assert seen["held"].n_configs < N and seen["held"].later[0] in (seen["held"].n_configs, N)
    for p in POINTS:
        assert_same_ensemble(out / f"{p}.h5", reference / f"{p}.h5")
    assert leftovers(out) == []


def test_live_reader_before_any_point_is_finished_is_one_line(tmp_path, scan_file):
    """While the first point is being written, `scan-analyze DIR` exits 2 with one line saying a scan
    is writing the folder (with its PID) and nothing is finished yet (not "rerun the scan")."""
    out = tmp_path / "DIR"
    first = out / "kappa=0.2.h5"
    seen = {}
    (tmp_path / "ana").mkdir()

    def reader():
        seen["r"] = run_cli("scan-analyze", out, "--out", tmp_path / "ana", "--no-figures")

    with inject("fsync", lambda path, *a: Path(path) == first, reader):
        assert _scan(scan_file, out).exit_code == 0
    r = seen["r"]
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert "a scan is writing" in lines[0] and f"pid {os.getpid()}" in lines[0] and "no point is finished yet" in lines[0]
    assert list((tmp_path / "ana").iterdir()) == []


def test_live_reader_first_does_not_stop_the_scan(tmp_path, scan_file, reference):
    """Reader first: h5py (default locking) holds an interrupted point's file open while the rerun
    resumes it: the scan finishes (no lock error at its flushes), bit-identical to the undisturbed
    scan, and the reader reads a prefix of it."""
    out = tmp_path / "DIR"
    with inject("append", 7, "interrupt"):
        assert _scan(scan_file, out).exit_code == 130
    first = out / "kappa=0.2.h5"
    with HeldOpen(first) as held:  # another process, default HDF5 locking
        assert 0 < held.n_configs < N
        res = _scan(scan_file, out)
        assert res.exit_code == 0, res.stderr
        assert res.json()["n_ran"] == 2
    assert held.later is not None and held.later[0] in (held.n_configs, N)
    for p in POINTS:
        assert_same_ensemble(out / f"{p}.h5", reference / f"{p}.h5")


def test_write_error_in_a_pool_worker_stops_the_scan_too(tmp_path, scan_file, reference):
    """The same through an executor (threads here; a Dask worker's error arrives pickled, so the
    error class and its errno must survive pickling): WriteError, the other point is not started or
    is left resumable, and the rerun completes bit-identically."""
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    from lftml.errors import WriteError
    from lftml.scan import load_scan, run_scan

    e = pickle.loads(pickle.dumps(WriteError("cannot write x: no space left on the device", 28)))
    assert isinstance(e, WriteError) and e.errno == 28 and str(e) == "cannot write x: no space left on the device"
    out = tmp_path / "DIR"
    with ThreadPoolExecutor(1) as pool, inject("replace", _onto("kappa=0.2.h5"), "enospc"):
        with pytest.raises(WriteError, match="the scan stopped there.*free space"):
            run_scan(load_scan(scan_file), out, executor=pool)
    assert leftovers(out) == []
    again = _scan(scan_file, out)
    assert again.exit_code == 0, again.stderr
    for p in POINTS:
        assert_same_ensemble(out / f"{p}.h5", reference / f"{p}.h5")


@pytest.mark.slow
def test_live_reader_of_a_paused_scan_process(tmp_path, scan_file, reference, caplog):
    """`lftml scan` in its own process, paused inside its second point (the engine's 10th fsync: one at
    creation and one per flush, so the first point takes 7): `scan-analyze DIR` here analyses the finished point, names the scan's PID
    in its warning, and the released scan finishes bit-identically."""
    from faults import Paused

    caplog.set_level(logging.WARNING)
    out = tmp_path / "DIR"
    (tmp_path / "ana").mkdir()
    with Paused(tmp_path, ["scan", scan_file, "--out", out, "--cluster", "serial"], "fsync", 10) as w:
        r = run_cli("scan-analyze", out, "--out", tmp_path / "ana", "--no-figures", "--json")
        assert r.exit_code == 0, r.stderr
        assert [row["name"] for row in r.json()["points"]] == ["kappa=0.2"]
        assert any(f"pid {w.proc.pid} " in rec.getMessage() for rec in caplog.records)
        w.release()
        done = w.wait()
    assert done.returncode == 0, done.stderr
    for p in POINTS:
        assert_same_ensemble(out / f"{p}.h5", reference / f"{p}.h5")
