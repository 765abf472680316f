"""Reproduce the talk's free-field RBM figures: ``python -m lftml.rbm.figures docs/figures``.

* ``rbm_hidden.png``: N_v = 10, m^2 = 4, exact training with learned global mu^2, N_h = 9, 8, 7, 6;
* ``rbm_mu2.png``: N_h = N_v = 10, fixed mu^2 = 7.8, 7.1, 5.8, 4.8 (modes above mu^2 clipped);
* ``rbm_2d.png``: 8x8 target, m^2 = 1: N_h = 64, 48, 32, 16 with learned mu^2;
* ``rbm_data_spectrum.png``: UV-divergent inverse correlator spectrum of synthetic digits-like
  images (MNIST stand-in) and its regulation by mu^2 and N_h;
* ``rbm_learning_curve.png``: KL to the target during training (N_v = 10, N_h = 8).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from lftml.lattice import Lattice
from lftml.rbm.constructions import optimal_spectrum
from lftml.rbm.gaussian import GaussianRBM
from lftml.rbm.plots import plot_data_spectrum, plot_learning_curve, plot_spectrum
from lftml.rbm.spectrum import data_correlator_spectrum, regulated_spectrum, synthetic_digits
from lftml.rbm.training import Target, TrainConfig, train
from lftml.samplers.rng import torch_generator
from lftml.theories import FreeScalar

__all__ = ["make_figures", "PRECISE_EXACT"]

#: Exact training to the ML optimum: the default converge recipe (L-BFGS until max|grad| < 1e-6).
PRECISE_EXACT = dict(method="exact", recipe="converge")


#: The same for the 8x8 lattice.
PRECISE_EXACT_2D = dict(method="exact", recipe="converge")


def _trained(
    target: Target, n_hidden: int, seed: int, mu2: float | None, n_updates: int, log_every: int = 10,
    recipe: dict | None = None, mu2_init: float = 9.0,
):
    g = torch_generator(seed, "init")
    model = GaussianRBM(
        target.n_visible,
        n_hidden,
        mu2=mu2_init if mu2 is None else mu2,
        mu2_mode="global" if mu2 is None else "fixed",
        generator=g,
        lattice_shape=target.lattice_shape,
    )
    hist = train(model, target, TrainConfig(n_updates=n_updates, log_every=log_every, **(recipe or PRECISE_EXACT)))
    return model, hist


def make_figures(outdir: str | Path, n_updates: int = 1500) -> list[Path]:
    from lftml.plots import pyplot, save_figure

    plt = pyplot()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    theory = FreeScalar(Lattice(10), 4.0)
    target = Target.from_theory(theory)
    lam = theory.eigenvalues()

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), sharey=True)
    curve = None
    for ax, nh, tag in zip(axes, (9, 8, 7, 6), "abcd"):
        model, hist = _trained(target, nh, seed=nh, mu2=None, n_updates=n_updates)
        if nh == 8:
            curve = hist
        plot_spectrum(ax, lam, model.eigenvalues(), model.mu2_value(), title=f"({tag}) $N_h = {nh}$")
    fig.suptitle(r"$N_v = 10$, $m^2 = 4$: learned $\mu^2$ = harmonic mean of the dropped modes")
    written.append(save_figure(fig, outdir / "rbm_hidden.png"))

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), sharey=True)
    for ax, mu2, tag in zip(axes, (7.8, 7.1, 5.8, 4.8), "abcd"):
        model, _ = _trained(target, 10, seed=1, mu2=mu2, n_updates=n_updates)
        plot_spectrum(ax, lam, model.eigenvalues(), mu2, title=rf"({tag}) $\mu^2 = {mu2}$")
    fig.suptitle(r"$N_h = N_v = 10$, fixed $\mu^2 < \lambda_{\max} = 8$: modes above $\mu^2$ clipped")
    written.append(save_figure(fig, outdir / "rbm_mu2.png"))

    theory2 = FreeScalar(Lattice((8, 8)), 1.0)
    target2 = Target.from_theory(theory2)
    lam2 = theory2.eigenvalues()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), sharey=True)
    for ax, nh, tag in zip(axes, (64, 48, 32, 16), "abcd"):
        model, _ = _trained(target2, nh, seed=nh, mu2=None, n_updates=2 * n_updates, recipe=PRECISE_EXACT_2D, mu2_init=12.25)
        ax = plot_spectrum(ax, lam2, model.eigenvalues(), model.mu2_value(), title=f"({tag}) 8x8, $N_h = {nh}$")
        ax.plot(np.arange(64), optimal_spectrum(lam2, nh)[0], "-", color="C2", lw=0.8, label="ML optimum")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(r"2d free field $8\times 8$, $m^2 = 1$ ($\lambda_{\max} = 9$), learned global $\mu^2$")
    written.append(save_figure(fig, outdir / "rbm_2d.png"))

    images = synthetic_digits(2000, np.random.default_rng(0))
    spec = data_correlator_spectrum(images)
    kappa = spec["kappa"]
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_data_spectrum(
        ax,
        kappa,
        {
            r"RBM $N_h = 784$, $\mu^2 = 1000$": regulated_spectrum(kappa, 784, 1000.0),
            r"RBM $N_h = 784$, $\mu^2 = 100$": regulated_spectrum(kappa, 784, 100.0),
            r"RBM $N_h = 16$, $\mu^2 = 100$": regulated_spectrum(kappa, 16, 100.0),
        },
        title=f"synthetic digits 28x28 ({int(np.sum(~np.isfinite(kappa)))} zero modes not shown)",
    )
    written.append(save_figure(fig, outdir / "rbm_data_spectrum.png"))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    plot_learning_curve(ax, curve, "kl")
    ax.set_title(r"exact ML, $N_v = 10$, $N_h = 8$: KL(target $\|$ RBM)")
    written.append(save_figure(fig, outdir / "rbm_learning_curve.png"))
    return written


if __name__ == "__main__":  # pragma: no cover
    for p in make_figures(sys.argv[1] if len(sys.argv) > 1 else "docs/figures"):
        print(p)
