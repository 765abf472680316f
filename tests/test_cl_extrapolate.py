"""The package's one dt -> 0 fitter (:func:`lftml.samplers.langevin.extrapolate`): fit quality
(chi2/dof and p-value) that can tell a model that describes the data from one that does not, the
complex wrapper built on it, and `lftml extrapolate`'s report and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli
from lftml.complex.exact import extrapolate_step_size
from lftml.errors import LftmlError
from lftml.samplers.langevin import extrapolate


def test_p_values_of_correct_fits_are_uniform_and_wrong_models_are_refused_as_acceptable():
    """2000 fits of exact a + b dt data plus Gaussian noise of the stated errors: the fraction with p < 0.05
    must be 0.05 within its binomial error (catches dof = n instead of n - n_par, chi2 from unweighted
    residuals, or sf/cdf confused). The linear model fitted to curved (Euler-like) data is not acceptable."""
    rng = np.random.default_rng(1)
    dts = np.array([0.02, 0.05, 0.1, 0.15, 0.2])
    err = np.array([0.01, 0.012, 0.015, 0.02, 0.03])
    ps = []
    for _ in range(2000):
        y = 1.0 + 0.7 * dts + err * rng.standard_normal(len(dts))
        fit = extrapolate(dts, y, err, order=1)
        assert fit.dof == 3
        ps.append(fit.p_value)
    ps = np.asarray(ps)
    frac = (ps < 0.05).mean()
    assert abs(frac - 0.05) < 4 * np.sqrt(0.05 * 0.95 / len(ps)), frac
    assert abs(np.mean(ps) - 0.5) < 4 * np.sqrt(1 / 12 / len(ps))
    # Euler's <phi^2> = 1/(k (1 - k dt/2)) for k = 5 up to dt = 0.2: a straight line does not describe it
    k = 5.0
    curved = 1 / (k * (1 - k * dts / 2))
    bad = extrapolate(dts, curved, 1e-3 * np.ones_like(dts), order=1)
    assert not bad.acceptable and bad.p_value < 1e-10 and bad.chi2_per_dof > 100
    good = extrapolate(dts[:2], curved[:2], 1e-3 * np.ones(2), order=1)
    assert good.dof == 0 and good.p_value is None and good.acceptable  # nothing to check with dof = 0


def test_bad_fit_input_is_one_line():
    for kwargs, needle in [(dict(degree=-1), "--degree must be >= 1"), (dict(degree=0), "--degree must be >= 1"),
                           (dict(order=0), "order"), (dict(powers=(0,)), "powers")]:
        with pytest.raises(LftmlError, match=needle):
            extrapolate([0.1, 0.2, 0.3], [1.0, 1.1, 1.2], [0.1, 0.1, 0.1], **kwargs)
    with pytest.raises(LftmlError, match="share a step size"):
        extrapolate([0.1, 0.1, 0.3], [1.0, 1.1, 1.2], [0.1, 0.1, 0.1])
    with pytest.raises(LftmlError, match="positive, finite errors"):
        extrapolate([0.1, 0.2], [1.0, 1.1], [0.1, float("nan")])


def test_complex_wrapper_is_the_same_fitter_per_part():
    dts = [0.01, 0.02, 0.04]
    vals = [1 + 2j + (0.3 - 0.1j) * d**2 + (0.01 + 0.02j) * k for k, d in enumerate(dts)]
    errs = [0.01 + 0.02j] * 3
    v0, e0 = extrapolate_step_size(dts, vals, errs, powers=(2,))
    re = extrapolate(dts, [v.real for v in vals], [0.01] * 3, powers=(2,))
    im = extrapolate(dts, [v.imag for v in vals], [0.02] * 3, powers=(2,))
    assert v0 == complex(re.value, im.value) and e0 == complex(re.error, im.error)


@pytest.fixture(scope="module")
def euler_ensembles(tmp_path_factory):
    """Euler Langevin of a free field (m^2 = 1 on 4x4) at dt = 0.02 ... 0.2: the O(dt) line fails at the top."""
    d = tmp_path_factory.mktemp("ext")
    paths = []
    for i, dt in enumerate(["0.02", "0.1", "0.2"]):
        p = d / f"e{i}.h5"
        run_cli("langevin", "--shape", "4", "4", "--m2", "1.0", "--lam4", "0", "--dt", dt, "--chains", "8",
                "--n-configs", "300", "--therm", "200", "--every", "5", "--seed", str(i), "--no-progress", "--json",
                "--out", p, check=True)
        paths.append(p)
    return paths


def test_cli_reports_fit_quality_and_warns_when_the_model_does_not_describe_the_data(euler_ensembles):
    res = run_cli("extrapolate", *euler_ensembles, "-o", "action_density", "--json")
    assert res.exit_code == 0, res.stderr
    ex = res.json()["extrapolated"]["action_density"]
    assert {"chi2", "dof", "chi2_per_dof", "p_value", "acceptable"} <= set(ex)
    assert ex["dof"] == 1 and not ex["acceptable"] and ex["p_value"] < 0.01
    warn = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warn) == 1 and "does not describe the data" in warn[0] and "action_density" in warn[0]
    table = run_cli("extrapolate", *euler_ensembles, "-o", "action_density")
    assert "p = " in table.stdout and "NOT DESCRIBED BY THE FIT" in table.stdout
    # a quadratic term describes the curvature: no warning
    res2 = run_cli("extrapolate", *euler_ensembles, "-o", "action_density", "--degree", "2", "--json")
    assert res2.exit_code == 0 and res2.json()["extrapolated"]["action_density"]["dof"] == 0


@pytest.mark.parametrize("args,needle", [(["--degree", "-1"], "--degree must be >= 1"),
                                         (["--degree", "3"], "needs at least 4 ensembles")])
def test_cli_bad_degree_is_one_line(euler_ensembles, args, needle):
    res = run_cli("extrapolate", *euler_ensembles, *args)
    assert res.exit_code == 2 and needle in res.stderr and res.stderr.count("\n") == 1, res.stderr
