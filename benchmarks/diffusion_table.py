"""Issue 8 results table per (L, kappa): baseline, model (raw and made exact) and HMC side by side.

Per (L, kappa) at lambda = 0.022, everything through the CLI (``python -m lftml ...``, one thread,
``nice``), seeds fixed:

1. HMC training and test ensembles (different seeds; broken phase from cold starts; near-critical
   with Swendsen-Wang cluster moves composed with the trajectories);
2. ``lftml diffusion train --data train --heldout test`` with the default recipe
   (``--parametrization``, auto by default) at ``--preset`` (tiny-equi by default, to fit the shared
   machine): held-out likelihood gain over the analytic part, training CPU seconds;
3. ``lftml diffusion sample`` (exp sampler, exact path weights, ``--steps``, 20 by default), n samples, for the model
   and for its analytic part alone (``--network-below 1e-9``), and ``lftml diffusion baseline``
   (exact samples, exact log w) of the kind auto chose;
4. for each proposal: independence-Metropolis acceptance (Gamma-method error over the chain's
   accept indicators), ESS/N, sigma_lw/sqrt(V); for each row (baseline raw and exact, analytic part
   exact, model raw and exact, HMC test): site kurtosis <phi^4>/<phi^2>^2, <|M|>, chi_2, U_L, <S>/V
   with Gamma-method errors (weighted rows: errors include the weights) and z vs the HMC test set;
   CPU seconds of every command (rusage of the child process).

    python benchmarks/diffusion_table.py --sizes 8,16 --kappas 0.21,0.2705,0.5 --updates 600 \\
        --preset tiny-equi --out benchmarks/diffusion_table.json
    python benchmarks/diffusion_table.py --markdown benchmarks/diffusion_table.json   # print the table

CPU seconds include process start-up and numba/torch import and JIT (a few seconds per command);
on a loaded shared machine they are still inflated by cache sharing (+-20 %).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _child import run_child

LAM = 0.022
OBS = ("kurtosis", "abs_magnetisation", "susceptibility", "binder", "action_density")


def hmc_args(L: int, kappa: float) -> list[str]:
    """HMC settings per point: 8 chains x 100 configurations; cold starts in the broken phase
    (both vacua: the chains pick their sign), SW cluster moves every trajectory near kappa_c."""
    a = ["--shape", str(L), str(L), "--kappa", str(kappa), "--lam", str(LAM), "--chains", "8",
         "--n-configs", "100", "--therm", "200"]
    if kappa >= 0.4:
        a += ["--every", "5", "--start", "cold"]
    elif kappa > 0.25:
        a += ["--every", "10", "--cluster", "sw", "--cluster-every", "1"]
    else:
        a += ["--every", "5"]
    return a


def cli(*args: str, json_out: bool = True) -> tuple[Any, float]:
    """Run ``python -m lftml args`` under nice with one thread; returns (parsed JSON or None, CPU s)."""
    cmd = ["nice", "-n", "10", sys.executable, "-m", "lftml", *args] + (["--json"] if json_out else [])
    p, cpu = run_child(cmd)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}")
    out = None
    if json_out:
        txt = p.stdout.strip()
        out = json.loads(txt[txt.index("{"):]) if "{" in txt else None
    return out, cpu


def entry(e) -> dict[str, float]:
    return {"value": float(e.value), "error": float(e.error)}


def observables(path: Path, weighted: bool) -> dict[str, Any]:
    """Kurtosis, <|M|>, chi_2, U_L, <S>/V of an ensemble file (reweighted with its log weights if
    ``weighted``), plus the proposal diagnostics when the file carries log weights."""
    from lftml.analysis import summarize
    from lftml.diffusion.evaluation import metropolis_acceptance
    from lftml.diffusion.workflows import weight_diagnostics
    from lftml.ensemble import Ensemble
    from lftml.stats import gamma_method_derived, weighted_gamma_method_derived

    with Ensemble.open(path) as ens:
        phi = np.asarray(ens.configs, dtype=np.float64)  # (n_configs, n_chains, L, L)
        M = np.asarray(ens.observables["M"], dtype=np.float64)
        s = np.asarray(ens.observables["action_density"], dtype=np.float64)
        lw = None if ens.log_weights is None else np.asarray(ens.log_weights, dtype=np.float64).reshape(M.shape)
        V = ens.volume
    axes = tuple(range(2, phi.ndim))
    p2, p4 = np.mean(phi**2, axis=axes), np.mean(phi**4, axis=axes)
    use = lw if weighted else None
    r = summarize(M, V, action_density=s, log_weights=use)
    out: dict[str, Any] = {k: r[k] for k in OBS if k in r}
    kurt = lambda a4, a2: a4 / (a2 * a2)  # noqa: E731
    out["kurtosis"] = entry(weighted_gamma_method_derived(kurt, p4, p2, log_weights=use) if use is not None
                            else gamma_method_derived(kurt, p4, p2))
    out["n"] = int(M.size)
    if lw is not None:
        flat = lw.reshape(-1)
        acc = metropolis_acceptance(flat, np.random.default_rng(7))
        out["proposal"] = {**weight_diagnostics(flat, V), "acceptance": entry(acc)}
    return out


def add_z(row: dict[str, Any], ref: dict[str, Any]) -> None:
    for k in OBS:
        a, b = row[k], ref[k]
        row[k] = {**a, "z_vs_hmc": (a["value"] - b["value"]) / math.hypot(a["error"], b["error"])}


def point(L: int, kappa: float, updates: int, preset: str, n: int, batch: int, work: Path,
          parametrization: str = "auto", train_configs: int = 100, steps: int = 20) -> dict[str, Any]:
    from lftml.diffusion.model import load_model

    d = work / f"L{L}_k{kappa}"
    d.mkdir(parents=True, exist_ok=True)
    tr, te = d / "train.h5", d / "test.h5"
    res: dict[str, Any] = {"L": L, "kappa": kappa, "lam": LAM, "n": n, "hmc_args": hmc_args(L, kappa),
                           "train_configs_per_chain": train_configs, "sample_steps": steps}
    train_args = hmc_args(L, kappa)
    train_args[train_args.index("--n-configs") + 1] = str(train_configs)
    _, res["hmc_train_cpu_s"] = cli("hmc", *train_args, "--seed", "101", "--out", str(tr), json_out=False)
    _, res["hmc_test_cpu_s"] = cli("hmc", *hmc_args(L, kappa), "--seed", "202", "--out", str(te), json_out=False)
    m = d / "model.pt"
    t, res["train_cpu_s"] = cli("diffusion", "train", "--data", str(tr), "--heldout", str(te), "--preset", preset,
                                "--updates", str(updates), "--batch-size", str(batch), "--parametrization", parametrization,
                                "--monitor-every",
                                str(updates), "--threads", "1", "--seed", "1", "--no-progress", "--out", str(m))
    model = load_model(m)
    kind = model.parametrization
    res.update({"preset": preset, "updates": updates, "batch_size": batch, "parametrization": kind,
                "parametrization_auto": model.info.get("parametrization_auto"),
                "gain": (t.get("monitor") or [None])[-1], "train_wall_s": t.get("wall_seconds")})
    files = {"model": d / "gen.h5", "analytic": d / "part.h5", "baseline": d / "base.h5"}
    for name, extra in (("model", ()), ("analytic", ("--network-below", "1e-9"))):
        _, res[f"{name}_sample_cpu_s"] = cli("diffusion", "sample", "--model", str(m), "--n-configs", str(n),
                                             "--steps", str(steps), "--threads", "1", "--seed", "3", "--no-progress",
                                             *extra, "--out", str(files[name]))
    _, res["baseline_sample_cpu_s"] = cli("diffusion", "baseline", "--data", str(tr), "--kind", kind,
                                          "--n-configs", str(n), "--seed", "3", "--out", str(files["baseline"]))
    ref = observables(te, weighted=False)
    from lftml.analysis import analyze
    a = analyze(te)
    ref["tau_int_abs_magnetisation"] = a["abs_magnetisation"]["tau_int"]
    rows = {"hmc_test": ref}
    for name in ("baseline", "analytic", "model"):
        for w in (False, True):
            if name == "analytic" and not w:
                continue
            r = observables(files[name], weighted=w)
            add_z(r, ref)
            rows[f"{name}_{'exact' if w else 'raw'}"] = r
    res["rows"] = rows
    return res


# ----------------------------------------------------------------------------------------------- table

def fmt(v: float, e: float) -> str:
    """value(error) with two significant digits of the error."""
    from lftml.stats import format_value_error
    return format_value_error(v, e)


ROW_NAMES = [("baseline_raw", "{kind} baseline, raw"), ("baseline_exact", "{kind} baseline, reweighted"),
             ("analytic_exact", "analytic part (exp sampler), reweighted"), ("model_raw", "model, raw"),
             ("model_exact", "model, reweighted"), ("hmc_test", "HMC test")]


def markdown(results: dict[str, Any], compact: bool = False) -> str:
    hdr = ["L", "kappa", "row", "acc", "ESS/N", "sigma_lw/sqrt(V)", "kurtosis", "<\\|M\\|>", "chi_2", "U_L", "<S>/V",
           "CPU s"]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for p in results["points"]:
        rows = p["rows"]
        cpu = {"baseline_raw": p["baseline_sample_cpu_s"], "baseline_exact": p["baseline_sample_cpu_s"],
               "analytic_exact": p["analytic_sample_cpu_s"], "model_raw": p["model_sample_cpu_s"],
               "model_exact": p["model_sample_cpu_s"], "hmc_test": p["hmc_test_cpu_s"]}
        for key, label in ROW_NAMES:
            if compact and key in ("baseline_raw", "analytic_exact"):
                continue
            r = rows[key]
            pr = r.get("proposal")
            cells = [str(p["L"]), str(p["kappa"]), label.format(kind=p["parametrization"])]
            if pr and key.endswith("exact"):  # proposal numbers belong to the reweighted rows
                cells += [fmt(pr["acceptance"]["value"], pr["acceptance"]["error"]), f"{pr['ess_fraction']:.3f}",
                          f"{pr['log_weight_std_per_sqrt_site']:.3f}"]
            else:
                cells += ["", "", ""]
            for k in OBS:
                o = r[k]
                c = fmt(o["value"], o["error"])
                if "z_vs_hmc" in o:
                    c += f" [{o['z_vs_hmc']:+.1f}]"
                cells.append(c)
            cells.append(f"{cpu[key]:.0f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table(results: dict[str, Any]) -> str:
    hdr = ["L", "kappa", "auto chose", "HMC train / test configs", "tau_int(\\|M\\|) test", "updates",
           "train CPU s", "held-out gain (nats)", "HMC CPU s (test)"]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for p in results["points"]:
        g = p["gain"] or {}
        gain = fmt(g["gain_nats"], g["error"]) if "gain_nats" in g else "-"
        n = p["rows"]["hmc_test"]["n"]
        n_train = n * p.get("train_configs_per_chain", 100) // 100  # the test set: 8 chains x 100
        lines.append(f"| {p['L']} | {p['kappa']} | {p['parametrization']} | {n_train} / {n} | "
                     f"{p['rows']['hmc_test']['tau_int_abs_magnetisation']:.2f} | {p['updates']} | "
                     f"{p['train_cpu_s']:.0f} | {gain} | {p['hmc_test_cpu_s']:.0f} |")
    return "\n".join(lines)


def startup_cpu_s() -> float:
    """CPU seconds of a bare ``python -m lftml --help`` (interpreter, torch and numba imports): the
    fixed cost in every command's CPU seconds, subtracted in :func:`cost_table` (min of 3)."""
    return min(cli("--help", json_out=False)[1] for _ in range(3))


