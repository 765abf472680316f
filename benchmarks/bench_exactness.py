"""Exactness numbers of issue 8 (part A): baseline vs (small) diffusion model as exact proposals.

For each (L, kappa) at lambda = 0.022: one HMC run (chains split: first half fits the baseline and
trains the model, second half is the reference), then

* baseline (Gaussian; sign-aligned mixture at kappa = 0.5): exact samples with exact log w;
* a small model (tiny preset, gaussian parametrisation, ``--updates`` steps) sampled with the exp
  sampler and exact path weights (``--steps`` network evaluations);

and for each: ESS/N, independence-Metropolis acceptance, sigma_lw/sqrt(V), reweighted <|M|> and
<S>/V with z against the HMC reference. Also the cost of 1024 weighted 32x32 samples (fast preset,
20 steps; an untrained network costs the same as a trained one).

    python benchmarks/bench_exactness.py --out benchmarks/exactness.json

Sizes are chosen for a few CPU-minutes per point on the shared 2-core machine; say so when quoting.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from lftml.analysis import summarize
from lftml.diffusion.baselines import GaussianBaseline, MixtureBaseline
from lftml.diffusion.evaluation import independence_metropolis
from lftml.diffusion.model import ScoreModel
from lftml.diffusion.nets import UNet, preset
from lftml.diffusion.sampling import generate
from lftml.diffusion.sde import VESDE
from lftml.diffusion.training import TrainConfig, train
from lftml.diffusion.workflows import weight_diagnostics
from lftml.lattice import Lattice
from lftml.run import RunConfig, run
from lftml.samplers.hmc import HMC
from lftml.theories.phi4 import Phi4


def hmc_data(L, kappa, seed, n_chains=8, n_configs=150, every=5, therm=200):
    theory = Phi4.hopping(Lattice((L, L)), kappa, 0.022)
    sampler = HMC(theory, step_size=0.1, n_steps=10)
    cfg = RunConfig(n_chains=n_chains, n_configs=n_configs, n_therm=therm, every=every, seed=seed,
                    start="cold" if kappa >= 0.4 else "hot")
    res = run(sampler, cfg)
    return theory, np.asarray(res.configs)  # (n_configs, n_chains, L, L)


def evaluate(phi, log_w, theory, ref, seed):
    V = theory.lattice.volume
    S = theory.action(torch.as_tensor(phi)).numpy()
    M = phi.reshape(len(phi), -1).mean(1)
    rw = summarize(M[:, None], V, action_density=(S / V)[:, None], log_weights=log_w[:, None])
    _, acc = independence_metropolis(log_w, np.random.default_rng(seed))
    out = {**weight_diagnostics(log_w, V), "acceptance": acc}
    for k in ("abs_magnetisation", "action_density"):
        z = (rw[k]["value"] - ref[k]["value"]) / math.hypot(rw[k]["error"], ref[k]["error"])
        out[k] = {"value": rw[k]["value"], "error": rw[k]["error"], "z_vs_hmc": z}
    return out


def point(L, kappa, updates, steps, n, seed=1):
    t0 = time.perf_counter()
    theory, c = hmc_data(L, kappa, seed)
    t_hmc = time.perf_counter() - t0
    h = c.shape[1] // 2
    fit = c[:, :h].reshape(-1, L, L)
    test = c[:, h:]
    V = L * L
    Mt = test.reshape(*test.shape[:2], -1).mean(-1)
    St = theory.action(torch.as_tensor(test)).numpy() / V
    ref = summarize(Mt, V, action_density=St)
    kind = "mixture" if kappa >= 0.4 else "gaussian"
    base = (MixtureBaseline if kind == "mixture" else GaussianBaseline).fit(fit)
    g = torch.Generator().manual_seed(seed)
    tb = time.perf_counter()
    phi_b = base.sample(n, g)
    lw_b = (-theory.action(phi_b) - base.log_prob(phi_b)).numpy()
    t_base = time.perf_counter() - tb
    res = {"L": L, "kappa": kappa, "n": n, "hmc_seconds": t_hmc, "hmc_configs_fit": len(fit),
           "hmc_reference": {k: ref[k] for k in ("abs_magnetisation", "action_density", "binder")},
           "baseline": {"kind": kind, "seconds": t_base, **evaluate(phi_b.numpy(), lw_b, theory, ref, seed)}}
    if kind == "gaussian":
        tt = time.perf_counter()
        cfg = TrainConfig(steps=updates, batch_size=32, preset="tiny", seed=seed, checkpoint_every=10**6,
                          parametrization="gaussian")
        tr = train(fit, f"/tmp/bench_exact_{L}_{kappa}.pt", cfg, theory=theory.to_dict(), progress=False,
                   device="cpu", resume=False)
        t_train = time.perf_counter() - tt
        sr = generate(tr.model, n, sampler="exp", steps=steps, seed=seed, weights="path", device="cpu")
        res["model"] = {"preset": "tiny", "updates": updates, "train_seconds": t_train, "steps": steps,
                        "sample_seconds": sr.wall_seconds,
                        **evaluate(sr.configs, sr.log_weights, theory, ref, seed)}
        gpart = GaussianBaseline.from_model(tr.model)
        phi_g = gpart.sample(n, g)
        lw_g = (-theory.action(phi_g) - gpart.log_prob(phi_g)).numpy()
        res["model_gaussian_part"] = evaluate(phi_g.numpy(), lw_g, theory, ref, seed)
    return res


def cost_32(n=1024, steps=20):
    L = 32
    theory = Phi4.hopping(Lattice((L, L)), 0.21, 0.022)
    ps = torch.rand(L, L, generator=torch.Generator().manual_seed(0)) * 0.01 + 0.005
    model = ScoreModel(UNet(preset("fast"), torch.Generator().manual_seed(0)), VESDE(25.0), (L, L),
                       parametrization="gaussian", sigma_data=0.25, power_spectrum=ps, theory=theory.to_dict())
    sr = generate(model, n, sampler="exp", steps=steps, seed=0, weights="path", device="cpu")
    return {"L": L, "n": n, "steps": steps, "preset": "fast", "seconds": sr.wall_seconds,
            "torch_threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/exactness.json")
    ap.add_argument("--sizes", default="8,16")
    ap.add_argument("--kappas", default="0.21,0.2705,0.5")
    ap.add_argument("--updates", type=int, default=400)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--cost32", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    results = {"points": [], "cost_32": None}
    for L in map(int, a.sizes.split(",")):
        for kappa in map(float, a.kappas.split(",")):
            r = point(L, kappa, a.updates, a.steps, a.n)
            results["points"].append(r)
            print(json.dumps(r), flush=True)
            with open(a.out, "w") as f:
                json.dump(results, f, indent=1)
    if a.cost32:
        results["cost_32"] = cost_32()
        print(json.dumps(results["cost_32"]), flush=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
