r"""Training Gaussian RBMs: exact maximum likelihood, persistent contrastive divergence, CD-k.

All three methods ascend the average log-likelihood ``L = <log p(phi)>_target`` with the gradient
of :func:`lftml.rbm.gaussian.moment_gradients`; they differ only in where the model moments
``<phi phi^T>_model``, ``<phi>_model`` come from:

* ``exact``: ``K^-1 + K^-1 J J^T K^-1`` in closed form (deterministic);
* ``pcd``: ``n_chains`` persistent block-Gibbs chains, ``k`` sweeps per update;
* ``cd``: chains restarted at a data minibatch every update, ``k`` sweeps (CD-k).

The data moments come from the target's correlator ``<phi phi^T>`` (exact for a known theory, or
the full data set) or, with ``data_term="minibatch"``, from minibatches of data (needs samples).

Optimiser: by default the reference scheme of the scalar-field RBM code (Park, Lucini, Aarts):
``v <- beta v + (1 - beta) g`` and ``W <- W + lr (v - l2 W)`` for the weights, plain gradient
steps for mu and eta, and ``lr <- 0.92 lr`` every 64 updates (:class:`ReferenceSGD`, defaults in
:class:`TrainConfig`). Any ``torch.optim.Optimizer`` can be used instead (``optimizer_factory``);
it receives the *descent* gradient ``-dL/dtheta`` in ``p.grad``.

Randomness: ``sampling`` generator for the Gibbs chains, ``data`` generator for minibatch order
(the init stream belongs to the model constructor). Nothing uses global RNG state.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from lftml.errors import LftmlError
from lftml.rbm.gaussian import GaussianRBM, gaussian_log_likelihood, moment_gradients, sample_gradients

log = logging.getLogger(__name__)

__all__ = ["Target", "TrainConfig", "ReferenceSGD", "train", "pcd_tolerance", "METHODS", "RECIPES", "TrainingDiverged"]


def require_counts(config: Any, names: Sequence[str]) -> None:
    """One-line :class:`LftmlError` unless every ``config.<name>`` (a count: updates, sweeps, chains,
    batch size) is >= 1; the check shared by the PCD trainers' settings."""
    for name in names:
        if int(getattr(config, name)) < 1:
            raise LftmlError(f"{name} must be >= 1, got {getattr(config, name)}")


class TrainingDiverged(LftmlError):
    """Training ran away (K indefinite, infinite parameters, or runaway growth of -<log p>)."""


#: Runaway guard (schedule training): the exact <log p> may not fall more than this many times
#: max(1, |<log p>_0|) below its initial value -- ML training raises it; a fall by a factor 1e3 is a
#: learning rate far too large (the issue's --lr 1e6 reached KL = 7e240 with a finite loss).
RUNAWAY_FACTOR = 1e3

METHODS: tuple[str, ...] = ("exact", "pcd", "cd", "analytic")
#: ``converge``: method exact runs L-BFGS on the exact <log p> until the largest gradient component
#: is below ``grad_tol`` (``n_updates`` is then a maximum); ``reference``: the fixed schedule of the
#: reference code (momentum SGD, lr decay), for reproducing its learning curves. PCD/CD (stochastic)
#: always use the schedule.
RECIPES: tuple[str, ...] = ("converge", "reference")
#: Up to this many visible sites training runs single-threaded (restored afterwards).
SMALL_PROBLEM = 128


