r"""Interacting visible layer: the Gaussian RBM with a local phi^4 potential on the visible nodes.

    S(phi, h) = sum_i [mu_i^2 phi_i^2 / 2 + lam phi_i^4 / 4!] + sum_a (h_a - eta_a)^2 / (2 sigma_h^2) - phi^T W h

``h | phi`` is unchanged (Gaussian). ``phi_i | h`` is no longer Gaussian:
``p(phi_i | h) ∝ exp(-mu_i^2 phi_i^2/2 - lam phi_i^4/24 + b_i phi_i)`` with ``b = W h``. It is sampled
*exactly* by rejection from the Gaussian conditional ``N(b_i/mu_i^2, 1/mu_i^2)``, accepting with
probability ``exp(-lam phi^4 / 24) <= 1`` (lam >= 0); the acceptance rate is reported. Only the
sampler is provided here: training this model on an engine ensemble (issue 12) is not built yet.
"""

from __future__ import annotations

import math

import torch

from lftml.errors import LftmlError
from lftml.rbm.gaussian import GaussianRBM

__all__ = ["sample_phi4_conditional", "Phi4VisibleRBM"]


@torch.no_grad()
def sample_phi4_conditional(b: torch.Tensor, mu2: torch.Tensor, lam: float, generator: torch.Generator,
                            max_rounds: int = 10_000) -> tuple[torch.Tensor, float]:
    """Exact draws of ``phi ∝ exp(-mu2 phi^2/2 - lam phi^4/24 + b phi)`` elementwise (``b`` any shape,
    ``mu2`` broadcastable); returns ``(phi, acceptance)`` with the fraction of accepted proposals."""
    if not (lam >= 0 and math.isfinite(lam)):
        raise LftmlError(f"lam must be a finite number >= 0 (the potential lam phi^4/4! must be bounded below), got {lam}")
    mu2 = torch.as_tensor(mu2, dtype=b.dtype).expand_as(b)
    mean, sd = b / mu2, 1.0 / torch.sqrt(mu2)
    out = torch.empty_like(b)
    todo = torch.ones_like(b, dtype=torch.bool)
    proposed = accepted = 0
    for _ in range(max_rounds):
        n = int(todo.sum())
        if n == 0:
            break
        x = mean[todo] + sd[todo] * torch.randn(n, generator=generator, dtype=b.dtype)
        ok = torch.rand(n, generator=generator, dtype=b.dtype) < torch.exp(-lam * x**4 / 24.0)
        idx = todo.nonzero(as_tuple=True)
        sel = tuple(i[ok] for i in idx)
        out[sel] = x[ok]
        todo[sel] = False
        proposed += n
        accepted += int(ok.sum())
    else:
        raise LftmlError("phi^4 rejection sampler: acceptance too low (lam or |W h| / mu^2 too large)")
    return out, accepted / max(proposed, 1)


class Phi4VisibleRBM(GaussianRBM):
    """:class:`GaussianRBM` plus ``lam phi_i^4 / 4!`` on every visible node (``lam >= 0`` fixed).
    ``sample_visible`` is the exact rejection sampler; ``last_acceptance`` holds its rate. The
    Gaussian closed forms inherited (``kernel``, ``log_prob``, ``propagator``) describe only the
    quadratic part and are not the marginal of this model when lam > 0."""

    def __init__(self, *args, lam: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not (lam >= 0 and math.isfinite(lam)):
            raise LftmlError(f"lam must be a finite number >= 0, got {lam}")
        self.lam = float(lam)
        self.last_acceptance = 1.0

    @torch.no_grad()
    def sample_visible(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        phi, acc = sample_phi4_conditional(h @ self.W.T, self.mu2_vector(), self.lam, generator)
        self.last_acceptance = acc
        return phi

    def joint_action(self, phi, h):  # type: ignore[override]
        x = self._flat(phi)
        return super().joint_action(phi, h) + self.lam * (x**4).sum(-1) / 24.0
