"""The protocol every real-action lattice theory follows, and (de)serialisation for provenance."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from lftml.errors import LftmlError
from lftml.lattice import Lattice


@runtime_checkable
class Theory(Protocol):
    """A real Euclidean lattice action on fields ``(n_chains, *lattice.shape)``.

    ``action`` returns S per chain (shape ``(n_chains,)``); ``force`` returns ``-dS/dphi`` with the
    shape of ``phi``. ``to_dict`` returns JSON-serialisable parameters, inverted by
    :func:`theory_from_dict`.
    """

    lattice: Lattice

    def action(self, phi: torch.Tensor) -> torch.Tensor: ...

    def force(self, phi: torch.Tensor) -> torch.Tensor: ...

    def to_dict(self) -> dict[str, Any]: ...


def theory_from_dict(d: dict[str, Any]) -> Theory:
    """Rebuild a theory from its ``to_dict()`` record (as stored in ensemble files and models)."""
    from lftml.theories.free import FreeScalar
    from lftml.theories.phi4 import Phi4

    name = d.get("name")
    lattice = Lattice(d["shape"])
    if name == "free":
        return FreeScalar(lattice, m2=float(d["m2"]))
    if name == "phi4":
        form = d["form"]
        if form == "hopping":
            return Phi4.hopping(lattice, kappa=float(d["kappa"]), lam=float(d["lam"]))
        if form == "m2_lam4":
            return Phi4.m2_lam4(lattice, m2=float(d["m2"]), lam=float(d["lam"]))
        if form == "m2_g":
            return Phi4.m2_g(lattice, m2=float(d["m2"]), g=float(d["g"]))
    raise LftmlError(f"unknown theory record {d!r}: expected name 'free' or 'phi4'")