# ---------------------------------------------------------------------------------- target
@dataclass
class Target:
    """What the RBM learns: second moment ``<phi phi^T>`` (N_v, N_v) and mean ``<phi>`` (N_v,),
    optionally the exact kernel of a known Gaussian theory and/or the data samples (n, N_v)."""

    second_moment: torch.Tensor
    mean: torch.Tensor
    lattice_shape: tuple[int, ...]
    kernel: torch.Tensor | None = None
    data: torch.Tensor | None = None
    theory: dict[str, Any] | None = None

    @property
    def n_visible(self) -> int:
        return int(self.second_moment.shape[0])

    @classmethod
    def from_theory(cls, theory: Any) -> "Target":
        """Exact target from a Gaussian theory with ``kernel_matrix()`` (e.g. FreeScalar)."""
        if not hasattr(theory, "kernel_matrix"):
            raise LftmlError(f"target theory {type(theory).__name__} is not Gaussian: use Target.from_data with samples")
        K = torch.as_tensor(np.asarray(theory.kernel_matrix()), dtype=torch.float64)
        t = cls.from_kernel(K, tuple(theory.lattice.shape))
        t.theory = theory.to_dict()
        return t

    @classmethod
    def from_kernel(cls, kernel: np.ndarray | torch.Tensor, lattice_shape: Sequence[int] | None = None) -> "Target":
        """Exact zero-mean Gaussian target with kernel K (correlator K^-1)."""
        K = torch.as_tensor(np.asarray(kernel), dtype=torch.float64)
        if K.ndim != 2 or K.shape[0] != K.shape[1]:
            raise LftmlError(f"target kernel must be a square (N_v, N_v) matrix, got shape {tuple(K.shape)}")
        L, info = torch.linalg.cholesky_ex(K)
        if int(info) != 0:
            raise LftmlError("target kernel is not positive definite: it does not define a normalisable Gaussian theory")
        n = K.shape[0]
        shape = tuple(lattice_shape) if lattice_shape is not None else (n,)
        if int(np.prod(shape)) != n:
            raise LftmlError(f"lattice_shape {shape} does not match the target's {n} sites")
        return cls(torch.cholesky_inverse(L), torch.zeros(n, dtype=torch.float64), shape, kernel=K)

    @classmethod
    def from_data(cls, data: np.ndarray | torch.Tensor, lattice_shape: Sequence[int] | None = None) -> "Target":
        """Target from samples ``(n_samples, N_v)`` or ``(n_samples, *lattice_shape)``."""
        x = torch.as_tensor(np.asarray(data), dtype=torch.float64)
        if x.ndim < 2:
            raise LftmlError(f"data must be (n_samples, N_v) or (n_samples, *lattice_shape), got shape {tuple(x.shape)}")
        if x.shape[0] < 2:
            raise LftmlError(f"need at least 2 data samples, got {x.shape[0]}")
        shape = tuple(lattice_shape) if lattice_shape is not None else tuple(x.shape[1:])
        x = x.reshape(x.shape[0], -1)
        if int(np.prod(shape)) != x.shape[1]:
            raise LftmlError(f"lattice_shape {shape} does not match data with {x.shape[1]} sites per sample")
        if not torch.isfinite(x).all():
            raise LftmlError("data contain NaN or infinite values")
        return cls(x.T @ x / x.shape[0], x.mean(0), shape, data=x)

    def eigenvalues(self) -> np.ndarray:
        """Target spectrum, ascending: eigenvalues of the exact kernel, or for data the inverse
        eigenvalues of <phi phi^T> (the talk's 1/kappa convention; infinite for zero modes)."""
        if self.kernel is not None:
            return torch.linalg.eigvalsh(self.kernel).numpy()
        ev = torch.linalg.eigvalsh(self.second_moment).numpy()
        with np.errstate(divide="ignore"):
            inv = np.where(ev > 0, 1.0 / np.where(ev > 0, ev, 1.0), np.inf)
        return np.sort(inv)

    def entropy(self) -> float | None:
        """Differential entropy of the exact target (None unless its kernel is known)."""
        if self.kernel is None:
            return None
        logdet = 2.0 * float(torch.log(torch.diagonal(torch.linalg.cholesky(self.kernel))).sum())
        return 0.5 * self.n_visible * math.log(2 * math.pi * math.e) - 0.5 * logdet

    def check_model(self, model: GaussianRBM) -> None:
        if model.n_visible != self.n_visible:
            raise LftmlError(
                f"target has {self.n_visible} sites (shape {self.lattice_shape}) but the RBM has n_visible = {model.n_visible}"
            )


