"""analyze's numbers against independent values, and its labels.

Independent means: recomputed here from the raw configurations and records (not from the stored
observables or the analysis code's formulas), or a physics identity (<exp(-dH)> = 1 for exact HMC).
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from conftest import run_cli
from lftml.stats import format_value_error, gamma_method

COMMON = ["--chains", "4", "--therm", "20", "--seed", "3", "--no-progress", "--json"]


@pytest.fixture(scope="module")
def hmc_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("hmc") / "hmc.h5"
    out = run_cli("hmc", "--shape", "6", "6", "--kappa", "0.24", "--lam", "0.02", *COMMON, "--n-configs", "200",
                  "--out", path, check=True)
    return path, out.json()["analysis"]


def test_susceptibility_abs_and_cost_from_the_raw_configurations(hmc_file):
    """chi_abs = V (<M^2> - <|M|>^2) recomputed from the stored fields (not the stored M), and the cost
    per independent configuration = wall time x 2 tau_int(|M|) / N. Catches chi_abs built from <M>
    instead of <|M|>, a missing factor V, a cost with tau instead of 2 tau or per chain."""
    path, result = hmc_file
    with h5py.File(path, "r") as f:
        n = int(f.attrs["n_configs"])
        phi = f["configs"][:n]
        wall = float(f.attrs["wall_time_s"])
    V = phi[0, 0].size
    M = phi.reshape(n, phi.shape[1], -1).mean(axis=2)
    chi_abs = V * (np.mean(M**2) - np.mean(np.abs(M)) ** 2)
    assert result["susceptibility_abs"]["value"] == pytest.approx(chi_abs, rel=1e-12)
    tau = gamma_method(np.abs(M)).tau_int
    assert result["cost_per_independent_config_s"] == pytest.approx(wall * 2 * tau / M.size, rel=1e-9)


def test_acceptance_and_cost_carry_gamma_method_errors(tmp_path):
    """A coarse step size (1 MD step) makes the acceptance fluctuate: its error is the Gamma-method
    error of the recorded 0/1 outcomes over records x chains (it was printed bare), and the cost per
    independent configuration carries tau_int(|M|)'s relative error. Catches an error of 0, a naive
    binomial error that ignores the chains' correlation, or an acceptance error on the wrong axis."""
    path = tmp_path / "coarse.h5"
    run_cli("hmc", "--shape", "6", "6", "--kappa", "0.24", "--lam", "0.02", *COMMON, "--md-steps", "1",
            "--n-configs", "100", "--out", path, check=True)
    r = run_cli("analyze", path, "--json", check=True).json()
    with h5py.File(path, "r") as f:
        acc = np.asarray(f["records/accepted"][: int(f.attrs["n_records"])], dtype=np.float64)
    assert 0.05 < r["acceptance"] < 0.98  # the point of the coarse step: both outcomes occur
    assert r["acceptance"] == pytest.approx(acc.mean(), rel=1e-12)
    assert r["acceptance_error"] == pytest.approx(gamma_method(acc.reshape(acc.shape[0], -1)).error, rel=1e-12)
    assert r["acceptance_error"] > 0
    m = r["abs_magnetisation"]
    assert r["cost_per_independent_config_s_error"] == pytest.approx(
        r["cost_per_independent_config_s"] * m["tau_int_error"] / m["tau_int"], rel=1e-12)
    table = run_cli("analyze", path, check=True).stdout
    assert f"acceptance {format_value_error(r['acceptance'], r['acceptance_error'])}" in table


def test_exp_minus_dH_from_the_records_and_creutz_identity(hmc_file):
    """<exp(-dH)> equals the mean of exp(-dH) over all recorded trajectories, and is 1 within its
    error for exact HMC (Creutz). Catches a mean over accepted trajectories only, exp(+dH), or an
    error of 0."""
    path, result = hmc_file
    with h5py.File(path, "r") as f:
        nr = int(f.attrs["n_records"])
        dH = f["records/dH"][:nr] if "dH" in f["records"] else -np.log(f["records/exp_minus_dH"][:nr])
    e = result["exp_minus_dH"]
    assert e["value"] == pytest.approx(float(np.mean(np.exp(-dH))), rel=1e-12)
    assert e["error"] > 0
    assert abs(e["value"] - 1.0) < 4 * e["error"]


