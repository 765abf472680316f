"""End-to-end physics acceptance: HMC train/test sets -> train -> sample -> compare (the talk's table).

Default suite: 8x8, kappa = 0.21, lambda = 0.022 (symmetric phase), tiny preset, about a minute on
one core. Slow: the full 32x32 reference setting with the fast preset (tens of minutes).
Acceptance: generated chi_2 and U_L within 2 combined standard errors (Gamma method) of an
independent HMC test set of equal size; <M> consistent with 0 within 2 standard errors.

Caveat (benchmarks/diffusion_results.md): at kappa = 0.21 these observables are nearly Gaussian, and
the model's analytic Gaussian part (the training data's two-point function) alone passes this test;
it checks the pipeline and the two-point physics, not the network's non-Gaussian correction.
That correction is tested separately: on strongly coupled phi^4 (bimodal single-site distribution) the
trained model must beat its own Gaussian part on the held-out denoising score-matching loss.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli


def _pipeline(tmp_path, shape, n_train_per_chain, n_test_per_chain, preset, steps, batch, n_gen, sample_steps,
              seed=1):
    shp = [str(s) for s in shape]
    common = ["--kappa", "0.21", "--lam", "0.022", "--chains", "16", "--therm", "300", "--every", "10", "--json"]
    run_cli("hmc", "--shape", *shp, *common, "--n-configs", str(n_train_per_chain), "--seed", "101",
            "--out", tmp_path / "train.h5", check=True)
    run_cli("hmc", "--shape", *shp, *common, "--n-configs", str(n_test_per_chain), "--seed", "202",
            "--out", tmp_path / "test.h5", check=True)
    run_cli("diffusion", "train", "--data", tmp_path / "train.h5", "--preset", preset, "--steps", str(steps),
            "--batch-size", str(batch), "--seed", str(seed), "--out", tmp_path / "model.pt", "--json", check=True)
    run_cli("diffusion", "sample", "--model", tmp_path / "model.pt", "--n", str(n_gen), "--sampler", "em",
            "--steps", str(sample_steps), "--seed", "7", "--out", tmp_path / "gen.h5", "--json", check=True)
    res = run_cli("diffusion", "compare", "--train", tmp_path / "train.h5", "--test", tmp_path / "test.h5",
                  "--generated", tmp_path / "gen.h5", "--png", tmp_path / "cmp.png", "--json", check=True).json()
    return res


def _assert_acceptance(res):
    z = res["z_generated_vs_test"]
    g = res["generated"]
    assert set(res) >= {"train", "test", "generated", "z_generated_vs_test"}
    for key in ("magnetisation", "susceptibility", "binder"):
        assert set(g[key]) >= {"value", "error"}
    assert abs(z["susceptibility"]) < 2.0, z
    assert abs(z["binder"]) < 2.0, z
    m = g["magnetisation"]
    assert abs(m["value"]) < 2.0 * m["error"], m


def test_scaled_down_end_to_end_8x8_generated_observables_agree_with_independent_hmc(tmp_path):
    res = _pipeline(tmp_path, (8, 8), 64, 64, "tiny", 1500, 64, 1024, 100)
    _assert_acceptance(res)
    assert res["generated"]["n_configs"] * res["generated"]["n_chains"] == 1024
    assert (tmp_path / "cmp.png").stat().st_size > 0


@pytest.mark.slow
def test_reference_setting_32x32_fast_preset_passes_the_physics_test(tmp_path):
    """The talk's setting: 5120 training and 1024 test/generated configurations (see
    examples/diffusion_phi4_32x32.py and benchmarks/diffusion_results.md for the recorded run)."""
    res = _pipeline(tmp_path, (32, 32), 320, 64, "fast", 6000, 32, 1024, 100)
    print(json.dumps(res["z_generated_vs_test"], indent=1))
    _assert_acceptance(res)


def test_trained_network_correction_beats_the_gaussian_part_on_held_out_non_gaussian_phi4(tmp_path):
    """The U-Net correction learns non-Gaussian physics, not only the Gaussian part's two-point function.

    Data: 8x8 phi^4, hopping form, kappa = 0.15, lambda = 0.7 (symmetric phase, strong coupling; the
    single-site distribution is double-peaked, <phi^4>/<phi^2>^2 ~ 2.0 instead of 3). Training set
    1024 configurations (16 HMC chains), held-out set 512 from an independent HMC run. The tiny
    preset is trained for 4000 steps (lr 3e-3, EMA 0.9). Measure: the DSM loss (the training
    objective, lambda = std^2, mixed t) on the held-out data of score = gaussian + network against
    score = gaussian (the same model with the network contribution switched off, i.e. the untrained
    model), both with the *same* t and z draws (16 per configuration). The paired per-configuration
    differences are analysed with the Gamma method (configurations x chains); the gain must exceed
    4 standard errors.

    Measured: the gain sits on a plateau near zero for a seed-dependent number of steps, then grows
    to ~1% of the loss (2-3% at std(t) ~ 0.1-0.2, where the bimodality matters). With 3000 steps,
    training seeds 0, 1, 2, 5, 6, 7 gave gains 0.0030-0.0042 (z = 9.5-12.0), seed 3 only 0.0001
    (z = 3.2, fails); with 4000 steps seed 5 (committed) gives 0.0043(4), z = 10.5, and seed 3
    0.00022(4), z = 5.2. With the default lr 1e-3 and EMA 0.999 the tiny preset needs ~8000 steps
    (gain 0.0039(4), z = 11), the fast preset showed no gain after 1500 steps. About 25-60 s.
    """
    from lftml.diffusion.losses import sample_times
    from lftml.diffusion.nets import UNet, preset
    from lftml.diffusion.training import TrainConfig, train
    from lftml.lattice import Lattice
    from lftml.run import RunConfig, run
    from lftml.samplers.hmc import HMC
    from lftml.stats import gamma_method
    from lftml.theories import Phi4

    theory = Phi4.hopping(Lattice((8, 8)), kappa=0.15, lam=0.7)
    hmc = HMC.from_trajectory(theory, 1.0, 10, "omelyan")

    def ensemble(seed, n_configs):
        res = run(hmc, RunConfig(n_chains=16, n_configs=n_configs, n_therm=200, every=5, seed=seed))
        return res.configs.numpy()  # (n_configs, n_chains, 8, 8)

    train_set = ensemble(101, 64).reshape(-1, 8, 8)
    held_out = ensemble(202, 32)
    kurtosis = float(np.mean(train_set**4) / np.mean(train_set**2) ** 2)
    assert kurtosis < 2.3, f"data not clearly non-Gaussian (site kurtosis {kurtosis:.3f}, Gaussian 3)"

    # "network switched off" is the untrained model: the zero-initialised net outputs exactly zero
    fresh = UNet(preset("tiny"), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.count_nonzero(fresh(torch.randn(4, 8, 8), torch.zeros(4))) == 0

    cfg = TrainConfig(steps=4000, batch_size=64, preset="tiny", lr=3e-3, warmup=50, ema_decay=0.9, seed=5)
    model = train(train_set, tmp_path / "model.pt", cfg, theory=theory.to_dict(), progress=False,
                  device="cpu").model.eval()

    x = torch.as_tensor(held_out, dtype=torch.float32).reshape(-1, 8, 8) * model.scaling.scale
    n_draws = 16
    g = torch.Generator().manual_seed(7)
    loss_gauss = torch.zeros(x.shape[0], dtype=torch.float64)
    loss_full = torch.zeros(x.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for _ in range(n_draws):
            t = sample_times(x.shape[0], model.sde, g, "mixed")
            xt, z, std = model.sde.perturb(x, t, g)
            gaussian, network = model.score_parts(xt, t)
            loss_gauss += ((gaussian * std + z) ** 2).mean(dim=(1, 2)).double() / n_draws
            loss_full += (((gaussian + network) * std + z) ** 2).mean(dim=(1, 2)).double() / n_draws
    gain = gamma_method((loss_gauss - loss_full).numpy().reshape(held_out.shape[:2]))
    print(f"held-out DSM loss: gaussian {loss_gauss.mean():.5f}, trained {loss_full.mean():.5f}, "
          f"gain {gain.value:.5f} +- {gain.error:.5f} (z = {gain.value / gain.error:.1f}, tau_int {gain.tau_int:.2f})")
    assert gain.value > 4.0 * gain.error, gain
