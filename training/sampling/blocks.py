"""numpy :class:`SampledBlock` -> torch :class:`Block`, with importance weights in the form the
model's aggregation needs.

Samplers store *sum-form* weights ``w_uv``: ``sum_{u in S(v)} w_uv x_u`` is an unbiased estimate
of ``sum_{u in N(v)} x_u`` (uniform sampling: ``w = d_v / n_v`` with ``d_v`` the full in-degree
and ``n_v`` the number drawn). A layer that *averages* its messages (SAGE's mean) divides by
``n_v`` itself, so it needs the *mean form* ``w_uv · n_v / d_v``: then
``(1/n_v) sum_S w'_uv x_u = (1/d_v) sum_S w_uv x_u``, an unbiased estimate of the full mean
(uniform sampling gives ``w' = 1``, the usual GraphSAGE minibatch). See docs/gns.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from qgnn.graph.neighbourhood import SampledBlock
from qgnn.training.nn.block import Block
from qgnn.training.nn.models import ModelConfig

Convention = Literal["sum", "mean"]
# Aggregation each layer applies to its weighted messages. GAT's attention is normalised over
# the sampled neighbours, like a mean, so it takes the mean form (weight 1 under uniform
# sampling); no weighting makes a softmax over a sample unbiased.
LAYER_CONVENTION: dict[str, Convention] = {"gcn": "sum", "gin": "sum", "sage": "mean",
                                           "gat": "mean", "egc": "sum"}
EGC_SUM_AGGREGATORS = frozenset({"symnorm", "sum"})


def weight_convention(model_cfg: ModelConfig) -> Convention:
    """``"sum"`` or ``"mean"``: which form of importance weight the model's layers consume.

    EGC uses the sum form when all its aggregators are sums (``symnorm``, ``sum``) and the mean
    form otherwise (its max/min/var/std aggregators have no unbiased sampled form; the mean form
    keeps their weights near 1).
    """
    if model_cfg.model not in LAYER_CONVENTION:
        raise ValueError(f"ModelConfig.model: no sampling weight convention for "
                         f"{model_cfg.model!r}; known: {sorted(LAYER_CONVENTION)}")
    if model_cfg.model == "egc":
        aggregators = model_cfg.layer_kwargs.get("aggregators", ["symnorm"])
        return "sum" if set(aggregators) <= EGC_SUM_AGGREGATORS else "mean"
    return LAYER_CONVENTION[model_cfg.model]


def convert_weights(sum_weight: np.ndarray, dst: np.ndarray, num_dst: int,
                    dst_degree: np.ndarray, convention: Convention) -> np.ndarray:
    """Sum-form weights ``(E,)`` in the requested form, float32 (see the module docstring)."""
    if convention == "sum":
        return sum_weight.astype(np.float32, copy=False)
    if convention != "mean":
        raise ValueError(f"convention: expected 'sum' or 'mean', got {convention!r}")
    drawn = np.bincount(dst, minlength=num_dst)
    scale = np.divide(drawn, dst_degree, out=np.zeros(num_dst), where=dst_degree > 0)
    return (sum_weight * scale[dst]).astype(np.float32)


def to_block(sampled: SampledBlock, in_degree: np.ndarray, convention: Convention,
             graph_edge_weight: np.ndarray | None = None) -> Block:
    """A host :class:`Block` carrying global ids, full-graph in-degrees and converted weights.

    ``in_degree`` ``(N,)``: the full graph's in-degree (GCN normalisation and Degree-Quant
    protection read it per source). ``graph_edge_weight`` ``(E_graph,)`` in CSR edge order: the
    graph's own edge weights, multiplied into the importance weights.
    """
    ids = sampled.node_ids
    weight = None
    if sampled.edge_weight is not None:
        dst_degree = in_degree[ids[: sampled.num_dst]]
        weight = convert_weights(sampled.edge_weight, sampled.dst, sampled.num_dst, dst_degree,
                                 convention)
    if graph_edge_weight is not None:
        given = graph_edge_weight[sampled.edge_ids].astype(np.float32)
        weight = given if weight is None else weight * given
    return Block(src=torch.from_numpy(np.ascontiguousarray(sampled.src, dtype=np.int64)),
                 dst=torch.from_numpy(np.ascontiguousarray(sampled.dst, dtype=np.int64)),
                 num_src=sampled.num_src, num_dst=sampled.num_dst,
                 edge_weight=None if weight is None else torch.from_numpy(weight),
                 src_ids=torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)),
                 in_degree=torch.from_numpy(np.ascontiguousarray(in_degree[ids])))


def to_blocks(sampled: Sequence[SampledBlock], in_degree: np.ndarray, convention: Convention,
              graph_edge_weight: np.ndarray | None = None) -> list[Block]:
    """Every block of a sample, input layer first (the order ``GNN.forward`` takes)."""
    return [to_block(b, in_degree, convention, graph_edge_weight) for b in sampled]
