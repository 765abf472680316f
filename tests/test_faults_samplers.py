"""Interrupts and live readers of the one-shot samplers `rbm sample` and `diffusion sample` (issue 10).

Both write their ensemble whole at the end (a temporary beside --out, then a rename) and hold
``OUT.lock`` for the run. Faults come from tests/faults.py at a chosen call (no timing):

* SIGINT / SIGTERM (real signals, sent to this process at the point) while sampling, at the first
  dataset write of the temporary, and just before the final rename: exit 130, one ``interrupted:``
  line, no temporary or lock left, no --out (or, with --overwrite, the earlier file byte for byte
  unchanged), and the rerun's file equals an undisturbed run's in every dataset and attribute (all
  but the creation time and wall time, which differ between any two runs).
* A live reader while the writer sits just before its rename (writer first) or holding the file
  open with HDF5's default locking before the writer starts (reader first): the reader gets one
  ``being written`` line (no file yet) or reads the earlier file whole; the writer is not disturbed.

SIGTERM in-process: the commands turn it into KeyboardInterrupt only inside their run; a guard
fixture makes a SIGTERM that arrives outside that handler a test error instead of killing pytest.
The subprocess versions (a writer in its own process) are ``slow``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal

import h5py
import numpy as np
import pytest

from conftest import run_cli
from faults import Paused, inject, leftovers, run_lftml

WRITERS = ["rbm sample", "diffusion sample"]
#: the call that does the sampling (before anything is written)
SAMPLING = {"rbm sample": "lftml.rbm.gaussian:GaussianRBM.sample", "diffusion sample": "lftml.diffusion.sampling:generate"}
#: os.replace #1 moves write_ensemble's .partial onto the atomic temporary, #2 is the rename onto --out
FINAL_RENAME = 2
VOLATILE = {"created", "wall_time_s", "wall_seconds"}


@pytest.fixture(scope="module")
def inputs(tiny_inputs):
    return tiny_inputs


def _args(d, writer, out, seed=3):
    return {
        "rbm sample": ["rbm", "sample", d / "rbm.pt", "--n-configs", "4", "--chains", "2", "--therm", "2",
                       "--seed", seed, "--out", out, "--json"],
        "diffusion sample": ["diffusion", "sample", "--model", d / "dm.pt", "--n-configs", "4", "--steps", "4",
                             "--seed", seed, "--out", out, "--json"],
    }[writer]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """The undisturbed run of each writer."""
    refs = {}
    for w in WRITERS:
        refs[w] = tmp_path_factory.mktemp("ref") / "out.h5"
        run_cli(*_args(inputs, w, refs[w]), check=True)
    return refs


def content(path):
    """Every dataset (dtype, shape, bytes) and attribute of an ensemble file, the metadata JSON
    without its creation time and wall times: what two runs of one command must share bit for bit."""
    out = {}
    with h5py.File(path, "r", locking=False) as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj.dtype.str, obj.shape, np.asarray(obj[()]).tobytes())
        f.visititems(visit)
        for k, v in f.attrs.items():
            if k == "metadata":
                meta = {a: b for a, b in json.loads(v).items() if a not in VOLATILE}
                out["@metadata"] = json.dumps(meta, sort_keys=True)
            elif k not in VOLATILE:
                out[f"@{k}"] = np.asarray(v).tobytes()
    return out


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


class _SigtermLeaked(BaseException):
    pass


@pytest.fixture
def sigterm_guard():
    """A SIGTERM that reaches pytest's own handler (the command did not catch it) fails the test."""
    def handler(signum, frame):  # noqa: ARG001
        raise _SigtermLeaked("SIGTERM arrived outside the command's handler: a shell user's process would die silently")

    old = signal.signal(signal.SIGTERM, handler)
    yield
    signal.signal(signal.SIGTERM, old)


def _earlier_file(inputs, writer, out):
    """An existing --out (another seed) that an interrupted --overwrite run must leave untouched."""
    run_cli(*_args(inputs, writer, out, seed=4), check=True)
    return _md5(out)


