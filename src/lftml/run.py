"""Run a sampler: initial fields, thermalisation (with optional HMC step-size adaptation),
measurements every ``every`` updates, an ensemble file with provenance, and bit-identical resume.

Random streams (:mod:`lftml.samplers.rng`): chain i's initial field draws from Philox stream
purpose 0 and its updates from purpose 1, keyed by the seed, so chain i is the same Markov chain
whatever ``n_chains`` is. The stream's name is recorded in the metadata (``rng_stream``); a file
without it was written with the legacy per-chain ``torch.Generator`` stream and is resumed with it.

Resume: the file's checkpoint holds the field, every generator state, the (frozen) step size and
the update counters at the last committed measurement. Continuing from it replays exactly the
updates an uninterrupted run would have made, so ``configs`` agree bit for bit.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lftml.devices import resolve_device
from lftml.ensemble import EnsembleWriter, open_checked, read_checkpoint
from lftml.errors import LftmlError
from lftml.safeio import OutputLock, check_output, interrupts_as_keyboard_interrupt
from lftml.observables import measure
from lftml.samplers.hmc import HMC, HMCState
from lftml.samplers.langevin import Langevin
from lftml.samplers.rng import LEGACY_STREAM, STREAM, ChainRNG, LegacyChainRNG, chain_rng, stream_of
from lftml.theories.base import Theory

log = logging.getLogger(__name__)

Sampler = HMC | Langevin


@dataclass(frozen=True)
class RunConfig:
    """What to run: chains, statistics, start, seed and where.

    ``n_therm`` and ``every`` count sampler updates (HMC trajectories or Langevin steps).
    ``adapt``: adapt the HMC step size during thermalisation towards ``target_acceptance``
    (mean Metropolis probability), then freeze it.
    """

    n_chains: int = 16
    n_configs: int = 100
    n_therm: int = 100
    every: int = 1
    seed: int = 0
    start: str = "hot"
    adapt: bool = False
    target_acceptance: float = 0.8
    device: str = "cpu"
    dtype: str = "float64"

    def __post_init__(self) -> None:
        # the messages name the CLI flag and, in brackets, the field (what a library caller set)
        for name, flag in (("n_chains", "--chains"), ("every", "--every")):
            if int(getattr(self, name)) < 1:
                raise LftmlError(f"{flag} ({name}) must be >= 1, got {getattr(self, name)}")
        if int(self.n_configs) < 1:
            raise LftmlError(f"--n-configs (n_configs) must be >= 1 (configurations to store per chain), got {self.n_configs}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2**63:
            raise LftmlError(f"--seed must be a non-negative integer below 2^63, got {self.seed!r}")
        if int(self.n_therm) < 0:
            raise LftmlError(f"--therm (n_therm) must be >= 0, got {self.n_therm}")
        if self.start not in ("hot", "cold"):
            raise LftmlError(f"--start must be 'hot' or 'cold', got {self.start!r}")
        if not 0.0 < self.target_acceptance < 1.0:
            raise LftmlError(f"--target-acceptance must lie in (0, 1), got {self.target_acceptance}")
        if self.dtype not in ("float64", "float32"):
            raise LftmlError(f"--dtype must be float64 or float32, got {self.dtype!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_chains": self.n_chains, "n_configs": self.n_configs, "n_therm": self.n_therm, "every": self.every, "seed": self.seed,
            "start": self.start, "adapt": self.adapt, "target_acceptance": self.target_acceptance, "dtype": self.dtype,
        }


@dataclass
class RunResult:
    path: Path | None
    n_configs: int
    n_chains: int
    acceptance: float | None
    step_size: float | None
    wall_time_s: float
    sampler: dict[str, Any] = field(default_factory=dict)
    configs: torch.Tensor | None = None  # kept in memory when no output file is written


#: Copies of the field a sampler holds at once (field, momenta, forces, proposals, kernel buffers).
FIELD_COPIES_IN_MEMORY = 12


def _available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(theory: Theory, config: "RunConfig", device: torch.device) -> None:
    """Refuse (one line, before any file is made) a run whose fields cannot fit in this machine's memory."""
    itemsize = np.dtype(config.dtype).itemsize
    need = FIELD_COPIES_IN_MEMORY * config.n_chains * math.prod(theory.lattice.shape) * itemsize
    have = _available_memory_bytes() if device.type == "cpu" else (
        torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None)
    if have is not None and need > have:
        raise LftmlError(
            f"--shape {' '.join(map(str, theory.lattice.shape))} with --chains {config.n_chains} needs about "
            f"{need / 2**30:.3g} GiB of memory, more than the {have / 2**30:.3g} GiB available; use a smaller "
            "lattice or fewer chains"
        )


