"""lftml scan-analyze: the per-point table is `lftml analyze` of each file; the Binder crossing is
exact for straight lines; the bootstrap over chains gets autocorrelated errors right."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import run_cli

from lftml.scan.analysis import binder_crossing, bootstrap_binder
from lftml.stats import gamma_method_derived


def test_binder_crossing_is_exact_for_straight_lines():
    """U_small = 0.5 - 2 (k - 0.27), U_large = 0.5 - 5 (k - 0.27) + 0.03: they cross at
    k = 0.27 + 0.01 exactly. Catches an interpolation weight on the wrong neighbour or a sign flip."""
    ks = [0.25, 0.26, 0.27, 0.28, 0.29]
    small = [0.5 - 2 * (k - 0.27) for k in ks]
    large = [0.5 + 5 * (k - 0.27) - 0.05 for k in ks]
    assert binder_crossing(ks, small, large) == pytest.approx(0.27 + 0.05 / 7, abs=1e-14)
    assert binder_crossing(ks, small, [s + 0.1 for s in small]) is None


def test_bootstrap_over_chains_sees_the_autocorrelation():
    """64 AR(1) chains with rho = 0.8 (2 tau_int = 9): the bootstrap-over-chains error of U_L agrees
    with the Gamma-method error (tau_int-corrected) within the bootstrap's own statistical error
    (relative 1/sqrt(2 n_chains) = 9 %, plus the Gamma method's ~10 %), 4 sigma. A bootstrap over
    single configurations (the plausible bug) would be 3x too small and fail."""
    rng = np.random.default_rng(11)
    n, c, rho = 400, 64, 0.8
    M = np.empty((n, c))
    M[0] = rng.normal(size=c)
    for t in range(1, n):
        M[t] = rho * M[t - 1] + np.sqrt(1 - rho**2) * rng.normal(size=c)
    M = 0.3 + 0.2 * M  # a broken-phase-like U_L well away from 0
    boot = bootstrap_binder(M**2, M**4, 2000, np.random.default_rng(1))
    gamma = gamma_method_derived(lambda m4, m2: 1 - m4 / (3 * m2 * m2), M**4, M**2)
    rel = np.hypot(1 / np.sqrt(2 * c), 0.1)
    assert abs(np.std(boot, ddof=1) / gamma.error - 1) < 4 * rel
    naive = np.std([1 - np.mean(x**4) / (3 * np.mean(x**2) ** 2)
                    for x in (M.ravel()[np.random.default_rng(k).integers(0, M.size, M.size)] for k in range(300))], ddof=1)
    assert naive < 0.5 * gamma.error  # the bug this guards against would be visible


def test_scan_analyze_table_matches_lftml_analyze_of_each_file(tmp_path):
    """A 2 x 2 scan (kappa around the transition, L = 6, 8) analysed: one row per point whose values
    are exactly `lftml analyze FILE`'s, the CSV holds the same numbers, three PNG figures, and every
    crossing either has a kappa with a positive error or says why not. Catches rows attached to the
    wrong point (a kappa/L swap) and a CSV out of step with the JSON."""
    scan = tmp_path / "scan.toml"
    scan.write_text("[grid]\nkappa = [0.24, 0.31]\nshape = [[6, 6], [8, 8]]\n"
                    "[fixed]\nlam = 0.022\nchains = 8\nn_configs = 60\ntherm = 50\nseed = 3\n")
    out = tmp_path / "DIR"
    run_cli("scan", scan, "--out", out, "--cluster", "serial", check=True)
    res = run_cli("scan-analyze", out, "--json", "--bootstrap", "200", check=True).json()
    assert len(res["points"]) == 4
    rows = {r["name"]: r for r in res["points"]}
    for name, r in rows.items():
        ref = run_cli("analyze", out / f"{name}.h5", "--json", check=True).json()
        for key in ("binder", "susceptibility", "abs_magnetisation"):
            assert r[key]["value"] == ref[key]["value"] and r[key]["error"] == ref[key]["error"]
        assert r["L"] == int(name.split("shape=")[1].split("x")[0]) and f"kappa={r['kappa']}" in name
    with open(out / "analysis.csv") as fh:
        table = list(csv.DictReader(fh))
    assert {t["name"]: float(t["binder"]) for t in table} == {n: r["binder"]["value"] for n, r in rows.items()}
    for fig in ("binder.png", "collapse.png", "abs_magnetisation.png"):
        assert (out / fig).read_bytes()[:4] == b"\x89PNG"
    (c,) = res["crossings"]
    assert c["L"] == [6, 8]
    assert (c["kappa"] is not None and 0.24 < c["kappa"] < 0.31 and (c["error"] or 0) > 0) or c.get("reason")
    assert json.loads((out / "analysis.json").read_text())["crossings"] == res["crossings"]
    again = run_cli("scan-analyze", out)
    assert again.exit_code == 2 and "--overwrite" in again.stderr


def test_lftml_analyze_of_a_scan_folder_is_scan_analyze(tmp_path):
    """`lftml analyze DIR` on a scan folder (issue 13: "`lftml scan-analyze DIR` (or `lftml analyze DIR`)")
    gives the same per-point table and crossings as `lftml scan-analyze DIR` (same default bootstrap seed),
    refuses to replace its own earlier output without --overwrite, and a folder that is not a scan gets
    one line naming what is missing. Catches a dispatch that analyses nothing, or treats any folder as a scan."""
    scan = tmp_path / "scan.toml"
    scan.write_text("[grid]\nkappa = [0.24, 0.31]\nshape = [[6, 6], [8, 8]]\n"
                    "[fixed]\nlam = 0.022\nchains = 4\nn_configs = 30\ntherm = 30\nseed = 4\n")
    out = tmp_path / "DIR"
    run_cli("scan", scan, "--out", out, "--cluster", "serial", check=True)
    via_analyze = run_cli("analyze", out, "--json", check=True).json()
    assert len(via_analyze["points"]) == 4
    again = run_cli("analyze", out)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    via_scan = run_cli("scan-analyze", out, "--json", "--overwrite", check=True).json()
    assert via_analyze["points"] == via_scan["points"] and via_analyze["crossings"] == via_scan["crossings"]
    plain = tmp_path / "plain"
    plain.mkdir()
    bad = run_cli("analyze", plain)
    assert bad.exit_code == 2 and "directory but not the output of `lftml scan`" in bad.stderr
    assert list(plain.iterdir()) == []