# ---------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults reproduce the reference code (mu_0 = 3 means mu^2_0 = 9,
    W ~ N(0, 0.1^2) are model-init settings, see :class:`GaussianRBM`)."""

    method: str = "exact"
    n_updates: int = 1000
    lr: float = 0.5
    momentum: float = 0.8
    l2: float = 1e-4
    lr_decay: float = 0.92
    decay_every: int = 64
    k: int = 3
    n_chains: int = 64
    batch_size: int = 64
    data_term: str = "auto"  # "auto" | "correlator" | "minibatch"
    optimizer: str = "reference"  # "reference" | "sgd" | "adam" | "lbfgs" (or pass optimizer_factory)
    log_every: int = 1
    mu_lr_scale: float = 1.0  # learning rate of mu (and eta) relative to W's; 1 in the reference code
    recipe: str = "converge"  # "converge" (exact: L-BFGS to grad_tol) | "reference" (the paper's fixed schedule)
    grad_tol: float = 1e-6  # converge recipe: stop when max |d<log p>/d theta| < grad_tol

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise LftmlError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if not (self.grad_tol > 0 and math.isfinite(self.grad_tol)):
            raise LftmlError(f"grad_tol (--tol) must be a positive number, got {self.grad_tol}")
        if self.method not in METHODS:
            raise LftmlError(f"method must be one of {METHODS}, got {self.method!r}")
        require_counts(self, ("n_updates", "k", "n_chains", "batch_size", "decay_every", "log_every"))
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LftmlError(f"learning rate must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise LftmlError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.l2 < 0 or not 0 < self.lr_decay <= 1:
            raise LftmlError(f"need l2 >= 0 and 0 < lr_decay <= 1, got {self.l2}, {self.lr_decay}")
        if self.data_term not in ("auto", "correlator", "minibatch"):
            raise LftmlError(f"data_term must be auto, correlator or minibatch, got {self.data_term!r}")
        if self.optimizer not in ("reference", "sgd", "adam", "lbfgs"):
            raise LftmlError(f"optimizer must be reference, sgd, adam or lbfgs, got {self.optimizer!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def final_lr(self) -> float:
        return self.lr * self.lr_decay ** (self.n_updates // self.decay_every)


class ReferenceSGD(torch.optim.Optimizer):
    """The reference code's update (descent form, ``p.grad = -dL/dp``):
    ``buf = momentum * buf + (1 - momentum) * grad``; ``p -= lr * (buf + l2 * p)``.
    Use one param group for W (momentum, l2) and one for mu/eta (momentum 0, l2 0)."""

    def __init__(self, params: Iterable[Any], lr: float = 0.5, momentum: float = 0.8, l2: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, l2=l2))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta, l2 = group["lr"], group["momentum"], group["l2"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if beta > 0:
                    buf = state.get("buf")
                    if buf is None:
                        buf = torch.zeros_like(p)
                    buf.mul_(beta).add_(p.grad, alpha=1 - beta)
                    state["buf"] = buf
                    d = buf
                else:
                    d = p.grad
                if l2 > 0:
                    p.mul_(1.0 - lr * l2)  # p - lr (d + l2 p) = p (1 - lr l2) - lr d
                p.add_(d, alpha=-lr)
        return loss


def _make_optimizer(model: GaussianRBM, config: TrainConfig) -> torch.optim.Optimizer:
    params = model.trainable_parameters()
    others = [p for k, p in params.items() if k != "W"]
    if config.optimizer == "reference":
        groups = [{"params": [params["W"]], "momentum": config.momentum, "l2": config.l2}]
        if others:
            groups.append({"params": others, "momentum": 0.0, "l2": 0.0, "lr": config.lr * config.mu_lr_scale})
        return ReferenceSGD(groups, lr=config.lr)
    groups = [{"params": [params["W"]], "weight_decay": config.l2}]
    if others:
        groups.append({"params": others, "weight_decay": 0.0, "lr": config.lr * config.mu_lr_scale})
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.LBFGS(list(params.values()), lr=config.lr, max_iter=1, history_size=50)


# ---------------------------------------------------------------------------------- training
def kl_and_loglik(model: GaussianRBM, target: Target) -> tuple[float, float | None]:
    with torch.no_grad():
        ll = float(gaussian_log_likelihood(model.kernel(), model.source(), target.second_moment, target.mean))
    H = target.entropy()
    return ll, (None if H is None else -H - ll)


def train(
    model: GaussianRBM,
    target: Target,
    config: TrainConfig = TrainConfig(),
    *,
    sampling_generator: torch.Generator | None = None,
    data_generator: torch.Generator | None = None,
    optimizer_factory: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer] | None = None,
    progress: bool = False,
    callback: Callable[[int, GaussianRBM], None] | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    resume: dict | None = None,
) -> dict[str, list]:
    """Train ``model`` in place towards ``target``; returns the learning curves
    ``{"update", "loglik", "kl", "mu2", "lr"}`` (lists; ``kl`` entries None when the target's
    exact kernel is unknown). ``loglik`` is the exact <log p(phi)>_target under the model
    (closed form from the target's moments, whatever the training method).

    Resume (pcd, cd and the reference recipe of exact): ``checkpoint(state)`` is called at every
    learning-curve point with the complete loop state (parameters, optimizer and scheduler state,
    persistent chains, data order and cursor, both generator states, history, update count);
    ``train(..., resume=state)`` continues from it and ends bit-identical to an uninterrupted run.

    Raises LftmlError if K stops being positive definite (lower ``lr``)."""
    target.check_model(model)
    if model.n_visible <= SMALL_PROBLEM and torch.get_num_threads() > 1:
        # tiny matrices: thread start-up costs more than it saves (and hurts on busy machines)
        n_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return train(model, target, config, sampling_generator=sampling_generator, data_generator=data_generator,
                         optimizer_factory=optimizer_factory, progress=progress, callback=callback,
                         checkpoint=checkpoint, resume=resume)
        finally:
            torch.set_num_threads(n_threads)
    method = config.method
    if method == "analytic":
        return _set_analytic_optimum(model, target)
    if method == "exact" and config.recipe == "converge" and optimizer_factory is None:
        if resume is not None:
            raise LftmlError("--resume continues pcd, cd or --recipe reference; the converge recipe (L-BFGS) restarts "
                             "cheaply: use --init MODEL instead")
        return _train_exact_converge(model, target, config, progress=progress, callback=callback)
    data_term = _data_term(target, config, sampling_generator, data_generator)
    model.check_positive_definite()
    loop = _Loop(model, target, config, data_term, sampling_generator, data_generator, optimizer_factory)
    if resume is not None:
        loop.restore(resume)

    it: Iterable[int] = range(loop.start, config.n_updates)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"rbm {method}", leave=False)
    if resume is None:
        loop.record(0)
    for step in it:
        if method == "exact":
            loop.exact_update(step)
        else:
            loop.set_grads()
            loop.optimizer.step()
        loop.scheduler.step()
        if (step + 1) % config.log_every == 0 or step + 1 == config.n_updates:
            loop.record(step + 1)
            if checkpoint is not None:
                checkpoint(loop.state(step + 1))
            if callback is not None:
                callback(step + 1, model)
    for p in loop.params.values():
        p.grad = None
    history = loop.history
    log.info("trained %s for %d updates: loglik %.6g", method, config.n_updates, history["loglik"][-1])
    history["n_updates"] = config.n_updates
    return history


def _data_term(target: Target, config: TrainConfig, sampling_generator: torch.Generator | None,
               data_generator: torch.Generator | None) -> str:
    """The data term ("correlator" or "minibatch") ``auto`` stands for; refuses a method without the streams or data it needs."""
    method = config.method
    stochastic = method in ("pcd", "cd")
    if stochastic and sampling_generator is None:
        raise LftmlError(f"method {method!r} needs a sampling generator")
    data_term = config.data_term
    if data_term == "auto":
        data_term = "minibatch" if method == "cd" else "correlator"
    if (data_term == "minibatch" or method == "cd") and target.data is None:
        raise LftmlError(f"method {method!r} with data_term {data_term!r} needs data samples: build the target with Target.from_data")
    if data_term == "minibatch" and data_generator is None:
        raise LftmlError("minibatch training needs a data generator (data order stream)")
    return data_term


class _Loop:
    """The state of :func:`train`'s update loop (pcd, cd and the reference recipe of exact): parameters,
    optimizer and scheduler, persistent chains, data order and cursor, learning curves, rejections."""

    def __init__(self, model: GaussianRBM, target: Target, config: TrainConfig, data_term: str,
                 sampling_generator: torch.Generator | None, data_generator: torch.Generator | None,
                 optimizer_factory: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer] | None) -> None:
        self.model, self.target, self.config, self.method, self.data_term = model, target, config, config.method, data_term
        self.sampling_generator, self.data_generator = sampling_generator, data_generator
        self.params = model.trainable_parameters()
        if optimizer_factory is not None:
            self.optimizer = optimizer_factory(list(self.params.values()))
        else:
            self.optimizer = _make_optimizer(model, config)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=config.decay_every,
                                                         gamma=config.lr_decay)
        self.chains: torch.Tensor | None = None
        if self.method == "pcd":
            self.chains = torch.zeros((config.n_chains, model.n_visible), dtype=model.dtype)
        self.n_data = 0 if target.data is None else target.data.shape[0]
        self.perm: torch.Tensor | None = None
        self.cursor = 0
        self.history: dict[str, list] = {"update": [], "loglik": [], "kl": [], "mu2": [], "lr": []}
        self.start = 0
        self.rejections = 0

    def next_batch(self) -> torch.Tensor:
        """The next data minibatch; a new random order of the data when the current one is used up."""
        config, target = self.config, self.target
        assert target.data is not None
        if self.perm is None or self.cursor + config.batch_size > self.n_data:
            self.perm = torch.randperm(self.n_data, generator=self.data_generator)
            self.cursor = 0
        idx = self.perm[self.cursor : self.cursor + min(config.batch_size, self.n_data)]
        self.cursor += config.batch_size
        return target.data[idx]

    def record(self, step: int) -> None:
        """Add a learning-curve point; raises :class:`TrainingDiverged` for an indefinite K or runaway parameters."""
        config, history = self.config, self.history
        try:
            ll, kl = kl_and_loglik(self.model, self.target)
        except LftmlError:
            raise TrainingDiverged(
                f"training diverged at update {step}: K stopped being positive definite; lower the learning rate (now {config.lr})"
            ) from None
        if not math.isfinite(ll):  # cholesky_ex accepts infinite entries: catch runaway parameters here
            raise TrainingDiverged(
                f"training diverged at update {step}: the parameters became infinite or NaN; lower the learning rate (now {config.lr})"
            )
        if history["loglik"]:
            ll0 = history["loglik"][0]
            if ll < ll0 - RUNAWAY_FACTOR * max(1.0, abs(ll0)):
                raise TrainingDiverged(
                    f"training diverged at update {step}: <log p> fell from {ll0:.4g} to {ll:.4g} (runaway growth); "
                    f"lower the learning rate (now {config.lr})"
                )
        history["update"].append(step)
        history["loglik"].append(ll)
        history["kl"].append(kl)
        history["mu2"].append(float(self.model.mu2.detach().mean()))
        history["lr"].append(float(self.optimizer.param_groups[0]["lr"]))

    def set_grads(self) -> float:
        """Put the descent gradient ``-dL/dtheta`` into ``p.grad`` (the optimizer's closure; returns NaN)."""
        model, target, config, method = self.model, self.target, self.config, self.method
        with torch.no_grad():
            if self.data_term == "minibatch" or method == "cd":
                batch = self.next_batch()
            C_d, m_d = target.second_moment, target.mean
            if method == "exact":
                K, J = model.kernel(), model.source()
                L, info = torch.linalg.cholesky_ex(K)
                if int(info) != 0:
                    raise _NotPositiveDefinite
                m_m = torch.cholesky_solve(J.unsqueeze(-1), L).squeeze(-1)
                C_m = torch.cholesky_inverse(L) + torch.outer(m_m, m_m)
            else:
                start = self.chains if method == "pcd" else batch
                x = model.gibbs(start, config.k, self.sampling_generator)
                if not torch.isfinite(x).all():
                    raise LftmlError("Gibbs chains diverged (K not positive definite); lower the learning rate")
                if method == "pcd":
                    self.chains = x
            if method == "exact":
                grads = moment_gradients(model, C_d, m_d, C_m, m_m)
            elif self.data_term == "minibatch":
                grads = sample_gradients(model, x, data_samples=batch)
            else:
                grads = sample_gradients(model, x, data_second_moment=C_d, data_mean=m_d)
            for name, p in self.params.items():
                p.grad = -grads[name]
            return float("nan")

    def exact_update(self, step: int) -> None:
        """One update of the exact method, undone (and the learning rate halved) while it leaves K indefinite."""
        # step rejection: an update that leaves K indefinite is undone at once (before the learning
        # curve is recorded, which needs a positive-definite K) and the learning rate halved
        while True:
            snap = [p.detach().clone() for p in self.params.values()]
            self.optimizer.step(self.set_grads)
            K_new = self.model.kernel().detach()
            if bool(torch.isfinite(K_new).all()) and int(torch.linalg.cholesky_ex(K_new)[1]) == 0:
                break
            self.rejections += 1
            if self.rejections > MAX_REJECTIONS:
                raise TrainingDiverged(
                    f"training diverged at update {step}: K stopped being positive definite; lower the learning rate"
                )
            with torch.no_grad():
                for p, v in zip(self.params.values(), snap):
                    p.copy_(v)
            for group in self.optimizer.param_groups:
                group["lr"] *= 0.5
            log.warning("update %d left K indefinite: undone, learning rate halved", step)

    def restore(self, resume: dict) -> None:
        """Continue from a :meth:`state` (bit-identical to the uninterrupted run)."""
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(resume["params"][name])
        self.optimizer.load_state_dict(resume["optimizer"])
        self.scheduler.load_state_dict(resume["scheduler"])
        self.chains = None if resume["chains"] is None else resume["chains"].clone()
        self.perm = None if resume["perm"] is None else resume["perm"].clone()
        self.cursor = int(resume["cursor"])
        if self.sampling_generator is not None and resume["sampling_rng"] is not None:
            self.sampling_generator.set_state(resume["sampling_rng"])
        if self.data_generator is not None and resume["data_rng"] is not None:
            self.data_generator.set_state(resume["data_rng"])
        self.history = {k: list(v) for k, v in resume["history"].items()}
        self.start, self.rejections = int(resume["step"]), int(resume["rejections"])

    def state(self, step: int) -> dict:
        """The complete loop state after ``step`` updates, for ``checkpoint``."""
        chains, perm, sampling_generator, data_generator = self.chains, self.perm, self.sampling_generator, self.data_generator
        return {"step": step, "rejections": self.rejections,
                "params": {k: v.detach().clone() for k, v in self.params.items()},
                # deep copies: optimizers update their buffers in place, and state_dict() only references them
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "scheduler": copy.deepcopy(self.scheduler.state_dict()),
                "chains": None if chains is None else chains.clone(), "perm": None if perm is None else perm.clone(),
                "cursor": self.cursor, "history": {k: list(v) for k, v in self.history.items()},
                "sampling_rng": None if sampling_generator is None else sampling_generator.get_state(),
                "data_rng": None if data_generator is None else data_generator.get_state()}


def _pack(model: GaussianRBM) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in model.trainable_parameters().values()])