def hot_start_width(theory: Theory) -> float:
    """Width of the hot start: the single-site Gaussian width ``1/sqrt(2 c_2)`` of the quadratic
    on-site term (1/sqrt(2) in the hopping form at small lambda), capped at 1. A fixed N(0, 1) is far
    too wide in the continuum normalisation at strong coupling, where outlying sites leave chains
    with |dH| >> 1 that never accept."""
    coefficients = getattr(theory, "coefficients", None)
    if coefficients is None:
        return 1.0
    c2 = coefficients[1]
    return min(1.0, 1.0 / math.sqrt(2.0 * c2)) if c2 > 0 else 1.0


def initial_field(theory: Theory, config: RunConfig, device: torch.device, stream: str = STREAM) -> torch.Tensor:
    """Hot start: phi ~ N(0, w^2) per site with ``w = hot_start_width(theory)``. Cold start: the ordered
    field ``s * v`` with ``v`` the mean-field minimum (0 in the symmetric phase) and a random global sign
    ``s`` per chain, so broken-phase chains start in both vacua and not in domain-wall states."""
    rng = chain_rng(stream, config.seed, config.n_chains, purpose=0, device=device)
    shape = theory.lattice.shape
    if config.start == "hot":
        return hot_start_width(theory) * rng.normal(shape, dtype=config.torch_dtype)
    v = float(getattr(theory, "mean_field_vev", lambda: 0.0)())
    signs = rng.signs().to(device=device, dtype=config.torch_dtype)
    return signs.view(-1, *([1] * len(shape))) * torch.full((1, *shape), v, dtype=config.torch_dtype, device=device)


class _Adapter:
    """Robbins-Monro adaptation of log(step size) towards a target mean acceptance probability,
    clamped below the linear stability limit. Used during thermalisation only."""

    def __init__(self, sampler: HMC, target: float, t: int = 0, log_eps: float | None = None):
        self.target = target
        self.t = t
        self.log_eps = math.log(sampler.step_size) if log_eps is None else log_eps
        self.eps_max = 0.98 * sampler.max_stable_step() / (1.0 + sampler.step_jitter)

    def update(self, sampler: HMC, acc_prob: float) -> HMC:
        self.t += 1
        self.log_eps += (acc_prob - self.target) / (self.t + 5) ** 0.6
        self.log_eps = min(self.log_eps, math.log(self.eps_max))
        return replace(sampler, step_size=math.exp(self.log_eps))


def _observables(state: Any, theory: Theory) -> dict[str, np.ndarray]:
    """Standard observables of the current fields, one row; reuses the action HMC already has."""
    action = getattr(state, "action", None)
    obs = measure(state.phi, None if action is not None else theory)
    if action is not None:
        obs["action_density"] = (action.detach().to(torch.float64) / theory.lattice.volume).cpu().numpy()
    return {k: v[None] for k, v in obs.items()}


def _records(info: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy()[None] for k, v in info.items()}


