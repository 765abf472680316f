"""Learning results (benchmarks/diffusion_results.md, section "learning"): train the default model at
one (L, kappa) and measure it against its Gaussian part and the HMC test set.

    python benchmarks/diffusion_learning.py --train T.h5 --test H.h5 --updates 1500 --out runs/x.json \
        [--ablation name=key:value,...]

Measured (all with errors): held-out likelihood gain over the analytic (Gaussian) part in nats per
configuration (Gamma method over the test set's chains, paired noise draws); site kurtosis
<phi^4>/<phi^2>^2 and <S>/V of 512 samples at 30 network evaluations (probability-flow ODE, 15
Heun steps on the edm grid) for the model and its Gaussian part through the same sampler, and of
the exact Gaussian baseline (FFT sampling of the data's power spectrum, no discretisation); the
same for the HMC test set; training CPU time.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from lftml.diffusion.data import load_configs
from lftml.diffusion.monitor import likelihood_gain
from lftml.diffusion.sampling import generate
from lftml.diffusion.training import TrainConfig, train
from lftml.stats import gamma_method
from lftml.theories import theory_from_dict


def observables(phi: np.ndarray, theory, chains: tuple[int, int] | None = None) -> dict:
    phi = np.asarray(phi, dtype=np.float64)
    V = int(np.prod(phi.shape[1:]))
    S = theory.action(torch.as_tensor(phi)).numpy() / V
    shape = chains or (phi.shape[0], 1)
    s = gamma_method(S.reshape(shape))
    flat = phi.reshape(shape[0], shape[1], -1)
    from lftml.stats import gamma_method_derived

    k = gamma_method_derived(lambda a, b: b / a**2, (flat**2).mean(-1), (flat**4).mean(-1))
    return {"S_per_site": [s.value, s.error], "kurtosis": [k.value, k.error], "n": int(phi.shape[0])}


def exact_gaussian_samples(model, n: int, seed: int) -> np.ndarray:
    """Exact samples of the analytic part at t = 0: N(0, C) with C the data's power spectrum."""
    g = torch.Generator().manual_seed(seed)
    dims = tuple(range(1, 1 + len(model.lattice_shape)))
    w = torch.randn((n, *model.lattice_shape), generator=g, dtype=torch.float64)
    x = torch.fft.ifftn(torch.fft.fftn(w, dim=dims) * model.power_spectrum.double().sqrt(), dim=dims).real
    return (x / model.scaling.scale).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--updates", type=int, default=1500)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-samples", type=int, default=512)
    ap.add_argument("--set", action="append", default=[], help="TrainConfig override key=value")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = load_configs(args.train)
    h = load_configs(args.test)
    from lftml.ensemble import Ensemble

    with Ensemble.open(args.test) as ens:
        chains = (ens.n_configs, ens.configs.shape[1])
    theory = theory_from_dict(d.theory)
    over = {}
    for kv in args.set:
        k, v = kv.split("=")
        f = TrainConfig.__dataclass_fields__[k]
        over[k] = (v.lower() == "true") if f.type in ("bool", bool) else type(getattr(TrainConfig(), k))(v)
    cfg = TrainConfig(steps=args.updates, seed=args.seed, checkpoint_every=10**6, **over)
    c0, w0 = time.process_time(), time.perf_counter()
    r = train(d.configs, args.out + ".pt", cfg, theory=d.theory, progress=False, device="cpu", overwrite=True)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    model = r.model.eval()
    res = {"train": args.train, "test": args.test, "config": over, "updates": args.updates, "n_train": int(d.configs.shape[0]),
           "train_cpu_s": cpu, "train_wall_s": wall, "tau_int_M_train": d.tau_int_M}
    ho = h.configs.reshape(chains[0], chains[1], *h.lattice_shape)
    res["gain"] = likelihood_gain(model, ho, draws=8, chains_axis=True)
    res["hmc_test"] = observables(h.configs, theory, chains)
    res["hmc_train"] = observables(d.configs, theory)
    res["exact_gaussian"] = observables(exact_gaussian_samples(model, args.n_samples, 5), theory)
    gauss = copy.deepcopy(model)
    gauss.net.zero_output_layers()
    for name, m in (("model_ode30", model), ("gaussian_part_ode30", gauss)):
        t0 = time.process_time()
        s = generate(m, args.n_samples, sampler="ode", steps=16, seed=7, batch_size=128, device="cpu")
        res[name] = {**observables(s.configs, theory), "sample_cpu_s": time.process_time() - t0}
    print(json.dumps(res, indent=1))
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
