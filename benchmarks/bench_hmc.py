"""HMC throughput benchmark (a script, not a test).

    python benchmarks/bench_hmc.py [--quick] [--json PATH]

Single thread (torch.set_num_threads(1), NUMBA_NUM_THREADS=1, OMP/MKL/OPENBLAS threads 1).
Measures site-updates per second = force evaluations x lattice sites / wall time, with the
momentum refresh and the accept/reject included, for 2d phi^4 (kappa = 0.21, lambda = 0.022,
Omelyan, 10 MD steps, trajectory length 1: 21 forces per trajectory) on 32x32 with 1, 4, 16, 64,
256 chains and on 256x256 with 1 and 4 chains, for

* ``numpy``: a straightforward NumPy HMC written below (np.roll neighbour sums, batched chains),
  the baseline every ratio refers to, measured in the same run;
* ``eager``: ``lftml.samplers.HMC(backend="eager")`` (torch ops);
* ``fused``: ``lftml.samplers.HMC(backend="fused")`` (one numba call per trajectory).

Then ``lftml hmc`` end to end at 32x32 x 64 chains through :func:`lftml.run.run` with an HDF5
output file (measurements, records, checkpoints and writes included), with ``every`` 1 and 10.
Each timing is the best of several repeats. On a shared machine wall-clock time measures the other
users as much as this code, so rates are computed from the process CPU time by default (single
thread: CPU time = the wall time the run would take on an idle core); ``--wall`` uses wall-clock
time instead, and the CPU share (CPU time / wall time) is printed so the contention is visible.
See benchmarks/README.md for recorded numbers.
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from lftml.lattice import Lattice  # noqa: E402
from lftml.run import RunConfig, run  # noqa: E402
from lftml.samplers import HMC, ChainRNG  # noqa: E402
from lftml.samplers import fused  # noqa: E402
from lftml.samplers.integrators import OMELYAN_LAMBDA  # noqa: E402
from lftml.theories.phi4 import Phi4  # noqa: E402

KAPPA, LAM = 0.21, 0.022
N_STEPS, TRAJ = 10, 1.0


# --------------------------------------------------------------------------- NumPy reference
class NumpyHMC:
    """Straightforward NumPy HMC (Omelyan 2MN, merged kicks) for
    S = sum_x [-c_hop sum_mu phi_x phi_{x+mu} + c2 phi^2 + c4 phi^4], fields (n_chains, *shape)."""

    def __init__(self, coefficients, ndim: int, eps: float, n_steps: int):
        self.c_hop, self.c2, self.c4 = coefficients
        self.axes = tuple(range(1, ndim + 1))
        self.eps, self.n_steps = eps, n_steps

    def force(self, phi):
        nb = sum(np.roll(phi, -1, axis=a) + np.roll(phi, 1, axis=a) for a in self.axes)
        return self.c_hop * nb - 2.0 * self.c2 * phi - 4.0 * self.c4 * phi * phi * phi

    def action(self, phi):
        hop = sum(np.roll(phi, -1, axis=a) for a in self.axes)
        return (-self.c_hop * phi * hop + self.c2 * phi * phi + self.c4 * (phi * phi) ** 2).sum(axis=self.axes)

    def step(self, phi, s0, rng: np.random.Generator):
        eps, lam = self.eps, OMELYAN_LAMBDA
        pi = rng.standard_normal(phi.shape)
        h0 = 0.5 * (pi**2).sum(axis=self.axes) + s0
        x = phi.copy()
        pi += lam * eps * self.force(x)
        for i in range(self.n_steps):
            x += 0.5 * eps * pi
            pi += (1.0 - 2.0 * lam) * eps * self.force(x)
            x += 0.5 * eps * pi
            pi += (2.0 * lam if i < self.n_steps - 1 else lam) * eps * self.force(x)
        s1 = self.action(x)
        dH = 0.5 * (pi**2).sum(axis=self.axes) + s1 - h0
        acc = np.log(rng.random(phi.shape[0])) < -dH
        return np.where(acc.reshape(-1, *([1] * len(self.axes))), x, phi), np.where(acc, s1, s0), acc


# --------------------------------------------------------------------------- timing
CLOCK = time.process_time  # set to time.perf_counter by --wall


def _best_times(makers: dict, min_time: float, repeats: int) -> tuple[dict, float]:
    """Best-of-``repeats`` seconds per trajectory (by ``CLOCK``) for each stepper; the steppers take
    turns (round robin) so that a burst of load elsewhere hits them alike. Each turn runs >= ``min_time``
    seconds. Also returns the lowest CPU share (CPU time / wall time) seen in a best turn."""
    steps, n, best, share = {}, {}, {}, {}
    for name, make in makers.items():
        step = make()
        step()  # warm-up (compilation, caches, allocator)
        t0 = CLOCK()
        step()
        n[name] = max(1, int(min_time / max(CLOCK() - t0, 1e-6)))
        steps[name], best[name], share[name] = step, float("inf"), float("nan")
    for _ in range(repeats):
        for name, step in steps.items():
            w0, c0, t0 = time.perf_counter(), time.process_time(), CLOCK()
            for _ in range(n[name]):
                step()
            t = (CLOCK() - t0) / n[name]
            if t < best[name]:
                best[name], share[name] = t, (time.process_time() - c0) / (time.perf_counter() - w0)
    return best, min(share.values())


def stepper_numpy(theory, n_chains: int):
    def make():
        ref = NumpyHMC(theory.coefficients, theory.lattice.ndim, TRAJ / N_STEPS, N_STEPS)
        rng = np.random.default_rng(1)
        state = {"phi": rng.standard_normal((n_chains, *theory.lattice.shape))}
        state["s"] = ref.action(state["phi"])

        def step():
            state["phi"], state["s"], _ = ref.step(state["phi"], state["s"], rng)

        return step

    return make


def stepper_lftml(theory, n_chains: int, backend: str):
    def make():
        hmc = HMC.from_trajectory(theory, TRAJ, N_STEPS, "omelyan", backend=backend)
        rng = ChainRNG.from_seed(1, n_chains)
        phi = torch.randn((n_chains, *theory.lattice.shape), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        box = [hmc.init(phi)]

        def step():
            box[0], _ = hmc.step(box[0], rng)

        return step

    return make


def breakdown(n_chains: int = 64, shape=(32, 32), min_time: float = 0.2, repeats: int = 5) -> dict:
    """Where a fused trajectory's time goes: the MD kernel alone vs. the momentum refresh (ChainRNG:
    Philox4x32-10 + Box-Muller, float64) and the uniforms for jitter and accept/reject, drawn on their own."""
    theory = Phi4.hopping(Lattice(shape), KAPPA, LAM)
    phi = torch.randn((n_chains, *shape), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rng = ChainRNG.from_seed(2, n_chains)
    pi = rng.normal(shape)

    def make_kernel():
        return lambda: fused.integrate(theory, phi, pi, TRAJ / N_STEPS, N_STEPS, "omelyan")

    def make_rng():
        return lambda: (rng.uniform(), rng.normal(shape), rng.uniform())

    makers = {"kernel": make_kernel, "rng": make_rng}
    best, _ = _best_times(makers, min_time, repeats)
    work = (2 * N_STEPS + 1) * n_chains * theory.lattice.volume
    return {"kernel_ms": best["kernel"] * 1e3, "rng_ms": best["rng"] * 1e3, "kernel_Gsites_per_s": work / best["kernel"] / 1e9,
            "rng_cap_Gsites_per_s": work / best["rng"] / 1e9}


def end_to_end(backend: str, n_chains: int, n_traj: int, every: int) -> dict:
    theory = Phi4.hopping(Lattice((32, 32)), KAPPA, LAM)
    hmc = HMC.from_trajectory(theory, TRAJ, N_STEPS, "omelyan", backend=backend)
    n_configs = max(1, n_traj // every)
    cfg = RunConfig(n_chains=n_chains, n_configs=n_configs, n_therm=0, every=every, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ens.h5"
        w0, c0 = time.perf_counter(), time.process_time()
        res = run(hmc, cfg, out)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        size = out.stat().st_size
    updates = n_configs * every
    return {
        "backend": backend, "n_chains": n_chains, "trajectories": updates, "every": every, "wall_s": wall,
        "cpu_s": cpu, "site_updates_per_s": updates * hmc.forces_per_update * n_chains * theory.lattice.volume
        / (wall if CLOCK is time.perf_counter else cpu),
        "acceptance": res.acceptance, "file_MB": size / 1e6,
    }


def startup_times() -> dict:
    """Seconds for `import numba` + loading the cached kernels, and for a cold compile (empty cache)."""
    code = ("import time, torch; from lftml.samplers import fused; t = time.perf_counter(); "
            "fused.warm_up(); print(time.perf_counter() - t)")
    out = {}
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    out["cached_s"] = float(r.stdout.strip() or "nan")
    with tempfile.TemporaryDirectory() as tmp:
        env["NUMBA_CACHE_DIR"] = tmp
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)  # NUMBA_CACHE_DIR wins
        out["cold_compile_s"] = float(r.stdout.strip() or "nan")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short timings (a few seconds per row)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end lftml.run measurement")
    ap.add_argument("--wall", action="store_true", help="rates from wall-clock time (default: process CPU time)")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if args.wall else time.process_time
    min_time, repeats = (0.1, 3) if args.quick else (0.2, 8)
    if not fused.available():
        print("numba is not installed: the fused rows are skipped", file=sys.stderr)
    backends = ["numpy", "eager"] + (["fused"] if fused.available() else [])

    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}, torch {torch.__version__}, "
          f"numpy {np.__version__}, threads: torch {torch.get_num_threads()}, NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']}")
    print(f"# 2d phi^4 kappa={KAPPA} lambda={LAM}, Omelyan, {N_STEPS} MD steps, {2 * N_STEPS + 1} forces/trajectory, float64; "
          f"rates in G site-updates/s from {'wall-clock' if args.wall else 'process CPU'} time")
    if fused.available():
        st = startup_times()
        print(f"# fused start-up: cached kernels {st['cached_s']:.2f} s (numba import included), cold compile {st['cold_compile_s']:.2f} s")
    rows = []
    cases = [((32, 32), n) for n in (1, 4, 16, 64, 256)] + [((256, 256), n) for n in (1, 4)]
    head = f"{'lattice':>9} {'chains':>6} " + " ".join(f"{b + ' G/s':>11}" for b in backends) + " " + " ".join(
        f"{b + '/numpy':>12}" for b in backends[1:]) + f" {'cpu share':>10}"
    print(head)
    for shape, n in cases:
        theory = Phi4.hopping(Lattice(shape), KAPPA, LAM)
        work = (2 * N_STEPS + 1) * n * theory.lattice.volume
        makers = {b: stepper_numpy(theory, n) if b == "numpy" else stepper_lftml(theory, n, b) for b in backends}
        best, share = _best_times(makers, min_time, repeats)
        rate = {b: work / best[b] / 1e9 for b in backends}
        rows.append({"lattice": "x".join(map(str, shape)), "chains": n, **{f"{b}_Gsites_per_s": rate[b] for b in backends},
                     "cpu_share": share})
        print(f"{'x'.join(map(str, shape)):>9} {n:>6} " + " ".join(f"{rate[b]:>11.3f}" for b in backends) + " "
              + " ".join(f"{rate[b] / rate['numpy']:>12.1f}" for b in backends[1:]) + f" {share:>10.2f}", flush=True)
    bd = None
    if fused.available():
        bd = breakdown(min_time=min_time, repeats=repeats)
        print(f"\n# fused at 32x32 x 64 chains, per trajectory: MD kernel alone {bd['kernel_ms']:.2f} ms "
              f"({bd['kernel_Gsites_per_s']:.2f} G/s); momentum refresh + uniforms (ChainRNG, Philox4x32-10) "
              f"{bd['rng_ms']:.2f} ms (alone it caps the rate at {bd['rng_cap_Gsites_per_s']:.2f} G/s)")
    e2e = []
    if not args.no_e2e:
        n_traj = 60 if args.quick else 300
        print(f"\n# end to end: lftml.run.run, 32x32 x 64 chains, {n_traj} trajectories, HDF5 output")
        print(f"{'backend':>8} {'every':>5} {'wall s':>8} {'cpu s':>8} {'G/s':>7} {'accept':>7}")
        for b in backends[1:]:
            for every in (1, 10):
                best = None
                for _ in range(1 if args.quick else 2):
                    r = end_to_end(b, 64, n_traj if b == "fused" else n_traj // 3, every)
                    best = r if best is None or r["site_updates_per_s"] > best["site_updates_per_s"] else best
                e2e.append(best)
                print(f"{b:>8} {every:>5} {best['wall_s']:>8.2f} {best['cpu_s']:>8.2f} {best['site_updates_per_s'] / 1e9:>7.3f} "
                      f"{best['acceptance']:>7.3f}",
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "breakdown": bd, "end_to_end": e2e}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
