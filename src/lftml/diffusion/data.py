"""Training/test data for diffusion models: engine ensemble files -> arrays of configurations.

An ensemble ``(n_configs, n_chains, *lattice_shape)`` is flattened to ``(n_configs * n_chains,
*lattice_shape)`` (configuration-major). Optionally it is thinned by the measured integrated
autocorrelation time of M (``thin="auto"``: keep every ``ceil(2 tau_int)``-th configuration of each
chain), so that training and test sets hold (nearly) independent configurations.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lftml.errors import LftmlError

__all__ = ["LoadedData", "load_configs"]

log = logging.getLogger(__name__)


@dataclass
class LoadedData:
    configs: np.ndarray  # (n, *lattice_shape) float64
    theory: dict | None
    metadata: dict
    lattice_shape: tuple[int, ...]
    tau_int_M: float | None
    thin: int
    path: str

    def info(self) -> dict:
        return {"path": self.path, "n_configs": int(self.configs.shape[0]), "thin": self.thin,
                "tau_int_M": self.tau_int_M, "kind": self.metadata.get("kind"), "seed": self.metadata.get("seed")}


def load_configs(path: str | Path, *, discard: int = 0, thin: int | str = 1, max_configs: int | None = None) -> LoadedData:
    """Read an ensemble file (see :mod:`lftml.ensemble`) as an array of configurations.

    ``thin`` is an integer stride along Monte Carlo time or ``"auto"`` (``ceil(2 tau_int(M))``)."""
    from lftml.ensemble import Ensemble
    from lftml.stats import gamma_method

    ens = Ensemble.open(path)
    try:
        n = ens.n_configs
        if n - discard < 1:
            raise LftmlError(f"{path} holds {n} configurations; nothing left after discarding {discard}")
        tau = None
        M = ens.observables.get("M")
        if M is not None and M.shape[0] - discard >= 8:
            try:
                tau = float(gamma_method(M[discard:]).tau_int)
            except LftmlError:
                tau = None
        if thin == "auto":
            stride = max(1, math.ceil(2.0 * tau)) if tau is not None else 1
        else:
            try:
                stride = int(thin)
            except (TypeError, ValueError):
                raise LftmlError(f"--thin must be a positive integer or 'auto', got {thin!r}") from None
            if stride < 1:
                raise LftmlError(f"--thin must be >= 1, got {thin}")
        if np.issubdtype(ens.configs.dtype, np.complexfloating) or ens.metadata.get("kind") == "complex_langevin":
            # checked before the float64 cast, which would silently drop the imaginary parts
            raise LftmlError(f"{path} holds complex fields (a complex Langevin run); diffusion models are for "
                             "real scalar fields")
        c = np.asarray(ens.configs[discard:n:stride], dtype=np.float64)
        c = c.reshape(-1, *ens.lattice_shape)
        if max_configs is not None:
            c = c[:max_configs]
        meta = dict(ens.metadata)
        theory = meta.get("theory")
        shape = tuple(ens.lattice_shape)
    finally:
        ens.close()
    log.info("%s: %d configurations (thin %d, tau_int(M) %s)", path, c.shape[0], stride, tau)
    return LoadedData(c, theory, meta, shape, tau, stride, str(path))
