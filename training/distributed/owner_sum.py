"""Owner-side aggregation of the input hop (``--gns-estimator owner-sum``).

Under partitioned GNS the requester estimates each input-hop destination's neighbour sum from
the sources it holds (its part and its cache). When the parts cut many edges, those are a
skewed sample of a remote destination's neighbourhood, and the estimate is badly biased
(docs/partitioned.md, Figures). For a layer whose input aggregation is *linear* in the source
features, the owner of a destination can do better: it sums the features of every in-neighbour
it owns into one row, and that row enters the aggregation like one more source with sum-form
weight ``w`` (:class:`~.remote_sampling.PartialSums`). Then ``sum_u w_uv x_u`` over the block is
``w · sum_{u in N(v), owned} x_u`` plus the sampled estimate of the rest, the same number the
expanded block (every owned source as its own edge, weight ``w``) gives.

Linear here means: SAGE's mean, GIN's sum, and GCN's normalised sum once the owner has applied
each source's factor ``(d_u + 1)^-1/2`` (the row then carries in-degree 0, factor 1). Not linear,
or not handled here, and refused: GAT's attention (a softmax over the individual sources), EGC
(its max/min/var aggregators; the sum-only form is not wired), max aggregation, an input
projection (a ReLU before the aggregation) and Degree-Quant (each source row is quantised
before it is summed). The input dropout of the first layer then drops elements of the
partial-sum rows, not of the rows they sum.
"""

from __future__ import annotations

import numpy as np
import torch
from qgnn.graph.neighbourhood import SampledBlock
from qgnn.graph.shards import GraphShard
from qgnn.training.distributed.remote_sampling import PartialSums
from qgnn.training.nn.block import Block
from qgnn.training.nn.models import ModelConfig
from qgnn.training.sampling.blocks import Convention, convert_weights

OWNER_SUM_LAYERS = ("sage", "gcn", "gin")


def check_owner_sum(model_cfg: ModelConfig, quantised: bool) -> None:
    """Refuse a model whose input aggregation is not linear in the source features."""
    if model_cfg.model not in OWNER_SUM_LAYERS:
        raise ValueError(f"--gns-estimator owner-sum: the input layer must aggregate linearly "
                         f"({', '.join(OWNER_SUM_LAYERS)}); {model_cfg.model!r} does not. Use "
                         f"--gns-estimator normalized")
    if model_cfg.input_proj:
        raise ValueError("--gns-estimator owner-sum: an input projection puts a ReLU before the "
                         "first aggregation; use --gns-estimator normalized")
    if quantised:
        raise ValueError("--gns-estimator owner-sum: Degree-Quant quantises every source row "
                         "before the sum, so a partial sum cannot stand for them; train in "
                         "FP32 or use --gns-estimator normalized")


def source_scale(model_cfg: ModelConfig, shard: GraphShard) -> torch.Tensor | None:
    """Per owned node, the factor the owner applies before summing (GCN's source half of the
    symmetric normalisation), or ``None``."""
    if model_cfg.model != "gcn":
        return None
    from qgnn.training.nn.layers.gcn import gcn_source_scale

    return gcn_source_scale(torch.from_numpy(shard.in_degree[shard.owned]))


def input_block(sampled: SampledBlock, sums: PartialSums, in_degree: np.ndarray,
                convention: Convention) -> Block:
    """The input hop's block with the partial-sum rows as extra sources after the sampled ones
    (the model reads ``cat([rows of sampled.node_ids, sums.rows])``); weights converted to the
    layer's form over every edge, rows included. The rows have no node id (``-1``) and
    in-degree 0."""
    if sampled.edge_weight is None:
        raise ValueError("owner-sum input block: the sampled block carries no weights")
    k = sums.dst.size
    src = np.concatenate([sampled.src, sampled.num_src + np.arange(k, dtype=np.int64)])
    dst = np.concatenate([sampled.dst, sums.dst])
    weight = np.concatenate([sampled.edge_weight, sums.weight])
    order = np.argsort(dst, kind="stable")
    src, dst = src[order], dst[order]
    ids = sampled.node_ids
    weight = convert_weights(weight[order], dst, sampled.num_dst,
                             in_degree[ids[: sampled.num_dst]], convention)
    return Block(src=torch.from_numpy(src), dst=torch.from_numpy(dst),
                 num_src=sampled.num_src + k, num_dst=sampled.num_dst,
                 edge_weight=torch.from_numpy(weight),
                 src_ids=torch.from_numpy(np.concatenate([ids, np.full(k, -1, np.int64)])),
                 in_degree=torch.from_numpy(np.concatenate(
                     [in_degree[ids], np.zeros(k, in_degree.dtype)])))
