"""lftml scan: every point's file is the file `lftml hmc` writes for the same options (bit for bit),
on a Dask LocalCluster, after a worker is killed, after SIGINT; reruns do no work; bad input is one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import pytest

from conftest import run_cli

from lftml.errors import LftmlError
from lftml.scan import load_scan, parse_scan, run_scan

MINIMAL = """\
[grid]            # every list is an axis of the grid
kappa = [0.25, 0.27]
shape = [[8, 8], [12, 12]]
[fixed]           # keys are `lftml hmc` option names with underscores
lam = 0.022
chains = 4
n_configs = 40
seed = 5          # a point's seed is the scan's seed unless the grid varies it
"""

NAMES = ["kappa=0.25_shape=8x8", "kappa=0.25_shape=12x12", "kappa=0.27_shape=8x8", "kappa=0.27_shape=12x12"]


def _write(tmp_path: Path, text: str, name: str = "scan.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _reference(tmp_path: Path, kappa: float, L: int, *extra: str, n_configs: int = 40, name: str | None = None) -> Path:
    """The point run by hand with `lftml hmc`, spelled as a user would (not by the scan code)."""
    out = tmp_path / (name or f"ref_{kappa}_{L}.h5")
    run_cli("hmc", "--shape", str(L), str(L), "--kappa", str(kappa), "--lam", "0.022", "--chains", "4",
            "--n-configs", str(n_configs), "--seed", "5", *extra, "--out", out, "--no-progress", "--json", check=True)
    return out


def assert_same_ensemble(a: Path, b: Path) -> None:
    """Configurations, per-configuration observables and sampler records agree bit for bit."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert int(fa.attrs["n_configs"]) == int(fb.attrs["n_configs"]) > 0
        n = int(fa.attrs["n_configs"])
        ca, cb = fa["configs"][:n], fb["configs"][:n]
        assert ca.dtype == cb.dtype and ca.tobytes() == cb.tobytes(), f"{a.name}: configurations differ from {b.name}"
        for group in ("observables", "records"):
            assert set(fa[group]) == set(fb[group])
            m = int(fa.attrs["n_records"]) if group == "records" else n
            for key in fa[group]:
                assert fa[group][key][:m].tobytes() == fb[group][key][:m].tobytes(), f"{group}/{key} differ"
        ma, mb = json.loads(fa.attrs["metadata"]), json.loads(fb.attrs["metadata"])
        for key in ("theory", "sampler", "run", "kind", "seed"):
            assert ma[key] == mb[key]


def test_minimal_scan_on_local_cluster_matches_lftml_hmc_point_by_point(tmp_path):
    pytest.importorskip("distributed")
    """The issue's minimal TOML, as written, on a 2-worker LocalCluster: 4 files named by their grid
    values, each bit-identical to `lftml hmc` run by hand. Catches: a point run with the wrong seed
    (e.g. seed + point index), a grid value lost or swapped between points, a default that differs
    from `lftml hmc`'s, a worker-side float formatting that changes kappa in its last bit."""
    scan = _write(tmp_path, MINIMAL)
    out = tmp_path / "DIR"
    res = run_cli("scan", scan, "--out", out, "--workers", "2", "--json", check=True)
    summary = res.json()
    assert summary["n_points"] == 4 and summary["n_ran"] == 4 and "LocalCluster, 2 worker" in summary["backend"]
    assert sorted(p.name for p in out.glob("*.h5")) == sorted(f"{n}.h5" for n in NAMES)
    for kappa in (0.25, 0.27):
        for L in (8, 12):
            assert_same_ensemble(out / f"kappa={kappa}_shape={L}x{L}.h5", _reference(tmp_path, kappa, L))
    index = json.loads((out / "index.json").read_text())
    assert {p["status"] for p in index["points"].values()} == {"done"}
    assert index["points"]["kappa=0.27_shape=12x12"]["parameters"] == {"kappa": 0.27, "shape": [12, 12]}
    assert index["points"]["kappa=0.27_shape=12x12"]["options"]["md_steps"] == 10  # the default, resolved
    import tomllib

    resolved = tomllib.loads((out / "scan.toml").read_text())
    assert resolved["grid"] == {"kappa": [0.25, 0.27], "shape": [[8, 8], [12, 12]]}
    assert resolved["fixed_resolved"]["therm"] == 100 and resolved["fixed"]["seed"] == 5
    assert json.loads((out / "scan.json").read_text())["grid"] == resolved["grid"]
    assert not list(out.glob("*.lock")) and not list(out.glob(".*"))
    # a rerun of the finished scan does no work and leaves every file untouched
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    again = run_cli("scan", scan, "--out", out, "--cluster", "serial", "--json", check=True).json()
    assert again["n_ran"] == 0 and again["n_skipped"] == 4
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")} == before