def test_free_field_labels_exact_for_hmc_and_dt0_limit_for_langevin(tmp_path):
    """The free field's closed forms are 'exact' for HMC; for Langevin they are the dt -> 0 limit
    (the ensemble carries O(dt) bias). The effective-mass line carries the label, not '<S>/V'."""
    h, l = tmp_path / "h.h5", tmp_path / "l.h5"
    run_cli("hmc", "--shape", "8", "4", "--m2", "0.5", *COMMON, "--n-configs", "20", "--out", h, check=True)
    run_cli("langevin", "--shape", "8", "4", "--m2", "0.5", *COMMON, "--n-configs", "20", "--out", l, check=True)
    rh, rl = run_cli("analyze", h, "--json", check=True).json(), run_cli("analyze", l, "--json", check=True).json()
    assert "exact" in rh and "dt0_limit" not in rh
    assert "dt0_limit" in rl and "exact" not in rl
    table_l = run_cli("analyze", l, check=True).stdout
    assert "dt = 0 limit (this ensemble has O(dt) bias)" in table_l and " exact" not in table_l
    em = [ln for ln in table_l.splitlines() if ln.startswith("effective mass")]
    assert em and "<S>/V" not in em[0]
    # Heun's bias is second order: the label says so (it said O(dt) for every scheme)
    lh = tmp_path / "lh.h5"
    run_cli("langevin", "--shape", "8", "4", "--m2", "0.5", *COMMON, "--n-configs", "20", "--scheme", "heun", "--out", lh,
            check=True)
    table_h = run_cli("analyze", lh, check=True).stdout
    assert "dt = 0 limit (this ensemble has O(dt^2) bias)" in table_h and "O(dt) bias" not in table_h


def test_unreliable_warning_names_the_observable_in_json(tmp_path):
    """Many chains much shorter than Wolff's window needs (constant fields following AR(1) chains with
    a = 0.8, 30 x 256; no window W <= 15 meets the criterion): the 'errors are unreliable' warning names the observable, in --json and the table."""
    from lftml.ensemble import write_ensemble
    from lftml.lattice import Lattice
    from lftml.observables import measure_history
    from lftml.theories import Phi4
    from test_stats import ar1

    theory = Phi4.hopping(Lattice((4, 4)), 0.2, 0.02)
    m = ar1(0.8, 30, 256, np.random.default_rng(1))
    configs = np.broadcast_to(m[:, :, None, None], (30, 256, 4, 4)).copy()
    path = write_ensemble(tmp_path / "short.h5", configs, metadata={"kind": "hmc"}, theory=theory,
                          observables=measure_history(configs, theory))
    data = run_cli("analyze", path, "--json", check=True).json()
    assert any(w.startswith("magnetisation:") and "unreliable" in w for w in data["warnings"]), data["warnings"]
    # every warning names an observable of the result: a key, or a point "correlator(t=2)" of a list
    for w in data["warnings"]:
        name = w.split(":")[0]
        if "(t=" in name:
            key, t = name[:-1].split("(t=")
            assert any(d["t"] == int(t) and d.get("warning") for d in data[key]), w
        else:
            assert data[name].get("warning"), w
    assert any(w.startswith("correlator(t=") for w in data["warnings"]), data["warnings"]
    assert "warning: magnetisation:" in run_cli("analyze", path, check=True).stdout


def test_unreliable_warning_names_the_observable_in_hmc_json(tmp_path):
    """`lftml hmc --json` on chains far shorter than their autocorrelation time (30 trajectories of
    length 0.05, tau_int ~ 15): the 'errors are unreliable' warnings name the observable, in the
    summary's top-level `warnings` (as `analyze --json`) and under `analysis`. Catches warnings that
    reach only the log (stderr) or lose the observable's name."""
    out = run_cli("hmc", "--shape", "4", "4", "--kappa", "0.2", "--lam", "0.02", "--traj-length", "0.05",
                  "--md-steps", "1", "--chains", "64", "--n-configs", "30", "--therm", "10", "--seed", "1",
                  "--no-progress", "--json", "--out", tmp_path / "short.h5", check=True).json()
    warnings = out["warnings"]
    assert warnings == out["analysis"]["warnings"]
    flagged = {w.split(":")[0] for w in warnings if "unreliable" in w}
    assert {"magnetisation", "susceptibility", "binder"} <= flagged, warnings
    assert all(out["analysis"][k]["warning"] in w for w in warnings for k in [w.split(":")[0]])


