"""Documented end-to-end run: diffusion model for 2d phi^4 on 32x32 (the talk's setting).

Symmetric phase kappa = 0.21, lambda = 0.022: HMC training set (16 chains x 320 = 5120 configs,
every 10th trajectory, tau_int(M) ~ 0.6 after thinning) and an independent test set (other seed,
16 x 64 = 1024); fast-preset training; 1024 generated configurations; the talk's table with
z-scores; learned action vs S; independence Metropolis vs HMC autocorrelation. Broken phase
kappa = 0.5: ordered start with random sign per chain, sigma large enough to cover both vacua,
denoising strip.

Every step is a CLI command (printed), outputs that exist are reused, so an interrupted run can be
started again (training resumes from its checkpoint). Usage::

    python examples/diffusion_phi4_32x32.py [--workdir runs/diffusion] [--threads 1] [--steps 6000]

Writes ``<workdir>/results.json`` and the figures ``docs/figures/diffusion_*.png``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh(args: list[str], timings: dict, key: str, out: Path | None = None, json_out: bool = True) -> dict | None:
    """Run ``lftml ARGS`` unless ``out`` exists; record the wall time; return its JSON output."""
    if out is not None and out.exists() and not str(out).endswith(".pt"):
        print(f"[skip] {out} exists")
        return None
    cmd = [sys.executable, "-m", "lftml", *map(str, args)] + (["--json"] if json_out else [])
    print("$ lftml " + " ".join(shlex.quote(str(a)) for a in args), flush=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    timings[key] = time.perf_counter() - t0
    if res.returncode != 0:
        print(res.stdout[-2000:], res.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"command failed ({res.returncode})")
    return json.loads(res.stdout) if json_out and res.stdout.strip() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "diffusion"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--skip-broken", action="store_true")
    a = ap.parse_args()
    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    figs = ROOT / "docs" / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    th = ["--threads", str(a.threads)]
    t: dict[str, float] = {}
    results_path = wd / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    sym = ["--shape", "32", "32", "--kappa", "0.21", "--lam", "0.022", "--chains", "16", "--therm", "500", "--every", "10"]
    sh(["hmc", *sym, "--n-configs", "320", "--seed", "101", "--out", wd / "train32.h5"], t, "hmc_train", wd / "train32.h5")
    sh(["hmc", *sym, "--n-configs", "64", "--seed", "202", "--out", wd / "test32.h5"], t, "hmc_test", wd / "test32.h5")
    # an unthinned HMC chain (every trajectory) for the autocorrelation comparison
    sh(["hmc", "--shape", "32", "32", "--kappa", "0.21", "--lam", "0.022", "--chains", "4", "--therm", "500", "--every", "1",
        "--n-configs", "1000", "--seed", "303", "--out", wd / "hmc_every1.h5"], t, "hmc_every1", wd / "hmc_every1.h5")

    model = wd / "fast32.pt"
    if not model.exists():
        results["train"] = sh(["diffusion", "train", "--data", wd / "train32.h5", "--preset", "fast", "--updates", str(a.steps),
                               "--batch-size", "32", "--seed", "1", "--checkpoint-every", "250", "--out", model, *th], t, "train")
    if "train" not in results:
        from lftml.diffusion.model import load_model

        results["train"] = {"model_info": load_model(model).info}
    for sampler, steps in (("em", 100), ("ode", 50)):
        out = wd / f"gen32_{sampler}.h5"
        r = sh(["diffusion", "sample", "--model", model, "--n", "1024", "--sampler", sampler, "--steps", str(steps),
                "--seed", "7", "--out", out, *th], t, f"sample_{sampler}", out)
        if r:
            results[f"sample_{sampler}"] = r
        r = sh(["diffusion", "compare", "--train", wd / "train32.h5", "--test", wd / "test32.h5", "--generated", out,
                "--png", figs / f"diffusion_compare_{sampler}.png"], t, f"compare_{sampler}")
        results[f"compare_{sampler}"] = r
        txt = subprocess.run([sys.executable, "-m", "lftml", "diffusion", "compare", "--train", str(wd / "train32.h5"),
                              "--test", str(wd / "test32.h5"), "--generated", str(out)], capture_output=True, text=True)
        print(txt.stdout)
    if "likelihood" not in results:
        results["likelihood"] = sh(["diffusion", "likelihood", "--model", model, "--generate", "256", "--solver", "heun",
                                    "--steps", "50", "--probes", "1", "--seed", "11", "--png",
                                    figs / "diffusion_action_vs_logq.png", *th], t, "likelihood")
    if "metropolis" not in results:
        results["metropolis"] = sh(["diffusion", "metropolis", "--model", model, "--hmc", wd / "hmc_every1.h5", "--n", "512",
                                    "--steps", "50", "--probes", "1", "--seed", "12", "--png",
                                    figs / "diffusion_autocorrelation.png", "--out", wd / "metropolis32.h5", *th],
                                   t, "metropolis")
    if not a.skip_broken:
        brk = ["--shape", "32", "32", "--kappa", "0.5", "--lam", "0.022", "--chains", "16", "--therm", "300", "--every", "10",
               "--start", "cold"]
        sh(["hmc", *brk, "--n-configs", "128", "--seed", "404", "--out", wd / "broken32.h5"], t, "hmc_broken", wd / "broken32.h5")
        bmodel = wd / "broken32.pt"
        if not bmodel.exists():
            # sigma = 25 would give sigma_max ~ 9.8, far below the distance between the two vacua (a
            # warning is logged); sigma = 150 gives sigma_max ~ 47
            results["train_broken"] = sh(["diffusion", "train", "--data", wd / "broken32.h5", "--preset", "fast", "--updates",
                                          "2000", "--batch-size", "32", "--sigma", "150", "--seed", "2", "--out", bmodel, *th],
                                         t, "train_broken")
        results["sample_broken"] = sh(["diffusion", "sample", "--model", bmodel, "--n", "64", "--sampler", "em", "--steps",
                                       "100", "--seed", "8", "--out", wd / "gen_broken32.h5", "--strip",
                                       figs / "diffusion_denoising_broken.png", *th], t, "sample_broken")
        results["compare_broken"] = sh(["diffusion", "compare", "--test", wd / "broken32.h5", "--generated",
                                        wd / "gen_broken32.h5", "--png", figs / "diffusion_compare_broken.png"], t,
                                       "compare_broken")
    results.setdefault("timings_s", {}).update(t)
    results_path.write_text(json.dumps(results, indent=1, default=str))
    print(f"results in {results_path}")


if __name__ == "__main__":
    main()