def test_fixed_cluster_key_is_the_hmc_cluster_move_not_the_dask_cluster_table(tmp_path):
    """`cluster = "wolff"` under [fixed] is `lftml hmc --cluster wolff` (the embedded-Ising move), not the
    [cluster] table (dask-jobqueue settings) nor `lftml scan --cluster` (the executor): the point's file
    is bit-identical to `lftml hmc --cluster wolff --cluster-every 2` by hand. Catches a scan that drops
    or misroutes the key (the file would be plain HMC and differ)."""
    scan = _write(tmp_path, "[grid]\nkappa = [0.27]\nshape = [[8, 8]]\n[fixed]\nlam = 0.022\nchains = 4\n"
                            "n_configs = 40\nseed = 5\ncluster = \"wolff\"\ncluster_every = 2\n")
    out = tmp_path / "DIR"
    run_cli("scan", scan, "--out", out, "--cluster", "serial", check=True)
    point = out / "kappa=0.27_shape=8x8.h5"
    assert_same_ensemble(point, _reference(tmp_path, 0.27, 8, "--cluster", "wolff", "--cluster-every", "2"))
    with h5py.File(point, "r") as f:
        assert json.loads(f.attrs["metadata"])["sampler"]["cluster"] == "wolff"


def test_serial_scan_resumes_a_partial_point_and_extends_with_more_configs(tmp_path):
    """A point file cut short (what an interrupt leaves) is continued with --resume, and raising
    n_configs extends every file: both bit-identical to one uninterrupted `lftml hmc`. Catches a
    rerun that starts a partial point afresh with a new stream or appends past its checkpoint."""
    text = MINIMAL.replace("kappa = [0.25, 0.27]", "kappa = [0.25]").replace("[[8, 8], [12, 12]]", "[[8, 8]]")
    out = tmp_path / "DIR"
    out.mkdir()
    # what an interrupted point leaves: `lftml hmc` stopped at 20 of 40 configurations
    _reference(out, 0.25, 8, "--checkpoint-every", "10", n_configs=20, name="kappa=0.25_shape=8x8.h5")
    res = run_scan(parse_scan(__import__("tomllib").loads(text)), out, cluster="serial")
    assert res.n_ran == 1
    assert json.loads((out / "index.json").read_text())["points"]["kappa=0.25_shape=8x8"]["resumed"] is True
    assert_same_ensemble(out / "kappa=0.25_shape=8x8.h5", _reference(tmp_path, 0.25, 8))
    more = text.replace("n_configs = 40", "n_configs = 60")
    assert run_scan(parse_scan(__import__("tomllib").loads(more)), out, cluster="serial").n_ran == 1
    assert_same_ensemble(out / "kappa=0.25_shape=8x8.h5", _reference(tmp_path, 0.25, 8, n_configs=60, name="r60.h5"))


