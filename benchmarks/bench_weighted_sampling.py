"""Cost of exactly weighted 32x32 samples (issue 8 target: 1,024 in <= 30 CPU-seconds).

    python benchmarks/bench_weighted_sampling.py [--n 1024] [--steps 20] [--out benchmarks/weighted_sampling.json]

For the ``equi`` (default) and ``fast`` presets at 32x32, kappa = 0.21, lambda = 0.022: CPU seconds
(``time.process_time``, one thread) to draw ``n`` samples with the ``exp`` sampler and their exact
path weights (``generate(..., weights="path")``), for four settings measured in one run:
the old defaults (network on every step, batch 64) as the stated baseline, the cut alone
(``network_below = 4``), the cache-sized batch alone, and both (the current default). Untrained
weights cost what trained ones cost (the network runs either way); ``sigma_data`` = 0.223 and the
power spectrum are those of a trained 32x32 model (model units), so the cut falls where it does in
practice (11 of 20 steps). Ratios are against the baseline of the same preset in the same run.
CPU time includes system time (page faults); the allocator setting of the CLI
(:func:`lftml.devices.keep_freed_memory`) is on unless ``--no-keep-freed-memory`` (process-wide, so
compare two runs for its effect).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from lftml.diffusion.model import ScoreModel
from lftml.diffusion.nets import UNet, preset
from lftml.diffusion.sampling import auto_batch_size, generate
from lftml.diffusion.sde import VESDE
from lftml.lattice import Lattice
from lftml.theories.phi4 import Phi4


def make_model(name: str) -> ScoreModel:
    net = UNet(preset(name), torch.Generator().manual_seed(0))
    net.reset_parameters(torch.Generator().manual_seed(0))  # nonzero output layers: the network really runs
    theory = Phi4.hopping(Lattice((32, 32)), 0.21, 0.022).to_dict()
    p = torch.fft.fftfreq(32).abs() * 2 * torch.pi
    k2 = (2 - 2 * torch.cos(p))[:, None] + (2 - 2 * torch.cos(p))[None, :]
    ps = 0.05 / (k2 + 0.2)  # a free-field-like spectrum of the right size (per-site variance ~ 0.05)
    return ScoreModel(net, VESDE(25.0), (32, 32), theory=theory, parametrization="gaussian", sigma_data=0.223,
                      power_spectrum=ps, scaling=None).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--presets", default="equi,fast")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-keep-freed-memory", action="store_true",
                    help="measure without lftml.devices.keep_freed_memory (the CLI always calls it)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if not a.no_keep_freed_memory:
        from lftml.devices import keep_freed_memory

        print("glibc keeps freed memory:", keep_freed_memory())
    rows = []
    for name in a.presets.split(","):
        model = make_model(name)
        settings = [("old defaults: every step, batch 64", float("inf"), 64),
                    ("network below 4 sigma_data, batch 64", 4.0, 64),
                    (f"every step, batch {auto_batch_size(model)} (auto)", float("inf"), None),
                    (f"default: below 4 sigma_data, batch {auto_batch_size(model)}", 4.0, None)]
        base = None
        for label, below, batch in settings:
            t0 = time.process_time()  # user + system
            res = generate(model, a.n, sampler="exp", steps=a.steps, seed=1, batch_size=batch, device="cpu",
                           weights="path", network_below=below)
            cpu = time.process_time() - t0
            base = cpu if base is None else base
            row = {"preset": name, "setting": label, "cpu_seconds": cpu, "speedup_vs_old_defaults": base / cpu,
                   "network_evaluations_per_sample": res.settings["network_evaluations_per_sample"],
                   "batch_size": res.settings["batch_size"]}
            rows.append(row)
            print(f"{name:5s} {label:45s} {cpu:7.1f} CPU-s for {a.n}  ({base / cpu:.2f}x, "
                  f"{row['network_evaluations_per_sample']} evaluations, batch {row['batch_size']})", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"n": a.n, "steps": a.steps, "machine": platform.processor() or platform.machine(),
                       "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
