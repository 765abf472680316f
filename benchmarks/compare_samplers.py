"""A fair comparison of HMC and Langevin (and, given a trained model, the diffusion sampler):
precision, speed and scalability on the same theory, measured in the same run.

For each sampler and lattice size we report, for chi_2 = V(<M^2> - <M>^2):

* the estimate with its Gamma-method error and tau_int (in units of stored configurations),
* wall time per stored configuration (all chains together, one thread),
* cost per effectively independent configuration = time per config x 2 tau_int / n_chains,
* the deviation from the HMC value in combined standard errors (Langevin has a dt bias),
* the ratio of costs against HMC (the baseline, measured in the same run).

Usage::

    python benchmarks/compare_samplers.py [--sizes 8 16 32] [--configs 400] [--diffusion-model model.pt]

Precision at fixed cost is what matters: error^2 x time is the figure of merit printed last
(smaller is better; it does not depend on how long one runs).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from lftml import Lattice
from lftml.analysis import summarize
from lftml.run import RunConfig, run
from lftml.samplers import HMC, Langevin
from lftml.theories import Phi4


def measure_run(sampler, n_chains: int, n_configs: int, n_therm: int, every: int, seed: int) -> dict:
    run(sampler, RunConfig(n_chains=n_chains, n_configs=2, n_therm=2, every=1, seed=seed + 1))  # warm-up (JIT, caches)
    t0 = time.perf_counter()
    res = run(sampler, RunConfig(n_chains=n_chains, n_configs=n_configs, n_therm=n_therm, every=every, seed=seed))
    wall = time.perf_counter() - t0
    configs = res.configs  # (n_configs, n_chains, *shape)
    M = configs.mean(dim=tuple(range(2, configs.ndim))).numpy()
    s = summarize(M, sampler.theory.lattice.volume)
    chi = s["susceptibility"]
    per_config = wall / (n_configs + n_therm / every)  # thermalisation counted: it is part of the cost
    return {
        "chi": chi["value"], "err": chi["error"], "tau": chi["tau_int"],
        "time_per_config": per_config,
        "cost_indep": per_config * 2 * chi["tau_int"] / n_chains,
        "merit": chi["error"] ** 2 * wall,
        "acceptance": res.acceptance,
    }


def diffusion_run(model_path: str, theory, n: int, seed: int, steps: int = 100) -> dict:
    """Independent generated configurations (EM sampler): tau_int = 1/2 by construction, but the
    samples carry the model's bias, shown as z vs HMC."""
    from lftml.diffusion.model import load_model
    from lftml.diffusion.sampling import generate

    model = load_model(model_path)
    if tuple(model.lattice_shape) != theory.lattice.shape:
        raise SystemExit(f"the diffusion model is for {tuple(model.lattice_shape)}, not {theory.lattice.shape}")
    res = generate(model, n, sampler="em", steps=steps, seed=seed, device="cpu")
    M = res.configs.reshape(n, -1).mean(axis=1)[:, None]
    chi = summarize(M, theory.lattice.volume)["susceptibility"]
    per = res.wall_seconds / n
    return {"chi": chi["value"], "err": chi["error"], "tau": chi["tau_int"], "time_per_config": per,
            "cost_indep": per * 2 * chi["tau_int"], "merit": chi["error"] ** 2 * res.wall_seconds, "acceptance": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--kappa", type=float, default=0.21)
    ap.add_argument("--lam", type=float, default=0.022)
    ap.add_argument("--chains", type=int, default=16)
    ap.add_argument("--configs", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--diffusion-model", default=None, help="trained lftml diffusion model (32x32) to include")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"2d phi^4, hopping form kappa={args.kappa}, lambda={args.lam}; {args.chains} chains x {args.configs} configs;"
          f" one thread; baseline = HMC (Omelyan, trajectory length 1) of the same size, same run\n")
    header = f"{'L':>3} {'sampler':<22}{'chi_2':>14}{'tau_int':>9}{'ms/config':>11}{'ms/indep':>10}{'cost/HMC':>9}{'z vs HMC':>9}{'err^2*s':>10}"
    print(header)
    print("-" * len(header))
    for L in args.sizes:
        theory = Phi4.hopping(Lattice((L, L)), args.kappa, args.lam)
        rows = []
        hmc = measure_run(HMC.from_trajectory(theory, 1.0, 8, "omelyan"), args.chains, args.configs, 100, 1, args.seed)
        rows.append(("HMC omelyan 8x0.125", hmc))
        for dt in (0.1, 0.05):
            lang = measure_run(Langevin(theory, dt, "heun"), args.chains, args.configs, int(20 / dt), max(1, int(1.0 / dt)), args.seed)
            rows.append((f"Langevin heun dt={dt}", lang))
        if args.diffusion_model and L == 32:
            rows.append(("diffusion EM, 100 st.", diffusion_run(args.diffusion_model, theory, 256, args.seed)))
        for name, r in rows:
            z = (r["chi"] - hmc["chi"]) / math.hypot(r["err"], hmc["err"]) if r is not hmc else 0.0
            chi = f"{r['chi']:.4f}({r['err']:.4f})"
            print(f"{L:>3} {name:<22}{chi:>14}{r['tau']:>9.2f}{1e3 * r['time_per_config']:>11.2f}"
                  f"{1e3 * r['cost_indep']:>10.3f}{r['cost_indep'] / hmc['cost_indep']:>9.2f}{z:>9.2f}{r['merit']:>10.2e}")
        print()


if __name__ == "__main__":
    main()