@pytest.mark.parametrize("change, message", [
    ("chains = 4", "chains = 4\nbogus_key = 3"),
    ("lam = 0.022", "lam = -0.1"),
    ("shape = [[8, 8], [12, 12]]", "shape = [[8, 8], [-12, 12]]"),
    ("kappa = [0.25, 0.27]", "kappa = 0.25"),
    ("[fixed]", "[fixd]"),
    ("seed = 5", "seed = 5\nout = \"x.h5\""),
    ("chains = 4", "chains = \"four\""),
])
def test_bad_scan_files_are_one_line_and_run_nothing(tmp_path, change, message):
    """Unknown key, lambda < 0, a negative extent, a scalar where an axis is needed, an unknown table,
    a reserved key, a value of the wrong type: exit 2, one line naming the key or the point, no folder."""
    text = MINIMAL.replace(change, message)
    assert text != MINIMAL
    scan = _write(tmp_path, text)
    out = tmp_path / "DIR"
    res = run_cli("scan", scan, "--out", out)
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert not out.exists()
    first = message.splitlines()[-1].split(" ")[0].strip("[]")
    if first in ("lam", "shape"):
        assert "point kappa=0.25_shape=" in err and first in err
    elif first == "chains":
        assert "point" in err and "chains" in err
    else:
        assert first.strip("[]") in err or "fixd" in err


def test_a_point_contradicting_an_existing_file_is_refused_before_anything_runs(tmp_path):
    """The folder already holds this point's name made with another lambda (or another seed):
    refused naming the point and the setting, and no other point is run. Catches a scan that
    silently --resume's a file of another theory, or runs the rest before noticing."""
    text = MINIMAL.replace("kappa = [0.25, 0.27]", "kappa = [0.25]")
    out = tmp_path / "DIR"
    out.mkdir()
    run_cli("hmc", "--shape", "8", "8", "--kappa", "0.25", "--lam", "0.03", "--chains", "4", "--n-configs", "10",
            "--seed", "5", "--out", out / "kappa=0.25_shape=8x8.h5", "--no-progress", "--json", check=True)
    res = run_cli("scan", _write(tmp_path, text), "--out", out, "--cluster", "serial")
    assert res.exit_code == 2 and "point kappa=0.25_shape=8x8" in res.stderr and "theory" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["kappa=0.25_shape=8x8.h5"]
    (out / "kappa=0.25_shape=8x8.h5").unlink()
    run_cli("scan", _write(tmp_path, text.replace("[[8, 8], [12, 12]]", "[[8, 8]]")), "--out", out, "--cluster", "serial",
            check=True)
    res = run_cli("scan", _write(tmp_path, text.replace("[[8, 8], [12, 12]]", "[[8, 8]]").replace("seed = 5", "seed = 6"), "s2.toml"),
                  "--out", out, "--cluster", "serial")
    assert res.exit_code == 2 and "point kappa=0.25_shape=8x8" in res.stderr and "seed" in res.stderr


def test_workers_with_a_backend_that_does_not_use_them_is_refused(tmp_path):
    """`--cluster serial --workers 3` ran serially and ignored --workers without a word: one line now,
    nothing written."""
    out = tmp_path / "DIR"
    res = run_cli("scan", _write(tmp_path, MINIMAL), "--out", out, "--cluster", "serial", "--workers", "3")
    assert res.exit_code == 2 and "--workers applies to --cluster local" in res.stderr
    assert not out.exists()


def test_two_scans_on_one_folder_are_refused(tmp_path):
    """While a scan holds DIR's index lock, a second scan of DIR is refused naming the holder."""
    from lftml.safeio import OutputLock

    out = tmp_path / "DIR"
    out.mkdir()
    with OutputLock(out / "index.json"):
        res = run_cli("scan", _write(tmp_path, MINIMAL), "--out", out, "--cluster", "serial")
    assert res.exit_code == 2 and "in use by another lftml process" in res.stderr and f"pid {os.getpid()}" in res.stderr
    assert not list(out.glob("*.h5"))