def _unpack_into(model: GaussianRBM, theta: np.ndarray) -> None:
    i = 0
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            n = p.numel()
            p.copy_(torch.as_tensor(theta[i: i + n].reshape(tuple(p.shape)), dtype=p.dtype))
            i += n


def _exact_objective(model: GaussianRBM, target: Target):
    """``f(theta) -> (-<log p>_target, -grad)`` in numpy for the packed trainable parameters
    (order of ``trainable_parameters``: W, then mu, then eta); the gradient is that of
    :func:`moment_gradients` with exact model moments. Outside the positive-definite region
    ``f = +inf`` (the line search backs off)."""
    import scipy.linalg as sl

    C = target.second_moment.numpy()
    m = target.mean.numpy()
    nv, nh, s2 = model.n_visible, model.n_hidden, model.sigma_h**2
    names = list(model.trainable_parameters())
    mode = model.mu2_mode
    mu2_fixed = None if model._mu2_fixed is None else np.broadcast_to(model._mu2_fixed.numpy(), (nv,))
    eta_fixed = model.eta.detach().numpy().copy()
    const = -0.5 * nv * math.log(2 * math.pi)

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        i = nv * nh
        W = theta[:i].reshape(nv, nh)
        if "mu" in names:
            nmu = nv if mode == "site" else 1
            mu = theta[i: i + nmu]
            i += nmu
            mu2v = np.broadcast_to(mu * mu, (nv,))
        else:
            mu2v = mu2_fixed
        eta = theta[i: i + nh] if "eta" in names else eta_fixed
        K = np.diag(mu2v) - s2 * (W @ W.T)
        try:
            cf = sl.cho_factor(K, lower=True, check_finite=True)
        except (np.linalg.LinAlgError, ValueError):
            return float("inf"), np.zeros_like(theta)
        J = W @ eta
        a = sl.cho_solve(cf, J)
        ll = -0.5 * float(np.sum(K * C)) + float(J @ m) - 0.5 * float(J @ a) + float(np.log(np.diag(cf[0])).sum()) + const
        Kinv = sl.cho_solve(cf, np.eye(nv))
        G = C - Kinv - np.outer(a, a)
        dm = m - a
        grads = [s2 * (G @ W) + np.outer(dm, eta)]
        if "mu" in names:
            d = np.diag(G)
            dmu2 = -0.5 * d if mode == "site" else np.array([-0.5 * d.sum()])
            grads.append(2.0 * mu * dmu2)
        if "eta" in names:
            grads.append(W.T @ dm)
        g = np.concatenate([x.ravel() for x in grads])
        return -ll, -g

    return f


