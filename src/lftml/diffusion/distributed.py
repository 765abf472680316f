r"""Data-parallel diffusion training under ``torchrun`` (PyTorch's own DDP machinery, no wrapper).

``torchrun --nproc-per-node N -m lftml diffusion train ...`` starts N copies of the command; each
calls :func:`context` once, which joins the process group from torchrun's environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): gloo on CPU, nccl on
GPU (rank r uses ``cuda:LOCAL_RANK``). Without those variables :func:`context` is a no-op
single-process context, so the training code has one path.

Same model as one process with the same global batch: every rank runs the *same* random streams
(data order, augmentation, diffusion times and noise of the whole global batch of ``batch_size``
rows, times ``noise_draws``), then evaluates the network on its shard of rows ``r, r + N, r + 2N,
...`` only (:meth:`DistributedContext.shard`) and all-gathers the other ranks' outputs, so the
loss is the global loss on every rank while its gradient flows through the rank's own rows; the
all-reduced (summed) gradient is then the gradient of the global loss: the optimiser, gradient
clipping and EMA see what one process sees, to float rounding (a network evaluated on half a
batch may round differently, and the order of the sums differs). The union of the ranks' rows is
the global batch, each row on exactly one rank. The loss function itself is untouched (the
wrapper sits between it and the network), so any loss of :mod:`lftml.diffusion.losses` works. Weights, optimiser state
and generator states are then identical on every rank, so checkpoints are the single-process
format: a single process resumes a DDP checkpoint and back. Rank 0 is the only writer of files
and of log/stdout output (the other ranks' stdout goes to ``os.devnull``, their loggers to ERROR).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable

import torch


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

    def shard(self, score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
              ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``score_fn`` evaluated data-parallel (``score_fn`` itself when ``world_size = 1``).

        The returned function takes the *global* batch ``(x, t)`` (``n`` rows, the same on every
        rank), evaluates ``score_fn`` on this rank's rows :func:`shard_rows` only, and all-gathers
        the (detached) outputs of the other ranks into the full ``(n, ...)`` score. The loss built
        from it is the global loss, bitwise the same on every rank; its gradient flows through this
        rank's rows only, so the sum over ranks of the gradients (:meth:`all_reduce_grads`) is the
        gradient of the global loss. Nothing about the loss is assumed beyond: rows of the network's
        input are independent (no batch norm), and the loss calls the returned function the same
        number of times on every rank (it draws the same random numbers there)."""
        if not self.distributed:
            return score_fn
        import torch.distributed as dist

        rank, world = self.rank, self.world_size

        def sharded(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            n = x.shape[0]
            t = torch.as_tensor(t, device=x.device)
            if t.ndim == 0:
                t = t.expand(n)
            k = -(-n // world)  # rows per rank, padded: all_gather needs equal shapes
            own = shard_rows(n, rank, world).to(x.device)
            m = own.numel()
            idx = torch.cat([own, own.new_zeros(k - m)])  # padding rows: row 0, output discarded
            out = score_fn(x[idx], t[idx])
            parts = [torch.empty_like(out) for _ in range(world)]
            dist.all_gather(parts, out.detach().contiguous())
            full = out.new_empty((n, *out.shape[1:]))
            for q, part in enumerate(parts):
                rows = shard_rows(n, q, world).to(x.device)
                full[rows] = part[: rows.numel()]
            return full.index_put((own,), out[:m])  # autograd through this rank's rows only

        return sharded

    def agree(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (a stop request seen by one rank)."""
        if not self.distributed:
            return bool(flag)
        import torch.distributed as dist

        v = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self._collective_device())
        dist.all_reduce(v, op=dist.ReduceOp.MAX)
        return bool(v.item())

    def broadcast_error(self, message: str | None) -> str | None:
        """Rank 0's ``message`` (an error it met doing what only it does, e.g. taking the lock) on every rank."""
        if not self.distributed:
            return message
        import torch.distributed as dist

        box = [message]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def all_reduce_grads(self, module: torch.nn.Module) -> None:
        """Sum the gradients of ``module`` over ranks (in place), after ``backward``. One flat buffer
        per dtype keeps it to a few collective calls."""
        if not self.distributed:
            return
        import torch.distributed as dist

        params = [p for p in module.parameters() if p.requires_grad]
        for p in params:  # the same set of tensors on every rank, also for a rank without rows
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
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
