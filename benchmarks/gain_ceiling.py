"""How much of the possible held-out gain the recorded diffusion models reach: KL(p || q) per point.

A model's held-out ELBO gain over its analytic part q (the data-fitted Gaussian or the sign-aligned
mixture) is at most KL(p || q), p = exp(-S)/Z (:func:`lftml.diffusion.monitor.gain_ceiling`). This
script rebuilds each point's training set exactly as ``benchmarks/diffusion_table.py`` does (the same
``lftml hmc`` command and seed 101, so the same q), draws a held-out set (seed 202, the first
configurations of each chain are those the recorded gain was measured on), and prints the ceiling next
to the recorded gain (from the JSON files named below), for the analytic part as the recorded models
fitted it and as the default fit does now (averaged over the lattice's point group).

    python benchmarks/gain_ceiling.py --out benchmarks/gain_ceiling.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diffusion_table import cli, hmc_args  # noqa: E402  (the same HMC recipe per point)

# (L, kappa, training configurations per chain, analytic part, JSON with the recorded gain or None)
POINTS = [
    (32, 0.21, 400, "gaussian", "benchmarks/diffusion_table_32_k0.21_tiny10k.json"),
    (32, 0.21, 2400, "gaussian", None),  # 6x the data: how much of the ceiling is the fit's noise
    (16, 0.2705, 100, "mixture", "benchmarks/diffusion_table_equi16_mixture_steps50.json"),
    (32, 0.27, 100, "mixture", "benchmarks/diffusion_table_32_k0.27_steps50.json"),
]


def recorded_gain(path: str, L: int, kappa: float) -> dict | None:
    try:
        for p in json.load(open(path))["points"]:
            if p["L"] == L and abs(p["kappa"] - kappa) < 1e-9:
                return {"value": p["gain"]["gain_nats"], "error": p["gain"]["error"], "preset": p["preset"],
                        "updates": p["updates"], "file": path}
    except (OSError, KeyError, TypeError):
        pass
    return None


def main() -> None:
    from lftml.diffusion.baselines import fit_baseline
    from lftml.diffusion.monitor import gain_ceiling
    from lftml.ensemble import open_ensemble
    from lftml.lattice import Lattice
    from lftml.theories import Phi4

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--test-configs", type=int, default=400, help="held-out configurations per chain (8 chains)")
    ap.add_argument("--samples", type=int, default=40000, help="importance samples of q for log Z")
    ap.add_argument("--out", default="benchmarks/gain_ceiling.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {"command": " ".join(sys.argv), "points": []}
    with tempfile.TemporaryDirectory() as work:
        for L, kappa, n_train, kind, src in POINTS:
            d = Path(work) / f"L{L}_k{kappa}_n{n_train}"
            d.mkdir()
            tr_args = hmc_args(L, kappa)
            tr_args[tr_args.index("--n-configs") + 1] = str(n_train)
            te_args = hmc_args(L, kappa)
            te_args[te_args.index("--n-configs") + 1] = str(args.test_configs)
            cli("hmc", *tr_args, "--seed", "101", "--out", str(d / "train.h5"), json_out=False)
            cli("hmc", *te_args, "--seed", "202", "--out", str(d / "test.h5"), json_out=False)
            with open_ensemble(d / "train.h5") as ens:
                train = np.asarray(ens.configs, dtype=np.float64)  # (n_configs, n_chains, L, L)
            with open_ensemble(d / "test.h5") as ens:
                test = np.asarray(ens.configs, dtype=np.float64)
            theory = Phi4.hopping(Lattice((L, L)), kappa, 0.022)
            rec = recorded_gain(src, L, kappa) if src else None
            row = {"L": L, "kappa": kappa, "analytic_part": kind, "train_configs_per_chain": n_train,
                   "recorded_gain": rec}
            # point_group=False: the fit of the recorded models' analytic parts (before the point-group
            # average); True: today's default fit
            for pg in (False, True):
                q = fit_baseline(kind, train.reshape(-1, L, L), point_group=pg)
                c = gain_ceiling(q, theory, test, n_samples=args.samples, seed=7, chains_axis=True)
                key = "ceiling" if pg else "ceiling_without_point_group"
                row[key] = c
                frac = ""
                if rec and not pg:
                    row["fraction"] = rec["value"] / c["value"]
                    row["fraction_error"] = abs(row["fraction"]) * float(np.hypot(rec["error"] / rec["value"],
                                                                                  c["error"] / c["value"]))
                    frac = f"  recorded gain {rec['value']:.3f}({rec['error']:.3f}) = {row['fraction']:.2f}" \
                           f"({row['fraction_error']:.2f}) of it"
                print(f"L={L} kappa={kappa} {kind}, {n_train * 8} training configs, point group {pg}: KL(p||q) = "
                      f"{c['value']:.3f}({c['error']:.3f}) nats [E_p {c['e_p']:.3f}({c['e_p_error']:.3f}), log Z "
                      f"{c['log_z']:.3f}({c['log_z_error']:.3f}), ESS/N of q {c['ess_fraction']:.3f}; KL(q||p) "
                      f"{c['kl_reverse']:.3f}, Jeffreys {c['jeffreys']:.3f}]" + frac, flush=True)
            out["points"].append(row)
            with open(args.out, "w") as f:
                json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
