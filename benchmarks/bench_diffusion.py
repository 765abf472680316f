"""Diffusion-model speed benchmark: training step time and sampling throughput on 32x32.

    python benchmarks/bench_diffusion.py [--threads 1] [--quick] [--out benchmarks/diffusion_bench.json]

Measures, for the ``fast`` and ``paper`` presets: seconds per training step (batch 32 and 64, forward +
backward + Adam + EMA, float32) and seconds to sample 1,024 configurations (EM with 100 steps,
probability-flow ODE with 50 Heun steps = 98 evaluations). Sampling cost is extrapolated from a
smaller batch where noted (``--quick``). The reference code needs ~4 s per training step at batch
64 on one core and ~65 core-minutes for 1,024 samples with 200 steps (issue #4).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from lftml.diffusion.model import ScoreModel
from lftml.diffusion.nets import UNet, preset
from lftml.diffusion.losses import dsm_loss
from lftml.diffusion.sampling import sample
from lftml.diffusion.sde import VESDE


def make_model(name: str) -> ScoreModel:
    net = UNet(preset(name), torch.Generator().manual_seed(0))
    net.reset_parameters(torch.Generator().manual_seed(0))
    ps = torch.full((32, 32), 0.07)
    return ScoreModel(net, VESDE(25.0), (32, 32), parametrization="gaussian", sigma_data=0.26, power_spectrum=ps)


def time_train(model: ScoreModel, batch: int, steps: int) -> float:
    opt = torch.optim.Adam(model.net.parameters(), lr=1e-3)
    x = 0.25 * torch.randn(batch, 32, 32)
    g = torch.Generator().manual_seed(1)
    model.net.to(memory_format=torch.channels_last)
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        loss = dsm_loss(model, x, model.sde, g, "mixed")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


@torch.no_grad()
def time_sample(model: ScoreModel, sampler: str, steps: int, n: int) -> float:
    model.eval()
    g = torch.Generator().manual_seed(2)
    t0 = time.perf_counter()
    sample(model, model.sde, (n, 32, 32), sampler=sampler, steps=steps, generator=g)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="fewer steps; sampling timed on 256 configs and scaled x4")
    ap.add_argument("--presets", nargs="+", default=["fast", "paper"])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = {"threads": a.threads, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
           "lattice": [32, 32], "results": {}}
    for name in a.presets:
        m = make_model(name)
        r = {"parameters": sum(p.numel() for p in m.net.parameters())}
        for b in (32, 64):
            steps = 5 if (a.quick or name == "paper") else 20
            r[f"train_step_s_batch{b}"] = time_train(m, b, steps)
        n = 256 if (a.quick or name == "paper") else 1024
        scale = 1024 / n
        steps_em = 100 if name == "fast" else 10
        r[f"sample_1024_em{100}_s"] = time_sample(m, "em", steps_em, n) * scale * (100 / steps_em)
        if name == "fast":
            r["sample_1024_ode50_s"] = time_sample(m, "ode", 50, n) * scale
        r["sampling_extrapolated"] = bool(scale != 1 or steps_em != 100)
        res["results"][name] = r
        print(name, json.dumps(r), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
