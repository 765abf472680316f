r"""Data-parallel diffusion training under ``torchrun`` (PyTorch's own DDP machinery, no wrapper).

``torchrun --nproc-per-node N -m lftml diffusion train ...`` starts N copies of the command; each
calls :func:`context` once, which joins the process group from torchrun's environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): gloo on CPU, nccl on
GPU (rank r uses ``cuda:LOCAL_RANK``). Without those variables :func:`context` is a no-op
single-process context, so the training code has one path.

Same model as one process with the same global batch: every rank runs the *same* random streams
(data order, augmentation, diffusion times and noise of the whole global batch of ``batch_size``
rows), then evaluates the network on its shard of rows ``r, r + N, r + 2N, ...`` only. Its loss is
the sum of its per-row losses divided by the global batch size, so the all-reduced (summed)
gradient is the gradient of the global mean loss: the optimiser, gradient clipping and EMA see
what one process sees, to float rounding (the order of the sums differs). Weights, optimiser state
and generator states are then identical on every rank, so checkpoints are the single-process
format: a single process resumes a DDP checkpoint and back. Rank 0 is the only writer of files
and of log/stdout output (the other ranks' stdout goes to ``os.devnull``, their loggers to ERROR).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch

from lftml.diffusion.losses import sample_times

__all__ = ["DistributedContext", "context", "shard_rows", "launched_by_torchrun"]

log = logging.getLogger(__name__)
_CONTEXT: "DistributedContext | None" = None


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def shard_rows(n: int, rank: int, world_size: int) -> torch.Tensor:
    """Indices of the global batch's rows evaluated by ``rank``: ``rank, rank + world, ...``."""
    return torch.arange(rank, n, world_size)


@dataclass
class DistributedContext:
    """Rank, world size and the few collective operations training needs (identity when world_size = 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_writer(self) -> bool:
        """True on the one process that writes files and logs (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self, device: torch.device) -> torch.device:
        """The device this rank trains on: ``cuda:LOCAL_RANK`` under nccl, else ``device``."""
        if self.distributed and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def dsm_loss(self, score_fn: Any, x0: torch.Tensor, sde: Any, generator: torch.Generator,
                 t_sampling: str = "uniform") -> torch.Tensor:
        """:func:`lftml.diffusion.losses.dsm_loss` of the global batch ``x0``, split over ranks.

        The diffusion times and the noise are drawn for all ``n`` rows from ``generator`` exactly as
        ``dsm_loss`` draws them (so every rank's streams stay in step with a single process); this
        rank evaluates the network on its rows and returns ``sum(per-row loss) / n``: the sum over
        ranks is the global loss, and so is the sum of the gradients (:meth:`all_reduce_grads`)."""
        if not self.distributed:
            from lftml.diffusion.losses import dsm_loss

            return dsm_loss(score_fn, x0, sde, generator, t_sampling)
        n = x0.shape[0]
        t = sample_times(n, sde, generator, t_sampling, x0.dtype).to(x0.device)
        xt, z, std = sde.perturb(x0, t, generator)
        rows = shard_rows(n, self.rank, self.world_size).to(x0.device)
        if rows.numel() == 0:  # more ranks than rows: this rank contributes zero (still joins the all-reduce)
            return (score_fn(xt[:1], t[:1]) * 0.0).sum()
        s = score_fn(xt[rows], t[rows])
        residual = s * std[rows] + z[rows]
        return (residual * residual).reshape(rows.numel(), -1).mean(dim=1).sum() / n

    def loss_value(self, loss: torch.Tensor) -> float:
        """The global loss as a float (the sum of the ranks' parts), identical on every rank."""
        value = loss.detach().to(torch.float64).reshape(1).clone()
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return float(value)

    def all_reduce_grads(self, module: torch.nn.Module) -> None:
        """Sum the gradients of ``module`` over ranks (in place), after ``backward``. One flat buffer
        per dtype keeps it to a few collective calls."""
        if not self.distributed:
            return
        import torch.distributed as dist

        grads = [p.grad for p in module.parameters() if p.grad is not None]
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for g in grads:
            by_dtype.setdefault(g.dtype, []).append(g)
        for group in by_dtype.values():
            flat = torch.cat([g.reshape(-1) for g in group])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for g in group:
                k = g.numel()
                g.copy_(flat[offset: offset + k].view_as(g))
                offset += k

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        global _CONTEXT
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        _CONTEXT = None


def context(device: torch.device | str | None = None) -> DistributedContext:
    """The process's context: joins torchrun's process group on first call (idempotent). ``device``
    (the training device) picks the backend: nccl for CUDA, gloo otherwise."""
    global _CONTEXT
    if _CONTEXT is not None:
        return _CONTEXT
    if not launched_by_torchrun():
        _CONTEXT = DistributedContext()
        return _CONTEXT
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if (device is not None and torch.device(device).type == "cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    _CONTEXT = DistributedContext(rank=rank, world_size=world, local_rank=local, backend=backend)
    if rank != 0:  # one writer of logs and output
        logging.getLogger("lftml").setLevel(logging.ERROR)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for the life of this worker process)
    else:
        log.info("DDP: %d processes, backend %s", world, backend)
    return _CONTEXT
