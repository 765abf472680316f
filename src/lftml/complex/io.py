"""Complex Langevin runs as lftml ensemble files (engine format, complex128 fields).

Layout (on top of :mod:`lftml.ensemble`): ``configs`` hold the field at the end of every bin,
``(n_bins, n_chains, *field_shape)`` complex128. Observables, all ``(n_bins, n_chains, ...)``:

* ``<name>``: time-weighted bin means of each holomorphic observable (complex);
* ``criterion_<name>``: bin means of ``L_c O``; ``boundary_<name>``: bin means of
  ``L_c O * Theta(Y - max|Im z|)``, trailing axis over the cut-offs Y;
* ``step_criterion_<name>``, ``step_boundary_<name>``: the same for ``L_eps O`` (the criterion of the
  discretised process), with its bin weights ``step_weight`` (absent in files of lftml <= 0.x: then
  only the continuum criterion is judged);
* ``fraction_inside``: fraction of the bin's time with ``max|Im z| <= Y``;
* ``bin_time`` (Langevin-time length of the bin: the weight), ``mean_step``, ``k_max`` (time-weighted
  mean of ``max|K|``), ``imag_max`` (largest ``|Im z|`` in the bin).

Metadata: ``kind = "complex_langevin"``, ``model`` (model.to_dict()), ``sampler`` (settings), ``seed``,
``cutoffs``, ``drift_hist`` and ``imag_hist`` (Langevin-time-weighted histograms, see
:class:`lftml.complex.langevin.CLRun`), ``drift_reference`` (<K_max> of the adaptive step),
``n_steps``, ``exact`` ({name: [re, im] or None}).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lftml.complex.langevin import CLRun
from lftml.errors import FileFormatError

__all__ = ["write_run", "read_run"]

_SCALARS = ("bin_time", "mean_step", "k_max", "imag_max")


def _pair(x: complex | None) -> list[float] | None:
    return None if x is None else [complex(x).real, complex(x).imag]


def write_run(path: str | Path, run: CLRun, extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write ``run`` atomically as an ensemble file (see module docstring)."""
    from lftml.ensemble import write_ensemble

    obs: dict[str, np.ndarray] = {}
    for k, v in run.bins.items():
        obs[k] = v
    for k, v in run.criterion.items():
        obs[f"criterion_{k}"] = v
        obs[f"boundary_{k}"] = run.boundary[k]
    if run.step_criterion is not None and run.step_boundary is not None and run.step_weights is not None:
        for k, v in run.step_criterion.items():
            obs[f"step_criterion_{k}"] = v
            obs[f"step_boundary_{k}"] = run.step_boundary[k]
        obs["step_weight"] = run.step_weights
    obs["fraction_inside"] = run.fraction_inside
    obs["bin_time"] = run.weights
    obs["mean_step"] = run.mean_step
    obs["k_max"] = run.k_max
    obs["imag_max"] = run.imag_max
    if run.configs is None:
        configs = np.zeros(run.weights.shape + (1,), dtype=np.complex128)
    else:
        configs = run.configs
    metadata = {
        "kind": "complex_langevin",
        "theory": None,
        "model": run.model,
        "sampler": {"name": "complex_langevin", **run.settings},
        "seed": run.seed,
        "observables": list(run.bins),
        "criterion_observables": list(run.criterion),
        "cutoffs": [float(y) for y in run.cutoffs],
        "drift_hist": [float(x) for x in run.drift_hist],
        "imag_hist": [float(x) for x in run.imag_hist],
        "drift_reference": run.drift_reference,
        "n_steps": int(run.n_steps),
        "wall_time_s": float(run.wall_time_s),
        "exact": {k: _pair(v) for k, v in run.exact.items()},
        "configs_saved": run.configs is not None,
        **(extra_metadata or {}),
    }
    path = Path(path)
    try:
        return write_ensemble(path, configs, metadata=metadata, observables=obs)
    except BaseException as exc:  # a full disk or an interrupt: leave no half-written temporary behind
        Path(path).with_name(path.name + ".partial").unlink(missing_ok=True)
        if isinstance(exc, OSError):
            from lftml.safeio import write_error

            raise write_error(exc, path) from None
        raise


def read_run(path: str | Path) -> CLRun:
    """Read a run written by :func:`write_run` (raises :class:`FileFormatError` for other files)."""
    from lftml.ensemble import Ensemble

    with Ensemble.open(path) as ens:
        meta = ens.metadata
        if meta.get("kind") != "complex_langevin":
            raise FileFormatError(
                f"{path} is an lftml ensemble of kind {meta.get('kind')!r}, not a complex Langevin run "
                "(write one with `lftml cl run ... --out run.h5`)"
            )
        try:
            o = ens.observables
            names = list(meta["observables"])
            crit_names = list(meta["criterion_observables"])
            exact = {k: (None if v is None else complex(v[0], v[1])) for k, v in meta.get("exact", {}).items()}
            configs = ens.load_configs() if meta.get("configs_saved", True) else None
            has_step = "step_weight" in o
            return CLRun(
                model=meta["model"],
                settings={k: v for k, v in meta["sampler"].items() if k != "name"},
                seed=int(meta["seed"]),
                n_chains=ens.n_chains,
                bins={k: o[k] for k in names},
                criterion={k: o[f"criterion_{k}"] for k in crit_names},
                boundary={k: o[f"boundary_{k}"] for k in crit_names},
                cutoffs=np.asarray(meta["cutoffs"], dtype=float),
                fraction_inside=o["fraction_inside"],
                weights=o["bin_time"],
                configs=configs,
                drift_hist=np.asarray(meta["drift_hist"], dtype=float),
                imag_hist=np.asarray(meta["imag_hist"], dtype=float),
                mean_step=o["mean_step"],
                k_max=o["k_max"],
                imag_max=o["imag_max"],
                drift_reference=meta.get("drift_reference"),
                n_steps=int(meta["n_steps"]),
                wall_time_s=float(meta.get("wall_time_s", 0.0)),
                exact=exact,
                step_criterion={k: o[f"step_criterion_{k}"] for k in crit_names} if has_step else None,
                step_boundary={k: o[f"step_boundary_{k}"] for k in crit_names} if has_step else None,
                step_weights=o["step_weight"] if has_step else None,
            )
        except KeyError as exc:
            raise FileFormatError(f"{path} is a damaged complex Langevin run (missing {exc})") from None