def _lbfgs(f: Callable, x: np.ndarray, maxiter: int, gtol: float, on_iter: Callable[[int, np.ndarray, np.ndarray], None],
           memory: int = 50) -> tuple[np.ndarray, np.ndarray, int]:
    """Minimise ``f`` (returns value, gradient) by L-BFGS (two-loop recursion, ``memory`` pairs) with
    Armijo backtracking from the full step; an infinite value (K indefinite) is a rejected trial, so
    every iterate stays positive definite. Stops when ``max|g| < gtol``, after ``maxiter``
    iterations, or when no step decreases ``f`` (at the optimum to rounding). Returns
    ``(x, g, iterations)``."""
    fx, g = f(x)
    hist: list[tuple[np.ndarray, np.ndarray, float]] = []
    it = 0
    while it < maxiter and float(np.abs(g).max()) >= gtol:
        q = g.copy()
        alphas = []
        for s_, y_, rho in reversed(hist):
            a_ = rho * float(s_ @ q)
            q -= a_ * y_
            alphas.append(a_)
        if hist:
            s_, y_, _ = hist[-1]
            q *= float(s_ @ y_) / float(y_ @ y_)
        else:
            q /= max(1.0, float(np.abs(g).max()))
        for (s_, y_, rho), a_ in zip(hist, reversed(alphas)):
            q += s_ * (a_ - rho * float(y_ @ q))
        d = -q
        gd = float(g @ d)
        if not gd < 0:
            hist.clear()
            d = -g / max(1.0, float(np.abs(g).max()))
            gd = float(g @ d)
        t = 1.0
        for _ in range(60):
            xn = x + t * d
            fn, gn = f(xn)
            if np.isfinite(fn) and fn <= fx + 1e-4 * t * gd:
                break
            t *= 0.5
        else:
            break
        if fn >= fx and t < 1e-12:
            break
        s_, y_ = xn - x, gn - g
        sy = float(s_ @ y_)
        if sy > 1e-12 * math.sqrt(float(s_ @ s_) * float(y_ @ y_)):
            hist.append((s_, y_, 1.0 / sy))
            if len(hist) > memory:
                hist.pop(0)
        x, fx, g = xn, fn, gn
        it += 1
        on_iter(it, x, g)
    return x, g, it


