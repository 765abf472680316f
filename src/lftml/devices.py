"""One way to pick a torch device for the whole package (``--device auto|cpu|cuda|cuda:N``)."""

from __future__ import annotations

import torch

from lftml.errors import LftmlError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.

    Raises one-line :class:`LftmlError` for an unknown name or a CUDA request without CUDA."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise LftmlError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LftmlError(f"--device {device} was requested but no CUDA device is available; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LftmlError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise LftmlError(f"unsupported device {device!r}; use cpu, cuda, cuda:N or auto")
    return dev
