"""MNIST as a field theory (the talk's figures on real images): ``python -m lftml.rbm.mnist OUTDIR``.

Data: the 5,000 real MNIST images built in via :mod:`lftml.datasets` (``--data mnist``), pixels in
[0, 1], not centred; 20 % held out (seed 0). Writes into OUTDIR:

* ``mnist_spectrum.png`` -- sorted eigenvalues 1/kappa of <phi_i phi_j> (uncentred and connected)
  and kappa (UV divergent), with the exact zero modes counted;
* ``mnist_digits_nh{N}.png`` -- digits from the ML-optimal RBM with fixed mu^2 = 100 for
  N_h in {784, 225, 64, 36, 16, 4} (the talk's panels (a)-(f));
* ``mnist_loglik.png`` and ``mnist_loglik.md`` -- the exact log-likelihood per image (closed form) on
  the training and held-out images for every (N_h, mu^2): fixed mu^2 = 100 and learned global mu^2.

Models are the exact maximum-likelihood optimum of each family (``--method analytic``: what exact
ML training converges to, see docs/rbm.md), so every number is reproducible in seconds; digits are
exact i.i.d. draws from p(phi) (``--method exact``), because block Gibbs needs O(mu^2/k_min) ~ 3000
sweeps to relax the infrared modes at mu^2 = 100.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lftml.datasets import heldout_split, load_data
from lftml.errors import LftmlError
from lftml.rbm.gaussian import GaussianRBM
from lftml.rbm.spectrum import count_zero_modes, data_correlator_spectrum
from lftml.rbm.training import Target, TrainConfig, train

__all__ = ["HIDDEN_SIZES", "loglik_table", "make_mnist_figures"]

HIDDEN_SIZES: tuple[int, ...] = (784, 225, 64, 36, 16, 4)


def _optimum(target: Target, n_hidden: int, mu2: float | None) -> GaussianRBM:
    m = GaussianRBM(target.n_visible, n_hidden, mu2=100.0 if mu2 is None else mu2,
                    mu2_mode="global" if mu2 is None else "fixed", generator=torch.Generator().manual_seed(0),
                    lattice_shape=target.lattice_shape)
    train(m, target, TrainConfig(method="analytic"))
    return m


def _per_image(model: GaussianRBM, x: np.ndarray) -> tuple[float, float]:
    with torch.no_grad():
        lp = model.log_prob(torch.as_tensor(x.reshape(len(x), -1))).numpy()
    return float(lp.mean()), float(lp.std(ddof=1) / np.sqrt(lp.size))


def loglik_table(train_x: np.ndarray, held_x: np.ndarray, hidden: tuple[int, ...] = HIDDEN_SIZES,
                 mu2_fixed: float = 100.0) -> list[dict[str, Any]]:
    """Rows ``{n_hidden, mu2_mode, mu2, train, train_err, heldout, heldout_err, gap}`` of the exact
    log-likelihood per image (mean over images +- standard error; images are independent) of the
    ML-optimal RBM. Learned mu^2 with N_h >= N_v - zero modes is unbounded: the row says so."""
    target = Target.from_data(train_x)
    zm = count_zero_modes(train_x)["zero_modes"]
    rows = []
    for nh in hidden:
        for mu2 in (mu2_fixed, None):
            row: dict[str, Any] = {"n_hidden": nh, "mu2_mode": "fixed" if mu2 else "global"}
            if mu2 is None and nh >= target.n_visible - zm:
                row.update(mu2=float("inf"), note=f"unbounded (N_h >= N_v - {zm} zero modes)")
                rows.append(row)
                continue
            m = _optimum(target, nh, mu2)
            tr, tre = _per_image(m, train_x)
            ho, hoe = _per_image(m, held_x)
            row.update(mu2=float(np.mean(m.mu2_value())), train=tr, train_err=tre, heldout=ho, heldout_err=hoe, gap=tr - ho)
            rows.append(row)
    return rows


def _markdown(rows: list[dict[str, Any]], n_train: int, n_held: int) -> str:
    from lftml.stats import format_value_error

    lines = [f"Exact log-likelihood per image (nats; mean +- standard error over {n_train} training / {n_held} held-out "
             "real MNIST images, pixels in [0, 1], ML-optimal Gaussian RBM)", "",
             "| N_h | mu^2 | train | held-out | gap |", "|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "train" not in r:
            lines.append(f"| {r['n_hidden']} | learned | {r['note']} | | |")
            continue
        mu = "100 (fixed)" if r["mu2_mode"] == "fixed" else f"{r['mu2']:.4g} (learned)"
        lines.append(f"| {r['n_hidden']} | {mu} | {format_value_error(r['train'], r['train_err'])} | "
                     f"{format_value_error(r['heldout'], r['heldout_err'])} | {r['gap']:.1f} |")
    return "\n".join(lines) + "\n"


def make_mnist_figures(outdir: str | Path, seed: int = 0, n_digits: int = 36, *, data: str = "mnist",
                       max_samples: int | None = None) -> list[Path]:
    """Write the figures and table listed in the module docstring into ``outdir`` (which must exist);
    ``data``/``max_samples`` select another data set or a seeded random subset (the tests use a small
    one). Returns the paths written."""
    from lftml.plots import pyplot, save_figure
    from lftml.rbm.plots import plot_correlator_spectrum, plot_kappa
    from lftml.rbm.workflows import digit_grid

    plt = pyplot()
    outdir = Path(outdir)
    if not outdir.is_dir():
        raise LftmlError(f"output folder {outdir} does not exist")
    written: list[Path] = []
    ds = load_data(data, max_samples=max_samples, subset_seed=seed)
    if len(ds.shape) != 2:
        raise LftmlError(f"the digit figures need images: {data!r} has samples of shape {ds.shape}")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for connected, label in ((False, "uncentred"), (True, "connected")):
        spec = data_correlator_spectrum(ds.x, connected=connected)
        plot_correlator_spectrum(a1, spec["correlator_eigenvalues"], spec["zero_modes"] if not connected else 0,
                                 label=f"{label} ({spec['zero_modes']} zero modes)")
        plot_kappa(a2, spec["kappa"], mu2=100.0 if not connected else None, label=label)
    a1.set_title(f"{data} ({ds.n_samples} real images): eigenvalues of the correlator")
    a2.set_title(r"$\kappa$ = 1/eigenvalue: ultraviolet divergent")
    written.append(save_figure(fig, outdir / "mnist_spectrum.png"))

    train_ds, held_ds = heldout_split(ds, 0.2, seed)
    target = Target.from_data(train_ds.x)
    for tag, nh in zip("abcdef", HIDDEN_SIZES):
        m = _optimum(target, nh, 100.0)
        digit_grid(m, outdir / f"mnist_digits_nh{nh}.png", n_images=n_digits, seed=seed, method="exact",
                   title=f"({tag}) $N_h = {nh}$, $\\mu^2 = 100$")
        written.append(outdir / f"mnist_digits_nh{nh}.png")

    rows = loglik_table(train_ds.flat(), held_ds.flat())
    (outdir / "mnist_loglik.md").write_text(_markdown(rows, train_ds.n_samples, held_ds.n_samples))
    written.append(outdir / "mnist_loglik.md")
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, marker in (("fixed", "o"), ("global", "s")):
        rr = [r for r in rows if r["mu2_mode"] == mode and "train" in r]
        nh = [r["n_hidden"] for r in rr]
        lab = r"$\mu^2 = 100$" if mode == "fixed" else r"learned $\mu^2$"
        ax.errorbar(nh, [r["train"] for r in rr], [r["train_err"] for r in rr], fmt=marker + "-", label=f"train, {lab}")
        ax.errorbar(nh, [r["heldout"] for r in rr], [r["heldout_err"] for r in rr], fmt=marker + "--", label=f"held-out, {lab}")
    ax.set_xscale("log")
    ax.set_xlabel("$N_h$")
    ax.set_ylabel("log-likelihood per image (nats)")
    ax.legend(fontsize=8)
    written.append(save_figure(fig, outdir / "mnist_loglik.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m lftml.rbm.mnist [OUTDIR] [--max-samples N] [--data mnist|digits|PATH] [--seed S]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m lftml.rbm.mnist", description=__doc__.splitlines()[0])
    ap.add_argument("outdir", nargs="?", default="docs/figures")
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--max-samples", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        for p in make_mnist_figures(a.outdir, seed=a.seed, data=a.data, max_samples=a.max_samples):
            print(p)
    except LftmlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
