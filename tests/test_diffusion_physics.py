"""End-to-end physics acceptance: HMC train/test sets -> train -> sample -> compare (the talk's table).

Default suite: 8x8, kappa = 0.21, lambda = 0.022 (symmetric phase), tiny preset, about a minute on
one core. Slow: the full 32x32 reference setting with the fast preset (tens of minutes).
Acceptance: generated chi_2 and U_L within 2 combined standard errors (Gamma method) of an
independent HMC test set of equal size; <M> consistent with 0 within 2 standard errors.

Caveat (benchmarks/diffusion_results.md): at kappa = 0.21 these observables are nearly Gaussian, and
the model's analytic Gaussian part (the training data's two-point function) alone passes this test;
it checks the pipeline and the two-point physics, not the network's non-Gaussian correction.
That correction is tested separately (tests/test_diffusion_learning.py): on strongly coupled phi^4
(bimodal single-site distribution) the trained default model must beat its own Gaussian part in
held-out likelihood (ELBO gain in nats, > 5 standard errors).

The 8x8 test is the default-suite sibling of the slow 32x32 test (issue 11): same pipeline, same
acceptance criteria against an independent HMC test set, a sixteenth of the volume.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_cli


def _pipeline(tmp_path, shape, n_train_per_chain, n_test_per_chain, preset, steps, batch, n_gen, sample_steps,
              seed=1):
    shp = [str(s) for s in shape]
    common = ["--kappa", "0.21", "--lam", "0.022", "--chains", "16", "--therm", "300", "--every", "10", "--json"]
    run_cli("hmc", "--shape", *shp, *common, "--n-configs", str(n_train_per_chain), "--seed", "101",
            "--out", tmp_path / "train.h5", check=True)
    run_cli("hmc", "--shape", *shp, *common, "--n-configs", str(n_test_per_chain), "--seed", "202",
            "--out", tmp_path / "test.h5", check=True)
    run_cli("diffusion", "train", "--data", tmp_path / "train.h5", "--preset", preset, "--updates", str(steps),
            "--batch-size", str(batch), "--seed", str(seed), "--out", tmp_path / "model.pt", "--json", check=True)
    run_cli("diffusion", "sample", "--model", tmp_path / "model.pt", "--n", str(n_gen), "--sampler", "em",
            "--steps", str(sample_steps), "--seed", "7", "--out", tmp_path / "gen.h5", "--json", check=True)
    run_cli("diffusion", "baseline", "--data", tmp_path / "train.h5", "--kind", "gaussian", "--n-configs", str(n_gen),
            "--seed", "9", "--out", tmp_path / "base.h5", "--json", check=True)
    res = run_cli("diffusion", "compare", "--train", tmp_path / "train.h5", "--test", tmp_path / "test.h5",
                  "--generated", tmp_path / "gen.h5", "--baseline", tmp_path / "base.h5", "--png", tmp_path / "cmp.png",
                  "--json", check=True).json()
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
    # the baseline column: exact samples reweighted by exact weights, so within errors of HMC
    # (4 sigma: 3 observables; catches a baseline row compared with the generated set, or dropped)
    b, zb = res["baseline"], res["z_baseline_vs_test"]
    assert b["kind"] == "baseline" and b["reweighted"] is True
    assert zb["susceptibility"] == pytest.approx((b["susceptibility"]["value"] - res["test"]["susceptibility"]["value"])
                                                 / (b["susceptibility"]["error"] ** 2
                                                    + res["test"]["susceptibility"]["error"] ** 2) ** 0.5, rel=1e-9)
    for key in ("magnetisation", "susceptibility", "binder"):
        assert abs(zb[key]) < 4.0, zb


def test_scaled_down_end_to_end_8x8_generated_observables_agree_with_independent_hmc(tmp_path):
    res = _pipeline(tmp_path, (8, 8), 64, 64, "tiny", 1500, 64, 1024, 100)
    _assert_acceptance(res)
    assert res["generated"]["n_configs"] * res["generated"]["n_chains"] == 1024
    assert (tmp_path / "cmp.png").stat().st_size > 0
    table = run_cli("diffusion", "compare", "--test", tmp_path / "test.h5", "--generated", tmp_path / "gen.h5",
                    "--baseline", tmp_path / "base.h5", check=True).stdout
    rows = [ln.split()[0] for ln in table.splitlines()]
    assert rows[:3] == ["data", "test", "baseline"] and "generated" in rows and "z (base vs test)" in table


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_reference_setting_32x32_fast_preset_passes_the_physics_test(tmp_path):
    """The talk's setting: 5120 training and 1024 test/generated configurations (see
    examples/diffusion_phi4_32x32.py and benchmarks/diffusion_results.md for the recorded run).

    2000 training updates, not the recorded run's 6000: with the blended target score matching of the
    current loss one update costs ~0.25 s on CI's two cores, and 6000 ran past pytest's 900 s limit
    in CI (1712 s with 2000 updates on this machine under a 3x load; the timeout leaves room for that). The observables checked here are passed by the model's analytic Gaussian part (module
    docstring), so the update count changes what the network learned, not what this test can see;
    the network's own gain is tested in tests/test_diffusion_learning.py."""
    res = _pipeline(tmp_path, (32, 32), 320, 64, "fast", 2000, 32, 1024, 100)
    print(json.dumps(res["z_generated_vs_test"], indent=1))
    _assert_acceptance(res)
