"""Scan throughput with 1 and 2 local Dask workers (ratio in one run) and the scheduler's per-task overhead.

    python benchmarks/bench_scan.py [--points 8] [--n-configs 400] [--tiny 400] [--json out.json]

* Throughput: the same scan (``--points`` points of 8x8 phi^4, 4 chains) on a LocalCluster with 1
  and then 2 worker processes (one thread each). Workers are warmed up first (lftml imported, the
  fused kernel loaded), so the figure is the steady state a long scan sees; the start-up of a
  cluster is measured separately.
* Overhead: ``--tiny`` no-op tasks through ``client.submit`` / ``as_completed`` on 2 workers: the
  wall time per task is what the scheduler adds to every point (a point must be much longer).

Timings are wall-clock on a shared machine; ratios measured in one run are what to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _noop(x: int) -> int:
    return x


def _warm() -> int:
    from lftml.scan.grid import click_command

    click_command("hmc")
    return os.getpid()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--n-configs", type=int, default=400)
    ap.add_argument("--tiny", type=int, default=400)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from distributed import Client, LocalCluster, as_completed

    from lftml.scan import parse_scan, run_scan

    kappas = [round(0.20 + 0.01 * i, 4) for i in range(args.points)]
    spec = parse_scan({"grid": {"kappa": kappas},
                       "fixed": {"shape": [8, 8], "lam": 0.022, "chains": 4, "n_configs": args.n_configs,
                                 "therm": 50, "seed": 1}})
    results: dict = {"points": args.points, "n_configs": args.n_configs, "lattice": "8x8", "chains": 4,
                     "cpu_count": os.cpu_count(), "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 2):
            t0 = time.perf_counter()
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                              silence_logs=40) as lc, Client(lc) as client:
                client.run(_warm)
                startup = time.perf_counter() - t0
                # one warm-up point per worker (numba kernel load, first-touch allocations)
                run_scan(parse_scan({"grid": {"seed": list(range(100, 100 + n))},
                                     "fixed": {"shape": [8, 8], "lam": 0.022, "chains": 4, "n_configs": 20,
                                               "therm": 5, "kappa": 0.2}}), Path(tmp) / f"warm{n}", executor=client)
                t1 = time.perf_counter()
                run_scan(spec, Path(tmp) / f"w{n}", executor=client)
                wall = time.perf_counter() - t1
                results[f"workers_{n}"] = {"startup_s": startup, "wall_s": wall, "points_per_s": args.points / wall}
                if n == 2:
                    futs = [client.submit(_noop, i, pure=False) for i in range(20)]
                    client.gather(futs)  # warm the path
                    t2 = time.perf_counter()
                    futs = [client.submit(_noop, i, pure=False) for i in range(args.tiny)]
                    for _ in as_completed(futs):
                        pass
                    per = (time.perf_counter() - t2) / args.tiny
                    results["tiny_task_overhead_ms"] = 1e3 * per
    results["speedup_2_vs_1"] = results["workers_2"]["points_per_s"] / results["workers_1"]["points_per_s"]
    results["load_average_end"] = os.getloadavg()
    for n in (1, 2):
        r = results[f"workers_{n}"]
        print(f"{n} worker(s): {r['points_per_s']:.3f} points/s ({r['wall_s']:.1f} s for {args.points} points; "
              f"cluster start-up {r['startup_s']:.1f} s)")
    print(f"speed-up 2 vs 1 workers: {results['speedup_2_vs_1']:.2f}")
    print(f"scheduler overhead per tiny task (2 workers): {results['tiny_task_overhead_ms']:.2f} ms")
    print(f"load average start/end: {results['load_average_start']} / {results['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