def test_a_scan_refused_its_lock_leaves_no_new_folder(tmp_path, monkeypatch):
    """A scan that creates DIR and then cannot take its lock (refused, or the lock file cannot be made)
    removes the empty DIR again. Bug caught: an empty folder left by a failed start, which the next
    scan then takes for an existing scan folder."""
    from lftml.errors import LftmlError
    from lftml.safeio import OutputLock

    def refuse(self):
        raise LftmlError(f"{self.path} is in use by another lftml process (pid 1 on host h); wait for it")

    monkeypatch.setattr(OutputLock, "acquire", refuse)
    out = tmp_path / "DIR"
    res = run_cli("scan", _write(tmp_path, MINIMAL), "--out", out, "--cluster", "serial")
    assert res.exit_code == 2 and "in use by another lftml process" in res.stderr
    assert not out.exists()


def test_without_dask_the_points_run_in_process_and_the_user_is_told(tmp_path, monkeypatch, caplog):
    """No Dask installed: --cluster local still runs every point (in this process) and one warning
    says how to get parallelism; --cluster slurm without dask-jobqueue is one line, nothing written."""
    import logging

    from lftml.scan import executor

    monkeypatch.setattr(executor, "dask_available", lambda: False)
    text = MINIMAL.replace("kappa = [0.25, 0.27]", "kappa = [0.25]").replace("[[8, 8], [12, 12]]", "[[6, 6]]")
    spec = parse_scan(__import__("tomllib").loads(text))
    with caplog.at_level(logging.WARNING, logger="lftml.scan.executor"):
        res = run_scan(spec, tmp_path / "DIR", cluster="local")
    assert res.n_ran == 1 and "one point after another" in res.backend
    assert any("pip install 'lftml[dask]'" in r.getMessage() for r in caplog.records)
    # any concurrent.futures.Executor runs the same tasks (threads here; processes work the same way)
    from concurrent.futures import ThreadPoolExecutor

    two = parse_scan(__import__("tomllib").loads(text.replace("kappa = [0.25]", "kappa = [0.25, 0.26]")))
    with ThreadPoolExecutor(2) as pool:
        res2 = run_scan(two, tmp_path / "DIR", executor=pool)
    assert res2.n_skipped == 1 and res2.n_ran == 1 and res2.backend == "the given executor"
    if __import__("importlib").util.find_spec("dask_jobqueue") is None:
        with pytest.raises(LftmlError, match="dask-jobqueue"):
            run_scan(spec, tmp_path / "D2", cluster="slurm")
        assert not (tmp_path / "D2").exists()


def test_the_kappa_c_example_is_a_valid_scan(tmp_path):
    """examples/kappa_c_scan.toml parses and every one of its 33 points validates (nothing runs)."""
    from lftml.scan import plan_scan

    spec = load_scan(Path(__file__).resolve().parents[1] / "examples" / "kappa_c_scan.toml")
    planned = plan_scan(spec, tmp_path)
    assert len(planned) == 33 and planned[0][1]["lam"] == 0.022 and planned[-1][1]["shape"] == [32, 32]
    assert sorted({r["kappa"] for _, r in planned})[5] == 0.27


def test_grid_ranges_and_names():
    """{start, stop, num} is an inclusive linspace with clean decimals; names keep axis order."""
    spec = parse_scan({"grid": {"kappa": {"start": 0.26, "stop": 0.28, "num": 5}, "seed": [1, 2]},
                       "fixed": {"shape": [4, 4], "lam": 0.02}})
    pts = spec.points()
    assert [p.parameters["kappa"] for p in pts[::2]] == [0.26, 0.265, 0.27, 0.275, 0.28]
    assert pts[1].name == "kappa=0.26_seed=2" and pts[1].options["shape"] == (4, 4)
    with pytest.raises(LftmlError, match="seed"):
        parse_scan({"grid": {"seed": [1, 1]}, "fixed": {"shape": [4, 4]}}).points()


def _processing_pids(client, pids):
    return {pids[w]: keys for w, keys in client.processing().items() if keys}


