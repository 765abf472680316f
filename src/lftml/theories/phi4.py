r"""Real scalar phi^4 theory on a periodic lattice, in three parametrisations.

All three are the same action ``S = sum_x [ -c_hop sum_mu phi_x phi_{x+mu} + c_2 phi_x^2 + c_4 phi_x^4 ]``
with the field normalised as in that parametrisation:

* ``hopping`` (kappa, lambda):
  ``S = sum_x [ -2 kappa sum_mu phi_x phi_{x+mu} + (1 - 2 lambda) phi_x^2 + lambda phi_x^4 ]``,
  i.e. c_hop = 2 kappa, c_2 = 1 - 2 lambda, c_4 = lambda.
* ``m2_lam4`` (m^2, lambda), quartic coupling lambda/4:
  ``S = sum_x [ 1/2 sum_mu (phi_{x+mu} - phi_x)^2 + m^2 phi_x^2 / 2 + lambda phi_x^4 / 4 ]``,
  i.e. c_hop = 1, c_2 = d + m^2/2, c_4 = lambda/4.
* ``m2_g`` (m^2, g), quartic coupling g/4!:
  ``S = sum_x [ 1/2 sum_mu (phi_{x+mu} - phi_x)^2 + m^2 phi_x^2 / 2 + g phi_x^4 / 24 ]``.

Conversions (d = number of dimensions): with ``phi_cont = sqrt(2 kappa) phi_hop``,
``m^2 = (1 - 2 lambda_hop) / kappa - 2 d``, ``lambda_cont = lambda_hop / kappa^2``, ``g = 6 lambda_cont``.
Note ``m^2`` is the bare lattice mass squared; it is negative in the broken phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from lftml.errors import LftmlError
from lftml.lattice import Lattice

Form = Literal["hopping", "m2_lam4", "m2_g"]
FORMS: tuple[str, ...] = ("hopping", "m2_lam4", "m2_g")


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise LftmlError(f"{name} must be a finite number, got {value}")
    return value


@dataclass(frozen=True)
class Phi4:
    """phi^4 theory; build it with :meth:`hopping`, :meth:`m2_lam4` or :meth:`m2_g`.

    ``params`` holds the couplings of ``form`` (kappa & lam, m2 & lam, or m2 & g).
    """

    lattice: Lattice
    form: str
    params: tuple[tuple[str, float], ...]

    # ------------------------------------------------------------ constructors
    @classmethod
    def hopping(cls, lattice: Lattice, kappa: float, lam: float) -> "Phi4":
        kappa, lam = _finite("kappa", kappa), _finite("lambda", lam)
        if kappa < 0:
            raise LftmlError(f"kappa must be >= 0 in the hopping form, got {kappa}")
        if lam < 0:
            raise LftmlError(f"lambda must be >= 0 (action bounded below), got {lam}")
        if not (math.isfinite(2.0 * kappa) and math.isfinite(1.0 - 2.0 * lam)):
            raise LftmlError(f"kappa = {kappa:g}, lambda = {lam:g} overflow the action's coefficients; "
                             "use couplings of order 1")
        d = lattice.ndim
        if lam == 0 and kappa >= 1.0 / (2 * d):
            # S(c phi_const) = V c^2 (1 - 2 d kappa) -> -inf (or flat) along the constant field
            raise LftmlError(f"with lambda = 0 the hopping-form action is unbounded below for kappa >= 1/(2d) = "
                             f"{1.0 / (2 * d):g} (got kappa = {kappa:g}); use kappa < {1.0 / (2 * d):g} or lambda > 0")
        return cls(lattice, "hopping", (("kappa", kappa), ("lam", lam)))

    @classmethod
    def m2_lam4(cls, lattice: Lattice, m2: float, lam: float) -> "Phi4":
        m2, lam = _finite("m2", m2), _finite("lambda", lam)
        if lam < 0:
            raise LftmlError(f"lambda must be >= 0 (action bounded below), got {lam}")
        if lam == 0 and m2 <= 0:
            raise LftmlError(f"with lambda = 0 the action needs m2 > 0 to be bounded below, got m2 = {m2}")
        return cls(lattice, "m2_lam4", (("m2", m2), ("lam", lam)))

    @classmethod
    def m2_g(cls, lattice: Lattice, m2: float, g: float) -> "Phi4":
        m2, g = _finite("m2", m2), _finite("g", g)
        if g < 0:
            raise LftmlError(f"g must be >= 0 (action bounded below), got {g}")
        if g == 0 and m2 <= 0:
            raise LftmlError(f"with g = 0 the action needs m2 > 0 to be bounded below, got m2 = {m2}")
        return cls(lattice, "m2_g", (("m2", m2), ("g", g)))

    # ------------------------------------------------------------ parameters
    def __getitem__(self, key: str) -> float:
        return dict(self.params)[key]

    @property
    def coefficients(self) -> tuple[float, float, float]:
        """(c_hop, c_2, c_4) of ``S = sum_x [-c_hop sum_mu phi phi_{+mu} + c_2 phi^2 + c_4 phi^4]``."""
        p = dict(self.params)
        d = self.lattice.ndim
        if self.form == "hopping":
            return 2.0 * p["kappa"], 1.0 - 2.0 * p["lam"], p["lam"]
        if self.form == "m2_lam4":
            return 1.0, d + p["m2"] / 2.0, p["lam"] / 4.0
        return 1.0, d + p["m2"] / 2.0, p["g"] / 24.0

    def to_form(self, form: str) -> tuple["Phi4", float]:
        """The same theory in another parametrisation, and the field scale ``s`` with
        ``phi_new = s * phi_old``. Observables transform as M -> s M, chi_2 -> s^2 chi_2;
        the Binder cumulant is invariant."""
        if form not in FORMS:
            raise LftmlError(f"unknown phi^4 form {form!r}; choose one of {', '.join(FORMS)}")
        c_hop, c2, c4 = self.coefficients
        d = self.lattice.ndim
        if c_hop <= 0:
            raise LftmlError("a theory with zero hopping (kappa = 0) has no continuum-form equivalent")
        # to the continuum normalisation (c_hop = 1): phi_c = sqrt(c_hop) phi
        s_to_cont = math.sqrt(c_hop)
        m2 = 2.0 * (c2 / c_hop - d)
        lam_c = 4.0 * c4 / c_hop**2
        if form == "m2_lam4":
            return Phi4.m2_lam4(self.lattice, m2, lam_c), s_to_cont
        if form == "m2_g":
            return Phi4.m2_g(self.lattice, m2, 6.0 * lam_c), s_to_cont
        # hopping: kappa from m2 = (1 - 2 lam)/kappa - 2d, lam = lam_c kappa^2
        # => lam_c kappa^2 * 2 + (m2 + 2d) kappa - 1 = 0
        a, b = 2.0 * lam_c, m2 + 2.0 * d
        if a == 0:
            if b <= 0:
                raise LftmlError("this theory has no hopping form (m2 + 2d <= 0 with lambda = 0)")
            kappa = 1.0 / b
        else:
            kappa = (-b + math.sqrt(b * b + 4.0 * a)) / (2.0 * a)
        lam_h = lam_c * kappa**2
        return Phi4.hopping(self.lattice, kappa, lam_h), s_to_cont / math.sqrt(2.0 * kappa)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "phi4", "form": self.form, "shape": list(self.lattice.shape), **dict(self.params)}

    def describe(self) -> str:
        return f"phi^4 ({self.form}: " + ", ".join(f"{k}={v:g}" for k, v in self.params) + f") on {self.lattice.shape}"

    # ------------------------------------------------------------ action and force
    def action(self, phi: torch.Tensor) -> torch.Tensor:
        """S per configuration: shape ``phi.shape[:-d]``."""
        c_hop, c2, c4 = self.coefficients
        lat = self.lattice
        hop = lat.shift(phi, 0, +1)
        for mu in range(1, lat.ndim):
            hop = hop + lat.shift(phi, mu, +1)
        phi2 = phi * phi
        density = -c_hop * phi * hop + c2 * phi2 + c4 * phi2 * phi2
        return density.sum(dim=lat.dims)

    def force(self, phi: torch.Tensor) -> torch.Tensor:
        """``-dS/dphi = c_hop sum_mu (phi_{x+mu} + phi_{x-mu}) - 2 c_2 phi - 4 c_4 phi^3``."""
        c_hop, c2, c4 = self.coefficients
        return c_hop * self.lattice.neighbour_sum(phi) - phi * (2.0 * c2 + 4.0 * c4 * phi * phi)

    def mean_field_vev(self) -> float:
        """Minimum of the potential of a constant field, |phi| (0 in the symmetric mean-field phase).
        Used as the ordered ('cold') start."""
        c_hop, c2, c4 = self.coefficients
        a = c_hop * self.lattice.ndim - c2
        if a <= 0 or c4 <= 0:
            return 0.0
        return math.sqrt(a / (2.0 * c4))
