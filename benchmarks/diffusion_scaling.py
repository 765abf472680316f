"""One fully convolutional model sampled at L = 16, 32, 64: how the exact weights scale (issue 8).

    python benchmarks/diffusion_scaling.py [--kappa 0.21] [--train-L 16] [--sizes 16,32,64] [--n 256]
        [--updates 600] [--work DIR] [--out benchmarks/diffusion_scaling.json]

Trains the default recipe (``--parametrization auto``, preset ``tiny-equi``: stride 1, exactly
translation-equivariant, so the same network runs on any lattice) on an HMC ensemble at ``train-L``
(lambda = 0.022; cold start for kappa >= 0.3), then samples ``n`` configurations with exact path
weights at every size with ``lftml diffusion sample --shape L L`` (the analytic part's two-point
function embedded, :func:`lftml.diffusion.model.embed_spectrum`), and the analytic part alone
(``--network-below 1e-9``) through the same sampler. Reports ESS/N, independence-Metropolis acceptance,
sigma_lw / sqrt(V) (constant if the proposal's per-site quality carries over; acceptance then falls as
2 Phi(-sigma_lw / sqrt 2) with sigma_lw ~ sqrt(V)) and the sampling CPU seconds (children's rusage).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _child import run_child


def lftml(*args: str) -> dict:
    """``python -m lftml args`` on one thread: its JSON output (with ``--json``) and ``_cpu_s``."""
    out, cpu = run_child([sys.executable, "-m", "lftml", *args])
    if out.returncode != 0:
        raise RuntimeError(f"lftml {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    res = json.loads(out.stdout) if "--json" in args else {}
    res["_cpu_s"] = cpu
    return res


def acceptance(path: Path) -> tuple[float, float, np.ndarray]:
    from lftml.diffusion.evaluation import metropolis_acceptance
    from lftml.ensemble import Ensemble

    with Ensemble.open(path) as ens:
        lw = np.asarray(ens.log_weights).reshape(-1)
    g = metropolis_acceptance(lw, np.random.default_rng(7))
    return g.value, g.error, lw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kappa", type=float, default=0.21)
    ap.add_argument("--train-L", type=int, default=16)
    ap.add_argument("--sizes", default="16,32,64")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--updates", type=int, default=600)
    ap.add_argument("--work", default="runs/diffusion_scaling")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from lftml.stats import ess_fraction

    work = Path(a.work) / f"k{a.kappa}"
    work.mkdir(parents=True, exist_ok=True)
    L0 = str(a.train_L)
    start = "cold" if a.kappa >= 0.3 else "hot"
    hmc = ("--shape", L0, L0, "--kappa", str(a.kappa), "--lam", "0.022", "--chains", "8", "--n-configs", "200",
           "--therm", "200", "--every", "5", "--start", start, "--overwrite")
    lftml("hmc", *hmc, "--seed", "11", "--out", str(work / "train.h5"))
    lftml("hmc", *hmc, "--seed", "12", "--out", str(work / "test.h5"))
    tr = lftml("diffusion", "train", "--data", str(work / "train.h5"), "--heldout", str(work / "test.h5"), "--preset",
               "tiny-equi", "--updates", str(a.updates), "--batch-size", "16", "--monitor-every", str(a.updates),
               "--seed", "1", "--out", str(work / "m.pt"), "--overwrite", "--json")
    rows = []
    for L in (int(v) for v in a.sizes.split(",")):
        for label, extra in (("model", ()), ("analytic part", ("--network-below", "1e-9"))):
            f = work / f"gen_L{L}_{'model' if label == 'model' else 'part'}.h5"
            r = lftml("diffusion", "sample", "--model", str(work / "m.pt"), "--shape", str(L), str(L), "--n-configs",
                      str(a.n), "--steps", "20", "--seed", "3", *extra, "--out", str(f), "--overwrite", "--json")
            acc, acc_err, lw = acceptance(f)
            row = {"L": L, "proposal": label, "ess_fraction": ess_fraction(lw), "acceptance": acc,
                   "acceptance_error": acc_err, "sigma_lw_per_sqrt_site": float(np.std(lw, ddof=1) / L),
                   "cpu_seconds": r["_cpu_s"], "network_evaluations": r.get("network_evaluations_per_sample")}
            rows.append(row)
            print(f"L = {L:3d} {label:14s} ESS/N {row['ess_fraction']:.3f}  acc {acc:.3f}({acc_err:.3f})  "
                  f"sigma_lw/sqrt(V) {row['sigma_lw_per_sqrt_site']:.4f}  {r['_cpu_s']:.1f} CPU-s", flush=True)
    summary = {"kappa": a.kappa, "train_L": a.train_L, "n": a.n, "updates": a.updates,
               "parametrization": tr.get("parametrization"), "heldout_gain": (tr.get("monitor") or [None])[-1],
               "train_cpu_s": tr["_cpu_s"], "rows": rows}
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    if a.out:
        Path(a.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