def _metadata(kind: str, theory: Theory, sampler: Sampler, config: RunConfig, stream: str = STREAM) -> dict[str, Any]:
    meta = {
        "kind": kind,
        "theory": theory.to_dict(),
        "sampler": sampler.settings(),
        "run": config.to_dict(),
        "seed": config.seed,
    }
    if stream != LEGACY_STREAM:  # files of the legacy stream never carried the name (absence means legacy)
        meta["rng_stream"] = stream
    return meta


def stored_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of an existing ensemble file (its kind, theory, sampler and run settings)."""
    with open_checked(path, "r") as f:
        return json.loads(f.attrs["metadata"])


def _check_resume_compatible(path: Path, meta_new: dict[str, Any]) -> dict[str, Any]:
    meta = stored_metadata(path)
    if meta.get("kind") != meta_new["kind"]:
        raise LftmlError(
            f"cannot resume {path} as a {meta_new['kind']} run: it is a {meta.get('kind') or 'unknown'} ensemble"
        )
    problems = []
    if meta.get("theory") != meta_new["theory"]:
        problems.append(f"theory {meta.get('theory')} != {meta_new['theory']}")
    old_run, new_run = meta.get("run", {}), meta_new["run"]
    for key in ("n_chains", "n_therm", "every", "seed", "start", "adapt", "target_acceptance", "dtype"):
        if old_run.get(key) != new_run.get(key):
            problems.append(f"{key} {old_run.get(key)!r} != {new_run.get(key)!r}")
    old_s, new_s = meta.get("sampler", {}), meta_new["sampler"]
    for key in set(old_s) | set(new_s):
        if key in ("step_size", "trajectory_length", "adapted") and old_run.get("adapt"):
            continue  # adapted during thermalisation; the checkpoint holds the frozen value
        if old_s.get(key) != new_s.get(key):
            problems.append(f"sampler {key} {old_s.get(key)!r} != {new_s.get(key)!r}")
    if problems:
        raise LftmlError(f"cannot resume {path}: it was made with other settings ({'; '.join(problems)})")
    return meta


def _record_backend(writer: EnsembleWriter, meta: dict[str, Any], backend: str, n_have: int) -> None:
    """Record the MD backend truthfully: one name for a run made by one backend; a list of
    ``{"backend", "from_config"}`` segments when a resume switched it (fused and eager agree to
    round-off, not bit for bit)."""
    if n_have == 0:
        writer.update_metadata(md_backend=backend)
        return
    old = meta.get("md_backend")
    if old is None or old == backend:
        return
    segments = meta.get("md_backends") or [{"backend": old, "from_config": 0}]
    segments = [*segments, {"backend": backend, "from_config": n_have}]
    writer.update_metadata(md_backend="+".join(dict.fromkeys(s["backend"] for s in segments)), md_backends=segments)
    log.warning("%s was made with the %s MD backend up to configuration %d; continuing with %s (recorded in the file)",
                writer.path, old, n_have, backend)


def run(
    sampler: Sampler,
    config: RunConfig,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    kind: str | None = None,
    flush_every: int = 50,
    flush_seconds: float = 30.0,
) -> RunResult:
    """Thermalise and measure; write ``config.n_configs`` configurations to ``out`` (HDF5).

    With ``resume=True`` an existing ``out`` is extended (bit-identically) to ``n_configs``.
    Without ``out`` the configurations are returned in memory (``RunResult.configs``).
    """
    theory = sampler.theory
    device = resolve_device(config.device)
    kind = kind or ("hmc" if isinstance(sampler, HMC) else "langevin")
    meta = _metadata(kind, theory, sampler, config, STREAM)
    if out is None:
        return _run(sampler, config, None, meta, device, resume=False, overwrite=False, progress=progress, kind=kind,
                    flush_every=flush_every, flush_seconds=flush_seconds)
    if resume and overwrite:
        raise LftmlError("--resume and --overwrite contradict each other: extend the file or replace it, not both")
    if Path(out).is_file() and not (resume or overwrite):
        raise LftmlError(f"--out {out} already exists; pass --resume to extend it or --overwrite to replace it "
                         "(or choose another file)")
    out_path = check_output(out, overwrite=overwrite, resume=resume)
    if not (resume and out_path.exists()):
        check_fits_in_memory(theory, config, device)
    with OutputLock(out_path, what=f"{kind} run"):
        return _run(sampler, config, out_path, meta, device, resume=resume, overwrite=overwrite, progress=progress,
                    kind=kind, flush_every=flush_every, flush_seconds=flush_seconds)


@dataclass
class _Loop:
    """What the update loop carries between its helpers (``sampler`` changes when its step size adapts)."""

    sampler: Sampler
    rng: ChainRNG | LegacyChainRNG
    adapter: _Adapter | None
    writer: EnsembleWriter | None
    therm_done: int = 0
    updates_done: int = 0  # updates after thermalisation
    state: Any = None
    n_have: int = 0
    acc_sum: float = 0.0
    acc_n: int = 0
    chain_acc: np.ndarray = field(default_factory=lambda: np.zeros(0))
    t_last: float = 0.0
    memory: list[torch.Tensor] = field(default_factory=list)  # the configurations when no file is written

    def checkpoint(self) -> dict[str, Any]:
        """The resume point: fields, generator state, update counters, (frozen) step size and adapter."""
        return {
            "phi": self.state.phi.detach().cpu().numpy(),
            "rng_state": self.rng.get_state(),
            "therm_done": self.therm_done,
            "updates_done": self.updates_done,
            "step_size": float(getattr(self.sampler, "step_size", float("nan"))),
            "adapt_t": self.adapter.t if self.adapter else 0,
            "adapt_log_eps": self.adapter.log_eps if self.adapter else 0.0,
        }

    def add_wall_time(self) -> None:
        """Add the time since the last call to the file's wall time."""
        now = time.perf_counter()
        self.writer.add_wall_time(now - self.t_last)
        self.t_last = now


