r"""The kinetic term of HMC: a momentum covariance M, as a pluggable piece.

With a mass matrix M the HMC Hamiltonian is ``H = pi^T M^{-1} pi / 2 + S(phi)``: momenta are drawn
as ``pi ~ N(0, M)``, the kinetic energy is ``pi^T M^{-1} pi / 2`` and the MD velocity is
``dphi/dt = M^{-1} pi`` (``dpi/dt = -dS/dphi`` as before). Any symmetric positive M leaves exp(-S)
exact (Metropolis on the full H; the leapfrog/Omelyan maps stay reversible and area-preserving);
M only changes the frequencies ``omega^2 = eig(M^{-1} Hessian)`` and so the speed of each mode.

* :class:`IdentityMass`: M = 1 (plain HMC, the default; the same random numbers as always).
* :class:`FourierMass`: M diagonal in momentum space, ``M = F^{-1} diag(m(p)) F`` with ``m(p) > 0``
  and ``m(p) = m(-p)`` (so M is a real symmetric circulant operator). Applied with real FFTs
  (``torch.fft.rfftn`` / ``irfftn``) over the lattice axes of a ``(n_chains, *shape)`` batch, in any
  dimension: ``pi = F^{-1} sqrt(m) F xi`` with white ``xi``, ``M^{-1} pi = F^{-1} (F pi / m)``.

Choosing m(p) (Fourier acceleration, Davies et al. 1988; Duane-Kogut; Espinoza-Grande 2016):
with ``m(p) = 1 / G(p)``, G the propagator, every mode of a Gaussian theory has omega = 1, so a
trajectory of length pi/2 maps phi to an independent configuration in one trajectory.

* :meth:`FourierMass.from_action` (default of ``--algorithm fa-hmc``): the quadratic part of the
  action, ``K(p) = 2 c_2 - 2 c_hop sum_mu cos p_mu`` (for the free field exactly ``p_hat^2 + m^2``,
  the inverse propagator: exact acceleration). For an interacting theory (c_4 > 0) this is an
  approximation (it only affects efficiency, never exactness) and K(0) can be small or negative
  near and beyond the mean-field transition; the zero mode and every mode are then floored:
  ``m(p) = c_hop p_hat^2 + mu^2`` with ``mu^2 = max(K(0), c_hop p_hat^2_min)``, p_hat^2_min the
  smallest non-zero lattice momentum: near criticality the renormalised mass is of order 1/L, so
  the zero mode is treated like the softest non-zero mode. (Deep in a broken phase, where the
  within-well curvature 4 (d c_hop - c_2) is much larger, a pilot is better.)
* :meth:`FourierMass.from_ensemble` (``--mass-from ens.h5``): ``m(p) = 1 / G(p)`` measured in a
  pilot ensemble, ``G(p) = <|phi~_p|^2> / V`` (``phi~ = F phi``, unnormalised FFT) for p != 0
  (connected by translation invariance). The zero mode is regularised with the connected
  within-well variance ``G(0) = V (<M^2> - <|M|>^2)`` instead of the unconnected ``V <M^2>``: near
  criticality the magnetisation is bimodal, ``V <M^2>`` is dominated by the separation of the two
  wells, and ``m(0) = 1 / (V <M^2>)`` makes the zero mode's frequency inside a well
  ``omega^2 = <M^2> / (<M^2> - <|M|>^2) >> 1`` (measured: acceptance ~1% at L = 64). Tunnelling
  between the wells is left to the dynamics (or to a cluster move). For a Gaussian pilot this
  choice makes the zero mode slower (omega^2 = 1 - 2/pi = 0.36), not unstable.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from lftml.errors import FileFormatError, LftmlError
from lftml.lattice import Lattice


class KineticTerm(Protocol):
    """What HMC needs from a kinetic term (see the module docstring for the conventions)."""

    name: str

    def sample(self, rng: Any, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor: ...

    def energy(self, pi: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor: ...

    def velocity(self, pi: torch.Tensor) -> torch.Tensor: ...

    def inverse_mass_spectrum(self) -> np.ndarray | None: ...

    def settings(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class IdentityMass:
    """M = 1: ``pi ~ N(0, 1)`` per site, kinetic energy ``sum pi^2 / 2``, velocity ``pi``."""

    name: str = "identity"

    def sample(self, rng: Any, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        return rng.normal(shape, dtype=dtype)

    def energy(self, pi: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """``sum pi^2 / 2`` per chain, accumulated in float64 (float32 runs: no cancellation in dH)."""
        p = pi.to(torch.float64)
        return 0.5 * (p * p).sum(dim=dims)

    def velocity(self, pi: torch.Tensor) -> torch.Tensor:
        return pi

    def inverse_mass_spectrum(self) -> None:
        return None

    def settings(self) -> dict[str, Any]:
        return {"kind": "identity"}


@dataclass(frozen=True, eq=False)
class FourierMass:
    """M diagonal in momentum space with eigenvalues ``spectrum`` (shape = lattice shape, numpy FFT
    order, positive and even under p -> -p). ``source`` says where it came from (``"action"`` or
    ``"pilot"``), ``details`` records how (JSON-ready, stored in the ensemble's sampler metadata)."""

    lattice: Lattice
    spectrum: np.ndarray
    source: str = "action"
    details: dict[str, Any] = field(default_factory=dict)
    name: str = "fourier"

    def __post_init__(self) -> None:
        m = np.asarray(self.spectrum, dtype=np.float64)
        if m.shape != self.lattice.shape:
            raise LftmlError(f"Fourier mass has shape {m.shape}, the lattice is {self.lattice.shape}")
        if not np.all(np.isfinite(m)) or np.any(m <= 0):
            raise LftmlError("the Fourier mass must be finite and positive at every momentum "
                             f"(min {np.nanmin(m):.3g}); the pilot ensemble is too short or not of this theory")
        reflected = m[np.ix_(*[(-np.arange(n)) % n for n in m.shape])]
        m = 0.5 * (m + reflected)  # exactly even, so that M is a real symmetric operator
        m.setflags(write=False)
        object.__setattr__(self, "spectrum", m)
        half = m[..., : m.shape[-1] // 2 + 1]
        object.__setattr__(self, "_half", np.ascontiguousarray(half))
        object.__setattr__(self, "_cache", {})

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_action(cls, theory: Any) -> "FourierMass":
        """m(p) from the quadratic part of the action (see the module docstring for the floor)."""
        coefficients = getattr(theory, "coefficients", None)
        if coefficients is None:
            raise LftmlError(f"FA-HMC's default mass needs an action of the phi^4 form; {type(theory).__name__} "
                             "has none: give a measured propagator with --mass-from ENS")
        c_hop, c2, c4 = (float(c) for c in coefficients)
        lat = theory.lattice
        p_hat2 = lat.p_hat2()
        k0 = 2.0 * c2 - 2.0 * lat.ndim * c_hop
        details: dict[str, Any] = {"rule": "quadratic part of the action"}
        if c4 == 0.0:
            if k0 <= 0 or c_hop < 0:
                raise LftmlError("the quadratic part of this action is not positive; FA-HMC needs --mass-from ENS")
            m = k0 + c_hop * p_hat2
            details["zero_mode"] = k0
        else:
            nonzero = p_hat2[p_hat2 > 1e-12]
            floor = abs(c_hop) * float(nonzero.min()) if nonzero.size else 1.0
            mu2 = max(k0, floor)
            if c_hop <= 0:
                m = np.full(lat.shape, max(2.0 * c2, floor))
            else:
                m = c_hop * p_hat2 + mu2
            details.update(zero_mode=mu2, k0=k0, floor=floor)
        return cls(lat, m, "action", details)

    @classmethod
    def from_ensemble(cls, path: str | Path, theory: Any, discard: int = 0, block: int = 64) -> "FourierMass":
        """m(p) = 1/G(p) measured in the pilot ensemble ``path`` (see the module docstring).

        The pilot must be an lftml ensemble of real fields on the same lattice, of the same kind of
        theory (same field normalisation: name and, for phi^4, the form); its couplings may differ."""
        from lftml.ensemble import Ensemble

        path = Path(path)
        if not path.exists():
            raise LftmlError(f"--mass-from {path}: no such file")
        if path.is_dir():
            raise LftmlError(f"--mass-from {path} is a directory; give an ensemble file")
        try:
            ens = Ensemble.open(path)
        except FileFormatError as exc:
            raise LftmlError(f"--mass-from {path}: {exc}") from None
        try:
            lat = theory.lattice
            if tuple(ens.lattice_shape) != tuple(lat.shape):
                raise LftmlError(f"--mass-from {path}: its lattice is {tuple(ens.lattice_shape)}, this run's is "
                                 f"{tuple(lat.shape)}; make a pilot on the same lattice")
            pilot = ens.metadata.get("theory") or {}
            mine = theory.to_dict()
            if pilot.get("name") != mine.get("name") or pilot.get("form") != mine.get("form"):
                kind = lambda d: d.get("name", "?") + (f" ({d['form']} form)" if d.get("form") else "")  # noqa: E731
                raise LftmlError(f"--mass-from {path}: a {kind(pilot)} ensemble cannot give the mass of a "
                                 f"{kind(mine)} run (different field normalisation); use a pilot of the same theory")
            n = ens.n_configs - int(discard)
            if n < 4:
                raise LftmlError(f"--mass-from {path}: it holds {ens.n_configs} configurations; a propagator "
                                 "needs at least 4")
            blocks = (np.asarray(ens.load_configs(b, b + block), dtype=np.float64)
                      for b in range(int(discard), ens.n_configs, block))
            mass = cls.from_configs(blocks, theory, source="pilot", what=f"--mass-from {path}")
        finally:
            ens.close()
        mass.details.update(pilot=str(path), pilot_theory=pilot)
        return mass

    @classmethod
    def from_configs(cls, blocks: Any, theory: Any, source: str = "pilot", what: str = "the pilot") -> "FourierMass":
        """m(p) = 1/G(p) from configurations: an array ``(n, ..., *shape)`` or an iterable of such blocks
        (the rule of :meth:`from_ensemble`)."""
        lat = theory.lattice
        if isinstance(blocks, (np.ndarray, torch.Tensor)):
            blocks = [blocks]
        dims, V = lat.dims, lat.volume
        power = torch.zeros(lat.shape, dtype=torch.float64)
        m2_sum = abs_sum = 0.0
        count = 0
        for b in blocks:
            x = torch.as_tensor(b)
            if x.is_complex() or tuple(x.shape[x.ndim - lat.ndim:]) != tuple(lat.shape):
                raise LftmlError(f"{what}: its configurations are not real fields of this lattice")
            x = x.to(torch.float64).reshape(-1, *lat.shape)
            f = torch.fft.fftn(x, dim=dims)
            power += (f.real**2 + f.imag**2).sum(dim=0)
            M = x.mean(dim=dims)
            m2_sum += float((M * M).sum())
            abs_sum += float(M.abs().sum())
            count += x.shape[0]
        if count < 4:
            raise LftmlError(f"{what}: a propagator needs at least 4 configurations, got {count}")
        G = (power / count / V).numpy()
        m2_mean, abs_mean = m2_sum / count, abs_sum / count
        g0 = V * (m2_mean - abs_mean**2)
        G[(0,) * lat.ndim] = g0
        if not np.all(np.isfinite(G)) or np.any(G <= 0):
            raise LftmlError(f"{what}: the measured propagator is not positive everywhere; "
                             "the pilot is too short or constant")
        details = {"rule": "1/G(p) of a pilot; zero mode 1/(V(<M^2>-<|M|>^2))", "pilot_samples": count,
                   "zero_mode": 1.0 / g0, "unconnected_zero_mode": 1.0 / (V * m2_mean)}
        return cls(lat, 1.0 / G, source, details)

    # ------------------------------------------------------------------ the operator
    def _half_spectrum(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._cache:
            h = torch.tensor(self._half, dtype=torch.float64, device=device)
            self._cache[key] = (h.sqrt(), 1.0 / h)
        return self._cache[key]

    def _apply(self, x: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
        dims = self.lattice.dims
        f = torch.fft.rfftn(x.to(torch.float64), dim=dims)
        return torch.fft.irfftn(f * half, s=self.lattice.shape, dim=dims)

    def sample(self, rng: Any, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """``pi = F^{-1} sqrt(m) F xi`` with ``xi ~ N(0, 1)`` per site: covariance exactly M."""
        xi = rng.normal(shape, dtype=dtype)
        sqrt_m, _ = self._half_spectrum(xi.device)
        return self._apply(xi, sqrt_m).to(dtype)

    def velocity(self, pi: torch.Tensor) -> torch.Tensor:
        """``M^{-1} pi``, in ``pi``'s dtype."""
        _, inv = self._half_spectrum(pi.device)
        return self._apply(pi, inv).to(pi.dtype)

    def drift_(self, phi: torch.Tensor, pi: torch.Tensor, coef: float | torch.Tensor,
               work: dict[str, torch.Tensor]) -> None:
        """``phi += coef * M^{-1} pi`` in place (float64 ``phi`` and ``pi``; ``coef`` a number or one per
        chain, shaped to broadcast), the same operations and so the same bits as ``phi + coef *
        self.velocity(pi)``, without temporaries: the spectrum and the velocity go through the buffers
        in ``work`` (filled on first use, reused by every later call with the same shapes)."""
        dims = self.lattice.dims
        _, inv = self._half_spectrum(pi.device)
        f = work.get("f")
        if f is None or f.shape[:-1] != pi.shape[:-1]:
            f = work["f"] = torch.fft.rfftn(pi, dim=dims)
            work["v"] = torch.empty_like(pi)
        else:
            torch.fft.rfftn(pi, dim=dims, out=f)
        f.mul_(inv)
        v = work["v"]
        torch.fft.irfftn(f, s=self.lattice.shape, dim=dims, out=v)
        v.mul_(coef)
        phi.add_(v)

    def energy(self, pi: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """``pi^T M^{-1} pi / 2`` per chain, in float64, from one real FFT (Parseval; ``dims`` are the
        lattice axes, as for :class:`IdentityMass`)."""
        dims = self.lattice.dims
        f = torch.fft.rfftn(pi.to(torch.float64), dim=dims)
        return (f.real.square() + f.imag.square()).mul_(self._parseval_weights(pi.device)).sum(dim=dims)

    def _parseval_weights(self, device: torch.device) -> torch.Tensor:
        """``w_p / (2 V m(p))`` on the rfft half-spectrum, ``w_p = 2`` for the columns that stand for two
        modes (p and -p) and 1 for the self-conjugate columns 0 and n/2 (n even): then
        ``sum_p w |F pi|^2 / (2 V m) = pi^T M^{-1} pi / 2`` (Parseval) with one forward transform."""
        key = "parseval:" + str(device)
        if key not in self._cache:
            n = self.lattice.shape[-1]
            w = np.full(n // 2 + 1, 2.0)
            w[0] = 1.0
            if n % 2 == 0:
                w[-1] = 1.0
            self._cache[key] = torch.tensor(w / (2.0 * self.lattice.volume) / self._half, dtype=torch.float64,
                                            device=device)
        return self._cache[key]

    def inverse_mass_spectrum(self) -> np.ndarray:
        return 1.0 / self.spectrum

    def digest(self) -> str:
        """SHA-256 (first 16 hex digits) of the spectrum's bytes: a resumed run must use the same M."""
        return hashlib.sha256(np.ascontiguousarray(self.spectrum).tobytes()).hexdigest()[:16]

    def settings(self) -> dict[str, Any]:
        s = {"kind": "fourier", "source": self.source, "digest": self.digest()}
        for k, v in self.details.items():
            s[k] = v if not isinstance(v, float) or math.isfinite(v) else None
        return s


def kinetic_from_name(name: str, theory: Any, mass_from: str | Path | None = None) -> KineticTerm:
    """``"hmc"`` -> :class:`IdentityMass`; ``"fa-hmc"`` -> :class:`FourierMass` (from ``mass_from`` if
    given, else from the action). One-line errors for anything else."""
    if name == "hmc":
        if mass_from is not None:
            raise LftmlError("--mass-from is for --algorithm fa-hmc; plain HMC has unit mass")
        return IdentityMass()
    if name == "fa-hmc":
        if mass_from is not None:
            return FourierMass.from_ensemble(mass_from, theory)
        return FourierMass.from_action(theory)
    raise LftmlError(f"unknown --algorithm {name!r}; choose hmc or fa-hmc")
