r"""Training a score model by score matching (Adam, EMA, checkpoints, resume, file safety).

Random streams (all explicit ``torch.Generator`` objects, seeds derived from one ``seed`` by
``numpy.random.SeedSequence(seed).spawn`` and stored in the model file):

* ``init``  - network initialisation (and the fixed Fourier features of the time embedding);
* ``data``  - order of the training configurations and the symmetry augmentation;
* ``noise`` - diffusion times ``t`` and the perturbation noise ``z``.

A checkpoint ``<out>.ckpt`` is written every ``checkpoint_every`` updates (atomically), holding the
weights, EMA weights, optimiser state, loss history, generator states and the settings, so that a
run continued with ``resume=True`` (``--resume``) carries on where it stopped with the *same*
random streams (bit-identical to an uninterrupted run). A non-finite or runaway loss stops training
with :class:`TrainingDivergedError`; the last good checkpoint is left untouched. One update is
:func:`train_step` (model, batch, optimiser): the unit a data-parallel wrapper reuses.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from lftml.devices import resolve_device  # the package's one device rule (re-exported here for callers)
from lftml.errors import FileFormatError, LftmlError
from lftml.diffusion import distributed
from lftml.diffusion.losses import T_SAMPLING, TARGETS, WEIGHTINGS, dsm_loss
from lftml.diffusion.model import PARAMETRIZATIONS, DataScaling, ScoreModel, save_model
from lftml.diffusion.nets import DEFAULT_PRESET, PRESETS, UNet, UNetConfig, preset
from lftml.diffusion.sampling import point_group_average
from lftml.diffusion.sde import VESDE, check_sigma_max

__all__ = [
    "TrainConfig", "TrainResult", "TrainingDivergedError", "train", "resolve_device", "derive_seeds",
    "checkpoint_path", "plot_loss_curve", "train_step", "ema_update", "augment", "stored_config",
    "check_resume_settings", "TrainingInterrupted", "interrupted_run", "RESULT_SETTINGS",
]

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "lftml-diffusion-checkpoint"


class TrainingDivergedError(LftmlError):
    """The training loss became NaN or infinite."""


#: settings that change the trained model; a resumed run must agree on all of them
RESULT_SETTINGS = ("steps", "batch_size", "lr", "warmup", "lr_final_fraction", "grad_clip", "ema_decay", "z2_augment",
                   "translate_augment", "symmetry_augment", "seed", "preset", "sigma", "eps", "t_sampling",
                   "parametrization", "target", "weighting", "noise_draws")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train` (all stored in the model file and the checkpoint).

    ``steps`` is the number of optimiser updates (``--updates``). ``lr`` is the Adam learning rate
    after a linear warm-up of ``warmup`` updates; it then decays with a cosine to
    ``lr * lr_final_fraction``. ``ema_decay`` is the decay of the exponential moving average of
    the weights (the EMA weights are what is saved and sampled). Augmentations: ``z2_augment``
    flips the sign of each configuration with probability 1/2 (phi -> -phi); ``translate_augment``
    rolls each batch by a random lattice translation; ``symmetry_augment`` applies a random element
    of the lattice's point group (reflections of every axis and, for equal extents, transposition:
    the 8 rotations/reflections of a square lattice). ``target`` (``tsm``: blended force/denoising
    target, needs the theory; ``dsm``), ``weighting`` (``likelihood``, ``sigma2``, ``edm``),
    ``t_sampling`` (``low``, ``loguniform``, ``mixed``, ``uniform``) and ``noise_draws`` (``(t, z)``
    draws per configuration and update): see :mod:`lftml.diffusion.losses`. ``parametrization``:
    ``auto`` (default, :func:`choose_parametrization`: ``mixture`` where the data's magnetisation is
    two-peaked, near kappa_c and in the broken phase, else ``gaussian``) or one of :data:`~lftml.diffusion.model.PARAMETRIZATIONS`. ``divergence_factor``:
    when the running mean of the loss over 10 updates exceeds this multiple of the first update's
    loss (the untrained model's), training stops as diverged.
    """

    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 100
    lr_final_fraction: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    z2_augment: bool = True
    translate_augment: bool = True
    symmetry_augment: bool = True
    checkpoint_every: int = 250
    seed: int = 0
    preset: str = DEFAULT_PRESET
    sigma: float = 25.0
    eps: float = 1e-5
    channels_last: bool = False  # measured 1.35x slower on CPU for the equi preset (benchmarks)
    t_sampling: str = "low"
    parametrization: str = "auto"
    target: str = "tsm"
    weighting: str = "likelihood"
    noise_draws: int = 2
    divergence_factor: float = 1e4

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise LftmlError(f"--updates must be >= 1, got {self.steps}")
        if self.seed < 0:
            raise LftmlError(f"--seed must be a non-negative integer, got {self.seed}")
        if self.batch_size < 1:
            raise LftmlError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LftmlError(f"--lr must be a positive number, got {self.lr}")
        if not (0.0 <= self.ema_decay < 1.0):
            raise LftmlError(f"EMA decay must be in [0, 1), got {self.ema_decay}")
        if self.parametrization not in ("auto", *PARAMETRIZATIONS):
            raise LftmlError(f"--parametrization must be auto or one of {', '.join(PARAMETRIZATIONS)}, "
                             f"got {self.parametrization!r}")
        if self.t_sampling not in T_SAMPLING:
            raise LftmlError(f"--t-sampling must be one of {', '.join(T_SAMPLING)}, got {self.t_sampling!r}")
        if self.target not in TARGETS:
            raise LftmlError(f"--target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.weighting not in WEIGHTINGS:
            raise LftmlError(f"--weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        if self.noise_draws < 1:
            raise LftmlError(f"--noise-draws must be >= 1, got {self.noise_draws}")
        if self.checkpoint_every < 1:
            raise LftmlError(f"--checkpoint-every must be >= 1, got {self.checkpoint_every}")
        if self.preset not in PRESETS:
            raise LftmlError(f"unknown --preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if not self.divergence_factor > 1:
            raise LftmlError(f"divergence_factor must be > 1, got {self.divergence_factor}")

    def result_settings(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in RESULT_SETTINGS}


@dataclass
class TrainResult:
    model: ScoreModel
    losses: np.ndarray
    steps: int
    wall_seconds: float
    model_path: Path
    checkpoint: Path
    loss_png: Path | None
    resumed_from: int


def derive_seeds(seed: int, names: tuple[str, ...] = ("init", "data", "noise")) -> dict[str, int]:
    """Independent 63-bit seeds for named streams from one integer (``SeedSequence.spawn``)."""
    children = np.random.SeedSequence(int(seed)).spawn(len(names))
    return {n: int(c.generate_state(2, dtype=np.uint32).astype(np.uint64).dot([1, 2**32]) % (2**63)) for n, c in zip(names, children)}


def checkpoint_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".ckpt")


def _fingerprint(x: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str(x.shape).encode())
    h.update(np.ascontiguousarray(x[: min(len(x), 64)], dtype=np.float32).tobytes())
    h.update(np.float64(np.sum(x, dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    frac = min(1.0, frac)
    lo = cfg.lr * cfg.lr_final_fraction
    return lo + 0.5 * (cfg.lr - lo) * (1.0 + math.cos(math.pi * frac))


def plot_loss_curve(losses: np.ndarray, ax=None, window: int = 50):
    """Per-step training loss (light) and its running mean over ``window`` steps; returns ``ax``."""
    from lftml.plots import pyplot

    if ax is None:
        _, ax = pyplot().subplots(figsize=(6, 3.5))
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.5, alpha=0.35, color="C0", label="loss per step")
    if len(losses) >= window:
        run = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], run, color="C1", lw=1.5, label=f"running mean ({window})")
    ax.set_xlabel("training step")
    ax.set_ylabel(r"DSM loss  $\langle|\sigma_t s + z|^2\rangle$ / site")
    ax.set_yscale("log")
    ax.legend(frameon=False)
    return ax


def _save_checkpoint(path: Path, payload: dict) -> None:
    from lftml.safeio import atomic_output

    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def _load_checkpoint(path: Path) -> dict:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FileFormatError(f"checkpoint {path} is damaged ({type(exc).__name__}); delete it or pass --overwrite "
                              "to start afresh") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise FileFormatError(f"{path} is not an lftml diffusion training checkpoint; delete it or pass --overwrite")
    return ck


def stored_config(out: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` of the interrupted run whose checkpoint is ``<out>.ckpt``."""
    ckpt = checkpoint_path(out)
    if not ckpt.exists():
        raise LftmlError(f"--resume: there is no checkpoint {ckpt} of an interrupted run to continue; "
                         "drop --resume to start a new run")
    ck = _load_checkpoint(ckpt)
    if "train_config" not in ck:
        raise FileFormatError(f"checkpoint {ckpt} was written by an older lftml and holds no settings; "
                              "pass --overwrite to start afresh")
    return TrainConfig(**json.loads(ck["train_config"]))


def interrupted_run(out: str | Path) -> tuple[int, int] | None:
    """``(updates done, updates planned)`` of an unfinished run of ``out`` (its checkpoint), else ``None``."""
    ckpt = checkpoint_path(out)
    if not ckpt.exists():
        return None
    try:
        ck = _load_checkpoint(ckpt)
        planned = int(json.loads(ck["train_config"])["steps"]) if "train_config" in ck else None
        done = int(ck["step"])
    except (LftmlError, KeyError, ValueError):
        return None
    if planned is not None and done >= planned and Path(out).exists():
        return None
    return done, planned if planned is not None else -1


def check_resume_settings(stored: TrainConfig, given: dict) -> None:
    """Refuse (naming the setting) a resumed run whose explicitly ``given`` settings differ from
    the ``stored`` ones in anything that changes the result."""
    st = asdict(stored)
    for k, v in given.items():
        if k in RESULT_SETTINGS and v is not None and st[k] != v:
            raise LftmlError(f"--resume: the interrupted run used {k} = {st[k]!r}, not {v!r}; drop the option to "
                             f"continue with the stored settings, or start a new run (--overwrite)")


def refuse_interrupted(out: str | Path, resume: bool, overwrite: bool) -> None:
    if resume or overwrite:
        return
    run = interrupted_run(out)
    if run is not None:
        raise LftmlError(f"--out {out} has an interrupted run (update {run[0]} of {run[1]} in {checkpoint_path(out)}); "
                         "pass --resume to continue it or --overwrite to start afresh")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by SIGINT/SIGTERM after a complete update (``step`` updates are in the
    checkpoint); a second signal stops at once and ``step`` is that of the last periodic checkpoint."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"interrupted after update {step}; checkpoint {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint


def _point_group_transform(x: torch.Tensor, ops: tuple[bool, ...], transpose: bool) -> torch.Tensor:
    """Flip lattice axis ``mu`` where ``ops[mu]``, then transpose the first two axes if asked."""
    dims = [1 + i for i, f in enumerate(ops) if f]
    if dims:
        x = torch.flip(x, dims=dims)
    if transpose:
        x = x.transpose(1, 2)
    return x


def augment(xb: torch.Tensor, fb: torch.Tensor | None, config: TrainConfig, g: torch.Generator,
            lattice_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Symmetry augmentation of a batch (and of its forces, which transform the same way)."""
    nd = len(lattice_shape)
    dims = tuple(range(1, 1 + nd))
    if config.z2_augment:
        sign = (torch.randint(0, 2, (xb.shape[0],), generator=g) * 2 - 1).to(xb.device, xb.dtype)
        sign = sign.reshape(-1, *([1] * nd))
        xb = xb * sign
        fb = None if fb is None else fb * sign
    if config.translate_augment:
        shifts = [int(torch.randint(0, L, (1,), generator=g)) for L in lattice_shape]
        xb = torch.roll(xb, shifts=shifts, dims=dims)
        fb = None if fb is None else torch.roll(fb, shifts=shifts, dims=dims)
    if config.symmetry_augment:
        ops = tuple(bool(v) for v in torch.randint(0, 2, (nd,), generator=g))
        tr = nd >= 2 and lattice_shape[0] == lattice_shape[1] and bool(torch.randint(0, 2, (1,), generator=g))
        xb = _point_group_transform(xb, ops, tr)
        fb = None if fb is None else _point_group_transform(fb, ops, tr)
    return xb, fb


def train_step(model: ScoreModel, batch: torch.Tensor, optimizer: torch.optim.Optimizer, config: TrainConfig,
               generator: torch.Generator, *, force: torch.Tensor | None = None,
               power_spectrum: torch.Tensor | None = None, lr: float | None = None,
               ddp: "distributed.DistributedContext | None" = None) -> torch.Tensor:
    """One optimiser update on ``batch`` (model units, already augmented): loss, backward, gradient
    clipping, step. Returns the loss (detached). ``ddp`` (under torchrun): ``batch`` is the global
    batch, identical on every rank; the network runs on this rank's rows and the gradients are
    summed over ranks before clipping (:mod:`lftml.diffusion.distributed`), so the update is the
    single-process one."""
    if lr is not None:
        for grp in optimizer.param_groups:
            grp["lr"] = lr
    score_fn = model if ddp is None else ddp.shard(model)
    loss = dsm_loss(score_fn, batch, model.sde, generator, config.t_sampling, weighting=config.weighting,
                    force0=force, power_spectrum=power_spectrum, sigma_data=model.sigma_data,
                    noise_draws=config.noise_draws, sigma_low=model.sigma_data)
    if not torch.isfinite(loss):
        return loss.detach()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if ddp is not None:
        ddp.all_reduce_grads(model.net)
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.net.parameters(), config.grad_clip)
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def ema_update(ema: dict, net: torch.nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * weights`` (buffers copied)."""
    for k, v in net.state_dict().items():
        if v.dtype.is_floating_point:
            ema[k].mul_(decay).add_(v.detach(), alpha=1.0 - decay)
        else:
            ema[k].copy_(v)


def train(
    configs: np.ndarray | torch.Tensor,
    out: str | Path,
    config: TrainConfig = TrainConfig(),
    *,
    theory: dict | None = None,
    data_info: dict | None = None,
    net_config: UNetConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    device: str | torch.device = "auto",
    max_steps_this_call: int | None = None,
    heldout: np.ndarray | None = None,
    monitor_every: int = 0,
) -> TrainResult:
    """Train a score model on ``configs`` (``(n, *lattice_shape)``, engine units) and save it to ``out``.

    The model file gets the EMA weights, the data scaling, the SDE, ``theory`` (the training data's
    ``theory.to_dict()``), the seeds and a training summary; ``<out>.ckpt`` is the checkpoint,
    ``<stem>_loss.csv`` / ``<stem>_loss.png`` the loss curve. Files: an existing ``out`` or a
    checkpoint of an interrupted run is refused unless ``overwrite`` (or ``resume``, which
    continues the checkpoint's run and must be given the same settings); the output is locked for the
    run; every file is written atomically. SIGINT/SIGTERM stop after the current update with a
    checkpoint (:class:`TrainingInterrupted`). ``max_steps_this_call`` stops early after that many
    updates (checkpoint written; used to test resuming). ``heldout`` (engine units) with
    ``monitor_every > 0``: the held-out likelihood gain over the analytic part
    (:func:`lftml.diffusion.monitor.likelihood_gain`) is logged and stored every so many updates.

    Under ``torchrun`` (``WORLD_SIZE > 1``) every rank calls this with the same arguments: the ranks
    train one model data-parallel (:mod:`lftml.diffusion.distributed`; ``batch_size`` is the global
    batch), rank 0 alone takes the lock and writes the files; every rank returns the same model.
    """
    from lftml.safeio import OutputLock, check_output

    out = Path(out)
    x_np = np.asarray(configs.cpu().numpy() if isinstance(configs, torch.Tensor) else configs)
    if x_np.ndim < 2 or x_np.shape[0] < 2:
        raise LftmlError(f"training data must be (n_configs >= 2, *lattice_shape), got shape {x_np.shape}")
    if not np.all(np.isfinite(x_np)):
        raise LftmlError("training data contain NaN or infinite values; check the ensemble file")
    lattice_shape = tuple(x_np.shape[1:])
    ctx = distributed.context(resolve_device(device))  # torchrun: data-parallel over ranks; else one process
    dev = ctx.device(resolve_device(device))
    cfg_net = net_config or preset(config.preset, ndim=len(lattice_shape))
    cfg_net.check_lattice(lattice_shape)
    ckpt = checkpoint_path(out)
    refuse_interrupted(out, resume, overwrite)
    check_output(out, overwrite=overwrite, resume=resume)
    if ckpt.exists() and not resume and not overwrite:
        raise LftmlError(f"{ckpt} holds an earlier run of this output; pass --resume to continue it or "
                         "--overwrite to start afresh")
    if resume and not ckpt.exists():
        raise LftmlError(f"--resume: there is no checkpoint {ckpt} of an interrupted run to continue; "
                         "drop --resume to start a new run")
    lock, refused = None, None
    if ctx.is_writer:  # one lock, taken by the one writer
        try:
            lock = OutputLock(out, "model").acquire()
        except LftmlError as exc:
            refused = str(exc)
    refused = ctx.broadcast_error(refused)  # also the point after which rank 0 may write: all ranks checked
    if refused is not None:
        raise LftmlError(refused)
    try:
        with _stop_requests() as stop:
            return _train_locked(stop, x_np, out, ckpt, config, cfg_net, lattice_shape, dev, theory, data_info, resume,
                                 progress, max_steps_this_call, heldout, monitor_every, ctx)
    finally:
        if lock is not None:
            lock.release()


@contextlib.contextmanager
def _stop_requests():
    """SIGINT/SIGTERM inside the block set ``stop["requested"]`` (training stops after the current
    update, with a checkpoint); a second signal raises ``KeyboardInterrupt`` at once."""
    stop = {"requested": False}

    def handler(signum, frame):  # noqa: ARG001
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True

    try:
        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: no handlers, interrupts behave as usual
        old = {}
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def zero_mode_binder(phi: np.ndarray) -> tuple[float, float]:
    """``(U_data, U_mixture)``: the Binder cumulant ``U = 1 - <M^4> / (3 <M^2>^2)`` of the
    magnetisation ``M`` (site mean) of the configurations ``phi`` (leading axis = samples), and the
    one the sign-aligned two-Gaussian mixture fitted to them predicts. The fitted mixture's ``M`` is
    ``1/2 N(+-m, s^2)`` with ``m = <|M|>``, ``s^2 = Var |M|``, so its ``<M^2>`` is the data's and
    ``<M^4> = m^4 + 6 m^2 s^2 + 3 s^4``; any Gaussian has ``U = 0`` exactly."""
    x = np.asarray(phi, dtype=np.float64)
    M = x.reshape(x.shape[0], -1).mean(axis=1)
    m2 = float(np.mean(M**2))
    if not m2 > 0:
        return 0.0, 0.0
    a = np.abs(M)
    m, s2 = float(a.mean()), float(a.var())
    return 1.0 - float(np.mean(M**4)) / (3 * m2**2), 1.0 - (m**4 + 6 * m**2 * s2 + 3 * s2**2) / (3 * m2**2)


def choose_parametrization(phi: np.ndarray, theory, n: int = 1024, seed: int = 0) -> tuple[str, dict]:
    """``auto``: the analytic part whose zero mode looks like the data's. The two exact baselines
    (:mod:`lftml.diffusion.baselines`) differ only in the distribution of the magnetisation M: the
    Gaussian's is N(0, <M^2>) (Binder cumulant U = 0), the sign-aligned mixture's is two Gaussians
    at +-<|M|> (U from :func:`zero_mode_binder`). ``mixture`` is chosen when the data's U is closer
    to the mixture's than to 0, else ``gaussian``; no sampling, so no seed dependence.

    Measured (U data / mixture; two HMC ensembles each, 8 chains x 100): kappa = 0.21 at L = 8, 16,
    32: -0.02..0.09 / 0.26-0.30 (gaussian); kappa = 0.2705: 0.51-0.58 / 0.48-0.54 (mixture); kappa
    = 0.5: 0.667 / 0.667 (mixture). Wherever the two disagree, the mixture is also the better exact
    proposal: its exact-sample ESS/N against exp(-S) was 1.5-7x the Gaussian's near kappa_c and the
    trained model on it accepts more (16x16, kappa = 0.2705: 0.45 vs 0.32, docs/diffusion.md); at
    kappa = 0.21 the Gaussian's ESS/N is 3-12 % higher. The previous rule (mixture when its ESS/N
    was > 3x the Gaussian's) chose by a noisy estimate and flipped between seeds near kappa_c.

    The info dict records both U and, when ``theory`` is known, both baselines' exact-sample ESS/N
    (``n`` samples from ``seed``) for the report."""
    u_data, u_mix = zero_mode_binder(phi)
    choice = "mixture" if abs(u_data - u_mix) < abs(u_data) else "gaussian"
    info: dict = {"binder_data": u_data, "binder_mixture": u_mix}
    if theory is None:
        return choice, info
    from lftml.diffusion.baselines import GaussianBaseline, MixtureBaseline
    from lftml.stats import ess_fraction
    from lftml.theories import theory_from_dict

    th = theory_from_dict(theory) if isinstance(theory, dict) else theory
    x = torch.as_tensor(np.asarray(phi), dtype=torch.float64)
    for name, base in (("gaussian", GaussianBaseline.fit(x)), ("mixture", MixtureBaseline.fit(x))):
        y = base.sample(n, torch.Generator().manual_seed(seed))
        info[f"ess_fraction_{name}"] = ess_fraction((-th.action(y).to(torch.float64) - base.log_prob(y)).numpy())
    info["n"] = n
    return choice, info


def _fit_analytic_part(x_np: np.ndarray, x_all: torch.Tensor, theory, sde: VESDE, config: TrainConfig) -> dict:
    """The score's analytic part from the training data (model units ``x_all``): the parametrisation
    (``auto`` resolved by :func:`choose_parametrization`), its power spectrum and vacuum, the data's
    spectrum (for the TSM blend of non-mixture models), and the sigma_max check (within a well for
    the mixture, whose prior has both vacua)."""
    param, auto_info = config.parametrization, None
    if param == "auto":
        param, auto_info = choose_parametrization(x_np, theory, seed=config.seed)
        log.info("--parametrization auto: %s (%s)", param, auto_info)
    if param == "mixture":
        m_sign = torch.where(x_all.reshape(x_all.shape[0], -1).mean(1) >= 0, 1.0, -1.0)
        pair_dist = check_sigma_max(sde, x_all * m_sign.reshape(-1, *([1] * (x_all.ndim - 1))))
    else:
        pair_dist = check_sigma_max(sde, x_all)
    ps_data = ScoreModel.estimate_power_spectrum(x_all)
    if config.symmetry_augment:  # the symmetries the augmentation assumes: 4x less estimation noise in 2d
        ps_data = point_group_average(ps_data)
    ps_data = ps_data.float()
    ps, vacuum = (ps_data if param == "gaussian" else None), None
    if param == "mixture":
        from lftml.diffusion.baselines import MixtureBaseline

        mix = MixtureBaseline.fit(x_all.to(torch.float64), point_group=config.symmetry_augment).component  # model units
        ps, vacuum = mix.power_spectrum.float(), mix.mean
        if not vacuum > 0:
            raise LftmlError("--parametrization mixture: the sign-aligned data have no vacuum (mean <= 0)")
    return {"parametrization": param, "auto": auto_info, "pair_dist": pair_dist, "ps_data": ps_data,
            "power_spectrum": ps, "vacuum": vacuum}


def _check_checkpoint_matches(ck: dict, ckpt: Path, config: TrainConfig, cfg_net: UNetConfig, fingerprint: str) -> None:
    """``--resume`` only continues the same run: same result settings, network and data."""
    stored = TrainConfig(**json.loads(ck["train_config"])) if "train_config" in ck else None
    if stored is None or stored.result_settings() != config.result_settings():
        diff = [k for k in RESULT_SETTINGS if stored is None or getattr(stored, k) != getattr(config, k)]
        raise LftmlError(f"--resume: the checkpoint {ckpt} was written with other settings ({', '.join(diff)}); "
                         "resume without those options or start afresh with --overwrite")
    if ck["net_config"] != cfg_net.to_dict() or ck["fingerprint"] != fingerprint:
        raise LftmlError(f"--resume: the checkpoint {ckpt} belongs to a different run (other data or network); "
                         "pass --overwrite to start afresh")


def _write_loss_files(out: Path, losses: np.ndarray, config: TrainConfig) -> Path | None:
    """``<out>_loss.csv`` (atomic) and ``<out>_loss.png`` (a plotting failure never loses the model)."""
    from lftml.safeio import atomic_output

    done = len(losses)
    csv = out.with_name(out.stem + "_loss.csv")
    with atomic_output(csv) as tmp:
        np.savetxt(tmp, np.column_stack([np.arange(1, done + 1), losses]), delimiter=",", header="update,loss",
                   comments="", fmt=["%d", "%.6g"])
    png = out.with_name(out.stem + "_loss.png")
    try:
        from lftml.plots import pyplot, save_figure

        pyplot()  # Agg backend before the figure exists
        ax = plot_loss_curve(losses)
        ax.set_title(f"score-matching training ({config.preset} preset, {done} updates)")
        save_figure(ax.figure, png)
    except Exception as exc:  # plotting must never lose a trained model
        log.warning("could not write the loss-curve PNG: %s", exc)
        png = None
    return png


def _check_divergence(lv: float, losses: list[float], step: int, config: TrainConfig, ckpt: Path,
                      last_good: int | None, n_ref: int = 10) -> None:
    """Raise :class:`TrainingDivergedError` for a non-finite loss, or when the running mean over the
    last ``n_ref`` updates exceeds ``divergence_factor`` times the first update's loss (the untrained
    model's, i.e. its analytic part's): runaway growth, not only NaN."""
    diverged = not math.isfinite(lv)
    ref = losses[0] if losses else lv
    if not diverged and losses:
        recent = float(np.mean(losses[-(n_ref - 1):] + [lv]))
        diverged = recent > config.divergence_factor * max(ref, 1e-12)
    if diverged:
        where = (f"the last good checkpoint {ckpt} (update {last_good}) is kept" if last_good is not None
                 else "no checkpoint had been written yet")
        raise TrainingDivergedError(
            f"training diverged: loss became {lv:.3g} at update {step + 1} (first update: {ref:.3g}); "
            f"{where}. Lower --lr (now {config.lr:g}) or check the data for outliers"
        )


def _train_locked(stop, x_np, out, ckpt, config, cfg_net, lattice_shape, dev, theory, data_info, resume, progress,
                  max_steps_this_call, heldout, monitor_every, ctx) -> TrainResult:
    """:func:`train` under the output lock: build the model, start (or resume) the run, run its
    updates, write the model and loss files."""
    seeds = derive_seeds(config.seed)
    model, x_all, f_all, ps_data = _new_model(x_np, config, cfg_net, lattice_shape, dev, theory, data_info, seeds)
    run = _start_run(model, x_all, f_all, ps_data, seeds, config, cfg_net, ckpt, ctx, dev, resume)
    end_step = config.steps if max_steps_this_call is None else min(config.steps, run.start_step + max_steps_this_call)
    wall_before = float(model.info.get("wall_seconds_before_resume", 0.0))
    elapsed = _run_updates(run, stop, end_step, wall_before, resume=resume, progress=progress, heldout=heldout,
                           monitor_every=monitor_every)
    return _finish_run(run, out, wall_before + elapsed, elapsed / max(1, end_step - run.start_step))


def _tsm_force(target: str, theory: dict | None, x_np: np.ndarray, scale: float) -> tuple[str, torch.Tensor | None]:
    """``(target used, force in model units)``: ``tsm`` needs the theory's force, else ``dsm``."""
    if target != "tsm":
        return target, None
    from lftml.diffusion.monitor import model_force

    f_np = model_force(theory, x_np, scale)
    if f_np is None:
        log.warning("no theory recorded with the training data: the force is unknown, training with the "
                    "denoising target (target = dsm)")
        return "dsm", None
    return target, torch.as_tensor(f_np, dtype=torch.float32)


def _new_model(x_np: np.ndarray, config: TrainConfig, cfg_net: UNetConfig, lattice_shape: tuple[int, ...],
               dev: torch.device, theory: dict | None, data_info: dict | None,
               seeds: dict[str, int]) -> tuple[ScoreModel, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The untrained model on ``dev`` (network initialised from the ``init`` seed, analytic part
    fitted to the data, provenance in its info) with the data and force in model units and the
    data's power spectrum: ``(model, x_all, f_all, ps_data)``."""
    sde = VESDE(config.sigma, config.eps)
    scaling = DataScaling.fit(x_np)
    x_all = torch.as_tensor(x_np, dtype=torch.float32) * scaling.scale
    fit = _fit_analytic_part(x_np, x_all, theory, sde, config)
    net = UNet(cfg_net, generator=torch.Generator().manual_seed(seeds["init"]))
    target, f_all = _tsm_force(config.target, theory, x_np, scaling.scale)
    info = {
        "preset": config.preset,
        "train_config": asdict(config),
        "target_used": target,
        "seeds": {"seed": int(config.seed), **seeds},
        "data": {**(data_info or {}), "n_configs": int(x_np.shape[0]), "fingerprint": _fingerprint(x_np),
                 "max_pairwise_distance_model_units": fit["pair_dist"]},
    }
    sigma_data = float(x_all.std())
    info["sigma_data"] = sigma_data
    if fit["auto"] is not None:
        info["parametrization_auto"] = {"chosen": fit["parametrization"], **fit["auto"]}
    if fit["vacuum"] is not None:
        info["vacuum"] = fit["vacuum"]
    model = ScoreModel(net, sde, lattice_shape, scaling, theory, info, parametrization=fit["parametrization"],
                       sigma_data=sigma_data, power_spectrum=fit["power_spectrum"], vacuum=fit["vacuum"]).to(dev)
    if config.channels_last and len(lattice_shape) == 2:
        model.net.to(memory_format=torch.channels_last)
    return model, x_all, f_all, fit["ps_data"]


@dataclass
class _Run:
    """One training run under the lock: its settings, the training data on the device, and the
    state a checkpoint holds (weights, EMA, optimiser, data and noise streams, batch order, losses,
    held-out monitor)."""

    config: TrainConfig
    cfg_net: UNetConfig
    ckpt: Path
    ctx: distributed.DistributedContext
    dev: torch.device
    model: ScoreModel
    x_all: torch.Tensor
    f_all: torch.Tensor | None
    ps_dev: torch.Tensor
    ema: dict
    opt: torch.optim.Optimizer
    g_data: torch.Generator
    g_noise: torch.Generator
    perm: torch.Tensor
    pos: int = 0
    losses: list[float] = field(default_factory=list)
    monitor: list[dict] = field(default_factory=list)
    start_step: int = 0

    def update(self, step: int) -> float:
        """One optimiser update on the next batch (a new order of the data after each pass); its loss."""
        n, bs = self.x_all.shape[0], self.config.batch_size
        if self.pos + bs > n:
            self.perm = torch.randperm(n, generator=self.g_data)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + bs].to(self.dev)
        self.pos += bs
        xb, fb = augment(self.x_all[idx], None if self.f_all is None else self.f_all[idx], self.config, self.g_data,
                         self.model.lattice_shape)
        loss = train_step(self.model, xb, self.opt, self.config, self.g_noise, force=fb, power_spectrum=self.ps_dev,
                          lr=_lr_at(step, self.config), ddp=self.ctx if self.ctx.distributed else None)
        return float(loss)

    def save_checkpoint(self, step: int, wall: float) -> None:
        """The checkpoint after ``step`` updates (rank 0 writes it: every rank holds the same state)."""
        if not self.ctx.is_writer:
            return
        _save_checkpoint(self.ckpt, {
            "format": CHECKPOINT_FORMAT, "step": step, "net": self.model.net.state_dict(), "ema": self.ema,
            "optimizer": self.opt.state_dict(), "g_data": self.g_data.get_state(), "g_noise": self.g_noise.get_state(),
            "losses": torch.tensor(self.losses, dtype=torch.float64), "net_config": self.cfg_net.to_dict(),
            "seed": int(self.config.seed), "fingerprint": self.model.info["data"]["fingerprint"],
            "batch_size": self.config.batch_size, "wall_seconds": wall, "perm": self.perm, "pos": self.pos,
            "train_config": json.dumps(asdict(self.config)), "monitor": json.dumps(self.monitor),
        })

    def monitor_heldout(self, heldout: np.ndarray, step: int) -> None:
        """Log and record the EMA model's held-out likelihood gain after ``step`` updates."""
        from lftml.diffusion.monitor import likelihood_gain

        saved = copy.deepcopy(self.model.net.state_dict())
        self.model.net.load_state_dict(self.ema)
        try:
            r = likelihood_gain(self.model, heldout, draws=4, seed=12345)
        finally:
            self.model.net.load_state_dict(saved)
            self.model.net.train()
        self.monitor.append({"update": step, "gain_nats": r["value"], "error": r["error"]})
        log.info("update %d: held-out likelihood gain %.4f +- %.4f nats", step, r["value"], r["error"])


def _start_run(model: ScoreModel, x_all: torch.Tensor, f_all: torch.Tensor | None, ps_data: torch.Tensor,
               seeds: dict[str, int], config: TrainConfig, cfg_net: UNetConfig, ckpt: Path,
               ctx: distributed.DistributedContext, dev: torch.device, resume: bool) -> _Run:
    """A fresh run (an old checkpoint of ``out`` removed) or, with ``resume``, the checkpoint's run
    continued with its weights, optimiser, random streams, batch order and history."""
    g_data = torch.Generator().manual_seed(seeds["data"])
    g_noise = torch.Generator(device=dev if dev.type == "cuda" else "cpu").manual_seed(seeds["noise"])
    ema = copy.deepcopy(model.net.state_dict())
    opt = torch.optim.Adam(model.net.parameters(), lr=config.lr)
    ck = None
    if resume:
        ck = _load_checkpoint(ckpt)
        _check_checkpoint_matches(ck, ckpt, config, cfg_net, model.info["data"]["fingerprint"])
        model.net.load_state_dict(ck["net"])
        ema = ck["ema"]
        opt.load_state_dict(ck["optimizer"])
        g_data.set_state(ck["g_data"])
        g_noise.set_state(ck["g_noise"])
        model.info["wall_seconds_before_resume"] = float(ck.get("wall_seconds", 0.0))
        log.info("resuming from %s at update %d", ckpt, int(ck["step"]))
    elif ckpt.exists() and ctx.is_writer:
        ckpt.unlink()  # overwrite: the old run's checkpoint goes
    n = x_all.shape[0]
    # blend of the TSM target: zero variance for the analytic Gaussian (or for each mixture component)
    ps_dev = (model.power_spectrum if model.power_spectrum is not None else ps_data).to(dev)
    perm = ck["perm"] if ck is not None else torch.randperm(n, generator=g_data)
    run = _Run(config, cfg_net, ckpt, ctx, dev, model, x_all.to(dev), None if f_all is None else f_all.to(dev), ps_dev,
               ema, opt, g_data, g_noise, perm)
    if ck is not None:
        run.pos, run.start_step = int(ck["pos"]), int(ck["step"])
        run.losses = list(np.asarray(ck["losses"], dtype=float))
        run.monitor = json.loads(ck.get("monitor", "[]"))
    return run


def _run_updates(run: _Run, stop: dict, end_step: int, wall_before: float, *, resume: bool, progress: bool,
                 heldout: np.ndarray | None, monitor_every: int) -> float:
    """Updates ``run.start_step .. end_step`` with divergence checks, EMA, the held-out monitor and
    periodic checkpoints; a stop request or a second signal ends it with :class:`TrainingInterrupted`.
    Returns the seconds they took."""
    config, ctx = run.config, run.ctx
    bar = None
    if progress and ctx.is_writer:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=run.start_step, desc="train", unit="update", dynamic_ncols=True)
    wall0 = time.perf_counter()
    last_good = run.start_step if resume else None
    run.model.net.train()
    try:
        for step in range(run.start_step, end_step):
            if ctx.agree(stop["requested"]):  # every rank stops at the same update
                run.save_checkpoint(step, wall_before + time.perf_counter() - wall0)
                raise TrainingInterrupted(step, run.ckpt)
            lv = run.update(step)
            _check_divergence(lv, run.losses, step, config, run.ckpt, last_good)
            ema_update(run.ema, run.model.net, min(config.ema_decay, (1.0 + step) / (10.0 + step)))
            run.losses.append(lv)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{np.mean(run.losses[-50:]):.4f}", lr=f"{_lr_at(step, config):.1e}")
            if ctx.is_writer and heldout is not None and monitor_every > 0 and ((step + 1) % monitor_every == 0 or step + 1 == config.steps):
                run.monitor_heldout(heldout, step + 1)
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == end_step:
                run.save_checkpoint(step + 1, wall_before + time.perf_counter() - wall0)
                last_good = step + 1
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:  # a second signal: stop at once, the last periodic checkpoint stays
        raise TrainingInterrupted(last_good or 0, run.ckpt) from None
    finally:
        if bar is not None:
            bar.close()
    return time.perf_counter() - wall0


def _finish_run(run: _Run, out: Path, wall: float, seconds_per_step: float) -> TrainResult:
    """Record the training summary, put the EMA weights into the model and (rank 0) write the model
    and loss files; every rank returns the same model."""
    model, losses = run.model, run.losses
    done = len(losses)
    model.info["training"] = {
        "steps_done": done, "steps_target": run.config.steps, "wall_seconds": wall,
        "seconds_per_step": seconds_per_step,
        "final_loss_mean50": float(np.mean(losses[-50:])) if losses else None, "device": str(run.dev),
        "torch_threads": torch.get_num_threads(), "resumed_from_step": run.start_step,
    }
    if run.monitor:
        model.info["monitor"] = run.monitor
    # the saved model carries the EMA weights
    model.net.load_state_dict(run.ema)
    model.net.to(memory_format=torch.contiguous_format)
    model.eval()
    if not run.ctx.is_writer:  # the same model on every rank; rank 0 writes it
        run.ctx.barrier()
        return TrainResult(model, np.asarray(losses, dtype=float), done, wall, out, run.ckpt, None, run.start_step)
    save_model(model, out)
    arr = np.asarray(losses, dtype=float)
    png = _write_loss_files(out, arr, run.config)
    run.ctx.barrier()  # the files are complete before any rank returns
    return TrainResult(model, arr, done, wall, out, run.ckpt, png, run.start_step)