def _run(sampler: Sampler, config: RunConfig, out_path: Path | None, meta: dict[str, Any], device: torch.device, *,
         resume: bool, overwrite: bool, progress: bool, kind: str, flush_every: int,
         flush_seconds: float) -> RunResult:
    """:func:`run` once the output is checked and locked."""
    theory = sampler.theory
    adapter = _Adapter(sampler, config.target_acceptance) if (config.adapt and isinstance(sampler, HMC)) else None
    if out_path is not None and resume and out_path.exists():
        loop, stream, phi, stored = _resume_output(sampler, adapter, config, out_path, meta, device,
                                                   flush_every=flush_every, flush_seconds=flush_seconds)
    else:
        stream, phi, stored = STREAM, None, {}
        rng = chain_rng(stream, config.seed, config.n_chains, purpose=1, device=device)
        writer = None if out_path is None else _create_output(out_path, theory, config, meta, overwrite=overwrite,
                                                              flush_every=flush_every, flush_seconds=flush_seconds)
        loop = _Loop(sampler, rng, adapter, writer)
    if phi is None:
        phi = initial_field(theory, config, device, stream)
    loop.state = loop.sampler.init(phi)
    if isinstance(loop.state, HMCState):  # a resumed run continues the cluster-move schedule where it stopped
        loop.state = replace(loop.state, n_updates=loop.therm_done + loop.updates_done)
    writer = loop.writer
    if writer is not None and isinstance(loop.sampler, HMC) and writer.n_configs < config.n_configs:
        fused = loop.sampler.uses_fused(loop.state.phi) or loop.sampler.uses_fa_kernels(loop.state.phi)
        _record_backend(writer, stored, "fused" if fused else "eager", writer.n_configs)

    loop.n_have = writer.n_configs if writer is not None else 0
    loop.chain_acc = np.zeros(config.n_chains)
    total = config.n_therm + config.n_configs * config.every
    t_start = loop.t_last = time.perf_counter()

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=loop.therm_done + loop.updates_done, disable=None if progress else True, desc=kind,
               unit="upd", leave=False)
    try:
        with interrupts_as_keyboard_interrupt():
            _thermalise(loop, config, bar, flush_seconds)
            if adapter is not None and writer is not None and loop.n_have == 0:
                writer.update_metadata(sampler={**loop.sampler.settings(), "adapted": True})
            _measure(loop, config, theory, bar, progress)
    except BaseException:
        bar.close()
        if writer is not None:
            _close_after_error(loop, out_path)
        raise
    bar.close()
    if writer is not None:
        loop.add_wall_time()
        writer.close()
    wall = time.perf_counter() - t_start
    _warn_about_acceptance(loop)
    return RunResult(
        path=out_path,
        n_configs=loop.n_have,
        n_chains=config.n_chains,
        acceptance=(loop.acc_sum / loop.acc_n) if loop.acc_n else None,
        step_size=getattr(loop.sampler, "step_size", None),
        wall_time_s=wall,
        sampler=loop.sampler.settings(),
        configs=torch.stack(loop.memory) if loop.memory else None,
    )


