"""The one door from host memory to the compute device, with a byte counter on it.

Every host-to-device copy of the minibatch pipeline goes through :func:`to_device`, which adds the
tensor's size to a :class:`TransferCounter` under a kind (``features``, ``cache``, ``structure``,
``labels``, ``model``, ``eval``). The count is what crosses the host/device boundary, so it is
measured even when the "device" is the CPU (the copy is then skipped but still counted), which
makes CPU runs report the traffic a GPU run would have.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import torch
from torch import nn

KINDS = ("features", "cache", "structure", "labels", "model", "eval")


class TransferCounter:
    """Bytes moved host -> device, per kind; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = dict.fromkeys(KINDS, 0)
        self._copies = dict.fromkeys(KINDS, 0)

    def add(self, kind: str, num_bytes: int) -> None:
        if kind not in self._bytes:
            raise ValueError(f"TransferCounter.add: kind must be one of {KINDS}, got {kind!r}")
        if num_bytes < 0:
            raise ValueError(f"TransferCounter.add: num_bytes must be >= 0, got {num_bytes}")
        with self._lock:
            self._bytes[kind] += int(num_bytes)
            self._copies[kind] += 1

    def bytes(self, *kinds: str) -> int:
        """Total over ``kinds`` (all kinds when none is named)."""
        with self._lock:
            return sum(self._bytes[k] for k in (kinds or KINDS))

    def copies(self, kind: str) -> int:
        with self._lock:
            return self._copies[kind]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._bytes)

    @staticmethod
    def delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
        return {k: after[k] - before.get(k, 0) for k in after}


def nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def to_device(tensor: torch.Tensor, device: torch.device, counter: TransferCounter,
              kind: str) -> torch.Tensor:
    """Copy a host tensor to ``device`` (asynchronously when it is pinned) and count its bytes.

    Refuses a tensor that is already on an accelerator, since counting it would be wrong.
    """
    if tensor.device.type != "cpu":
        raise ValueError(f"to_device: expected a host tensor, got one on {tensor.device}")
    counter.add(kind, nbytes(tensor))
    if device.type == "cpu":
        return tensor
    return tensor.to(device, non_blocking=tensor.is_pinned())


def module_to_device(module: nn.Module, device: torch.device,
                     counter: TransferCounter) -> nn.Module:
    """Move a module's parameters and buffers, counting them once as ``model``."""
    size = sum(nbytes(t) for t in module.parameters()) + sum(nbytes(t) for t in module.buffers())
    counter.add("model", size)
    return module.to(device)


def pin_if_cuda(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Page-locked copy for asynchronous DMA when the compute device is a GPU; else as is."""
    if device.type == "cuda" and not tensor.is_pinned():
        return tensor.pin_memory()
    return tensor
