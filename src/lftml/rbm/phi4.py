r"""Interacting visible layer: the Gaussian RBM with a local phi^4 potential on the visible nodes.

    S(phi, h) = sum_i [mu_i^2 phi_i^2 / 2 + lam phi_i^4 / 4!] + sum_a (h_a - eta_a)^2 / (2 sigma_h^2) - phi^T W h

``h | phi`` is unchanged (Gaussian). ``phi_i | h`` is no longer Gaussian:
``p(phi_i | h) ∝ exp(-mu_i^2 phi_i^2/2 - lam phi_i^4/24 + b_i phi_i)`` with ``b = W h``. It is sampled
*exactly* by rejection from a Gaussian envelope: since ``phi^4 >= 2 c^2 phi^2 - c^4`` for any c,
propose ``N(b_i/a_i, 1/a_i)`` with ``a_i = mu_i^2 + lam c_i^2/6`` and accept with probability
``exp(-lam (phi^2 - c_i^2)^2 / 24) <= 1`` (lam >= 0). Any c is exact; c_i = the mode of the conditional
(real root of ``lam x^3/6 + mu^2 x = b``) keeps the acceptance high even for large |b|/mu^2 (c = 0 is
plain rejection from the Gaussian conditional). The acceptance rate is reported.

Training (:func:`train_phi4`, PCD): with h summed out the free energy is
``F(phi) = sum_i [mu^2 phi_i^2/2 + lam phi_i^4/24] - sigma_h^2 |W^T phi|^2 / 2`` (eta = 0), and
``d<log p>/d theta = -<dF/d theta>_data + <dF/d theta>_model`` for theta = W, mu (global) and lam
(learned, kept >= 0), model averages from persistent block-Gibbs chains using the exact
conditional sampler. :func:`compare_observables` compares <|M|>, chi_2 and U_L of model samples with
an ensemble's (Gamma-method errors on both, z-scores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.rbm.gaussian import GaussianRBM
from lftml.rbm.training import require_counts

__all__ = ["sample_phi4_conditional", "Phi4VisibleRBM", "Phi4TrainConfig", "train_phi4", "sample_chains", "compare_observables"]


def _mode(b: torch.Tensor, mu2: torch.Tensor, lam: float) -> torch.Tensor:
    """Unique real root of ``lam x^3 / 6 + mu2 x - b = 0`` (mu2 > 0, lam > 0), by Cardano."""
    p, q = 6.0 * mu2 / lam, -6.0 * b / lam
    r = torch.sqrt(q * q / 4 + p**3 / 27)
    cbrt = lambda t: torch.sign(t) * torch.abs(t) ** (1.0 / 3.0)  # noqa: E731
    return cbrt(-q / 2 + r) + cbrt(-q / 2 - r)


@torch.no_grad()
def sample_phi4_conditional(b: torch.Tensor, mu2: torch.Tensor, lam: float, generator: torch.Generator,
                            max_rounds: int = 10_000) -> tuple[torch.Tensor, float]:
    """Exact draws of ``phi ∝ exp(-mu2 phi^2/2 - lam phi^4/24 + b phi)`` elementwise (``b`` any shape,
    ``mu2`` broadcastable); returns ``(phi, acceptance)`` with the fraction of accepted proposals."""
    if not (lam >= 0 and math.isfinite(lam)):
        raise LftmlError(f"lam must be a finite number >= 0 (the potential lam phi^4/4! must be bounded below), got {lam}")
    if not bool(torch.isfinite(b).all()):
        raise LftmlError("phi^4 conditional sampler: the field W h is not finite (the chains ran away)")
    mu2 = torch.as_tensor(mu2, dtype=b.dtype).expand_as(b)
    c2 = _mode(b, mu2, lam) ** 2 if lam > 0 else torch.zeros_like(b)
    a = mu2 + lam * c2 / 6.0
    mean, sd = b / a, 1.0 / torch.sqrt(a)
    out = torch.empty_like(b)
    todo = torch.ones_like(b, dtype=torch.bool)
    proposed = accepted = 0
    for _ in range(max_rounds):
        n = int(todo.sum())
        if n == 0:
            break
        x = mean[todo] + sd[todo] * torch.randn(n, generator=generator, dtype=b.dtype)
        ok = torch.rand(n, generator=generator, dtype=b.dtype) < torch.exp(-lam * (x * x - c2[todo]) ** 2 / 24.0)
        idx = todo.nonzero(as_tuple=True)
        sel = tuple(i[ok] for i in idx)
        out[sel] = x[ok]
        todo[sel] = False
        proposed += n
        accepted += int(ok.sum())
    else:
        raise LftmlError(f"phi^4 rejection sampler: no acceptance in {max_rounds} rounds (lam = {lam:g}, max |b| = "
                         f"{float(b.abs().max()):.3g}, min mu^2 = {float(mu2.min()):.3g}; non-finite or runaway fields)")
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

    def free_energy(self, phi: torch.Tensor) -> torch.Tensor:
        """``F(phi)`` (h summed out, up to a phi-independent constant), differentiable in W, mu, lam_t."""
        x = self._flat(phi)
        lam = self.lam_t if getattr(self, "lam_t", None) is not None else torch.as_tensor(self.lam, dtype=x.dtype)
        u = x @ self.W
        return (0.5 * (self.mu2_vector() * x * x).sum(-1) + lam * (x**4).sum(-1) / 24.0
                - 0.5 * self.sigma_h**2 * (u * u).sum(-1) - u @ self.eta)


@dataclass(frozen=True)
class Phi4TrainConfig:
    """PCD settings for :func:`train_phi4`: Adam on the PCD gradient, step ``lr`` for mu and lam and
    ``lr * w_lr_scale`` for W (Adam moves every W entry by ~ its step per update, so a W step as large as
    lam's turns the PCD noise into a random walk of W); ``learn_lam`` learns lam >= 0."""

    n_updates: int = 2000
    lr: float = 0.02
    k: int = 1
    n_chains: int = 256
    batch_size: int = 256
    learn_lam: bool = True
    w_lr_scale: float = 0.1

    def __post_init__(self) -> None:
        require_counts(self, ("n_updates", "k", "n_chains", "batch_size"))
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LftmlError(f"lr must be > 0, got {self.lr}")


def train_phi4(model: Phi4VisibleRBM, data: np.ndarray | torch.Tensor, config: Phi4TrainConfig, *,
               sampling_generator: torch.Generator, data_generator: torch.Generator) -> dict[str, list]:
    """PCD training of ``model`` in place on samples ``(n, *shape)`` (W, global/site mu, lam).
    Returns the history ``{"update", "lam", "mu2", "acceptance"}`` (10 points) and
    ``"mean_acceptance"`` (over all updates) of the exact visible sampler."""
    x = torch.as_tensor(np.asarray(data), dtype=model.W.dtype).reshape(len(data), -1)
    if x.shape[1] != model.n_visible:
        raise LftmlError(f"data have {x.shape[1]} sites but the RBM has N_v = {model.n_visible}")
    model.lam_t = torch.nn.Parameter(torch.tensor(model.lam, dtype=model.W.dtype), requires_grad=config.learn_lam)
    params = [model.W] + ([model.mu] if model.mu is not None else []) + ([model.lam_t] if config.learn_lam else [])
    opt = torch.optim.Adam([{"params": [model.W], "lr": config.lr * config.w_lr_scale},
                            {"params": params[1:], "lr": config.lr}])
    half = config.n_updates // 2  # constant steps, then linear decay to 0 over the second half (averages the PCD noise)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 if t < half else max(0.0, (config.n_updates - t) / max(1, config.n_updates - half)))
    chains = x[torch.randint(len(x), (config.n_chains,), generator=data_generator)].clone()
    hist: dict[str, Any] = {"update": [], "lam": [], "mu2": [], "acceptance": []}
    every, acc_sum = max(1, config.n_updates // 10), 0.0
    try:
        for step in range(config.n_updates):
            batch = x[torch.randint(len(x), (min(config.batch_size, len(x)),), generator=data_generator)]
            with torch.no_grad():
                model.lam = float(model.lam_t.detach())
                chains = _sweeps(model, chains, config.k, sampling_generator)
            acc_sum += model.last_acceptance
            opt.zero_grad()
            loss = model.free_energy(batch).mean() - model.free_energy(chains).mean()  # = -<log p>_batch + const
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.lam_t.clamp_(min=0.0)
                if not all(bool(torch.isfinite(p).all()) for p in params):
                    raise LftmlError(f"phi^4 RBM training diverged at update {step + 1}; lower the learning rate")
            if (step + 1) % every == 0 or step + 1 == config.n_updates:
                hist["update"].append(step + 1)
                hist["lam"].append(float(model.lam_t.detach()))
                hist["mu2"].append(float(model.mu2_vector().detach().mean()))
                hist["acceptance"].append(model.last_acceptance)
    finally:
        model.lam = float(model.lam_t.detach())
        model.lam_t = None
    hist["mean_acceptance"] = acc_sum / config.n_updates
    return hist


@torch.no_grad()
def _sweeps(model: GaussianRBM, x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` block-Gibbs sweeps, each followed (eta = 0 only) by a global sign flip phi -> -phi of each
    chain with probability 1/2: an exact move (F(-phi) = F(phi) at eta = 0) that lets chains tunnel
    between the two wells, which local Gibbs sweeps do not in the broken/near-critical regime."""
    symmetric = float(model.eta.abs().max()) == 0.0
    for _ in range(int(n)):
        x = model.sample_visible(model.sample_hidden(x, generator), generator)
        if symmetric:
            x = x * (2.0 * torch.randint(0, 2, (x.shape[0], 1), generator=generator, dtype=x.dtype) - 1.0)
    return x


@torch.no_grad()
def sample_chains(model: GaussianRBM, n_configs: int, n_chains: int, n_therm: int, generator: torch.Generator,
                  every: int = 1) -> np.ndarray:
    """Block-Gibbs history ``(n_configs, n_chains, N_v)`` from noise after ``n_therm`` sweeps (any
    GaussianRBM subclass: the phi^4 model uses its exact conditional sampler; sign flips as in training)."""
    x = torch.randn((n_chains, model.n_visible), generator=generator, dtype=model.W.dtype)
    x = _sweeps(model, x, n_therm, generator)
    out = np.empty((n_configs, n_chains, model.n_visible))
    for t in range(n_configs):
        x = _sweeps(model, x, every, generator)
        out[t] = model._flat(x).numpy()
    return out


def compare_observables(samples: np.ndarray, reference: np.ndarray, S: float = 2.0) -> dict[str, dict[str, float]]:
    """<|M|>, chi_2 = V(<M^2> - <M>^2) and U_L = 1 - <M^4>/(3<M^2>^2) of two histories
    ``(n_configs, n_chains, V)`` (model samples, reference ensemble), each with its Gamma-method
    error (:func:`lftml.analysis.summarize`), and ``z = (model - reference) / sqrt(err_m^2 + err_r^2)``."""
    from lftml.analysis import summarize

    out: dict[str, dict[str, float]] = {}
    s_m, s_r = (summarize(np.asarray(a).mean(-1), np.asarray(a).shape[-1], S=S) for a in (samples, reference))
    for key, name in (("abs_magnetisation", "absM"), ("susceptibility", "chi2"), ("binder", "U_L")):
        m, r = s_m[key], s_r[key]
        z = (m["value"] - r["value"]) / math.hypot(m["error"], r["error"])
        out[name] = {"model": m["value"], "model_error": m["error"], "ensemble": r["value"], "ensemble_error": r["error"], "z": z}
    return out