def _escape_saddle(model: GaussianRBM, target: Target, theta: np.ndarray, tol: float) -> np.ndarray | None:
    """Second-order check at a stationary point: with ``G = <phi phi^T>_target - <phi phi^T>_model``,
    a maximum of <log p> needs ``v^T G v <= 0`` along every direction a *dead* hidden unit (a null
    right-singular direction of W) could grow into, since L changes by ``sigma_h^2 eps^2 v^T G v``
    there. If W has such a direction and ``lambda_max(G) > tol``, return the parameters with that
    unit pointed along G's top eigenvector (amplitude from the second-order gain); else None."""
    _unpack_into(model, theta)
    with torch.no_grad():
        W = model.W.numpy()
        try:
            M2 = model.second_moment().numpy()
        except LftmlError:
            return None
    G = target.second_moment.numpy() - M2
    lam, vec = np.linalg.eigh(0.5 * (G + G.T))
    if lam[-1] <= tol:
        return None
    U, S, Vt = np.linalg.svd(W, full_matrices=True)
    smax = float(S.max()) if S.size else 0.0
    n_dead = int(np.sum(S < 1e-3 * smax)) + max(0, W.shape[1] - W.shape[0]) if smax > 0 else W.shape[1]
    if n_dead == 0:
        return None
    v = Vt[-1]  # the right-singular direction of the smallest singular value (dead unit)
    mu2 = float(model.mu2_vector().detach().min())
    eps = 0.1 * math.sqrt(mu2) / model.sigma_h
    Wn = W + eps * np.outer(vec[:, -1], v)
    with torch.no_grad():
        K = np.diag(model.mu2_vector().detach().numpy()) - model.sigma_h**2 * Wn @ Wn.T
    if np.linalg.eigvalsh(K)[0] <= 0:
        return None
    out = theta.copy()
    out[: W.size] = Wn.ravel()
    log.info("exact training: left a saddle with a dead hidden unit (lambda_max(G) = %.3g)", lam[-1])
    return out