def cost_table(results: dict[str, Any]) -> str:
    """CPU ms per effective configuration, net of the start-up cost: weighted samples n x ESS/N,
    HMC n / (2 tau_int(|M|)) (tau_int >= 0.5)."""
    s0 = results.get("startup_cpu_s")
    if s0 is None:
        s0 = results["startup_cpu_s"] = startup_cpu_s()
    hdr = ["L", "kappa", "baseline", "model (sampling)", "model training CPU s", "HMC test"]
    lines = [f"(start-up {s0:.1f} CPU-s per command subtracted)", "", "| " + " | ".join(hdr) + " |",
             "|" + "---|" * len(hdr)]
    for p in results["points"]:
        rows = p["rows"]
        eff = lambda key: p["n"] * rows[key]["proposal"]["ess_fraction"]  # noqa: E731
        h = rows["hmc_test"]
        hmc_eff = h["n"] / (2.0 * max(h["tau_int_abs_magnetisation"], 0.5))
        ms = lambda cpu, n: f"{1e3 * max(cpu - s0, 0.0) / n:.1f}"  # noqa: E731
        lines.append(f"| {p['L']} | {p['kappa']} | {ms(p['baseline_sample_cpu_s'], eff('baseline_exact'))} | "
                     f"{ms(p['model_sample_cpu_s'], eff('model_exact'))} | {p['train_cpu_s'] - s0:.0f} | "
                     f"{ms(p['hmc_test_cpu_s'], hmc_eff)} |")
    return "\n".join(lines)


