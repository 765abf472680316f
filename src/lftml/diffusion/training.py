r"""Training a score model by denoising score matching (Adam, EMA, checkpoints, resume).

Random streams (all explicit ``torch.Generator`` objects, seeds derived from one ``seed`` by
``numpy.random.SeedSequence(seed).spawn`` and stored in the model file):

* ``init``  - network initialisation (and the fixed Fourier features of the time embedding);
* ``data``  - order of the training configurations and the Z2 / translation augmentation;
* ``noise`` - diffusion times ``t`` and the perturbation noise ``z``.

A checkpoint ``<out>.ckpt`` is written every ``checkpoint_every`` steps (atomically), holding the
weights, EMA weights, optimiser state, loss history and generator states, so that a killed run
started again with the same arguments resumes where it stopped and continues the *same* random
streams. A non-finite loss stops training with :class:`TrainingDivergedError`; the last good
checkpoint is left untouched.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lftml.errors import FileFormatError, LftmlError
from lftml.diffusion import distributed
from lftml.diffusion.losses import dsm_loss
from lftml.diffusion.model import DataScaling, ScoreModel, save_model
from lftml.diffusion.nets import UNet, UNetConfig, preset
from lftml.diffusion.sde import VESDE, check_sigma_max

__all__ = [
    "TrainConfig", "TrainResult", "TrainingDivergedError", "train", "resolve_device", "derive_seeds",
    "checkpoint_path", "plot_loss_curve",
]

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "lftml-diffusion-checkpoint"


class TrainingDivergedError(LftmlError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train` (all stored in the model file).

    ``lr`` is the Adam learning rate after a linear warm-up of ``warmup`` steps; it then decays
    with a cosine to ``lr * lr_final_fraction`` at ``steps``. ``ema_decay`` is the decay of the
    exponential moving average of the weights (the EMA weights are what is saved and sampled).
    ``z2_augment`` flips the sign of each configuration with probability 1/2 (phi -> -phi
    symmetry); ``translate_augment`` rolls each batch by a random lattice translation;
    ``t_sampling`` is ``mixed`` (default, half the batch at log-uniform noise levels) or ``uniform``
    (the reference), see :mod:`lftml.diffusion.losses`.
    """

    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    lr_final_fraction: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    z2_augment: bool = True
    translate_augment: bool = True
    checkpoint_every: int = 250
    seed: int = 0
    preset: str = "fast"
    sigma: float = 25.0
    eps: float = 1e-5
    channels_last: bool = True
    t_sampling: str = "mixed"
    parametrization: str = "gaussian"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise LftmlError(f"--steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise LftmlError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LftmlError(f"--lr must be a positive number, got {self.lr}")
        if not (0.0 <= self.ema_decay < 1.0):
            raise LftmlError(f"EMA decay must be in [0, 1), got {self.ema_decay}")
        if self.parametrization not in ("gaussian", "edm", "reference"):
            raise LftmlError(f"--parametrization must be gaussian, edm or reference, got {self.parametrization!r}")
        if self.t_sampling not in ("uniform", "mixed"):
            raise LftmlError(f"t_sampling must be uniform or mixed, got {self.t_sampling!r}")
        if self.checkpoint_every < 1:
            raise LftmlError(f"--checkpoint-every must be >= 1, got {self.checkpoint_every}")


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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available (else MPS, else CPU); otherwise ``torch.device(device)``."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise LftmlError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LftmlError(f"device {device!r} requested but CUDA is not available; use --device auto or cpu")
    return dev


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
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
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
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _load_checkpoint(path: Path) -> dict:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FileFormatError(f"checkpoint {path} is damaged ({type(exc).__name__}); delete it or use --no-resume") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise FileFormatError(f"{path} is not an lftml diffusion training checkpoint; delete it or use --no-resume")
    return ck


def train(
    configs: np.ndarray | torch.Tensor,
    out: str | Path,
    config: TrainConfig = TrainConfig(),
    *,
    theory: dict | None = None,
    data_info: dict | None = None,
    net_config: UNetConfig | None = None,
    resume: bool = True,
    progress: bool = True,
    device: str | torch.device = "auto",
    max_steps_this_call: int | None = None,
) -> TrainResult:
    """Train a score model on ``configs`` (``(n, *lattice_shape)``, engine units) and save it to ``out``.

    The model file gets the EMA weights, the data scaling, the SDE, ``theory`` (the training data's
    ``theory.to_dict()``), the seeds and a training summary; ``<out>.ckpt`` is the resumable
    checkpoint, ``<stem>_loss.csv`` / ``<stem>_loss.png`` the loss curve. ``max_steps_this_call``
    stops early after that many steps (checkpoint written; used to test resuming).
    """
    out = Path(out)
    x_np = np.asarray(configs.cpu().numpy() if isinstance(configs, torch.Tensor) else configs)
    if x_np.ndim < 2 or x_np.shape[0] < 2:
        raise LftmlError(f"training data must be (n_configs >= 2, *lattice_shape), got shape {x_np.shape}")
    if not np.all(np.isfinite(x_np)):
        raise LftmlError("training data contain NaN or infinite values; check the ensemble file")
    lattice_shape = tuple(x_np.shape[1:])
    ctx = distributed.context(resolve_device(device))  # torchrun: DDP over ranks; else one process
    dev = ctx.device(resolve_device(device))
    cfg_net = net_config or preset(config.preset, ndim=len(lattice_shape))
    cfg_net.check_lattice(lattice_shape)
    sde = VESDE(config.sigma, config.eps)
    scaling = DataScaling.fit(x_np)
    x_all = torch.as_tensor(x_np, dtype=torch.float32) * scaling.scale
    pair_dist = check_sigma_max(sde, x_all)
    seeds = derive_seeds(config.seed)
    g_init = torch.Generator().manual_seed(seeds["init"])
    g_data = torch.Generator().manual_seed(seeds["data"])
    g_noise = torch.Generator(device=dev if dev.type == "cuda" else "cpu").manual_seed(seeds["noise"])
    net = UNet(cfg_net, generator=g_init)
    info = {
        "preset": config.preset,
        "train_config": asdict(config),
        "seeds": {"seed": int(config.seed), **seeds},
        "data": {**(data_info or {}), "n_configs": int(x_np.shape[0]), "fingerprint": _fingerprint(x_np),
                 "max_pairwise_distance_model_units": pair_dist},
    }
    sigma_data = float(x_all.std())
    info["sigma_data"] = sigma_data
    ps = ScoreModel.estimate_power_spectrum(x_all) if config.parametrization == "gaussian" else None
    model = ScoreModel(net, sde, lattice_shape, scaling, theory, info, parametrization=config.parametrization,
                       sigma_data=sigma_data, power_spectrum=ps).to(dev)
    mf = torch.channels_last if (config.channels_last and len(lattice_shape) == 2) else torch.preserve_format
    if mf is torch.channels_last:
        model.net.to(memory_format=mf)
    ema = copy.deepcopy(model.net.state_dict())
    opt = torch.optim.Adam(model.net.parameters(), lr=config.lr)
    losses: list[float] = []
    start_step = 0
    ckpt = checkpoint_path(out)
    if ckpt.exists() and resume:
        ck = _load_checkpoint(ckpt)
        same = (ck["net_config"] == cfg_net.to_dict() and ck["seed"] == int(config.seed)
                and ck["fingerprint"] == info["data"]["fingerprint"] and ck["batch_size"] == config.batch_size)
        if not same:
            raise LftmlError(
                f"checkpoint {ckpt} belongs to a different run (other data, preset, seed or batch size); "
                "delete it or pass --no-resume to start afresh"
            )
        model.net.load_state_dict(ck["net"])
        ema = ck["ema"]
        opt.load_state_dict(ck["optimizer"])
        g_data.set_state(ck["g_data"])
        g_noise.set_state(ck["g_noise"])
        losses = list(np.asarray(ck["losses"], dtype=float))
        start_step = int(ck["step"])
        model.info["wall_seconds_before_resume"] = float(ck.get("wall_seconds", 0.0))
        log.info("resuming from %s at step %d", ckpt, start_step)
    elif ckpt.exists() and not resume and ctx.is_writer:
        ckpt.unlink()

    n = x_all.shape[0]
    x_all = x_all.to(dev)
    if start_step > 0:
        perm, pos = ck["perm"], int(ck["pos"])
    else:
        perm, pos = torch.randperm(n, generator=g_data), 0

    def save_ckpt(step: int, wall: float) -> None:
        if not ctx.is_writer:
            return
        _save_checkpoint(ckpt, {
            "format": CHECKPOINT_FORMAT, "step": step, "net": model.net.state_dict(), "ema": ema,
            "optimizer": opt.state_dict(), "g_data": g_data.get_state(), "g_noise": g_noise.get_state(),
            "losses": torch.tensor(losses, dtype=torch.float64), "net_config": cfg_net.to_dict(),
            "seed": int(config.seed), "fingerprint": info["data"]["fingerprint"], "batch_size": config.batch_size,
            "wall_seconds": wall, "perm": perm, "pos": pos,
        })

    end_step = config.steps if max_steps_this_call is None else min(config.steps, start_step + max_steps_this_call)
    bar = None
    if progress and ctx.is_writer:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
    wall0 = time.perf_counter()
    wall_before = float(model.info.get("wall_seconds_before_resume", 0.0))
    last_good = start_step if ckpt.exists() else None
    model.net.train()
    lattice_dims = tuple(range(1, 1 + len(lattice_shape)))
    try:
        for step in range(start_step, end_step):
            if pos + config.batch_size > n:
                perm = torch.randperm(n, generator=g_data)
                pos = 0
            idx = perm[pos : pos + config.batch_size].to(dev)
            pos += config.batch_size
            xb = x_all[idx]
            if config.z2_augment:
                sign = torch.randint(0, 2, (xb.shape[0],), generator=g_data).to(dev, xb.dtype) * 2 - 1
                xb = xb * sign.reshape(-1, *([1] * len(lattice_shape)))
            if config.translate_augment:
                shifts = [int(torch.randint(0, L, (1,), generator=g_data)) for L in lattice_shape]
                xb = torch.roll(xb, shifts=shifts, dims=lattice_dims)
            for grp in opt.param_groups:
                grp["lr"] = _lr_at(step, config)
            loss = (ctx.dsm_loss if ctx.distributed else dsm_loss)(model, xb, sde, g_noise, config.t_sampling)
            lv = ctx.loss_value(loss)
            if not math.isfinite(lv):
                where = (f"the last good checkpoint {ckpt} (step {last_good}) is kept" if last_good is not None
                         else "no checkpoint had been written yet")
                raise TrainingDivergedError(
                    f"training loss became {lv} at step {step + 1}; {where}. Lower --lr (now {config.lr:g}), "
                    "check the data for outliers, or resume from the checkpoint"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            ctx.all_reduce_grads(model.net)
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.net.parameters(), config.grad_clip)
            opt.step()
            decay = min(config.ema_decay, (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                for k, v in model.net.state_dict().items():
                    if v.dtype.is_floating_point:
                        ema[k].mul_(decay).add_(v.detach(), alpha=1.0 - decay)
                    else:
                        ema[k].copy_(v)
            losses.append(lv)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{_lr_at(step, config):.1e}")
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == end_step:
                save_ckpt(step + 1, wall_before + time.perf_counter() - wall0)
                last_good = step + 1
    finally:
        if bar is not None:
            bar.close()
    wall = wall_before + time.perf_counter() - wall0
    done = len(losses)
    model.info["training"] = {
        "steps_done": done, "steps_target": config.steps, "wall_seconds": wall,
        "seconds_per_step": (time.perf_counter() - wall0) / max(1, end_step - start_step),
        "final_loss_mean50": float(np.mean(losses[-50:])) if losses else None, "device": str(dev),
        "torch_threads": torch.get_num_threads(), "resumed_from_step": start_step,
    }
    # the saved model carries the EMA weights
    model.net.load_state_dict(ema)
    model.net.to(memory_format=torch.contiguous_format)
    model.eval()
    if not ctx.is_writer:  # the same model on every rank; rank 0 writes it
        ctx.barrier()
        return TrainResult(model, np.asarray(losses, dtype=float), len(losses), wall, out, ckpt, None, start_step)
    save_model(model, out)
    arr = np.asarray(losses, dtype=float)
    csv = out.with_name(out.stem + "_loss.csv")
    np.savetxt(csv, np.column_stack([np.arange(1, done + 1), arr]), delimiter=",", header="step,loss", comments="", fmt=["%d", "%.6g"])
    png = out.with_name(out.stem + "_loss.png")
    try:
        from lftml.plots import pyplot, save_figure

        pyplot()  # Agg backend before the figure exists
        ax = plot_loss_curve(arr)
        ax.set_title(f"DSM training ({config.preset} preset, {done} steps)")
        save_figure(ax.figure, png)
    except Exception as exc:  # plotting must never lose a trained model
        log.warning("could not write the loss-curve PNG: %s", exc)
        png = None
    ctx.barrier()
    return TrainResult(model, arr, done, wall, out, ckpt, png, start_step)
