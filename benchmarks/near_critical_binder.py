"""Binder cumulant U_L(kappa) of 2d phi^4 at lambda = 0.022 near kappa_c, its crossings and kappa_c (issue 9).

At every (L, kappa): a short HMC + Swendsen-Wang pilot (its propagator gives the FA-HMC mass,
zero mode from the connected within-well variance), then FA-HMC (trajectory pi/2, 4 Omelyan steps)
with one Swendsen-Wang move every ``--sw-every`` trajectories, ``n_chains`` independent chains.

U_L = 1 - <M^4> / (3 <M^2>^2). Errors: delete-one-chain jackknife over the independent chains (the
chains are independent replicas, so resampling them needs no autocorrelation model; the Gamma method
error is printed beside it as a check). The crossing kappa*(L, 2L) is the root of U_L - U_2L, linearly
interpolated between neighbouring kappa points, and U* = U_L(kappa*); its error is the jackknife over
chains of the whole chain (interpolation included).

    python benchmarks/near_critical_binder.py --out benchmarks/near_critical_binder.json
    # or sizes in separate processes, then combined (the crossings need only per-chain <M^2>, <M^4>):
    python benchmarks/near_critical_binder.py --sizes 32 --configs 600 --out b32.json
    python benchmarks/near_critical_binder.py --combine b8_16.json b32.json --out benchmarks/near_critical_binder.json
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from lftml.analysis import summarize
from lftml.lattice import Lattice
from lftml.run import RunConfig, run
from lftml.samplers import HMC
from lftml.samplers.cluster import ClusterMove
from lftml.samplers.kinetic import FourierMass
from lftml.theories import Phi4

LAM = 0.022
ISING_U_STAR = 0.61069  # 2d Ising, square lattice, periodic (Kamieniarz & Bloete 1993; Salas & Sokal 2000)


def binder(m2: np.ndarray, m4: np.ndarray) -> float:
    return float(1.0 - m4.mean() / (3.0 * m2.mean() ** 2))


def crossing(kappas: np.ndarray, u1: np.ndarray, u2: np.ndarray) -> tuple[float, float]:
    """Root of u1 - u2 by linear interpolation between the grid points that bracket it (nearest the centre)."""
    d = u1 - u2
    idx = [i for i in range(len(d) - 1) if d[i] * d[i + 1] <= 0]
    if not idx:
        return math.nan, math.nan
    i = min(idx, key=lambda j: abs(j + 0.5 - (len(d) - 1) / 2))
    t = d[i] / (d[i] - d[i + 1])
    k = kappas[i] + t * (kappas[i + 1] - kappas[i])
    u = u1[i] + t * (u1[i + 1] - u1[i])
    return float(k), float(u)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--kappas", type=float, nargs="+", default=[0.2665, 0.2685, 0.2705, 0.2725, 0.2745])
    ap.add_argument("--chains", type=int, default=16)
    ap.add_argument("--configs", type=int, nargs="+", default=[1500, 1000, 800], help="per chain, one per size")
    ap.add_argument("--sw-every", type=int, default=4)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/near_critical_binder.json")
    ap.add_argument("--combine", nargs="+", help="merge the points of these result files and analyse them")
    args = ap.parse_args()
    if args.combine:
        files = [json.loads(open(p).read()) for p in args.combine]
        out = {**files[0], "points": [pt for f in files for pt in f["points"]],
               "total_cpu_s": sum(f.get("total_cpu_s", 0.0) for f in files)}
        crossings(out)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
        return
    torch.set_num_threads(1)
    t_all = time.process_time()
    kappas = np.array(args.kappas)
    out = {"lambda": LAM, "kappas": list(kappas), "chains": args.chains, "sw_every": args.sw_every, "points": []}
    for L, n_configs in zip(args.sizes, args.configs):
        for ik, kappa in enumerate(kappas):
            theory = Phi4.hopping(Lattice((L, L)), float(kappa), LAM)
            sw = ClusterMove(theory, "sw")
            t0 = time.process_time()
            pilot = run(HMC.from_trajectory(theory, 1.0, 10, cluster=sw),
                        RunConfig(n_chains=8, n_configs=150, n_therm=150, every=2, seed=args.seed + 1000 + ik))
            mass = FourierMass.from_configs(pilot.configs, theory)
            sampler = HMC.from_trajectory(theory, math.pi / 2, 4, kinetic=mass, cluster=sw, cluster_every=args.sw_every)
            res = run(sampler, RunConfig(n_chains=args.chains, n_configs=n_configs, n_therm=200, every=1,
                                         seed=args.seed + 100 * L + ik))
            M = res.configs.mean(dim=(-2, -1)).numpy()
            cpu = time.process_time() - t0
            s = summarize(M, L * L)
            point = {"L": L, "kappa": float(kappa), "n_configs": n_configs, "acceptance": res.acceptance, "cpu_s": cpu,
                     "chain_M2": (M * M).mean(axis=0).tolist(), "chain_M4": (M**4).mean(axis=0).tolist(),
                     "binder": s["binder"], "abs_magnetisation": s["abs_magnetisation"],
                     "susceptibility": s["susceptibility"]}
            out["points"].append(point)
            print(f"L {L:3d} kappa {kappa:.4f} U {s['binder']['value']:.4f}({s['binder']['error']:.4f}) "
                  f"tau_U {s['binder']['tau_int']:.1f} acc {res.acceptance:.3f} cpu {cpu:.0f} s", flush=True)
            with open(args.out, "w") as f:
                json.dump(out, f, indent=1)
    out["total_cpu_s"] = time.process_time() - t_all
    crossings(out)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"total CPU {out['total_cpu_s']:.0f} s")


def crossings(out: dict) -> None:
    """Delete-one-chain jackknife of U_L(kappa) and of the crossings of consecutive sizes (in ``out``).
    Chains of equal length: the mean without chain c is the mean of the other chains' means."""
    pts = out["points"]
    sizes = sorted({p["L"] for p in pts})
    kappas = np.array(sorted({p["kappa"] for p in pts}))
    out["kappas"] = kappas.tolist()
    n_ch = len(pts[0]["chain_M2"])
    table = {(p["L"], p["kappa"]): (np.array(p["chain_M2"]), np.array(p["chain_M4"])) for p in pts}

    def curves(drop: int | None) -> dict[int, np.ndarray]:
        keep = [c for c in range(n_ch) if c != drop]
        return {L: np.array([binder(table[(L, k)][0][keep], table[(L, k)][1][keep]) for k in kappas]) for L in sizes}

    full = curves(None)
    jack = [curves(c) for c in range(n_ch)]
    fac = (n_ch - 1) / n_ch
    out["binder_jackknife"] = {}
    for L in sizes:
        js = np.array([j[L] for j in jack])
        err = np.sqrt(fac * ((js - js.mean(axis=0)) ** 2).sum(axis=0))
        out["binder_jackknife"][str(L)] = {"value": full[L].tolist(), "error": err.tolist()}
    out["crossings"] = []
    for L1, L2 in zip(sizes[:-1], sizes[1:]):
        k, u = crossing(kappas, full[L1], full[L2])
        jk = np.array([crossing(kappas, j[L1], j[L2]) for j in jack])
        ok = np.all(np.isfinite(jk), axis=1)
        ek = math.sqrt(fac * ((jk[ok, 0] - jk[ok, 0].mean()) ** 2).sum()) if ok.sum() > 2 else math.nan
        eu = math.sqrt(fac * ((jk[ok, 1] - jk[ok, 1].mean()) ** 2).sum()) if ok.sum() > 2 else math.nan
        out["crossings"].append({"L1": L1, "L2": L2, "kappa": k, "kappa_error": ek, "U": u, "U_error": eu,
                                 "jackknife_samples_used": int(ok.sum())})
        print(f"crossing {L1}/{L2}: kappa* = {k:.5f}({ek:.5f})  U* = {u:.4f}({eu:.4f})  (2d Ising {ISING_U_STAR})")


if __name__ == "__main__":
    main()
