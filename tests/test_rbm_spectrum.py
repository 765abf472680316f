"""Spectral analysis (UV-regulator story) on free-field data, data loaders (MNIST from local
files only), synthetic digits, and the spectrum plot."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest
import torch

from lftml.errors import FileFormatError, LftmlError
from lftml.lattice import Lattice
from lftml.rbm import GaussianRBM, Target, optimal_spectrum, rbm_from_kernel
from lftml.rbm.spectrum import (
    data_correlator_spectrum,
    load_mnist,
    regulated_spectrum,
    spectral_analysis,
    synthetic_digits,
)
from lftml.theories import FreeScalar


def test_data_correlator_spectrum_of_free_field_samples_is_the_inverse_free_spectrum():
    """Eigenvalues of <phi phi^T>_data -> 1/(p_hat^2 + m^2); the sample-covariance eigenvalue
    fluctuates by ~ sqrt(2/n) relative (plus degeneracy splitting), so 6 sqrt(2/n) tolerance."""
    theory = FreeScalar(Lattice((4, 4)), 0.5)
    n = 40000
    data = theory.sample(n, torch.Generator().manual_seed(1)).numpy()
    spec = data_correlator_spectrum(data)
    exact = np.sort(1.0 / theory.eigenvalues())[::-1]
    rel = np.abs(spec["correlator_eigenvalues"] - exact) / exact
    assert rel.max() < 6 * math.sqrt(2 / n) * 2  # factor 2: degenerate multiplets split
    assert np.allclose(np.sort(spec["kappa"]), spec["kappa"])
    assert np.allclose(spec["kappa"], np.sort(theory.eigenvalues()), rtol=0.05)
    # connected version agrees for a zero-mean field
    conn = data_correlator_spectrum(data, connected=True)
    assert np.allclose(conn["kappa"], spec["kappa"], rtol=0.01)


def test_image_like_data_have_uv_divergent_inverse_spectrum_regulated_by_mu2():
    images = synthetic_digits(400, np.random.default_rng(0), size=16)
    assert images.shape == (400, 16, 16) and images.min() >= 0 and images.max() <= 1
    assert np.all(images[:, 0, :] == 0) and np.all(images[:, :, -1] == 0)  # empty borders
    kappa = data_correlator_spectrum(images)["kappa"]
    assert np.isinf(kappa[-1])  # pixels that never light up: zero modes of the correlator
    finite = kappa[np.isfinite(kappa)]
    assert finite[-1] / finite[0] > 1e4  # infrared safe, ultraviolet divergent
    reg = regulated_spectrum(kappa, 256, 100.0)
    assert reg.max() == 100.0 and np.allclose(reg[kappa < 100], kappa[kappa < 100])
    reg16 = regulated_spectrum(kappa, 16, 100.0)
    assert np.count_nonzero(reg16 < 100.0) <= 16


def test_training_on_data_target_spectrum_matches_regulated_data_spectrum():
    """Exact ML training with fixed mu^2 on a data correlator reproduces min(kappa_data, mu^2)."""
    from lftml.rbm import TrainConfig, train
    from lftml.rbm.figures import PRECISE_EXACT

    data = FreeScalar(Lattice(8), 1.0).sample(3000, torch.Generator().manual_seed(2))
    target = Target.from_data(data)
    model = GaussianRBM(8, 8, mu2=3.0, generator=torch.Generator().manual_seed(3))
    train(model, target, TrainConfig(n_updates=1500, log_every=500, **PRECISE_EXACT))
    expected = regulated_spectrum(target.eigenvalues(), 8, 3.0)
    assert np.allclose(model.eigenvalues(), expected, rtol=2e-3)


def test_spectral_analysis_keys_and_svd_relation():
    theory = FreeScalar(Lattice(10), 4.0)
    m = rbm_from_kernel(theory.kernel_matrix(), 9.0, method="diagonal")
    out = spectral_analysis(m, Target.from_theory(theory))
    for key in ("target_eigenvalues", "model_eigenvalues", "singular_values", "mu2", "kl", "loglik"):
        assert key in out
    assert out["kl"] == pytest.approx(0.0, abs=1e-10)
    xi = np.asarray(out["singular_values"])
    # K eigenvalues are mu^2 - sigma_h^2 xi^2
    assert np.allclose(np.sort(9.0 - xi**2), out["model_eigenvalues"], atol=1e-10)
    assert spectral_analysis(m)["target_eigenvalues"] is None


def _write_idx(path, images: np.ndarray, compress: bool = False):
    raw = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">III", *images.shape) + images.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def test_load_mnist_reads_idx_gz_and_npz(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte", imgs)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs, compress=True)
    np.savez(tmp_path / "mnist.npz", x_train=imgs.astype(np.uint8))
    for name in ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "mnist.npz"):
        x = load_mnist(tmp_path / name)
        assert x.shape == (5, 28, 28) and np.allclose(x, imgs / 255.0)
    assert load_mnist(tmp_path / "mnist.npz", max_samples=2).shape == (2, 28, 28)


def test_load_mnist_missing_or_damaged_file_errors(tmp_path):
    with pytest.raises(FileFormatError, match="does not download"):
        load_mnist(tmp_path / "nope-idx3-ubyte")
    (tmp_path / "bad-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(FileFormatError, match="magic"):
        load_mnist(tmp_path / "bad-idx3-ubyte")
    imgs = np.zeros((5, 28, 28))
    _write_idx(tmp_path / "t-idx3-ubyte", imgs)
    raw = (tmp_path / "t-idx3-ubyte").read_bytes()
    (tmp_path / "t-idx3-ubyte").write_bytes(raw[:100])
    with pytest.raises(FileFormatError, match="truncated"):
        load_mnist(tmp_path / "t-idx3-ubyte")
    np.savez(tmp_path / "other.npz", foo=np.zeros(3))
    with pytest.raises(FileFormatError, match="x_train"):
        load_mnist(tmp_path / "other.npz")


def test_data_spectrum_bad_input():
    with pytest.raises(LftmlError):
        data_correlator_spectrum(np.zeros(5))
    with pytest.raises(LftmlError):
        data_correlator_spectrum(np.full((3, 2), np.nan))
    with pytest.raises(LftmlError):
        optimal_spectrum([1.0, 2.0], 0)


def test_spectrum_plot_draws_exact_rbm_and_mu2_line():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lftml.rbm.plots import plot_data_spectrum, plot_learning_curve, plot_spectrum

    lam = FreeScalar(Lattice(10), 4.0).eigenvalues()
    fig, ax = plt.subplots()
    assert plot_spectrum(ax, lam, optimal_spectrum(lam, 8)[0], 7.8) is ax
    assert len(ax.lines) == 3
    fig2, ax2 = plt.subplots()
    plot_learning_curve(ax2, {"update": [0, 1], "kl": [1.0, 0.5]})
    plot_data_spectrum(ax2, np.array([1.0, 10.0, np.inf]), {"reg": np.array([1.0, 5.0, 5.0])})
    plt.close("all")


def test_analytic_rbm_on_image_data_reproduces_the_regulated_spectrum_and_dynamic_mass():
    from lftml.rbm import TrainConfig, train

    images = synthetic_digits(300, np.random.default_rng(4), size=12)
    target = Target.from_data(images)
    kappa = data_correlator_spectrum(images)["kappa"]
    fixed = GaussianRBM(144, 144, mu2=100.0, generator=torch.Generator().manual_seed(0), lattice_shape=(12, 12))
    train(fixed, target, TrainConfig(method="analytic"))
    assert np.allclose(fixed.eigenvalues(), regulated_spectrum(kappa, 144, 100.0), rtol=1e-8)
    # learned (dynamic) mass with N_h < N_v: harmonic mean of the dropped modes' kappa (zero modes included)
    dyn = GaussianRBM(144, 16, mu2=100.0, mu2_mode="global", generator=torch.Generator().manual_seed(0))
    train(dyn, target, TrainConfig(method="analytic"))
    var = np.sort(1.0 / kappa)[::-1]
    assert dyn.mu2_value() == pytest.approx(128 / var[16:].sum(), rel=1e-8)


@pytest.mark.slow
def test_make_figures_writes_all_talk_panels(tmp_path):
    from lftml.rbm.figures import make_figures

    paths = make_figures(tmp_path, n_updates=100)
    assert [p.name for p in paths] == ["rbm_hidden.png", "rbm_mu2.png", "rbm_2d.png", "rbm_data_spectrum.png",
                                       "rbm_learning_curve.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)
