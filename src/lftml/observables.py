"""Per-configuration observables of real scalar fields.

Conventions (V = volume, T = extent of lattice axis 0, the "time" direction):

* ``M = (1/V) sum_x phi_x`` (site average), ``absM = |M|``, ``M2 = M^2``, ``M4 = M^4``;
* ``action_density = S / V`` (needs the theory);
* ``slice_mean[t] = (1/V_s) sum_{x_spatial} phi(t, x)`` with ``V_s = V / T``; the connected
  zero-momentum correlator is ``C(t) = V_s (<s(t0+t) s(t0)> - <M>^2)`` averaged over t0, which
  equals ``sum_x G_conn(t, x)`` (see :func:`lftml.analysis.correlator`).

Ensemble-level quantities (chi_2, Binder cumulant, ...) are derived in :mod:`lftml.analysis`.
"""

from __future__ import annotations

import numpy as np
import torch

from lftml.theories.base import Theory

STANDARD = ("M", "absM", "M2", "M4", "action_density", "slice_mean")


def measure(configs: torch.Tensor | np.ndarray, theory: Theory | None = None) -> dict[str, np.ndarray]:
    """Standard observables for a batch ``configs`` of shape ``(n_chains, *lattice_shape)``.

    Returns float64 numpy arrays: ``M, absM, M2, M4, action_density`` with shape ``(n_chains,)``
    (``action_density`` only when ``theory`` is given) and ``slice_mean`` with shape ``(n_chains, T)``.
    The lattice shape is taken from ``theory`` if given, else all axes after the first.
    """
    phi = torch.as_tensor(configs)
    if phi.is_complex():
        raise TypeError("measure() is for real fields; complex-Langevin models define their own observables")
    if theory is not None:
        theory.lattice.check_field(phi, "configurations")
        ndim = theory.lattice.ndim
    else:
        ndim = phi.ndim - 1
    dims = tuple(range(-ndim, 0))
    M = phi.mean(dim=dims)
    M2 = M * M
    out = {
        "M": M,
        "absM": M.abs(),
        "M2": M2,
        "M4": M2 * M2,
        "slice_mean": phi.mean(dim=dims[1:]) if ndim > 1 else phi,
    }
    if theory is not None:
        out["action_density"] = theory.action(phi.to(torch.float64)) / theory.lattice.volume
    return {k: v.detach().to(torch.float64).cpu().numpy() for k, v in out.items()}


def measure_history(configs: torch.Tensor | np.ndarray, theory: Theory | None = None) -> dict[str, np.ndarray]:
    """:func:`measure` for a history ``(n_configs, n_chains, *lattice_shape)``: each observable
    ``(n_configs, n_chains, ...)``. What callers pass to :func:`lftml.ensemble.write_ensemble`."""
    per = [measure(torch.as_tensor(np.asarray(c) if not isinstance(c, torch.Tensor) else c), theory) for c in configs]
    return {k: np.stack([p[k] for p in per]) for k in per[0]} if per else {}
