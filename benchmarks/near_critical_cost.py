"""Cost per effectively independent configuration near the critical point of 2d phi^4 (issue 9).

For every (kappa, L) and algorithm: run ``n_chains`` chains, measure |M|, M^2 and the action density
after every update, and report

    cost = t_update x 2 tau_int / n_chains        (CPU seconds per independent configuration)

with ``t_update`` the process CPU time per update of all chains (``time.process_time``: the machine is
shared, so wall time would measure the other jobs), ``tau_int`` in updates (Gamma method, S = 2).
Algorithms (lambda = 0.022, hopping form):

* ``hmc``: unit mass, Omelyan, trajectory length 1, 10 steps (the fused kernel);
* ``fa-hmc``: Fourier-accelerated, trajectory pi/2, 4 Omelyan steps, mass 1/G(p) from the
  ``hmc+sw`` run at the same point (the pilot; zero mode from the connected within-well variance);
* ``hmc+sw``: the ``hmc`` trajectory followed by one Swendsen-Wang move of the embedded Ising signs;
* ``heun``: Heun Langevin, dt = 0.02, one update = 10 steps; its O(dt^2) bias is reported in units of
  the combined error against ``hmc+sw``.

The dynamic exponent z of each algorithm is fitted as tau_int(|M|) ~ L^z (weighted least squares
over the L values, errors from tau_int's Madras-Sokal error). Output: one JSON file.

    python benchmarks/near_critical_cost.py --out benchmarks/near_critical_cost.json
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from lftml.lattice import Lattice
from lftml.observables import measure
from lftml.run import RunConfig, run
from lftml.samplers import HMC, Langevin
from lftml.samplers.cluster import ClusterMove
from lftml.samplers.kinetic import FourierMass
from lftml.stats import gamma_method
from lftml.theories import Phi4

LAM = 0.022
OBSERVABLES = ("absM", "M2", "action_density")


def observables(configs: torch.Tensor, theory) -> dict[str, np.ndarray]:
    out = {k: [] for k in OBSERVABLES}
    for c in configs:
        o = measure(c, theory)
        for k in OBSERVABLES:
            out[k].append(o[k])
    return {k: np.stack(v) for k, v in out.items()}


def analyse(obs: dict[str, np.ndarray], cpu: float, n_updates: int, n_chains: int) -> dict:
    t_update = cpu / n_updates
    res = {"cpu_per_update_s": t_update, "n_updates": n_updates, "n_chains": n_chains}
    for k, v in obs.items():
        e = gamma_method(v)
        res[k] = {"value": e.value, "error": e.error, "tau_int": e.tau_int, "tau_int_error": e.tau_int_error,
                  "cost_s": t_update * 2.0 * e.tau_int / n_chains,
                  "cost_error_s": t_update * 2.0 * e.tau_int_error / n_chains}
    return res


def one_run(sampler, theory, n_chains: int, n_updates: int, n_therm: int, every: int, seed: int):
    config = RunConfig(n_chains=n_chains, n_configs=n_updates, n_therm=n_therm, every=every, seed=seed, start="hot")
    t0 = time.process_time()
    res = run(sampler, config)
    cpu = time.process_time() - t0
    # thermalisation is part of the run but not of the cost per measured update
    cpu_measured = cpu * n_updates * every / (n_updates * every + n_therm)
    return res, analyse(observables(res.configs, theory), cpu_measured, n_updates, n_chains)


def fit_z(Ls, taus, errs) -> dict:
    Ls, taus, errs = map(np.asarray, (Ls, taus, errs))
    x, y = np.log(Ls), np.log(taus)
    w = (taus / np.maximum(errs, 1e-12)) ** 2  # 1 / var(log tau)
    A = np.vstack([np.ones_like(x), x]).T
    cov = np.linalg.inv(A.T @ (A * w[:, None]))
    coef = cov @ (A.T @ (w * y))
    chi2 = float(np.sum(w * (y - A @ coef) ** 2))
    return {"z": float(coef[1]), "z_error": float(math.sqrt(cov[1, 1])), "chi2": chi2, "dof": int(len(Ls) - 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--kappas", type=float, nargs="+", default=[0.21, 0.2705])
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--updates", type=int, default=1500, help="measured updates per run (plain HMC: x2)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/near_critical_cost.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from lftml.samplers import fused

    fused.warm_up()
    results = {"lambda": LAM, "chains": args.chains, "runs": [], "timing": "process CPU time, one thread"}
    t_all = time.process_time()
    for kappa in args.kappas:
        for L in args.sizes:
            theory = Phi4.hopping(Lattice((L, L)), kappa, LAM)
            n, ch, seed = args.updates, args.chains, args.seed
            sw = HMC.from_trajectory(theory, 1.0, 10, cluster=ClusterMove(theory, "sw"))
            res_sw, a_sw = one_run(sw, theory, ch, n, 100, 1, seed)
            mass = FourierMass.from_configs(res_sw.configs, theory)
            runs = {"hmc+sw": (a_sw, res_sw.acceptance)}
            fa = HMC.from_trajectory(theory, math.pi / 2, 4, kinetic=mass)
            r, a = one_run(fa, theory, ch, n, 100, 1, seed + 1)
            runs["fa-hmc"] = (a, r.acceptance)
            hmc = HMC.from_trajectory(theory, 1.0, 10)
            r, a = one_run(hmc, theory, ch, 2 * n, 100, 1, seed + 2)
            runs["hmc"] = (a, r.acceptance)
            heun = Langevin(theory, 0.02, "heun")
            r, a = one_run(heun, theory, ch, n, 1000, 10, seed + 3)
            runs["heun"] = (a, None)
            for name, (a, acc) in runs.items():
                entry = {"kappa": kappa, "L": L, "algorithm": name, "acceptance": acc, **a}
                if name == "heun":
                    entry["bias_sigma"] = {k: (a[k]["value"] - a_sw[k]["value"]) / math.hypot(a[k]["error"], a_sw[k]["error"])
                                           for k in OBSERVABLES}
                results["runs"].append(entry)
                print(f"kappa {kappa} L {L:3d} {name:7s} acc {acc if acc is None else round(acc, 3)} "
                      f"t/upd {a['cpu_per_update_s'] * 1e3:7.2f} ms  tau|M| {a['absM']['tau_int']:7.2f}"
                      f"({a['absM']['tau_int_error']:.2f})  cost|M| {a['absM']['cost_s'] * 1e3:8.3f} ms", flush=True)
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)
    fits = {}
    for kappa in args.kappas:
        for name in ("hmc", "fa-hmc", "hmc+sw", "heun"):
            rows = [r for r in results["runs"] if r["kappa"] == kappa and r["algorithm"] == name]
            if len(rows) >= 2:
                fits[f"{kappa}/{name}"] = fit_z([r["L"] for r in rows], [r["absM"]["tau_int"] for r in rows],
                                                [r["absM"]["tau_int_error"] for r in rows])
    results["z_fits_absM"] = fits
    results["total_cpu_s"] = time.process_time() - t_all
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(fits, indent=1))
    print(f"total CPU {results['total_cpu_s']:.0f} s")


if __name__ == "__main__":
    main()
