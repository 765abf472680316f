"""Hybrid Monte Carlo (Duane, Kennedy, Pendleton, Roweth 1987), batched over chains.

One trajectory: draw momenta pi ~ N(0, 1) per site, integrate Hamilton's equations of
``H = sum pi^2/2 + S(phi)`` for ``n_steps`` steps of size ``step_size`` (trajectory length
``step_size * n_steps``) with a reversible symplectic integrator, then accept the end point with
probability ``min(1, exp(-dH))``, ``dH = H_end - H_start``. This is exact for any step size (the
step size only changes the acceptance rate). Step-size adaptation is done by the driver
(:mod:`lftml.run`) during thermalisation only, and frozen afterwards.

The kinetic term is a field of the settings (:mod:`lftml.samplers.kinetic`): unit mass (default,
plain HMC, fused or eager) or a Fourier-diagonal mass M (FA-HMC, eager): ``pi ~ N(0, M)``,
``H = pi M^{-1} pi / 2 + S``, drift ``M^{-1} pi``. H and dH are always formed in float64 (a float32
run sums its float32 fields and momenta in float64: at V ~ 1e4 float32 sums of H ~ V cancel in dH).
An optional embedded-Ising cluster move (:mod:`lftml.samplers.cluster`) follows every
``cluster_every``-th trajectory (counted from the start of the run, thermalisation included, by
``HMCState.n_updates``); it leaves exp(-S) invariant, so the composition is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.samplers import fused
from lftml.samplers.cluster import ClusterMove
from lftml.samplers.integrators import FORCES_PER_STEP, INTEGRATORS
from lftml.samplers.kinetic import IdentityMass, KineticTerm
from lftml.samplers.rng import ChainRNG
from lftml.samplers.stability import max_stable_step, omega2_max
from lftml.theories.base import Theory


@dataclass(frozen=True)
class HMCState:
    phi: torch.Tensor  # (n_chains, *shape)
    action: torch.Tensor  # (n_chains,), float64
    n_updates: int = 0  # trajectories made so far (schedules the cluster moves)


@dataclass(frozen=True)
class HMC:
    """HMC settings (immutable). ``step_size`` is the MD step, ``n_steps`` the steps per trajectory.

    ``backend``: ``"eager"`` (torch ops), ``"fused"`` (one compiled numba call per trajectory, see
    :mod:`lftml.samplers.fused`; needs numba and a theory with ``coefficients``) or ``"auto"`` (fused
    when it can run, else eager). GPU fields always run eager. Both backends draw the same random
    numbers in the same order; the MD end points agree to 1e-12 relative (for :class:`Phi4` they are
    normally bit-identical) and the lattice sums in dH differ only in summation order (~1e-13
    absolute), so accept/reject decisions coincide on the same seed.
    """

    theory: Theory
    step_size: float
    n_steps: int
    integrator: str = "omelyan"
    backend: str = "auto"
    step_jitter: float = 0.1
    kinetic: KineticTerm = IdentityMass()
    cluster: ClusterMove | None = None
    cluster_every: int = 1

    def __post_init__(self) -> None:
        if self.integrator not in INTEGRATORS:
            raise LftmlError(f"unknown integrator {self.integrator!r}; choose one of {', '.join(INTEGRATORS)}")
        if int(self.n_steps) < 1:
            raise LftmlError(f"the number of MD steps must be >= 1, got {self.n_steps}")
        if not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise LftmlError(f"the MD step size must be positive, got {self.step_size}")
        if self.backend not in fused.BACKENDS:
            raise LftmlError(f"unknown HMC backend {self.backend!r}; choose one of {', '.join(fused.BACKENDS)}")
        if self.backend == "fused" and not fused.supports(self.theory):
            raise LftmlError(fused.unsupported_reason(self.theory))
        if not 0.0 <= self.step_jitter < 1.0:
            raise LftmlError(f"the step-size jitter must lie in [0, 1), got {self.step_jitter}")
        if self.backend == "fused" and not self.unit_mass:
            raise LftmlError("FA-HMC runs on the eager backend (the fused kernel has unit mass); use --backend auto or eager")
        if isinstance(self.cluster_every, bool) or int(self.cluster_every) != self.cluster_every or self.cluster_every < 1:
            raise LftmlError(f"--cluster-every must be an integer >= 1 (trajectories between cluster moves), "
                             f"got {self.cluster_every}")
        if self.cluster is not None and self.cluster.theory is not self.theory and \
                self.cluster.theory.to_dict() != self.theory.to_dict():
            raise LftmlError("the cluster move and HMC must sample the same theory")
        if hasattr(self.theory, "coefficients"):
            eps_max = self.max_stable_step()
            if self.step_size * (1.0 + self.step_jitter) >= eps_max:
                raise LftmlError(
                    f"MD step size {self.step_size:g} (up to {self.step_size * (1 + self.step_jitter):.4g} with "
                    f"{self.step_jitter:.0%} jitter) is unstable for this action with the {self.integrator} integrator "
                    f"(the stiffest mode needs a step < {eps_max:.4g}); "
                    "increase --md-steps or shorten --traj-length"
                )

    @classmethod
    def from_trajectory(
        cls, theory: Theory, traj_length: float, n_steps: int, integrator: str = "omelyan", backend: str = "auto",
        step_jitter: float = 0.1, kinetic: KineticTerm | None = None, cluster: ClusterMove | None = None,
        cluster_every: int = 1,
    ) -> "HMC":
        """Settings from the (mean) trajectory length and the number of MD steps."""
        if not (traj_length > 0):
            raise LftmlError(f"the trajectory length must be positive, got {traj_length}")
        if int(n_steps) < 1:
            raise LftmlError(f"the number of MD steps must be >= 1, got {n_steps}")
        return cls(theory, traj_length / int(n_steps), int(n_steps), integrator, backend, step_jitter,
                   kinetic if kinetic is not None else IdentityMass(), cluster, cluster_every)

    @property
    def unit_mass(self) -> bool:
        return isinstance(self.kinetic, IdentityMass)

    def omega2_max(self) -> float:
        """Largest MD frequency^2 of the quadratic modes at phi = 0 and at the mean-field vacuum, with
        this kinetic term (see :mod:`lftml.samplers.stability`).

        A mass measured in a pilot (``m = 1/G``) already is the curvature the chain sees (omega ~ 1 for
        every mode); the mean-field vacuum, far from where a near-critical chain is (mean field puts
        kappa_c at 0.239 instead of 0.271 for lambda = 0.022), would refuse every useful step there.
        For such a mass the bound is the larger of 1 and the phi = 0 value."""
        if getattr(self.kinetic, "source", None) == "pilot":
            return max(1.0, omega2_max(self.theory, self.kinetic.inverse_mass_spectrum(), vacuum=False))
        return omega2_max(self.theory, self.kinetic.inverse_mass_spectrum())

    def max_stable_step(self) -> float:
        """Upper end of the linearly stable MD step sizes (inf when no mode is stiff)."""
        if not hasattr(self.theory, "coefficients"):
            return math.inf
        return max_stable_step(self.integrator, self.omega2_max())

    @property
    def trajectory_length(self) -> float:
        return self.step_size * self.n_steps

    @property
    def forces_per_update(self) -> int:
        return FORCES_PER_STEP[self.integrator] * self.n_steps + 1

    def settings(self) -> dict:
        """The sampler record stored in ensemble files (unit-mass HMC without clusters: as before)."""
        out = {
            "algorithm": "hmc" if self.unit_mass else "fa-hmc",
            "integrator": self.integrator,
            "step_size": self.step_size,
            "n_steps": self.n_steps,
            "trajectory_length": self.trajectory_length,
            "step_jitter": self.step_jitter,
        }
        if not self.unit_mass:
            out["mass"] = self.kinetic.settings()
        if self.cluster is not None:
            out["cluster"] = self.cluster.kind
            out["cluster_every"] = int(self.cluster_every)
        return out

    def uses_fused(self, phi: torch.Tensor) -> bool:
        """Whether :meth:`step` runs the fused MD for the field ``phi`` (``backend`` resolved)."""
        if self.backend == "eager" or not self.unit_mass or not fused.supports(self.theory, phi):
            return False
        return fused.ready(strict=self.backend == "fused")

    def uses_fa_kernels(self, phi: torch.Tensor) -> bool:
        """Whether FA-HMC's MD runs with the numba kicks and in-place FFT drifts of
        :func:`lftml.samplers.fused.fa_integrate` (backend ``auto``, float64 CPU fields, numba available):
        the same end points, bit for bit, as the eager torch integrator (``backend="eager"``). S is then the
        fused path's float64 lattice sum (:func:`lftml.samplers.fused.action`), which differs from the torch
        sum in its summation order only (~1e-13)."""
        if self.unit_mass or self.backend == "eager" or not fused.fa_supports(self.theory, phi, self.kinetic):
            return False
        return fused.ready()

    def _action(self, phi: torch.Tensor) -> torch.Tensor:
        """S per chain in float64 (the fused path's own lattice sum where it runs, so that a resumed
        chain continues bit for bit)."""
        if self.uses_fused(phi) or self.uses_fa_kernels(phi):
            return fused.action(self.theory, phi)
        return self.theory.action(phi.to(torch.float64))

    def init(self, phi: torch.Tensor) -> HMCState:
        self.theory.lattice.check_field(phi, "initial field")
        return HMCState(phi, self._action(phi))

    def hamiltonian(self, phi: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        """``H = K(pi) + S(phi)`` per chain, float64."""
        return self.kinetic.energy(pi, self.theory.lattice.dims) + self.theory.action(phi.to(torch.float64))

    def step(self, state: HMCState, rng: ChainRNG) -> tuple[HMCState, dict[str, torch.Tensor]]:
        """One trajectory with Metropolis accept/reject per chain (then a cluster move when scheduled)."""
        phi0 = state.phi
        n_updates = state.n_updates + 1
        if self.uses_fused(phi0) and fused.draws_inline(phi0, rng):
            # the whole trajectory in one compiled call, random numbers drawn inline (the same numbers as below)
            phi1, s1, dH, accept = fused.hmc_step(self.theory, phi0, state.action, rng, self.step_size, self.step_jitter,
                                                  self.n_steps, self.integrator)
            new = HMCState(phi1, s1, n_updates)
        else:
            eps: float | torch.Tensor = self.step_size
            if self.step_jitter:
                # per-chain step eps (1 + j (2u - 1)), u ~ U(0,1): a random trajectory length breaks the
                # resonances of a fixed one (a mode rotated by a multiple of pi never changes; Mackenzie 1989)
                u = rng.uniform(dtype=torch.float64).to(device=phi0.device, dtype=phi0.dtype)
                eps = self.step_size * (1.0 + self.step_jitter * (2.0 * u - 1.0))
            pi0 = self.kinetic.sample(rng, phi0.shape[1:], dtype=phi0.dtype)
            if self.uses_fused(phi0):
                phi1, k0, k1, s1 = fused.integrate(self.theory, phi0, pi0, eps, self.n_steps, self.integrator)
                h0 = k0 + state.action
                h1 = k1 + s1
            else:
                dims = self.theory.lattice.dims
                h0 = self.kinetic.energy(pi0, dims) + state.action
                if isinstance(eps, torch.Tensor):
                    eps = eps.view(-1, *([1] * (phi0.ndim - 1)))
                if self.uses_fa_kernels(phi0):
                    phi1, pi1 = fused.fa_integrate(self.theory, phi0, pi0, eps, self.n_steps, self.integrator,
                                                   self.kinetic)
                else:
                    velocity = None if self.unit_mass else self.kinetic.velocity
                    phi1, pi1 = INTEGRATORS[self.integrator](phi0, pi0, self.theory.force, eps, self.n_steps, velocity)
                s1 = self._action(phi1)
                h1 = self.kinetic.energy(pi1, dims) + s1
            dH = h1 - h0
            u = rng.uniform(dtype=torch.float64).to(dH.device)
            accept = torch.log(u) < -torch.nan_to_num(dH, nan=math.inf)
            mask = accept.view(-1, *([1] * (phi0.ndim - 1)))
            new = HMCState(torch.where(mask, phi1, phi0), torch.where(accept, s1, state.action), n_updates)
        info = self._info(dH, accept)
        if self.cluster is not None:
            if n_updates % int(self.cluster_every) == 0:
                phi2, cinfo = self.cluster.flip(new.phi, rng)
                new = HMCState(phi2, self._action(phi2), n_updates)
            else:  # the same record keys every trajectory; 0 = no cluster move after this one
                zeros = torch.zeros(phi0.shape[0], dtype=torch.float64)
                cinfo = {"cluster_size": zeros, "flipped_fraction": zeros}
            info.update(cinfo)
        return new, info

    @staticmethod
    def _info(dH: torch.Tensor, accept: torch.Tensor) -> dict[str, torch.Tensor]:
        if dH.device.type == "cpu" and dH.dtype == torch.float64 and not dH.requires_grad:
            # numpy ufuncs on the (n_chains,) vector: ~4 us per trajectory where the four torch ops take ~20
            d = dH.numpy()
            with np.errstate(over="ignore", invalid="ignore"):
                e = np.exp(-d)
            return {
                "dH": dH,
                "accepted": accept,
                "acceptance_probability": torch.from_numpy(np.minimum(np.where(np.isnan(d), 0.0, e), 1.0)),
                "exp_minus_dH": torch.from_numpy(e),
            }
        dH_safe = torch.nan_to_num(dH, nan=math.inf)
        return {
            "dH": dH,
            "accepted": accept,
            "acceptance_probability": torch.clamp(torch.exp(-dH_safe), max=1.0),
            "exp_minus_dH": torch.exp(-dH),
        }
