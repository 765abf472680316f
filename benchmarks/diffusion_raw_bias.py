"""Raw (unweighted) bias of diffusion samples in <S>/V against a precise HMC reference.

Issue 8's target: the raw <S>/V of the generated configurations within 0.2 % of the truth at <= 30
network evaluations per sample. The samples' own log weights are ignored for the raw number and used
for the reweighted one (errors: Gamma method, weighted Gamma method; the reference's from its chains).
The commands that made the recorded files are in benchmarks/diffusion_results.md ("Raw <S>/V bias").

    python benchmarks/diffusion_raw_bias.py --reference ref.h5 s20.h5 [more sample files]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np


def action_density(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    from lftml.ensemble import Ensemble

    with Ensemble.open(path) as ens:
        s = np.asarray(ens.observables["action_density"], dtype=np.float64)
        lw = None if ens.log_weights is None else np.asarray(ens.log_weights, dtype=np.float64).reshape(s.shape)
    return s, lw


def main() -> None:
    from lftml.stats import gamma_method, weighted_gamma_method

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("samples", nargs="+", help="ensemble files written by lftml diffusion sample")
    ap.add_argument("--reference", required=True, help="an HMC ensemble of the same theory")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    ref = gamma_method(action_density(args.reference)[0])
    out = {"reference": {"file": args.reference, "value": ref.value, "error": ref.error, "tau_int": ref.tau_int},
           "samples": {}}
    print(f"HMC {args.reference}: <S>/V = {ref.value:.5f}({ref.error:.5f}), tau_int {ref.tau_int:.2f}")
    for path in args.samples:
        s, lw = action_density(path)
        raw = gamma_method(s)
        bias = 100.0 * (raw.value / ref.value - 1.0)
        bias_err = 100.0 * math.hypot(raw.error, ref.error) / ref.value
        row = {"n": int(s.size), "raw": raw.value, "raw_error": raw.error, "bias_percent": bias,
               "bias_percent_error": bias_err}
        line = f"{path}: raw {raw.value:.5f}({raw.error:.5f}), bias {bias:+.3f}({bias_err:.3f}) %"
        if lw is not None:
            w = weighted_gamma_method(s, log_weights=lw)
            row.update(reweighted=w.value, reweighted_error=w.error,
                       reweighted_z=(w.value - ref.value) / math.hypot(w.error, ref.error))
            line += f"; reweighted {w.value:.5f}({w.error:.5f}), z = {row['reweighted_z']:+.2f}"
        out["samples"][path] = row
        print(line)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
