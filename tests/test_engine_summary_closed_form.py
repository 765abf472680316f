"""``lftml.analysis.summarize`` (chi_2, chi_abs, U_L, <M>, <|M|>) on magnetisations with closed-form moments.

A second check of the derived observables, independent of any sampler: i.i.d. magnetisations M from
a distribution whose moments are known exactly, on a lattice of volume V.

* uniform on [-a, a]: <M^2> = a^2/3, <M^4> = a^4/5, <|M|> = a/2, so chi_2 = V a^2/3,
  chi_abs = V (<M^2> - <|M|>^2) = V a^2/12 and U_L = 1 - <M^4>/(3 <M^2>^2) = 2/5;
* Gaussian of width s: chi_2 = V s^2, chi_abs = V s^2 (1 - 2/pi), <|M|> = s sqrt(2/pi), U_L = 0.

Every comparison is a z-score with the Gamma-method error, |z| < 4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lftml.analysis import summarize

V = 36


def _exact(dist: str, a: float) -> dict[str, float]:
    if dist == "uniform":
        return {"magnetisation": 0.0, "abs_magnetisation": a / 2, "susceptibility": V * a * a / 3,
                "susceptibility_abs": V * a * a / 12, "binder": 0.4}
    return {"magnetisation": 0.0, "abs_magnetisation": a * math.sqrt(2 / math.pi), "susceptibility": V * a * a,
            "susceptibility_abs": V * a * a * (1 - 2 / math.pi), "binder": 0.0}


@pytest.mark.parametrize("dist", ["uniform", "gaussian"])
def test_summarize_matches_the_closed_forms_of_iid_magnetisations(dist):
    """Catches chi_2 without the factor V, the Binder cumulant with 1 - <M^4>/(2 <M^2>^2) (uniform:
    0.1 instead of 0.4; Gaussian: -0.5 instead of 0), chi_abs from <M> instead of <|M|> (it would
    equal chi_2), and an error that ignores the derived-observable propagation (z-scores blow up)."""
    rng = np.random.default_rng(11 if dist == "uniform" else 12)
    a = 0.3
    shape = (2000, 4)
    M = rng.uniform(-a, a, shape) if dist == "uniform" else a * rng.standard_normal(shape)
    out = summarize(M, V)
    for key, exact in _exact(dist, a).items():
        e = out[key]
        assert e["error"] > 0, key
        z = (e["value"] - exact) / e["error"]
        assert abs(z) < 4.0, f"{key}: {e['value']} +- {e['error']} vs exact {exact} (z = {z:.2f})"