def compact_table(results: dict[str, Any]) -> str:
    """One row per point: baseline vs model (made exact) as proposals, kurtosis raw vs HMC, largest
    |z| of the reweighted rows, CPU ms per effective configuration (see :func:`cost_table`)."""
    s0 = results.get("startup_cpu_s") or startup_cpu_s()
    hdr = ["L", "kappa", "analytic part", "gain (nats)", "acc base / model", "ESS/N base / model",
           "sigma_lw/sqrt(V) base / model", "kurtosis HMC / base raw / model raw", "max \\|z\\| reweighted",
           "ms per eff. config base / model / HMC", "train CPU s"]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for p in results["points"]:
        rows = p["rows"]
        b, m, h = rows["baseline_exact"]["proposal"], rows["model_exact"]["proposal"], rows["hmc_test"]
        g = p["gain"] or {}
        gain = fmt(g["gain_nats"], g["error"]) if "gain_nats" in g else "-"
        k = lambda key: fmt(rows[key]["kurtosis"]["value"], rows[key]["kurtosis"]["error"])  # noqa: E731
        zmax = max(abs(rows[key][o]["z_vs_hmc"]) for key in ("baseline_exact", "analytic_exact", "model_exact")
                   for o in OBS)
        hmc_eff = h["n"] / (2.0 * max(h["tau_int_abs_magnetisation"], 0.5))
        ms = lambda cpu, n: f"{1e3 * max(cpu - s0, 0.0) / n:.1f}"  # noqa: E731
        lines.append(
            f"| {p['L']} | {p['kappa']} | {p['parametrization']} | {gain} | "
            f"{fmt(b['acceptance']['value'], b['acceptance']['error'])} / "
            f"{fmt(m['acceptance']['value'], m['acceptance']['error'])} | {b['ess_fraction']:.3f} / "
            f"{m['ess_fraction']:.3f} | {b['log_weight_std_per_sqrt_site']:.3f} / "
            f"{m['log_weight_std_per_sqrt_site']:.3f} | {k('hmc_test')} / {k('baseline_raw')} / {k('model_raw')} | "
            f"{zmax:.1f} | {ms(p['baseline_sample_cpu_s'], p['n'] * b['ess_fraction'])} / "
            f"{ms(p['model_sample_cpu_s'], p['n'] * m['ess_fraction'])} / {ms(p['hmc_test_cpu_s'], hmc_eff)} | "
            f"{p['train_cpu_s'] - s0:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="8,16")
    ap.add_argument("--kappas", default="0.21,0.2705,0.5")
    ap.add_argument("--updates", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--preset", default="tiny-equi", choices=["tiny-equi", "equi"])
    ap.add_argument("--train-configs", type=int, default=100,
                    help="configurations per chain of the HMC training set (8 chains; the test set keeps 100)")
    ap.add_argument("--parametrization", default="auto", choices=["auto", "gaussian", "mixture"],
                    help="the score's analytic part (diffusion train --parametrization)")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20, help="reverse-process steps of every diffusion sample (default 20)")
    ap.add_argument("--out", default="benchmarks/diffusion_table.json")
    ap.add_argument("--work", default=None, help="folder for the ensembles and models (default: a temporary one)")
    ap.add_argument("--resume", action="store_true", help="keep the points already in --out, run the rest")
    ap.add_argument("--markdown", default=None, help="print the tables of an existing JSON file and exit")
    a = ap.parse_args()
    if a.markdown:
        res = json.loads(Path(a.markdown).read_text())
        if "startup_cpu_s" not in res:  # older file: measure the start-up once and record it
            res["startup_cpu_s"] = startup_cpu_s()
            tmp = Path(a.markdown + ".tmp")
            tmp.write_text(json.dumps(res, indent=1))
            tmp.replace(a.markdown)
        print("\n\n".join([summary_table(res), markdown(res), cost_table(res), compact_table(res)]))
        return
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="dtable_"))
    out = Path(a.out)
    results: dict[str, Any] = {"command": " ".join(sys.argv), "points": [], "startup_cpu_s": startup_cpu_s()}
    if out.exists():
        if not a.resume:
            sys.exit(f"error: {out} exists (pass --resume to continue it)")
        results = json.loads(out.read_text())
    done = {(p["L"], p["kappa"]) for p in results["points"]}
    for L in map(int, a.sizes.split(",")):
        for kappa in map(float, a.kappas.split(",")):
            if (L, kappa) in done:
                continue
            r = point(L, kappa, a.updates, a.preset, a.n, a.batch_size, work, a.parametrization, a.train_configs, a.steps)
            results["points"].append(r)
            tmp = out.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(results, indent=1))
            tmp.replace(out)
            print(json.dumps({k: r[k] for k in ("L", "kappa", "parametrization", "gain", "train_cpu_s")}), flush=True)
    print(summary_table(results) + "\n\n" + markdown(results) + "\n\n" + cost_table(results))


if __name__ == "__main__":
    main()