def test_store_does_not_measure_and_one_resolve_device():
    """ensemble.py imports no observables (the callers measure); one resolve_device, still importable
    from lftml.run; the engine uses no private cross-module imports."""
    import ast
    from pathlib import Path

    import lftml.devices
    import lftml.run

    src = Path(lftml.run.__file__).parent
    tree = ast.parse((src / "ensemble.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "lftml.observables"
                for a in n.names}
    assert not imported
    assert lftml.run.resolve_device is lftml.devices.resolve_device
    import lftml.diffusion.training

    assert lftml.diffusion.training.resolve_device is lftml.devices.resolve_device  # was a second copy
    for name in ("run.py", "analysis.py", "ensemble.py", "cli/engine.py"):
        tree = ast.parse((src / name).read_text())
        private = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("lftml")
                   for a in n.names if a.name.startswith("_")]
        assert not private, (name, private)


def test_backend_switch_on_resume_is_recorded(tmp_path):
    """`--backend eager` resuming a fused run: the file says both, with where the switch happened."""
    from lftml.samplers import fused

    if not fused.available():
        pytest.skip("numba not available: no fused run to resume")
    path = tmp_path / "a.h5"
    args = ["hmc", "--shape", "6", "6", "--kappa", "0.2", "--lam", "0.02", *COMMON]
    run_cli(*args, "--n-configs", "5", "--backend", "fused", "--out", path, check=True)
    run_cli(*args, "--n-configs", "9", "--backend", "eager", "--out", path, "--resume", check=True)
    with h5py.File(path, "r") as f:
        meta = json.loads(f.attrs["metadata"])
    assert meta["md_backend"] == "fused+eager"
    assert meta["md_backends"] == [{"backend": "fused", "from_config": 0}, {"backend": "eager", "from_config": 5}]


SHORT = ["--shape", "8", "8", "--kappa", "0.26", "--lam", "0.022", "--chains", "8", "--n-configs", "100", "--therm", "20",
         "--seed", "1", "--no-progress"]
ANTI = ["--shape", "8", "8", "--kappa", "0.21", "--lam", "0.022", "--chains", "8", "--n-configs", "100", "--therm", "20",
        "--traj-length", "1", "--md-steps", "8", "--integrator", "omelyan", "--seed", "1", "--no-progress"]


def _times_printed(res, caplog, text):
    """How often ``text`` reached the user: stdout, stderr and the log records (stderr in a shell)."""
    return res.stdout.count(text) + res.stderr.count(text) + sum(text in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("command", ["hmc", "analyze"])
def test_a_reliability_warning_is_printed_once(tmp_path, caplog, command):
    """Near kappa_c, 100 configurations (8x8, seed 1) are too few for |M|'s window: `hmc` and
    `analyze` print that warning once, as a `warning:` line of the table (issue 10 leftover: it came
    once through logging and once in the table). With --json it is logged once (stderr) and listed
    in "warnings". Catches the double print coming back, or the warning being lost."""
    import logging

    caplog.set_level(logging.WARNING)
    text = "magnetisation: chains too short"
    path = tmp_path / "a.h5"
    res = run_cli("hmc", *SHORT, "--out", path, check=True)
    if command == "analyze":
        caplog.clear()
        res = run_cli("analyze", path, check=True)
    assert _times_printed(res, caplog, text) == 1, (res.stdout, res.stderr, caplog.text)
    assert any(ln.startswith("warning: " + text) for ln in res.stdout.splitlines())
    caplog.clear()
    data = run_cli("analyze", path, "--json", check=True)
    assert sum(text in r.getMessage() for r in caplog.records) == 1
    assert any(w.startswith(text) for w in data.json()["warnings"])


@pytest.mark.parametrize("command", ["hmc", "demo"])
def test_an_anticorrelated_exp_minus_dH_is_not_a_warning(tmp_path, caplog, command):
    """The anticorrelated <exp(-dH)> of a near-exact Omelyan run (8x8, seed 1: tau_int = 0.13) was a
    warning on every default run (`demo` included) that gave the user nothing to act on; the Gamma
    method resolves it. It is no longer printed, logged or listed, and its error stays > 0."""
    import logging

    caplog.set_level(logging.WARNING)
    path = tmp_path / "a.h5"
    res = run_cli("demo", "--out", path, check=True) if command == "demo" else run_cli("hmc", *ANTI, "--out", path, check=True)
    assert _times_printed(res, caplog, "exp_minus_dH") == 0, (res.stdout, res.stderr, caplog.text)
    data = run_cli("analyze", path, "--json", check=True).json()
    assert data["exp_minus_dH"]["tau_int"] < 0.5 and data["exp_minus_dH"]["error"] > 0  # still anticorrelated
    assert "warning" not in data["exp_minus_dH"] and not any("exp_minus_dH" in w for w in data["warnings"])
