"""HMC's accept/reject on the eager (torch) path, checked against physics directly.

With numba installed the other HMC tests run the fused kernel, so a wrong Metropolis step in the
eager branch of ``HMC.step`` (the GPU path, FA-HMC, float32) was caught only by the fused-vs-eager
comparison. Here the eager chain is driven by hand (``init`` / ``step``) and compared with exact
results of the 8x8 free field at a step (leapfrog, eps = 0.3) whose MD bias is itself detectable:

* ``<phi^2>`` and ``<S>/V = 1/2`` (equipartition) against the closed forms;
* Creutz's identity ``<exp(-dH)> = 1``;
* ``<min(1, exp(-dH))> = 2 P(dH < 0)``, which follows from ``rho(-dH) = exp(dH) rho(dH)`` (the
  distribution of dH of a reversible, area-preserving MD started in equilibrium).

Every comparison is a z-score with the Gamma-method error (chains as replicas), |z| < 4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lftml.lattice import Lattice
from lftml.samplers import HMC
from lftml.samplers.rng import ChainRNG
from lftml.stats import gamma_method
from lftml.theories import FreeScalar

K_SIGMA = 4.0


def _z(x: np.ndarray, exact: float, what: str) -> None:
    est = gamma_method(x, name=what)
    assert est.error > 0, what
    z = (est.value - exact) / est.error
    assert abs(z) < K_SIGMA, f"{what}: {est.value} +- {est.error} vs exact {exact} (z = {z:.2f})"


@pytest.fixture(scope="module")
def eager_chain():
    theory = FreeScalar(Lattice((8, 8)), 0.5)
    hmc = HMC(theory, 0.3, 2, "leapfrog", backend="eager")
    n_chains, n_therm, n_meas = 32, 100, 600
    rng = ChainRNG.from_seed(2027, n_chains)
    state = hmc.init(rng.normal(theory.lattice.shape, dtype=torch.float64))  # hot start
    assert not hmc.uses_fused(state.phi)  # premise: the eager branch of HMC.step runs
    for _ in range(n_therm):
        state, _ = hmc.step(state, rng)
    rec: dict[str, list[np.ndarray]] = {"phi2": [], "s": [], "dH": [], "p_acc": []}
    for _ in range(n_meas):
        state, info = hmc.step(state, rng)
        rec["phi2"].append((state.phi**2).mean(dim=(-2, -1)).numpy())
        rec["s"].append(state.action.numpy() / theory.lattice.volume)
        rec["dH"].append(info["dH"].numpy())
        rec["p_acc"].append(info["acceptance_probability"].numpy())
    return theory, {k: np.stack(v) for k, v in rec.items()}  # each (n_meas, n_chains)


def test_eager_hmc_samples_the_exact_free_field(eager_chain):
    """Catches accept on exp(+dH) (the Metropolis sign), no accept/reject at all (the leapfrog
    shadow-Hamiltonian bias at eps = 0.3 is > 4 sigma here: see test_engine_hmc.py), keeping the
    proposal on rejection, and a stored action not updated with an accepted field (S/V is the
    sampler's own action)."""
    theory, rec = eager_chain
    _z(rec["phi2"], theory.phi2(), "<phi^2>")
    _z(rec["s"], 0.5, "<S>/V")


def test_eager_hmc_dH_satisfies_the_exact_equilibrium_identities(eager_chain):
    """<exp(-dH)> = 1 and <min(1, e^-dH)> - 2 P(dH < 0) = 0, both exact at any V and step. Catches the
    Metropolis sign (the chain leaves equilibrium), a dH formed from a stale action, and an acceptance
    probability that is not min(1, exp(-dH))."""
    _, rec = eager_chain
    dH = rec["dH"]
    assert 0.5 < float(np.mean(rec["p_acc"])) < 0.95  # premise: many rejections, so the accept step matters
    _z(np.exp(-dH), 1.0, "<exp(-dH)>")
    _z(rec["p_acc"] - 2.0 * (dH < 0), 0.0, "<min(1, exp(-dH))> - 2 P(dH < 0)")


def test_acceptance_probability_is_min_1_exp_minus_dH_on_both_info_paths():
    """HMC._info has a numpy path (CPU float64, the common case) and a torch path (GPU, autograd);
    both must give min(1, exp(-dH)) with a NaN dH (a diverged trajectory) as probability 0. Catches a
    missing clamp at 1 (the run's step-size adaptation and <acceptance> would read values > 1) on
    either path; the chain-level identity above sees only the numpy path."""
    dH = torch.tensor([-2.0, -1e-3, 0.0, 0.5, 3.0, math.inf, math.nan], dtype=torch.float64)
    expected = np.array([1.0, 1.0, 1.0, math.exp(-0.5), math.exp(-3.0), 0.0, 0.0])
    accept = torch.zeros(dH.shape, dtype=torch.bool)
    fast = HMC._info(dH, accept)["acceptance_probability"]
    slow = HMC._info(dH.clone().requires_grad_(True), accept)["acceptance_probability"].detach()
    np.testing.assert_allclose(fast.numpy(), expected, rtol=1e-15, atol=0)
    np.testing.assert_allclose(slow.numpy(), expected, rtol=1e-15, atol=0)