@pytest.mark.parametrize("signal_name", ["sigint", "sigterm"])
@pytest.mark.parametrize("where", ["sampling", "h5write", "rename"])
@pytest.mark.parametrize("writer", WRITERS)
def test_signal_at_a_chosen_point_is_one_line_leaves_nothing_and_the_rerun_is_identical(
        tmp_path, inputs, reference, sigterm_guard, writer, where, signal_name):
    """Bugs caught: SIGTERM killing the process without a message (no handler), a traceback, a
    temporary (.tmp/.partial) or lock left behind, a half-written --out, an --overwrite that loses
    the earlier file when interrupted, a rerun that differs from an undisturbed run. SIGTERM cases
    start from an existing --out (replaced only with --overwrite)."""
    out = tmp_path / "out.h5"
    args = _args(inputs, writer, out)
    existing = signal_name == "sigterm"
    if existing:
        before = _earlier_file(inputs, writer, out)
        args = [*args, "--overwrite"]
    point, at = {"sampling": (SAMPLING[writer], 1), "h5write": ("h5write", 1), "rename": ("replace", FINAL_RENAME)}[where]
    with inject(point, at, signal_name) as state:
        res = run_cli(*args)
    assert state["fired"], f"{point} #{at} was never reached"
    assert res.exit_code == 130, (res.exit_code, res.stderr[-1500:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted:") and "nothing was written" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out.h5"] if existing else [])
    if existing:
        assert _md5(out) == before
    run_cli(*args, check=True)
    assert content(out) == content(reference[writer])
    assert leftovers(tmp_path) == []


def test_interrupt_while_the_plot_is_drawn_names_what_was_written(tmp_path, inputs, sigterm_guard):
    """SIGTERM while `diffusion sample --plot` draws its strip (after the ensemble is complete): exit
    130, one line saying --out is complete and the figure is not, no half-written PNG or temporary.
    Catches the strip being drawn outside the SIGTERM handler (the process died silently) and the
    old message "nothing was written to OUT" next to a complete OUT."""
    out, png = tmp_path / "out.h5", tmp_path / "strip.png"
    args = [*_args(inputs, "diffusion sample", out), "--plot", png]
    with inject("lftml.diffusion.workflows:save_figure", 1, "sigterm") as state:
        res = run_cli(*args)
    _assert_out_complete_figure_not(res, state, tmp_path, out)
    full = tmp_path / "full"
    full.mkdir()
    run_cli(*_args(inputs, "diffusion sample", full / "out.h5"), "--plot", full / "strip.png", check=True)
    assert content(out) == content(full / "out.h5")


def _assert_out_complete_figure_not(res, state, folder, out) -> None:
    """A SIGTERM injected at the figure's write: exit 130, one line saying ``out`` is complete, and
    nothing but ``out`` in the folder (no PNG, no temporary)."""
    assert state["fired"] and res.exit_code == 130, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"interrupted: {out} was written completely"), lines
    assert sorted(p.name for p in folder.iterdir()) == ["out.h5"]


def test_interrupt_while_the_grid_is_drawn_names_what_was_written(tmp_path, inputs, reference, sigterm_guard):
    """The same for `rbm sample --out --grid`: SIGTERM at the grid image's write (after the ensemble
    is complete): one line saying --out is complete and the grid is not, no PNG, --out undisturbed."""
    out, png = tmp_path / "out.h5", tmp_path / "grid.png"
    args = [*_args(inputs, "rbm sample", out), "--grid", png, "--grid-size", "4"]
    with inject("lftml.plots:save_figure", 1, "sigterm") as state:
        res = run_cli(*args)
    _assert_out_complete_figure_not(res, state, tmp_path, out)
    assert content(out) == content(reference["rbm sample"])


