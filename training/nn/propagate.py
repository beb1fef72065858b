"""Message passing written once: gather along edges, transform, aggregate into destinations.

Layers supply the message and update pieces; the quantisation sites ``msg`` and ``agg`` are applied
here for every layer, so Degree-Quant and the exporter see the same structure everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from qgnn.training.nn import shards
from qgnn.training.nn.block import Block
from qgnn.training.nn.gathered import gathered_propagate
from qgnn.training.nn.quant_sites import QuantSites
from qgnn.training.nn.spmm import sparse_aggregate

Reduce = Literal["sum", "mean", "max"]
REDUCERS: tuple[Reduce, ...] = ("sum", "mean", "max")

# (messages (E, ...), block) -> messages (E, ...)
MessageFn = Callable[[torch.Tensor, Block], torch.Tensor]


def gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` at ``index``: the per-edge copy of the source features."""
    return x.index_select(0, index)


def aggregate(msg: torch.Tensor, dst: torch.Tensor, num_dst: int, reduce: Reduce) -> torch.Tensor:
    """Reduce messages ``(E, ...)`` into ``(num_dst, ...)``; destinations with no edge get 0.

    Inside an edge-sharded pass (:func:`qgnn.training.nn.shards.sharded`) ``msg`` holds this
    rank's edges only: the partial sums (and counts, for the mean) or partial maxima are combined
    over the ranks, so every rank gets the aggregation over all edges.
    """
    across = shards.active()
    shape = (num_dst, *msg.shape[1:])
    if reduce == "sum":
        total = msg.new_zeros(shape).index_add_(0, dst, msg)
        return total if across is None else across.sum(total)
    if reduce == "mean":
        total = msg.new_zeros(shape).index_add_(0, dst, msg)
        count = torch.bincount(dst, minlength=num_dst).to(msg.dtype)
        if across is not None:  # one collective for both: sums and counts side by side
            both = across.sum(torch.cat([total.reshape(num_dst, -1), count.view(-1, 1)], 1))
            total, count = both[:, :-1].reshape(shape), both[:, -1]
        return total / count.clamp(min=1).view(-1, *([1] * (msg.dim() - 1)))
    if reduce == "max":
        # -inf, not 0, as the base: torch's scatter_reduce backward counts a base equal to the
        # maximum as one more tie, so a zero base would take 1/(k+1) of the gradient of k tied
        # messages whose maximum is exactly 0 (common once messages are quantised)
        idx = dst.view(-1, *([1] * (msg.dim() - 1))).expand_as(msg)
        peak = msg.new_full(shape, -torch.inf).scatter_reduce_(0, idx, msg, "amax",
                                                               include_self=False)
        if across is not None:
            ties = None
            if msg.requires_grad:
                hit = (msg.detach() == peak.detach().gather(0, idx)).to(msg.dtype)
                ties = msg.new_zeros(shape).index_add_(0, dst, hit)
            peak = across.max(peak, ties)
        return torch.where(torch.isneginf(peak), torch.zeros_like(peak), peak)
    raise ValueError(f"aggregate: reduce must be one of {REDUCERS}, got {reduce!r}")


def propagate(x_src: torch.Tensor, block: Block, *, reduce: Reduce = "sum",
              message: MessageFn | None = None, edge_weight: torch.Tensor | None = None,
              q: QuantSites | None = None) -> torch.Tensor:
    """``out[v] = reduce_{(u,v)} message(x_src[u] * w_uv)``, quantisation sites ``msg``/``agg``.

    ``edge_weight`` scales each message (normalisation coefficients, importance weights) and is
    itself a quantisation site (``edge_weight``) when ``q`` is given. Without a quantising ``q``
    (full precision) a sum or mean of plain messages is one sparse product (:mod:`spmm`); with
    one that quantises gathered rows exactly (``q.gathers()``), the quantised messages are built
    once per distinct (source, weight) pair, not per edge (:mod:`gathered`).
    """
    if _sparse_ok(x_src, reduce, message, edge_weight, q):
        return sparse_aggregate(x_src, block, reduce, edge_weight)
    if q is not None and q.gathers() and _sparse_ok(x_src, reduce, message, edge_weight, None):
        out = gathered_propagate(x_src, block, reduce, edge_weight, q)
        if out is not None:
            return out
    msg = gather(x_src, block.src)
    if edge_weight is not None:
        if q is not None:
            edge_weight = q("edge_weight", edge_weight, block)
        msg = msg * edge_weight.view(-1, *([1] * (msg.dim() - 1)))
    if message is not None:
        msg = message(msg, block)
    if q is not None:
        msg = q("msg", msg, block)
    out = aggregate(msg, block.dst, block.num_dst, reduce)
    if q is not None:
        out = q("agg", out, block)
    return out


def _sparse_ok(x_src: torch.Tensor, reduce: Reduce, message: MessageFn | None,
               edge_weight: torch.Tensor | None, q: QuantSites | None) -> bool:
    """Whether the sum can skip per-edge messages: no site would quantise them, no message
    function, no weight gradient, and no edge-sharded pass."""
    return (reduce in ("sum", "mean") and message is None and x_src.dim() == 2
            and (q is None or type(q) is QuantSites) and shards.active() is None
            and (edge_weight is None or not edge_weight.requires_grad))


def edge_softmax(logits: torch.Tensor, dst: torch.Tensor, num_dst: int) -> torch.Tensor:
    """Softmax of ``logits`` ``(E, ...)`` over the edges that enter each destination.

    Each destination's largest logit is subtracted first (softmax is shift-invariant), so any
    finite logits give finite weights; the shift is detached since it has no gradient. Weights sum
    to 1 per destination with at least one edge; a destination whose logits are all ``-inf`` gets
    zero weights rather than NaN. Returns a tensor shaped like ``logits``.
    """
    if logits.shape[0] != dst.numel():
        raise ValueError(f"edge_softmax: logits has {logits.shape[0]} rows but dst has "
                         f"{dst.numel()} edges")
    info = torch.finfo(logits.dtype)
    peak = aggregate(logits.detach(), dst, num_dst, "max").clamp_(min=info.min)
    weight = torch.exp(logits - gather(peak, dst))
    total = aggregate(weight, dst, num_dst, "sum").clamp_(min=info.tiny)
    return weight / gather(total, dst)


def check_src_rows(layer: str, x: torch.Tensor, block: Block) -> None:
    """Refuse a feature matrix that does not have one row per source of the block."""
    if x.dim() != 2 or x.shape[0] != block.num_src:
        raise ValueError(f"{layer}: x must be (block.num_src={block.num_src}, features), got shape "
                         f"{tuple(x.shape)}")
