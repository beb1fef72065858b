"""The seam edge-sharded training plugs into: aggregations that span every rank's edges.

In edge-sharded, node-replicated training (``qgnn.training.distributed.edge_sharded``) every rank
holds all node states and a share of the edges. Message passing is unchanged up to the point
where per-edge values become per-node values; there :func:`qgnn.training.nn.propagate.aggregate`
asks the active :class:`CrossShard` to combine the ranks' partial results. Edge-level
randomness (attention dropout) and the range statistics of per-edge quantisation sites are the
only other places that see a rank's share of the edges rather than the whole graph, so they
consult the same object. Outside :func:`sharded` nothing is active and everything is local.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Protocol

import torch
from torch.nn import functional as F


class CrossShard(Protocol):
    """Collectives over the ranks that share the edges of one graph (node tensors replicated)."""

    def sum(self, partial: torch.Tensor) -> torch.Tensor:
        """Elementwise sum of every rank's ``partial`` (differentiable)."""
        ...

    def max(self, partial: torch.Tensor, ties: torch.Tensor | None) -> torch.Tensor:
        """Elementwise max of every rank's ``partial`` (rows a rank has no edge for hold -inf);
        ``ties`` counts, per element, the local edges equal to the local max (needed for the
        gradient; ``None`` when no gradient is wanted)."""
        ...

    def min_max(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The smallest ``lo`` and the largest ``hi`` over the ranks (no gradient)."""
        ...

    def total(self, count: int) -> int:
        """Sum of an integer over the ranks."""
        ...

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Every rank's 1-D ``values`` concatenated in rank order (no gradient)."""
        ...

    @property
    def generator(self) -> torch.Generator:
        """A rank-local random stream for edge-level randomness, so the shared stream that
        drives node-level randomness advances identically on every rank."""
        ...


_ACTIVE: ContextVar[CrossShard | None] = ContextVar("qgnn_cross_shard", default=None)


def active() -> CrossShard | None:
    """The :class:`CrossShard` of the edge-sharded pass being run, if any."""
    return _ACTIVE.get()


@contextlib.contextmanager
def sharded(across: CrossShard) -> Iterator[CrossShard]:
    """Run the enclosed forward passes with edge aggregations reduced over ``across``."""
    token = _ACTIVE.set(across)
    try:
        yield across
    finally:
        _ACTIVE.reset(token)


def edge_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout of a per-edge tensor. Edge-sharded, the mask comes from the rank-local stream:
    each edge lives on one rank, so the union of the masks is still an independent draw per
    edge, and the shared stream is not advanced by a rank-dependent amount."""
    across = active()
    if across is None or not training or p == 0.0:
        return F.dropout(x, p, training)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"edge_dropout: p must be in [0, 1), got {p!r}")
    keep = torch.rand(x.shape, generator=across.generator, device=x.device) >= p
    return x * keep / (1.0 - p)