def test_a_figure_is_written_atomically(tmp_path, monkeypatch):
    """save_figure under a full disk at its rename: one-line error, no PNG, no temporary (it wrote
    straight to the path before, leaving half an image)."""
    from faults import inject as _inject

    from lftml.errors import LftmlError
    from lftml.plots import pyplot, save_figure

    fig = pyplot().figure()
    fig.add_subplot().plot([0, 1])
    with _inject("replace", 1, "enospc"), pytest.raises(LftmlError, match="no space left"):
        save_figure(fig, tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("existing", [False, True], ids=["new-out", "overwrite"])
@pytest.mark.parametrize("writer", WRITERS)
def test_live_reader_while_the_writer_sits_before_its_rename(tmp_path, inputs, reference, writer, existing):
    """Writer first: at its final rename (everything sampled and written to the temporary) `lftml
    analyze OUT` runs. No file yet: one line "being written by another lftml process (pid ...)",
    exit 2 (it said "does not exist"); with --overwrite: the earlier file, whole (h5py with default
    locking too). The writer then finishes with the undisturbed run's content."""
    out = tmp_path / "out.h5"
    args = _args(inputs, writer, out)
    if existing:
        _earlier_file(inputs, writer, out)
        old = content(out)
        args = [*args, "--overwrite"]
    seen = {}

    def reader():
        seen["analyze"] = run_cli("analyze", out, "--json")
        seen["diagnose"] = run_cli("analyze", out)
        if existing:
            with h5py.File(out, "r") as f:  # HDF5's default file locking
                seen["configs"] = f["configs"][()]

    with inject("replace", FINAL_RENAME, reader) as state:
        res = run_cli(*args)
    assert state["fired"] and res.exit_code == 0, res.stderr
    for key in ("analyze", "diagnose"):
        r = seen[key]
        if existing:
            assert r.exit_code == 0, r.stderr
        else:
            lines = r.stderr.strip().splitlines()
            assert r.exit_code == 2 and len(lines) == 1, (r.exit_code, r.stderr)
            assert "is being written by another lftml process" in lines[0] and f"pid {os.getpid()}" in lines[0]
    if existing:
        assert seen["analyze"].json()["n_configs"] == 4
        assert seen["configs"].tobytes() == old["configs"][2]
    assert content(out) == content(reference[writer])
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("writer", WRITERS)
def test_live_reader_first_does_not_stop_the_writer(tmp_path, inputs, reference, writer):
    """Reader first: h5py (default HDF5 locking) holds the earlier --out open while `--overwrite`
    runs. The writer must finish (no lock error at its rename) with the undisturbed content, and the
    reader keeps reading the earlier file whole (the rename swaps the name, not the open file)."""
    out = tmp_path / "out.h5"
    _earlier_file(inputs, writer, out)
    old = content(out)
    with h5py.File(out, "r") as held:
        res = run_cli(*_args(inputs, writer, out), "--overwrite")
        assert res.exit_code == 0, res.stderr
        assert held["configs"][()].tobytes() == old["configs"][2]
    assert content(out) == content(reference[writer])
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------ real processes (slow)


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["sigint", "sigterm"])
@pytest.mark.parametrize("writer", WRITERS)
def test_real_signal_to_a_writer_process(tmp_path, inputs, reference, writer, signal_name):
    """The writer in its own process gets the signal just before its final rename: exit status 130
    as a shell sees it, one line, nothing left, the earlier --out unchanged; the rerun is identical."""
    out = tmp_path / "out.h5"
    before = _earlier_file(inputs, writer, out)
    args = [*_args(inputs, writer, out), "--overwrite"]
    res = run_lftml(*args, faults=[["replace", FINAL_RENAME, signal_name]])
    assert res.returncode == 130, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted:"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"] and _md5(out) == before
    run_cli(*args, check=True)
    assert content(out) == content(reference[writer])


@pytest.mark.slow
@pytest.mark.parametrize("writer", WRITERS)
def test_live_reader_of_a_paused_writer_process(tmp_path, inputs, reference, writer):
    """A writer process paused before its final rename: `lftml analyze OUT` (this process) says
    "being written" naming the writer's PID; released, the writer finishes undisturbed."""
    out = tmp_path / "out.h5"
    with Paused(tmp_path, _args(inputs, writer, out), "replace", FINAL_RENAME) as w:
        r = run_cli("analyze", out)
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"being written by another lftml process (pid {w.proc.pid} " in r.stderr
        w.release()
        done = w.wait()
    assert done.returncode == 0, done.stderr
    assert content(out) == content(reference[writer])
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("writer", WRITERS)
def test_a_sigkilled_writers_temporaries_are_removed_by_the_rerun(tmp_path, inputs, reference, writer):
    """SIGKILL (no handler can run) while the writer is inside its temporary file: it leaves the
    atomic temporary, write_ensemble's .partial (and possibly a journal) and a stale lock file. The
    rerun, once it holds the lock, removes them with one warning line and writes the undisturbed file.
    Bugs caught: temporaries of killed runs piling up beside --out for ever; a rerun refused by the
    dead writer's lock file; a rerun that sweeps but writes a different file."""
    folder = tmp_path / "run"
    folder.mkdir()
    out = folder / "out.h5"
    with Paused(tmp_path, _args(inputs, writer, out), "h5write", 1) as w:
        w.proc.kill()
        w.proc.wait(timeout=60)
    left = leftovers(folder)
    assert any(n.endswith(".partial") for n in left) and not out.exists(), left
    res = run_lftml(*_args(inputs, writer, out))
    assert res.returncode == 0, res.stderr[-1500:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "temporary file(s) that a killed writer of" in lines[0], lines
    assert leftovers(folder) == []
    assert content(out) == content(reference[writer])