def _train_exact_converge(
    model: GaussianRBM, target: Target, config: TrainConfig, *, progress: bool = False,
    callback: Callable[[int, GaussianRBM], None] | None = None,
) -> dict[str, list]:
    """Recipe ``converge`` for method exact: L-BFGS (memory 50, Armijo backtracking that rejects
    indefinite K, :func:`_lbfgs`) on the exact -<log p>_target with its closed-form gradient, no
    weight decay (pure maximum likelihood), until ``max |d<log p>/d theta| < grad_tol``. One update
    = one L-BFGS iteration; ``n_updates`` is the maximum. Not converged within ``n_updates``:
    ``history["converged"]`` is False and a warning is logged."""
    model.check_positive_definite()
    f = _exact_objective(model, target)
    theta = _pack(model)
    history: dict[str, Any] = {"update": [], "loglik": [], "kl": [], "mu2": [], "lr": [], "grad_max": []}

    def record(step: int, th: np.ndarray, gmax: float) -> None:
        _unpack_into(model, th)
        ll, kl = kl_and_loglik(model, target)
        history["update"].append(step)
        history["loglik"].append(ll)
        history["kl"].append(kl)
        history["mu2"].append(float(model.mu2.detach().mean()))
        history["lr"].append(None)
        history["grad_max"].append(gmax)
        if callback is not None:
            callback(step, model)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.n_updates, desc="rbm exact (L-BFGS)", leave=False)

    def on_iter(it: int, x: np.ndarray, g: np.ndarray) -> None:
        if bar is not None:
            bar.update(1)
        if it % config.log_every == 0:
            record(it, x, float(np.abs(g).max()))

    _, g = f(theta)
    record(0, theta, float(np.abs(g).max()) if g.size else 0.0)
    theta, g, done = _lbfgs(f, theta, config.n_updates, config.grad_tol, on_iter)
    for _ in range(model.n_hidden):  # leave saddles with a dead hidden unit (see _escape_saddle)
        kicked = _escape_saddle(model, target, theta, config.grad_tol)
        if kicked is None or done >= config.n_updates:
            break
        def on_iter2(it: int, x: np.ndarray, g_: np.ndarray, _o: int = done) -> None:
            on_iter(it + _o, x, g_)
        theta, g, more = _lbfgs(f, kicked, config.n_updates - done, config.grad_tol, on_iter2)
        done += more
    if bar is not None:
        bar.close()
    gmax = float(np.abs(g).max()) if g.size else 0.0
    _unpack_into(model, theta)
    converged = gmax < config.grad_tol
    if history["update"][-1] != done:
        record(done, theta, gmax)
    if not converged:
        log.warning("exact training stopped after %d iterations without reaching max|grad| < %g (now %.3g); "
                    "raise --updates", done, config.grad_tol, gmax)
    history["converged"] = bool(converged)
    history["n_updates"] = int(done)
    history["grad_tol"] = float(config.grad_tol)
    return history


