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
they are summed by a second product over those edges only.

What a pass costs beyond the products: the table's rows are found without sorting floats (the
edges' order by full-precision weight is kept on the block, and quantisation keeps that order),
and one sort of the (source, weight) keys gives both the table and the order of the gradient's
product (:func:`qgnn.training.nn.spmm.table_plan`).
"""

from __future__ import annotations

import torch
from qgnn.training.nn.block import Block
from qgnn.training.nn.quant_sites import QuantSites
from qgnn.training.nn.spmm import (
    TablePlan,
    csr_plan,
    sparse_aggregate,
    table_plan,
    table_sum,
)

# More distinct weights than this on quantised edges means the weights are not on a grid (a
# site not yet calibrated): the caller builds the per-edge messages instead.
MAX_DISTINCT_WEIGHTS = 1024


def gathered_propagate(x_src: torch.Tensor, block: Block, reduce: str,
                       edge_weight: torch.Tensor | None, q: QuantSites) -> torch.Tensor | None:
    """``propagate``'s sum or mean with sites ``edge_weight``/``msg``/``agg`` for a quantising
    ``q`` that :meth:`~QuantSites.gathers`; ``None`` when the weights are not few enough."""
    protect = q.protected("msg", block)
    raw = edge_weight
    if edge_weight is not None:
        edge_weight = q("edge_weight", edge_weight, block)
    if edge_weight is None:  # the messages are the source rows: quantise those
        quantised = q.gathered("msg", x_src, block.src, block)
        kept = None if protect is None else (~protect).to(x_src.dtype)
        out = sparse_aggregate(quantised, block, "sum", kept)
    else:
        assert raw is not None
        grouped = _pairs(x_src, block, raw, edge_weight, protect)
        if grouped is None:
            return None
        table, index, plan = grouped
        out = table_sum(q.gathered("msg", table, index, block), plan)
    if protect is not None and bool(protect.any()):
        edges = protect.nonzero().view(-1)
        only = Block(src=block.src[edges], dst=block.dst[edges], num_src=block.num_src,
                     num_dst=block.num_dst)
        out = out + sparse_aggregate(x_src, only, "sum",
                                     None if edge_weight is None else edge_weight[edges])
    if reduce == "mean":  # as the per-edge path: the sum over all edges, then the division
        out = out / block.dst_degree().clamp(min=1).to(out.dtype).unsqueeze(1)
    return q("agg", out, block)


def _pairs(x_src: torch.Tensor, block: Block, raw: torch.Tensor, weight: torch.Tensor,
           protect: torch.Tensor | None
           ) -> tuple[torch.Tensor, torch.Tensor, TablePlan] | None:
    """The table of distinct ``x_src[u] * w`` rows over the unprotected edges (ascending by
    source, then weight), each edge's row in it (protected edges: 0, never read) and the plan
    that sums the rows into destinations; ``None`` when those edges carry too many distinct
    quantised weights ``weight``."""
    by_weight = _by_value(block, raw)
    if protect is not None:
        by_weight = by_weight[~protect[by_weight]]
    values = weight[by_weight]
    if bool((values[1:] < values[:-1]).any()):  # a quantiser that does not keep the order
        by_weight = by_weight[torch.argsort(values, stable=True)]
        values = weight[by_weight]
    distinct, rank = torch.unique_consecutive(values, return_inverse=True)
    if distinct.numel() > MAX_DISTINCT_WEIGHTS:
        return None
    code = torch.zeros(block.num_edges, dtype=torch.int64, device=block.src.device)
    code[by_weight] = rank
    kept = csr_plan(block).order  # by destination, as the plan takes them
    if protect is not None:
        kept = kept[~protect[kept]]
    key, by_pair = torch.sort(block.src[kept] * distinct.numel() + code[kept], stable=True)
    pairs, rank = torch.unique_consecutive(key, return_inverse=True)
    pair = torch.empty_like(key)
    pair[by_pair] = rank
    src, code = pairs // distinct.numel(), pairs % distinct.numel()
    table = x_src.index_select(0, src).mul_(distinct.detach()[code].unsqueeze(1))
    index = torch.zeros(block.num_edges, dtype=torch.int64, device=block.src.device)
    index[kept] = pair
    plan = table_plan(pair, block.dst[kept], table.shape[0], block.num_dst,
                      table.shape[1] * table.element_size(), by_pair)
    return table, index, plan


def _by_value(block: Block, weight: torch.Tensor) -> torch.Tensor:
    """The block's edges in ascending order of ``weight``, sorted once and kept on the block
    while the weights stay the same (GCN's normalisation is recomputed, equal, every pass)."""
    kept = block.cache().get("by_weight")
    if isinstance(kept, tuple):
        values, order = kept
        if (values.dtype == weight.dtype and values.device == weight.device
                and values.shape == weight.shape and torch.equal(values, weight)):
            return order
    order = torch.argsort(weight.detach(), stable=True)
    block.cache()["by_weight"] = (weight.detach().clone(), order)
    return order
