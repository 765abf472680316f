"""`lftml hmc` end to end against a plain-C complete HMC (benchmarks/hmc_reference.c), in one run.

    python benchmarks/bench_hmc_vs_c.py [--trajectories N] [--repeats R] [--quick] [--json PATH] [--baseline-src DIR]

Both run 2d phi^4 in the hopping form at kappa = 0.21, lambda = 0.022 on 32x32 with 64 chains,
Omelyan 2MN, 10 MD steps, trajectory length 1 (21 force evaluations per trajectory), float64,
storing/measuring every 10th trajectory, one thread each (the C program is single-threaded; lftml
runs with OMP/MKL/OPENBLAS/NUMBA threads = 1 and torch.set_num_threads(1) through the environment).
The C program is compiled with ``cc -O2`` (skipped with a message when no compiler is found).

``lftml hmc`` runs as a separate process through the real CLI (``python -m lftml hmc ... --out
FILE --json``), HDF5 output, observables, checkpoints and the final analysis included. Times are the
child processes' CPU time (``resource.getrusage(RUSAGE_CHILDREN)``): on a shared machine wall time
measures the other users as much as this code; single-threaded, CPU time is what an idle core would
take. Reported: site-updates/s (force evaluations x sites / time) of

* ``C``: the whole C process;
* ``lftml (process)``: the whole ``lftml hmc`` process, Python start-up and the numba kernel load
  included (a fixed ~1-2 s);
* ``lftml (run)``: the same minus the CPU time of an identical command with one stored
  configuration (start-up, kernel load, file creation and analysis of a tiny run), i.e. the rate
  of the sampling itself, end to end.

Each is the best of ``--repeats`` turns, the programs taking turns. Then, in this process, the cost
of the random numbers of one trajectory (64 x 1024 normals + 2 x 64 uniforms) with the legacy stream
(one torch.Generator per chain) and with the Philox stream, and one fused trajectory with pre-drawn
momenta against the inline-drawing kernel (``fused.hmc_step``). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _child import ONE_THREAD, run_child

HERE = Path(__file__).resolve().parent
L, CHAINS, MD_STEPS, TRAJ, KAPPA, LAM, EVERY = 32, 64, 10, 1.0, 0.21, 0.022, 10
ENV = {**os.environ, **ONE_THREAD}


def _child_cpu(cmd: list[str], src: Path | None = None) -> tuple[float, str]:
    """CPU seconds (user + system) and stdout of ``cmd``; ``src``: put that source tree first on PYTHONPATH."""
    env = ENV if src is None else {**ENV, "PYTHONPATH": os.pathsep.join([str(src), *ENV.get("PYTHONPATH", "").split(os.pathsep)])}
    out, cpu = run_child(cmd, env)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return cpu, out.stdout


def compile_reference(tmp: Path) -> Path | None:
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    exe = tmp / "hmc_reference"
    subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "hmc_reference.c"), "-lm"], check=True)
    return exe


def lftml_cmd(out: Path, n_traj: int) -> list[str]:
    return [sys.executable, "-m", "lftml", "hmc", "--shape", str(L), str(L), "--kappa", str(KAPPA), "--lam", str(LAM),
            "--chains", str(CHAINS), "--therm", "0", "--n-configs", str(max(1, n_traj // EVERY)), "--every", str(EVERY),
            "--md-steps", str(MD_STEPS), "--traj-length", str(TRAJ), "--seed", "1", "--out", str(out), "--no-progress",
            "--json"]


def stream_costs(repeats: int = 5, n: int = 50) -> dict:
    """CPU ms per trajectory: random numbers of the legacy and the Philox stream; HMC.step with pre-drawn
    momenta and with the inline kernel (best of ``repeats`` turns of ``n`` calls, taking turns)."""
    import time

    import torch

    torch.set_num_threads(1)
    from lftml.lattice import Lattice
    from lftml.samplers import HMC, fused
    from lftml.samplers.rng import ChainRNG, LegacyChainRNG
    from lftml.theories.phi4 import Phi4

    shape = (L, L)
    theory = Phi4.hopping(Lattice(shape), KAPPA, LAM)
    hmc = HMC.from_trajectory(theory, TRAJ, MD_STEPS, "omelyan", backend="fused")
    legacy, philox = LegacyChainRNG.from_seed(1, CHAINS), ChainRNG.from_seed(1, CHAINS)
    box = {"a": hmc.init(0.5 * ChainRNG.from_seed(0, CHAINS, 0).normal(shape))}
    box["b"] = box["a"]
    inline = fused.draws_inline

    def step(key, inline_ok):
        fused.draws_inline = inline if inline_ok else (lambda *a: False)
        try:
            box[key], _ = hmc.step(box[key], philox)
        finally:
            fused.draws_inline = inline

    jobs = {
        "legacy_rng": lambda: (legacy.uniform(), legacy.normal(shape), legacy.uniform()),
        "philox_rng": lambda: (philox.uniform(), philox.normal(shape), philox.uniform()),
        "step_predrawn": lambda: step("a", False),
        "step_inline": lambda: step("b", True),
    }
    best = {k: float("inf") for k in jobs}
    for job in jobs.values():
        job()  # warm-up, compilation
    for _ in range(repeats):
        for k, job in jobs.items():
            t0 = time.process_time()
            for _ in range(n):
                job()
            best[k] = min(best[k], (time.process_time() - t0) / n * 1e3)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trajectories", type=int, default=1000, help="trajectories per chain (default 1000)")
    ap.add_argument("--repeats", type=int, default=3, help="turns per program; the best counts (default 3)")
    ap.add_argument("--quick", action="store_true", help="300 trajectories, 1 turn")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="also run `lftml hmc` from this source tree (e.g. the main branch's src/) in the same turns")
    args = ap.parse_args(argv)
    n_traj, repeats = (300, 1) if args.quick else (args.trajectories, args.repeats)
    work = n_traj * (2 * MD_STEPS + 1) * CHAINS * L * L
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        exe = compile_reference(tmp)
        if exe is None:
            print("no C compiler (cc, gcc or clang) found: the C reference is skipped", file=sys.stderr)
        best = {"C": float("inf"), "lftml_process": float("inf"), "lftml_startup": float("inf"),
                "import_lftml_cli": float("inf")}
        trees = {"": None}
        if args.baseline_src is not None:
            trees["baseline_"] = args.baseline_src.resolve()
            best.update({"baseline_lftml_process": float("inf"), "baseline_lftml_startup": float("inf"),
                         "baseline_import_lftml_cli": float("inf")})
        info = {}
        for turn in range(repeats):
            for pre, src in trees.items():
                t, _ = _child_cpu([sys.executable, "-c", "import lftml.cli"], src)
                best[pre + "import_lftml_cli"] = min(best[pre + "import_lftml_cli"], t)
            for pre, src in trees.items():
                if pre:
                    t, out = _child_cpu(lftml_cmd(tmp / f"base{turn}.h5", n_traj), src)
                    best[pre + "lftml_process"] = min(best[pre + "lftml_process"], t)
                    t, _ = _child_cpu(lftml_cmd(tmp / f"basestartup{turn}.h5", EVERY), src)
                    best[pre + "lftml_startup"] = min(best[pre + "lftml_startup"], t)
            if exe is not None:
                t, out = _child_cpu([str(exe), str(L), str(CHAINS), str(n_traj), str(MD_STEPS), str(TRAJ), str(KAPPA),
                                     str(LAM), str(EVERY)])
                best["C"] = min(best["C"], t)
                info["C"] = json.loads(out)
            t, out = _child_cpu(lftml_cmd(tmp / f"run{turn}.h5", n_traj))
            best["lftml_process"] = min(best["lftml_process"], t)
            info["lftml"] = {"acceptance": json.loads(out)["acceptance"]}
            t, _ = _child_cpu(lftml_cmd(tmp / f"startup{turn}.h5", EVERY))
            best["lftml_startup"] = min(best["lftml_startup"], t)
    rates = {
        "lftml_process": work / best["lftml_process"],
        "lftml_run": work / max(best["lftml_process"] - best["lftml_startup"], 1e-9),
    }
    if args.baseline_src is not None:
        rates["baseline_lftml_process"] = work / best["baseline_lftml_process"]
        rates["baseline_lftml_run"] = work / max(best["baseline_lftml_process"] - best["baseline_lftml_startup"], 1e-9)
    if exe is not None:
        rates["C"] = work / best["C"]
    print(f"# 2d phi^4 kappa={KAPPA} lambda={LAM}, {L}x{L} x {CHAINS} chains, {n_traj} trajectories, every {EVERY}, "
          f"Omelyan {MD_STEPS} steps; CPU time of the child processes, best of {repeats}")
    print(f"{'program':>18} {'CPU s':>8} {'G site-upd/s':>13} {'vs C':>6} {'acceptance':>11}")
    rows = [("C", best["C"], "C"), ("lftml (process)", best["lftml_process"], "lftml_process"),
            ("lftml (run)", best["lftml_process"] - best["lftml_startup"], "lftml_run")]
    if args.baseline_src is not None:
        rows += [("baseline (process)", best["baseline_lftml_process"], "baseline_lftml_process"),
                 ("baseline (run)", best["baseline_lftml_process"] - best["baseline_lftml_startup"], "baseline_lftml_run")]
    for name, t, key in rows:
        if key not in rates:
            continue
        ratio = rates[key] / rates["C"] if "C" in rates else float("nan")
        acc = info["C" if key == "C" else "lftml"]["acceptance"] if not key.startswith("baseline") else float("nan")
        print(f"{name:>18} {t:>8.2f} {rates[key] / 1e9:>13.3f} {ratio:>6.2f} {acc:>11.4f}")
    print(f"# lftml start-up + tiny run (subtracted for 'run'): {best['lftml_startup']:.2f} s CPU; "
          f"`python -c 'import lftml.cli'`: {best['import_lftml_cli']:.2f} s CPU")
    if args.baseline_src is not None:
        print(f"# baseline start-up + tiny run: {best['baseline_lftml_startup']:.2f} s CPU; its import lftml.cli: "
              f"{best['baseline_import_lftml_cli']:.2f} s CPU")
    sc = stream_costs(repeats=2 if args.quick else 5)
    work_traj = (2 * MD_STEPS + 1) * CHAINS * L * L
    print(f"# in this process, CPU ms per trajectory (best of turns): random numbers legacy {sc['legacy_rng']:.2f}, "
          f"Philox {sc['philox_rng']:.2f} ({sc['legacy_rng'] / sc['philox_rng']:.1f}x faster); HMC.step fused with "
          f"pre-drawn momenta {sc['step_predrawn']:.2f} ({work_traj / sc['step_predrawn'] / 1e6:.3f} G/s), inline "
          f"{sc['step_inline']:.2f} ({work_traj / sc['step_inline'] / 1e6:.3f} G/s)")
    if args.json:
        args.json.write_text(json.dumps({"trajectories": n_traj, "cpu_s": best, "rates": rates, "info": info,
                                         "stream_ms_per_trajectory": sc}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