class _NotPositiveDefinite(Exception):
    pass



#: Maximum number of rejected exact-training steps before giving up.
MAX_REJECTIONS = 50


def _set_analytic_optimum(model: GaussianRBM, target: Target) -> dict[str, list]:
    """Method ``analytic``: put the model at the closed-form ML optimum of its family (uniform
    mu^2 fixed or learned, eta = 0) for the target's correlator; no iterations."""
    from lftml.rbm.constructions import optimal_weights_from_correlator

    if model.mu2_mode == "site" or model.learn_eta:
        raise LftmlError("the analytic optimum is known for a uniform mu^2 (fixed or global) and eta = 0 only")
    mu2_fixed = None
    if model.mu2_mode == "fixed":
        if model.mu2.ndim != 0:
            raise LftmlError("the analytic optimum needs one uniform mu^2, got a per-site array")
        mu2_fixed = float(model.mu2)
    W, mu2 = optimal_weights_from_correlator(target.second_moment, model.n_hidden, mu2_fixed, model.sigma_h)
    with torch.no_grad():
        model.W.copy_(torch.as_tensor(W, dtype=model.dtype))
        model.eta.zero_()
        if model.mu is not None:
            model.mu.copy_(torch.tensor(math.sqrt(mu2), dtype=model.dtype))
    history: dict[str, Any] = {"update": [0], "loglik": [], "kl": [], "mu2": [mu2], "lr": [0.0]}
    try:
        ll, kl = kl_and_loglik(model, target)
    except LftmlError:
        ll, kl = float("nan"), None
    history["loglik"].append(ll)
    history["kl"].append(kl)
    history["n_updates"] = 0  # closed form: no iterations
    history["converged"] = True
    return history


def pcd_tolerance(
    target_eigenvalues: np.ndarray,
    n_hidden: int,
    config: TrainConfig,
    mu2: float | None = None,
) -> tuple[np.ndarray, float]:
    r"""One-sigma statistical spread of the PCD-trained spectrum around the ML optimum (ascending
    model eigenvalues, mu^2), from the chain count.

    Linearised dynamics near the optimum (one kept mode of target eigenvalue lambda, model
    eigenvalue k = mu^2 - sigma_h^2 xi^2, x = sigma_h^2 xi^2): the chains estimate the model
    variance 1/k with variance ``2 tau / (k^2 N_chains)`` (Gaussian sample variance, ``tau`` the
    integrated autocorrelation time of the mode in updates, ``rho = (x/mu^2)^k`` per update of k
    Gibbs sweeps). The SGD update of x is an Ornstein-Uhlenbeck process with restoring rate
    ``2 lr x / k^2``, so its stationary variance is ``var(k) = 2 lr x tau / N_chains``.
    For a learned global mu^2 (parametrised by mu): restoring rate ``2 lr n_D / mu^2`` from the
    n_D dropped modes, noise from the trace over all modes, ``var(mu^2) = lr mu^6 sigma_T^2 / n_D``
    with ``sigma_T^2 = sum_j 2 tau_j / (k_j^2 N_chains)``; this spread also shifts the kept modes'
    eigenvalues (added in quadrature). ``lr`` is the final learning rate (after decay), times
    ``mu_lr_scale`` for mu. Checked empirically (tests, docs/rbm.md): the observed spread is at or
    below this estimate (it neglects the averaging by momentum), so it is a conservative tolerance.
    """
    model_eigs, mu2_opt = optimal_spectrum_for_tolerance(target_eigenvalues, n_hidden, mu2)
    lr = config.final_lr()
    n = config.n_chains
    x = np.clip(mu2_opt - model_eigs, 0.0, None)
    rho = (x / mu2_opt) ** config.k
    tau = (1 + rho) / (1 - rho)
    var = 2 * lr * x * tau / n
    mu2_sigma = 0.0
    n_drop = int(np.sum(x == 0))
    if mu2 is None and n_drop > 0:
        sigma_T2 = float(np.sum(2 * tau / (model_eigs**2 * n)))
        mu2_sigma = math.sqrt(lr * config.mu_lr_scale * mu2_opt**3 * sigma_T2 / n_drop)
        var = var + mu2_sigma**2
    return np.sqrt(var), mu2_sigma


def optimal_spectrum_for_tolerance(target_eigenvalues: np.ndarray, n_hidden: int, mu2: float | None):
    from lftml.rbm.constructions import optimal_spectrum

    return optimal_spectrum(target_eigenvalues, n_hidden, mu2)

