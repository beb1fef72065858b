"""Quantised sum/mean aggregation without one message row per edge.

Quantisation-aware training quantises each edge's message ``x[u] * w_e`` at the ``msg`` site
(the exported integer model does the same per edge). Built per edge, that is an ``(E, D)``
tensor several times over (gather, product, quantise, its backward), 2.2 GB each on ogbl-ddi at
width 256. But quantisation is elementwise with one scale per tensor, so an edge's quantised
message depends only on ``x[u]`` and ``w_e``; and the quantised edge weights take at most
``2^bits`` distinct values. So the messages are the rows of a table with one row per distinct
(source, weight) pair (the source rows themselves when there is no weight), quantised once each
and summed into destinations by a matrix product. Every message and every gradient equals the
per-edge path's exactly; only the float summation order differs. The range statistics are taken
as if the per-edge tensor had been built, with the same random samples
(:func:`qgnn.training.quant.ranges.sample_values`).

Edges whose source Degree-Quant protects this pass keep their full-precision weight and message;
they are summed by a second product over the same block.
"""

from __future__ import annotations

import torch
from qgnn.training.nn.block import Block
from qgnn.training.nn.quant_sites import QuantSites
from qgnn.training.nn.spmm import sparse_aggregate

# More distinct weights than this on quantised edges means the weights are not on a grid (a
# site not yet calibrated): the caller builds the per-edge messages instead.
MAX_DISTINCT_WEIGHTS = 1024


def gathered_propagate(x_src: torch.Tensor, block: Block, reduce: str,
                       edge_weight: torch.Tensor | None, q: QuantSites) -> torch.Tensor | None:
    """``propagate``'s sum or mean with sites ``edge_weight``/``msg``/``agg`` for a quantising
    ``q`` that :meth:`~QuantSites.gathers`; ``None`` when the weights are not few enough."""
    protect = q.protected("msg", block)
    if edge_weight is not None:
        edge_weight = q("edge_weight", edge_weight, block)
    if edge_weight is None:  # the messages are the source rows: quantise those
        quantised = q.gathered("msg", x_src, block.src, block)
        kept = None if protect is None else (~protect).to(x_src.dtype)
        out = sparse_aggregate(quantised, block, "sum", kept)
    else:
        keep = (torch.arange(block.num_edges, device=block.src.device) if protect is None
                else (~protect).nonzero().view(-1))
        grouped = _pairs(x_src, block, edge_weight, keep)
        if grouped is None:
            return None
        table, pair = grouped
        index = torch.zeros(block.num_edges, dtype=torch.int64, device=block.src.device)
        index[keep] = pair
        quantised = q.gathered("msg", table, index, block)
        out = sparse_aggregate(quantised, Block(src=pair, dst=block.dst[keep],
                                                num_src=table.shape[0], num_dst=block.num_dst),
                               "sum", None)
    if protect is not None and bool(protect.any()):
        raw = protect.to(x_src.dtype)
        out = out + sparse_aggregate(x_src, block, "sum",
                                     raw if edge_weight is None else edge_weight * raw)
    if reduce == "mean":  # as the per-edge path: the sum over all edges, then the division
        out = out / block.dst_degree().clamp(min=1).to(out.dtype).unsqueeze(1)
    return q("agg", out, block)


def _pairs(x_src: torch.Tensor, block: Block, weight: torch.Tensor, keep: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The table of distinct ``x_src[u] * w`` rows over the kept edges and each kept edge's
    row in it; ``None`` when the kept edges carry too many distinct weights."""
    distinct, code = torch.unique(weight[keep], return_inverse=True)
    if distinct.numel() > MAX_DISTINCT_WEIGHTS:
        return None
    key = block.src[keep] * distinct.numel() + code
    pairs, pair = torch.unique(key, return_inverse=True)
    src, code = pairs // distinct.numel(), pairs % distinct.numel()
    table = x_src.index_select(0, src) * distinct.detach()[code].unsqueeze(1)
    return table, pair
