r"""Scalar-Bernoulli RBM: continuous visible field phi, binary hidden spins h_a = +-1.

Action (talk, back-up slides; eta_a the hidden bias)::

    S(phi, h) = sum_i mu_i^2 phi_i^2 / 2 - sum_a h_a psi_a,     psi_a = sum_i phi_i W_ia - eta_a

Summing over h gives the exact marginal
``p(phi) = exp(-sum_i mu_i^2 phi_i^2/2) prod_a 2 cosh(psi_a) / Z``, i.e. the free energy
``F(phi) = sum_i mu_i^2 phi_i^2/2 - sum_a log(2 cosh psi_a)`` and the induced action
``S_eff = S_phi - sum_a sum_{n>=1} c_n psi_a^{2n}`` with the Taylor coefficients of log cosh,
``log cosh x = sum_n c_n x^{2n}``, ``c_n = 2^{2n} (2^{2n} - 1) B_{2n} / (2n (2n)!)``
(c_1 = 1/2, c_2 = -1/12, c_3 = 1/45, ...; radius of convergence pi/2): interactions of all
(even) orders, all-to-all. At order W^2 the kernel is the Gaussian RBM's with sigma_h = 1.

Conditionals: ``P(h_a = +1 | phi) = sigmoid(2 psi_a)``; ``phi_i | h ~ N((W h)_i / mu_i^2, 1/mu_i^2)``.
Since p(h) ∝ exp(sum_i (W h)_i^2 / (2 mu_i^2) - eta.h), phi is a mixture of 2^N_h Gaussians and
everything is exactly computable for small N_h (:meth:`exact_moments`, :meth:`log_partition`).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch

from lftml.errors import LftmlError

__all__ = ["ScalarBernoulliRBM", "log_cosh_coefficients", "bernoulli_numbers"]


@lru_cache(maxsize=None)
def bernoulli_numbers(n_max: int) -> tuple[Fraction, ...]:
    """B_0 .. B_{n_max} as exact fractions (B_1 = -1/2 convention)."""
    B = [Fraction(0)] * (n_max + 1)
    B[0] = Fraction(1)
    for m in range(1, n_max + 1):
        B[m] = -sum(Fraction(math.comb(m + 1, k)) * B[k] for k in range(m)) / (m + 1)
    return tuple(B)


def log_cosh_coefficients(n_terms: int, exact: bool = False) -> list[float] | list[Fraction]:
    """c_1..c_{n_terms} with ``log cosh x = sum_n c_n x^{2n}``."""
    if n_terms < 1:
        raise LftmlError(f"n_terms must be >= 1, got {n_terms}")
    B = bernoulli_numbers(2 * n_terms)
    cs = [
        Fraction(2 ** (2 * n) * (2 ** (2 * n) - 1)) * B[2 * n] / (2 * n * math.factorial(2 * n))
        for n in range(1, n_terms + 1)
    ]
    return cs if exact else [float(c) for c in cs]


class ScalarBernoulliRBM:
    """Scalar-Bernoulli RBM with weights W (N_v, N_h), masses mu^2 (number or (N_v,)), hidden bias eta (N_h,)."""

    def __init__(
        self,
        weights: np.ndarray | torch.Tensor,
        mu2: float | np.ndarray | torch.Tensor = 1.0,
        eta: np.ndarray | torch.Tensor | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        W = torch.as_tensor(np.asarray(weights), dtype=dtype)
        if W.ndim != 2:
            raise LftmlError(f"weights must be (N_v, N_h), got shape {tuple(W.shape)}")
        n_v, n_h = W.shape
        if n_v < 1 or n_h < 1:
            raise LftmlError(f"need N_v >= 1 and N_h >= 1, got ({n_v}, {n_h})")
        mu2_t = torch.as_tensor(np.asarray(mu2), dtype=dtype)
        if mu2_t.ndim > 1 or (mu2_t.ndim == 1 and mu2_t.shape[0] != n_v) or (mu2_t <= 0).any():
            raise LftmlError(f"mu2 must be positive, a number or (N_v,) = ({n_v},) values")
        self.W = W
        self.mu2 = mu2_t.expand(n_v).clone()
        self.eta = torch.zeros(n_h, dtype=dtype) if eta is None else torch.as_tensor(np.asarray(eta), dtype=dtype)
        if tuple(self.eta.shape) != (n_h,):
            raise LftmlError(f"eta must have shape ({n_h},)")
        self.n_visible, self.n_hidden = int(n_v), int(n_h)

    # ---------------------------------------------------------------- energies
    def psi(self, phi: torch.Tensor) -> torch.Tensor:
        """psi_a = sum_i phi_i W_ia - eta_a, (n, N_h)."""
        return torch.as_tensor(phi, dtype=self.W.dtype) @ self.W - self.eta

    def joint_action(self, phi: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """S(phi, h) per configuration."""
        phi = torch.as_tensor(phi, dtype=self.W.dtype)
        return 0.5 * (self.mu2 * phi * phi).sum(-1) - (h * self.psi(phi)).sum(-1)

    def free_energy(self, phi: torch.Tensor) -> torch.Tensor:
        """F(phi) = -log sum_h exp(-S(phi, h)) = sum mu^2 phi^2/2 - sum_a log(2 cosh psi_a)."""
        phi = torch.as_tensor(phi, dtype=self.W.dtype)
        p = self.psi(phi)
        logcosh = torch.abs(p) + torch.log1p(torch.exp(-2 * torch.abs(p))) - math.log(2.0)  # stable log cosh
        return 0.5 * (self.mu2 * phi * phi).sum(-1) - (math.log(2.0) + logcosh).sum(-1)

    def induced_action_series(self, phi: torch.Tensor, n_terms: int) -> torch.Tensor:
        """Truncated induced action ``sum mu^2 phi^2/2 - sum_a sum_{n<=n_terms} c_n psi_a^{2n} - N_h log 2``
        (equals :meth:`free_energy` as n_terms -> infinity for |psi_a| < pi/2)."""
        p = self.psi(phi)
        cs = log_cosh_coefficients(n_terms)
        series = sum(c * p ** (2 * (n + 1)) for n, c in enumerate(cs))
        phi = torch.as_tensor(phi, dtype=self.W.dtype)
        return 0.5 * (self.mu2 * phi * phi).sum(-1) - series.sum(-1) - self.n_hidden * math.log(2.0)

    def leading_kernel(self) -> torch.Tensor:
        """Order-W^2 kernel diag(mu^2) - W W^T (the Gaussian RBM's with sigma_h = 1)."""
        return torch.diag(self.mu2) - self.W @ self.W.T

    # ---------------------------------------------------------------- exact (small N_h)
    def _hidden_states(self) -> torch.Tensor:
        if self.n_hidden > 20:
            raise LftmlError(f"exact sums over 2^N_h hidden states need N_h <= 20, got {self.n_hidden}")
        return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=self.n_hidden)), dtype=self.W.dtype)

    def _hidden_log_weights(self, H: torch.Tensor) -> torch.Tensor:
        Wh = H @ self.W.T  # (2^N_h, N_v)
        return 0.5 * (Wh * Wh / self.mu2).sum(-1) - H @ self.eta

    def log_partition(self) -> float:
        """log Z = log sum_h int dphi exp(-S(phi, h)) (exact, N_h <= 20)."""
        H = self._hidden_states()
        lw = self._hidden_log_weights(H)
        gauss = 0.5 * self.n_visible * math.log(2 * math.pi) - 0.5 * float(torch.log(self.mu2).sum())
        return float(torch.logsumexp(lw, 0)) + gauss

    def log_prob(self, phi: torch.Tensor) -> torch.Tensor:
        """Normalised log p(phi) = -F(phi) - log Z."""
        return -self.free_energy(phi) - self.log_partition()

    def exact_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact <phi> (N_v,) and <phi phi^T> (N_v, N_v) from the 2^N_h-component Gaussian mixture."""
        H = self._hidden_states()
        w = torch.softmax(self._hidden_log_weights(H), 0)
        means = (H @ self.W.T) / self.mu2  # (2^N_h, N_v)
        m = w @ means
        second = torch.diag(1.0 / self.mu2) + torch.einsum("s,si,sj->ij", w, means, means)
        return m, second

    # ---------------------------------------------------------------- Gibbs sampling
    @torch.no_grad()
    def sample_hidden(self, phi: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """h_a = +1 with probability sigmoid(2 psi_a), else -1."""
        p = torch.sigmoid(2 * self.psi(phi))
        u = torch.rand(p.shape, generator=generator, dtype=self.W.dtype)
        return torch.where(u < p, 1.0, -1.0).to(self.W.dtype)

    @torch.no_grad()
    def sample_visible(self, h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mean = (h @ self.W.T) / self.mu2
        return mean + torch.randn(mean.shape, generator=generator, dtype=self.W.dtype) / torch.sqrt(self.mu2)

    @torch.no_grad()
    def sample(
        self, n_configs: int, n_chains: int, generator: torch.Generator, *, n_therm: int = 100, every: int = 1
    ) -> torch.Tensor:
        """Block-Gibbs chains: history (n_configs, n_chains, N_v)."""
        if n_configs < 1 or n_chains < 1 or n_therm < 0 or every < 1:
            raise LftmlError("need n_configs, n_chains, every >= 1 and n_therm >= 0")
        x = torch.zeros((n_chains, self.n_visible), dtype=self.W.dtype)
        for _ in range(n_therm):
            x = self.sample_visible(self.sample_hidden(x, generator), generator)
        out = torch.empty((n_configs, n_chains, self.n_visible), dtype=self.W.dtype)
        for t in range(n_configs):
            for _ in range(every):
                x = self.sample_visible(self.sample_hidden(x, generator), generator)
            out[t] = x
        return out