def _resume_output(sampler: Sampler, adapter: _Adapter | None, config: RunConfig, out_path: Path,
                   meta: dict[str, Any], device: torch.device, *, flush_every: int,
                   flush_seconds: float) -> tuple[_Loop, str, torch.Tensor | None, dict[str, Any]]:
    """Reopen ``out_path`` to extend it: check its settings, restore the checkpoint's field, streams and counters.

    Returns the loop state, the file's random stream, the field to continue from (None: no checkpoint
    yet, start afresh) and the file's stored metadata.
    """
    stored = _check_resume_compatible(out_path, meta)
    stream = stream_of(stored)  # resume with the file's own stream
    rng = chain_rng(stream, config.seed, config.n_chains, purpose=1, device=device)
    ck = read_checkpoint(out_path)
    if ck is not None and int(ck["n_configs"]) > config.n_configs:
        raise LftmlError(
            f"{out_path} already holds {int(ck['n_configs'])} configurations per chain, more than "
            f"--n-configs {config.n_configs}; --resume only extends a run (pass a larger --n-configs)"
        )
    writer = EnsembleWriter.resume(out_path, sampler.theory, flush_every=flush_every, flush_seconds=flush_seconds)
    loop = _Loop(sampler, rng, adapter, writer)
    if ck is None:
        if writer.n_configs:
            raise LftmlError(f"{out_path} holds configurations but no checkpoint; it cannot be resumed")
        return loop, stream, None, stored
    phi = torch.from_numpy(np.asarray(ck["phi"])).to(device=device, dtype=config.torch_dtype)
    rng.set_state(np.asarray(ck["rng_state"]))
    loop.therm_done = int(ck["therm_done"])
    loop.updates_done = int(ck["updates_done"])
    if isinstance(sampler, HMC):
        loop.sampler = replace(sampler, step_size=float(ck["step_size"]))
    if adapter is not None:
        loop.adapter = _Adapter(loop.sampler, config.target_acceptance, int(ck["adapt_t"]), float(ck["adapt_log_eps"]))
    if int(ck["n_configs"]) != writer.n_configs:
        raise LftmlError(f"{out_path}: checkpoint and data disagree; the file is damaged")
    log.info("resuming %s at %d configurations", out_path, writer.n_configs)
    if stored.get("run", {}).get("n_configs") != config.n_configs:
        writer.update_metadata(run={**stored.get("run", {}), "n_configs": config.n_configs})
    return loop, stream, phi, stored