@pytest.mark.slow
def test_kill_minus_9_of_a_worker_mid_scan_gives_the_undisturbed_files(tmp_path):
    """2 x 2 points of 8x8 on a 2-worker LocalCluster; once a point's file holds flushed
    configurations, its worker process is killed with SIGKILL. Dask retries the task on the
    restarted worker, which resumes the file: every file equals `lftml hmc` run undisturbed.
    Catches a retry that appends to a partial file without its checkpoint (duplicated rows), starts a
    point over with a fresh file name, or a scan that hangs or fails on a lost worker."""
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    n = 800
    text = (MINIMAL.replace("[[8, 8], [12, 12]]", "[[6, 6], [8, 8]]").replace("n_configs = 40", f"n_configs = {n}")
            + "checkpoint_every = 50\n")
    out = tmp_path / "DIR"
    killed: list[int] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc, Client(lc) as client:
        pids = client.run(os.getpid)

        def killer():
            deadline = time.time() + 300
            while time.time() < deadline and not killed:
                for f in out.glob("*.h5"):
                    try:
                        with h5py.File(f, "r", locking=False) as h:  # a locking reader would make the writer's flush fail
                            have = int(h.attrs["n_configs"])
                    except (OSError, KeyError):
                        continue
                    if 50 <= have < n:
                        for pid, keys in _processing_pids(client, pids).items():
                            if any(f.stem in str(k) for k in keys):
                                os.kill(pid, signal.SIGKILL)
                                killed.append(pid)
                                return
                time.sleep(0.05)

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        res = run_scan(load_scan(_write(tmp_path, text)), out, executor=client)
        t.join(5)
    assert killed, "no worker was killed mid-point (the points finished too fast?)"
    assert res.n_ran == 4 and not res.failed
    index = json.loads((out / "index.json").read_text())
    assert any(p.get("resumed") for p in index["points"].values())
    for kappa in (0.25, 0.27):
        for L in (6, 8):
            assert_same_ensemble(out / f"kappa={kappa}_shape={L}x{L}.h5",
                                 _reference(tmp_path, kappa, L, "--checkpoint-every", "50", n_configs=n))


@pytest.mark.slow
def test_sigint_stops_the_scan_and_a_rerun_resumes_bit_identically(tmp_path):
    """`lftml scan` in a subprocess gets SIGINT once its first point has flushed configurations:
    exit 130, one line saying how to continue, the index marks the point interrupted; the rerun
    finishes and every file equals `lftml hmc` undisturbed. Catches a lost or half-written point, a
    lock left behind that blocks the rerun, or a rerun that restarts the interrupted point afresh."""
    n = 1000
    text = (MINIMAL.replace("[[8, 8], [12, 12]]", "[[8, 8]]").replace("n_configs = 40", f"n_configs = {n}")
            + "checkpoint_every = 50\n")
    scan = _write(tmp_path, text)
    out = tmp_path / "DIR"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "lftml", "scan", str(scan), "--out", str(out), "--cluster", "serial"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = out / "kappa=0.25_shape=8x8.h5"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            with h5py.File(first, "r", locking=False) as h:
                if int(h.attrs["n_configs"]) >= 50:
                    break
        except (OSError, KeyError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the scan finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "rerun" in err and "Traceback" not in err
    index = json.loads((out / "index.json").read_text())
    assert index["points"]["kappa=0.25_shape=8x8"]["status"] == "interrupted"
    assert index["points"]["kappa=0.27_shape=8x8"]["status"] == "pending"
    assert not list(out.glob("*.lock"))
    res = run_cli("scan", scan, "--out", out, "--cluster", "serial", "--json", check=True).json()
    assert res["n_ran"] == 2
    for kappa in (0.25, 0.27):
        assert_same_ensemble(out / f"kappa={kappa}_shape=8x8.h5",
                             _reference(tmp_path, kappa, 8, "--checkpoint-every", "50", n_configs=n))
