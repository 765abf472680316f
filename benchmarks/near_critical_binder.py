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
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_all = time.process_time()
    kappas = np.array(args.kappas)
    out = {"lambda": LAM, "kappas": list(kappas), "chains": args.chains, "sw_every": args.sw_every, "points": []}
    per_chain = {}  # (L, kappa index) -> (M2 (n, chains), M4)
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
            per_chain[(L, ik)] = (M * M, M**4)
            point = {"L": L, "kappa": float(kappa), "n_configs": n_configs, "acceptance": res.acceptance, "cpu_s": cpu,
                     "binder": s["binder"], "abs_magnetisation": s["abs_magnetisation"],
                     "susceptibility": s["susceptibility"]}
            out["points"].append(point)
            print(f"L {L:3d} kappa {kappa:.4f} U {s['binder']['value']:.4f}({s['binder']['error']:.4f}) "
                  f"tau_U {s['binder']['tau_int']:.1f} acc {res.acceptance:.3f} cpu {cpu:.0f} s", flush=True)
            with open(args.out, "w") as f:
                json.dump(out, f, indent=1)
    # jackknife over chains: binder per (L, kappa), crossings
    n_ch = args.chains

    def curves(drop: int | None) -> dict[int, np.ndarray]:
        keep = [c for c in range(n_ch) if c != drop]
        return {L: np.array([binder(per_chain[(L, i)][0][:, keep], per_chain[(L, i)][1][:, keep])
                             for i in range(len(kappas))]) for L in args.sizes}

    full = curves(None)
    jack = [curves(c) for c in range(n_ch)]
    out["binder_jackknife"] = {}
    for L in args.sizes:
        js = np.array([j[L] for j in jack])
        err = np.sqrt((n_ch - 1) / n_ch * ((js - js.mean(axis=0)) ** 2).sum(axis=0))
        out["binder_jackknife"][str(L)] = {"value": full[L].tolist(), "error": err.tolist()}
    out["crossings"] = []
    for L1, L2 in zip(args.sizes[:-1], args.sizes[1:]):
        k, u = crossing(kappas, full[L1], full[L2])
        jk = np.array([crossing(kappas, j[L1], j[L2]) for j in jack])
        ok = np.all(np.isfinite(jk), axis=1)
        fac = (n_ch - 1) / n_ch
        ek = math.sqrt(fac * ((jk[ok, 0] - jk[ok, 0].mean()) ** 2).sum()) if ok.sum() > 2 else math.nan
        eu = math.sqrt(fac * ((jk[ok, 1] - jk[ok, 1].mean()) ** 2).sum()) if ok.sum() > 2 else math.nan
        out["crossings"].append({"L1": L1, "L2": L2, "kappa": k, "kappa_error": ek, "U": u, "U_error": eu,
                                 "jackknife_samples_used": int(ok.sum())})
        print(f"crossing {L1}/{L2}: kappa* = {k:.5f}({ek:.5f})  U* = {u:.4f}({eu:.4f})  (2d Ising {ISING_U_STAR})")
    out["total_cpu_s"] = time.process_time() - t_all
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"total CPU {out['total_cpu_s']:.0f} s")


if __name__ == "__main__":
    main()
