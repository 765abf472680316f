r"""Training the scalar-Bernoulli RBM on data, its induced couplings, and AIS for log Z.

Model (:class:`lftml.rbm.bernoulli.ScalarBernoulliRBM`): ``S(phi, h) = sum mu_i^2 phi_i^2/2 - sum_a h_a psi_a``,
``psi_a = (phi W)_a - eta_a``, ``h_a = +-1``; ``log p(phi) = -F(phi) - log Z`` with the free energy
``F = sum mu^2 phi^2/2 - sum_a log(2 cosh psi_a)``.

Gradients of the average log-likelihood (data minus model averages, h summed out given phi)::

    dL/dW_ia = <phi_i tanh psi_a>_data - <phi_i tanh psi_a>_model
    dL/deta_a = -<tanh psi_a>_data + <tanh psi_a>_model

(mu^2 is kept fixed). Model averages from ``n_chains`` persistent block-Gibbs chains (``pcd``) or
chains restarted at the minibatch (``cd``), ``k`` sweeps per update; plain SGD with momentum.

Induced couplings (expansion of ``F`` around phi = 0 with eta = 0): two-point
``K_ij = mu_i^2 delta_ij - sum_a W_ia W_ja`` (the Gaussian RBM kernel at sigma_h = 1) and four-point
``d^4 F / dphi_i dphi_j dphi_k dphi_l = 2 sum_a W_ia W_ja W_ka W_la`` (from log cosh x = x^2/2 - x^4/12 + ...).

AIS (Neal 2001) for ``log Z``: anneal ``p_beta(phi) ∝ exp(-F_beta(phi))`` with ``W -> beta W``,
``eta -> beta eta`` from beta = 0 (a Gaussian times 2^N_h, ``log Z_0`` exact) to 1, block-Gibbs
transitions at each beta; ``log Z = log Z_0 + log mean(w)``, error ``std(w) / (mean(w) sqrt(n))``
(delta method over independent runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.rbm.bernoulli import ScalarBernoulliRBM
from lftml.rbm.training import require_counts

__all__ = ["BernoulliTrainConfig", "train_bernoulli", "induced_couplings", "ais_log_partition"]


@dataclass(frozen=True)
class BernoulliTrainConfig:
    """PCD/CD settings for the scalar-Bernoulli RBM (mu^2 fixed)."""

    method: str = "pcd"
    n_updates: int = 1000
    lr: float = 0.01
    momentum: float = 0.5
    k: int = 1
    n_chains: int = 100
    batch_size: int = 100
    learn_eta: bool = True

    def __post_init__(self) -> None:
        if self.method not in ("pcd", "cd"):
            raise LftmlError(f"method must be pcd or cd for the Bernoulli RBM, got {self.method!r}")
        require_counts(self, ("n_updates", "k", "n_chains", "batch_size"))
        if not (self.lr > 0 and math.isfinite(self.lr)) or not 0 <= self.momentum < 1:
            raise LftmlError(f"need lr > 0 and 0 <= momentum < 1, got {self.lr}, {self.momentum}")


def _stats(model: ScalarBernoulliRBM, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.tanh(model.psi(x))
    return x.T @ t / x.shape[0], t.mean(0)


@torch.no_grad()
def train_bernoulli(model: ScalarBernoulliRBM, data: np.ndarray | torch.Tensor, config: BernoulliTrainConfig,
                    *, sampling_generator: torch.Generator, data_generator: torch.Generator) -> dict[str, list]:
    """Train ``model`` in place on samples ``(n, N_v)``; returns ``{"update", "grad_norm"}`` every 10%.
    Raises LftmlError when the parameters run away (non-finite or |W| beyond 1e6)."""
    x = torch.as_tensor(np.asarray(data), dtype=model.W.dtype).reshape(len(data), -1)
    if x.shape[1] != model.n_visible:
        raise LftmlError(f"data have {x.shape[1]} sites but the RBM has N_v = {model.n_visible}")
    n = x.shape[0]
    chains = torch.zeros((config.n_chains, model.n_visible), dtype=model.W.dtype)
    vW = torch.zeros_like(model.W)
    ve = torch.zeros_like(model.eta)
    hist: dict[str, list] = {"update": [], "grad_norm": []}
    perm, cursor = torch.randperm(n, generator=data_generator), 0
    every = max(1, config.n_updates // 10)
    for step in range(config.n_updates):
        if cursor + config.batch_size > n:
            perm, cursor = torch.randperm(n, generator=data_generator), 0
        batch = x[perm[cursor: cursor + min(config.batch_size, n)]]
        cursor += config.batch_size
        start = chains if config.method == "pcd" else batch
        y = start
        for _ in range(config.k):
            y = model.sample_visible(model.sample_hidden(y, sampling_generator), sampling_generator)
        if config.method == "pcd":
            chains = y
        dW_d, t_d = _stats(model, batch)
        dW_m, t_m = _stats(model, y)
        gW, ge = dW_d - dW_m, -(t_d - t_m)
        vW.mul_(config.momentum).add_(gW)
        model.W.add_(vW, alpha=config.lr)
        if config.learn_eta:
            ve.mul_(config.momentum).add_(ge)
            model.eta.add_(ve, alpha=config.lr)
        if not bool(torch.isfinite(model.W).all()) or float(model.W.abs().max()) > 1e6:
            raise LftmlError(f"Bernoulli RBM training diverged at update {step + 1}; lower the learning rate (now {config.lr})")
        if (step + 1) % every == 0 or step + 1 == config.n_updates:
            hist["update"].append(step + 1)
            hist["grad_norm"].append(float(torch.sqrt((gW * gW).sum() + (ge * ge).sum())))
    return hist


def induced_couplings(model: ScalarBernoulliRBM) -> dict[str, object]:
    """Two- and four-point couplings of the induced action at phi = 0 (eta = 0 required; see the
    module docstring), and their sizes: ``kernel`` (N_v, N_v), ``four_point`` (N_v,)*4 (only for
    N_v <= 40), ``norm_two`` = max |W W^T|, ``norm_four`` = max |2 sum_a W^4| (the largest
    interaction term next to the Gaussian one)."""
    if float(model.eta.abs().max()) != 0.0:
        raise LftmlError("induced couplings are given at eta = 0 (odd couplings vanish only then)")
    W = model.W
    out: dict[str, object] = {"kernel": torch.diag(model.mu2) - W @ W.T}
    if model.n_visible <= 40:
        out["four_point"] = 2.0 * torch.einsum("ia,ja,ka,la->ijkl", W, W, W, W)
    out["norm_two"] = float((W @ W.T).abs().max())
    out["norm_four"] = float((2.0 * (W**4).sum(1)).abs().max())
    return out


@torch.no_grad()
def ais_log_partition(model: ScalarBernoulliRBM, n_runs: int, n_betas: int, generator: torch.Generator) -> tuple[float, float]:
    """AIS estimate of log Z and its one-sigma error from ``n_runs`` independent runs with a linear
    schedule of ``n_betas`` temperatures (one block-Gibbs sweep each)."""
    if n_runs < 2 or n_betas < 2:
        raise LftmlError(f"need n_runs >= 2 and n_betas >= 2, got {n_runs}, {n_betas}")
    mu2 = model.mu2
    dtype = model.W.dtype
    log_z0 = 0.5 * float(torch.log(2 * math.pi / mu2).sum()) + model.n_hidden * math.log(2.0)
    betas = torch.linspace(0.0, 1.0, n_betas, dtype=dtype)

    def F(phi: torch.Tensor, beta: float) -> torch.Tensor:
        p = beta * (phi @ model.W - model.eta)
        logcosh = torch.abs(p) + torch.log1p(torch.exp(-2 * torch.abs(p))) - math.log(2.0)
        return 0.5 * (mu2 * phi * phi).sum(-1) - (math.log(2.0) + logcosh).sum(-1)

    phi = torch.randn((n_runs, model.n_visible), generator=generator, dtype=dtype) / torch.sqrt(mu2)
    logw = torch.zeros(n_runs, dtype=dtype)
    for b_prev, b in zip(betas[:-1], betas[1:]):
        logw += F(phi, float(b_prev)) - F(phi, float(b))
        psi = float(b) * (phi @ model.W - model.eta)
        h = torch.where(torch.rand(psi.shape, generator=generator, dtype=dtype) < torch.sigmoid(2 * psi), 1.0, -1.0).to(dtype)
        mean = float(b) * (h @ model.W.T) / mu2
        phi = mean + torch.randn(mean.shape, generator=generator, dtype=dtype) / torch.sqrt(mu2)
    m = float(logw.max())
    w = torch.exp(logw - m)
    mean_w = float(w.mean())
    err = float(w.std()) / (mean_w * math.sqrt(n_runs))
    return log_z0 + m + math.log(mean_w), err
