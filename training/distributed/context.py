"""The process group a distributed run lives in: ranks, backends, local launch and torchrun.

Shared by every distributed mode (package docstring). The data-parallel description below is the
``ddp`` mode's; it stays here because :func:`shard` and :func:`agree` are its primitives.

Data-parallel minibatch training with torch.distributed (DDP): gloo on CPU, nccl on GPU.

Every rank holds the whole graph in host memory, draws the same per-epoch permutation of the
training seeds and takes its own disjoint, equally long shard of it (``order[rank::world]``,
the last ``len % world`` seeds of the permutation sit out that epoch so every rank runs the same
number of steps). Ranks sample independently; DDP averages gradients, so with equal batch sizes
one step equals a step on the union of the ranks' batches. Rank 0's early-stopping decision is
broadcast so every rank stops after the same epoch.

Launch on one machine: :func:`launch_local` (torch.multiprocessing spawn, TCP rendezvous on the
loopback interface). On several machines: ``torchrun`` (docs/gns.md) with
``python -m qgnn.training.distributed``, which reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and
the rendezvous address from the environment torchrun sets.
"""

from __future__ import annotations

import faulthandler
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class DistContext:
    """This process's place in an initialised process group."""

    rank: int
    world_size: int
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"DistContext: rank {self.rank} not in [0, {self.world_size})")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def shard(order: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s share of ``order``: every ``world_size``-th item from ``rank`` on, cut to
    ``len(order) // world_size`` so all shards are equally long and pairwise disjoint."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard: rank {rank} not in [0, {world_size})")
    per_rank = len(order) // world_size
    return order[rank::world_size][:per_rank]


def wrap_model(model: nn.Module, ctx: DistContext | None) -> nn.Module:
    """DDP around ``model`` (already on its device) when running with more than one rank.

    Inputs are never moved by DDP (``device_ids=None``): the minibatch pipeline already put them
    on the model's device and counted the bytes.
    """
    if ctx is None or ctx.world_size == 1:
        return model
    return DistributedDataParallel(model, device_ids=None)


def agree(flag: bool, ctx: DistContext | None) -> bool:
    """Rank 0's ``flag`` on every rank (a one-element broadcast)."""
    if ctx is None or ctx.world_size == 1:
        return flag
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" \
        else torch.device("cpu")
    value = torch.tensor([int(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_from_env(backend: str | None = None) -> DistContext:
    """Join the process group described by torchrun's environment variables."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
               if k not in os.environ]
    if missing:
        raise ValueError(f"init_from_env: environment variables {missing} are not set; launch "
                         f"with torchrun (see docs/gns.md)")
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, init_method="env://")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_worker(rank: int, fn: Callable[..., Any], world_size: int, port: int,
                  backend: str, args: tuple[Any, ...]) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    faulthandler.enable(all_threads=True)  # a SIGABRT in gloo prints where each thread was
    # as torchrun does (OMP_NUM_THREADS=1 per rank): ranks must not fight over the cores; an
    # OMP_NUM_THREADS the caller set wins (benches on a shared machine pin 1 per rank)
    threads = os.environ.get("OMP_NUM_THREADS", "")
    torch.set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0
                          else max(1, (os.cpu_count() or 1) // world_size))
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        fn(DistContext(rank, world_size, rank), *args)
        finish_together()
    finally:
        dist.destroy_process_group()
    exit_skipping_teardown()


def exit_skipping_teardown() -> None:
    """Leave a rank that finished without running C++ static destructors.

    Intermittently a gloo rank that had finished, met its peers at the barrier and destroyed
    its process group still died with "terminate called without an active exception"
    (SIGABRT): 2 of 60 torchrun launches, and about one GIN run in five at W = 2 under
    :func:`launch_local`, whose launcher then fails the whole job. faulthandler showed no
    Python frame: the abort came from a C++ destructor at interpreter finalisation, after every
    result was written. Flushing and ``os._exit(0)`` skips that stage; nothing of qgnn's runs
    there (8 of 8 such GIN runs passed after it, against 4 of 5 before)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def finish_together() -> None:
    """A barrier at the end of a rank's successful run, before the group is torn down.

    Without it a rank that finished first (rank 0 still writing its checkpoint, say) closes its
    gloo connections while a peer's threads still use them, and the peer aborts ("terminate
    called without an active exception", SIGABRT). Only on success: a rank that failed leaves at
    once, so its peers fail instead of waiting for it.
    """
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def launch_local(fn: Callable[..., Any], world_size: int, *args: Any, backend: str = "gloo",
                 timeout_s: float = 120.0) -> None:
    """Run ``fn(ctx, *args)`` on ``world_size`` spawned ranks of this machine (loopback TCP).

    ``fn`` must be importable (a module-level function). Raises ``TimeoutError`` and kills the
    ranks when they have not all finished after ``timeout_s`` seconds; a rank's exception is
    re-raised here.
    """
    if backend not in BACKENDS:
        raise ValueError(f"launch_local.backend: expected one of {BACKENDS}, got {backend!r}")
    if world_size < 1:
        raise ValueError(f"launch_local.world_size: expected >= 1, got {world_size}")
    ctx = mp.start_processes(_local_worker, args=(fn, world_size, free_port(), backend, args),
                             nprocs=world_size, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            for p in ctx.processes:
                p.join()
            raise TimeoutError(f"launch_local: ranks still running after {timeout_s} s")
