"""Complex Langevin throughput: steps per second and chain-steps per second for each model.

    python benchmarks/bench_cl.py [--chains 64] [--time 5]

Prints one JSON line per (model, scheme). Numbers depend on the machine and its load; use them to
size runs (a 4^4 Bose gas step costs ~ 512 x the one-site work per chain).
"""

from __future__ import annotations

import argparse
import json
import time

from lftml.complex import BoseGas, ComplexLangevin, GaussianModel, QuarticModel, U1OneLinkModel, run_complex_langevin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chains", type=int, default=64)
    parser.add_argument("--time", type=float, default=5.0, help="Langevin time per chain")
    args = parser.parse_args()
    models = [GaussianModel(1 + 1j), QuarticModel(1 + 1j, 1.0), U1OneLinkModel(1.0, 1.0, 1.0),
              BoseGas((4, 4, 4, 4), 1.0, 1.0, 1.0)]
    for model in models:
        for scheme in ("euler", "heun"):
            s = ComplexLangevin(step_size=0.01, scheme=scheme, thermalisation_time=0.0, bin_time=args.time / 10, n_bins=10)
            t0 = time.perf_counter()
            run = run_complex_langevin(model, s, args.chains, seed=0)
            wall = time.perf_counter() - t0
            print(json.dumps({"model": model.name, "scheme": scheme, "chains": args.chains, "steps": run.n_steps,
                              "steps_per_s": run.n_steps / wall, "chain_steps_per_s": run.n_steps * args.chains / wall}))


if __name__ == "__main__":
    main()
