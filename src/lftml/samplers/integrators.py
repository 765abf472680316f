"""Reversible, area-preserving (symplectic) integrators of Hamilton's equations for
``H(phi, pi) = sum pi^2 / 2 + S(phi)``: ``dphi/dt = pi``, ``dpi/dt = force(phi) = -dS/dphi``.

* ``leapfrog``: kick(eps/2) drift(eps) kick(eps/2); energy error dH = O(eps^2) per trajectory.
* ``omelyan``: the second-order minimum-norm (2MN) scheme of Omelyan, Mryglod & Folk (2003),
  kick(lam eps) drift(eps/2) kick((1-2 lam) eps) drift(eps/2) kick(lam eps) with
  ``lam = 0.1931833275037836``; dH = O(eps^2) with a ~10x smaller coefficient, two forces per step.

Consecutive kicks of neighbouring steps are merged. Both return (phi, pi) after ``n_steps`` steps and
do not modify their inputs. With a mass matrix M (FA-HMC, :mod:`lftml.samplers.kinetic`) pass
``velocity = M^{-1}``: the drift becomes ``phi += c * velocity(pi)`` (``H = pi M^{-1} pi / 2 + S``);
without it the drift is ``phi += c * pi`` exactly as before.
"""

from __future__ import annotations

from typing import Callable

import torch

Force = Callable[[torch.Tensor], torch.Tensor]
Velocity = Callable[[torch.Tensor], torch.Tensor]

OMELYAN_LAMBDA = 0.1931833275037836


def leapfrog(
    phi: torch.Tensor, pi: torch.Tensor, force: Force, eps: float, n_steps: int, velocity: Velocity | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kick-drift-kick leapfrog: ``n_steps + 1`` force evaluations."""
    v = velocity if velocity is not None else (lambda p: p)  # noqa: E731
    pi = pi + 0.5 * eps * force(phi)
    phi = phi + eps * v(pi)
    for _ in range(n_steps - 1):
        pi = pi + eps * force(phi)
        phi = phi + eps * v(pi)
    pi = pi + 0.5 * eps * force(phi)
    return phi, pi


def omelyan(
    phi: torch.Tensor, pi: torch.Tensor, force: Force, eps: float, n_steps: int, velocity: Velocity | None = None,
    lam: float = OMELYAN_LAMBDA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Omelyan 2MN: ``2 n_steps + 1`` force evaluations."""
    v = velocity if velocity is not None else (lambda p: p)  # noqa: E731
    pi = pi + lam * eps * force(phi)
    for i in range(n_steps):
        phi = phi + 0.5 * eps * v(pi)
        pi = pi + (1.0 - 2.0 * lam) * eps * force(phi)
        phi = phi + 0.5 * eps * v(pi)
        pi = pi + (2.0 * lam if i < n_steps - 1 else lam) * eps * force(phi)
    return phi, pi


INTEGRATORS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {"leapfrog": leapfrog, "omelyan": omelyan}

FORCES_PER_STEP = {"leapfrog": 1, "omelyan": 2}