def _create_output(out_path: Path, theory: Theory, config: RunConfig, meta: dict[str, Any], *, overwrite: bool,
                   flush_every: int, flush_seconds: float) -> EnsembleWriter:
    """A new ensemble file at ``out_path`` (replacing one only with ``overwrite``)."""
    if out_path.exists() and not overwrite:
        raise LftmlError(f"{out_path} already exists; pass --resume to extend it, or choose another --out")
    return EnsembleWriter.create(
        out_path, lattice_shape=theory.lattice.shape, n_chains=config.n_chains, metadata=meta,
        dtype=np.dtype(config.dtype), theory=theory, overwrite=overwrite,
        flush_every=flush_every, flush_seconds=flush_seconds,
    )


def _thermalise(loop: _Loop, config: RunConfig, bar: Any, flush_seconds: float) -> None:
    """Thermalisation updates (adapting the step size if asked), checkpointed every ``flush_seconds`` and at the end."""
    while loop.therm_done < config.n_therm:
        loop.state, info = loop.sampler.step(loop.state, loop.rng)
        loop.therm_done += 1
        if loop.adapter is not None:
            loop.sampler = loop.adapter.update(loop.sampler, float(info["acceptance_probability"].mean()))
        bar.update(1)
        if loop.writer is not None and (loop.therm_done == config.n_therm
                                        or time.perf_counter() - loop.t_last > flush_seconds):
            loop.add_wall_time()
            loop.writer.set_checkpoint(loop.checkpoint())
            loop.writer.flush()


def _measure(loop: _Loop, config: RunConfig, theory: Theory, bar: Any, progress: bool) -> None:
    """Store a configuration, its observables and the records of its ``every`` updates until there are ``n_configs``."""
    writer = loop.writer
    while loop.n_have < config.n_configs:
        pending: list[dict[str, np.ndarray]] = []
        for _ in range(config.every):
            loop.state, info = loop.sampler.step(loop.state, loop.rng)
            loop.updates_done += 1
            if "accepted" in info:
                loop.acc_sum += float(info["accepted"].double().mean())
                loop.acc_n += 1
                loop.chain_acc += info["accepted"].detach().cpu().numpy()
            pending.append(_records(info))
        bar.update(config.every)
        loop.n_have += 1
        if writer is not None:
            loop.add_wall_time()
            if writer.flush_due(1) or loop.n_have == config.n_configs:
                writer.set_checkpoint(loop.checkpoint())  # only where a flush writes it: it costs a copy of every stream
            records = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            writer.append(loop.state.phi[None], observables=_observables(loop.state, theory), records=records)
        else:
            loop.memory.append(loop.state.phi.detach().clone())
        if progress and loop.acc_n:
            bar.set_postfix(acc=f"{loop.acc_sum / loop.acc_n:.3f}")


def _close_after_error(loop: _Loop, out_path: Path | None) -> None:
    """Leave the file at its last consistent state when an error or interrupt stops the run."""
    # rows buffered since the last flush have no checkpoint: drop them (a resume recomputes
    # them bit for bit) and keep the file at its last consistent state; a failure to record
    # the wall time must not hide the error that stopped the run
    loop.writer.discard_buffer()
    loop.add_wall_time()
    try:
        loop.writer.close()
    except LftmlError as exc:
        log.debug("closing %s after an error: %s", out_path, exc)


def _warn_about_acceptance(loop: _Loop) -> None:
    """Warn about chains that accepted nothing while the others move, and about an acceptance too low to move."""
    acc_sum, acc_n = loop.acc_sum, loop.acc_n
    stuck = np.flatnonzero(loop.chain_acc == 0) if acc_n >= 20 else []
    if len(stuck) and acc_sum / acc_n >= 0.1:
        log.warning(
            "chain(s) %s accepted none of %d trajectories while the others accept %.2f: they are stuck "
            "(e.g. an outlying start); rerun with more --therm, --start cold or a smaller step",
            ", ".join(map(str, stuck[:10])), acc_n, acc_sum / acc_n,
        )
    if acc_n and acc_sum / acc_n < 0.1:
        log.warning(
            "HMC acceptance is %.3f: the chain hardly moves; increase --md-steps (smaller step) or use --adapt",
            acc_sum / acc_n,
        )
