"""Evaluation for minibatch-trained models: exact layer-wise full-graph inference, or sampled.

Layer-wise inference computes layer 1 for every node, then layer 2 from those outputs, and so
on, a chunk of destinations at a time over their full in-neighbourhoods. It never builds an
L-hop neighbourhood, so its cost is L passes over the edges and its memory one ``(N, hidden)``
table on the host; the result equals ``GNN.forward`` on the full graph (tested for every layer
type). The stack logic between layers mirrors ``qgnn.training.nn.models.GNN.forward`` in eval
mode (no dropout).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from qgnn.graph.container import Adjacency
from qgnn.graph.neighbourhood import full_khop
from qgnn.training.nn.block import Block
from qgnn.training.nn.models import GNN
from qgnn.training.sampling.batch import (
    BatchBuilder,
    DeviceBatch,
    HostBatch,
    block_to_device,
    to_device_batch,
)
from qgnn.training.sampling.blocks import to_block
from qgnn.training.sampling.loader import prefetch
from qgnn.training.sampling.transfer import TransferCounter, to_device

BlocksFor = Callable[..., Block | Sequence[Block]]


def layer_block(blocks_for: BlocksFor | None, block: Block, layer: int,
                training: bool) -> Block:
    """The block layer ``layer`` should see after the hook (one block shared by all layers)."""
    if blocks_for is None:
        return block
    result = blocks_for(block, training)
    return result if isinstance(result, Block) else list(result)[layer]


def per_layer_blocks(blocks_for: BlocksFor | None, blocks: list[Block],
                     training: bool) -> list[Block]:
    """Sampled blocks (one per layer) after the hook."""
    if blocks_for is None:
        return blocks
    result = blocks_for(blocks, training)
    return [result] * len(blocks) if isinstance(result, Block) else list(result)


@torch.no_grad()
def layerwise_inference(gnn: GNN, x: torch.Tensor, csc: Adjacency, in_degree: np.ndarray,
                        device: torch.device, counter: TransferCounter, *, chunk_size: int,
                        graph_edge_weight: np.ndarray | None = None,
                        blocks_for: BlocksFor | None = None) -> torch.Tensor:
    """Exact full-graph outputs ``(N, out_dim)`` on the host; ``x`` ``(N, F)`` host features."""
    if x.device.type != "cpu":
        raise ValueError(f"layerwise_inference: x must be a host tensor, got {x.device}")
    gnn.eval()
    n = int(csc.indptr.size - 1)
    scratch = np.empty(n, np.int64)
    ranges = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    h_all = torch.cat([gnn.begin(to_device(x[a:b], device, counter, "eval")).cpu()
                       for a, b in ranges])
    # LightGCN: the mean of the input and every layer's output
    total = gnn.mean_input(h_all) if gnn.layer_mean else None
    for i in range(len(gnn.layers)):
        outs = []
        for a, b in ranges:
            sampled = full_khop(csc, np.arange(a, b, dtype=np.int64), 1, scratch=scratch)[0]
            block = block_to_device(to_block(sampled, in_degree, "sum", graph_edge_weight),
                                    device, counter, "eval")
            block = layer_block(blocks_for, block, i, False)
            index = torch.from_numpy(sampled.node_ids)
            xs = to_device(h_all.index_select(0, index), device, counter, "eval")
            outs.append(gnn.step(i, xs, block).cpu())
        h_all = torch.cat(outs)
        if total is not None:
            total = total + h_all
    if total is not None:
        return total / (len(gnn.layers) + 1)
    if gnn.head is not None:
        h_all = torch.cat([gnn.finish(to_device(h_all[a:b], device, counter, "eval")).cpu()
                           for a, b in ranges])
    return h_all


@torch.no_grad()
def sampled_inference(nodes: np.ndarray, builder: BatchBuilder,
                      encode: Callable[[DeviceBatch], torch.Tensor], device: torch.device,
                      counter: TransferCounter, *, batch_size: int, seed: Sequence[int],
                      workers: int, depth: int) -> torch.Tensor:
    """Outputs ``(len(nodes), out_dim)`` on the host for distinct ``nodes``, each from one
    sampled neighbourhood (``builder`` decides the sampler); batch ``b`` draws from
    ``default_rng([*seed, b])``, so the pass is reproducible."""
    batches = [nodes[s:s + batch_size] for s in range(0, nodes.size, batch_size)]

    def stage(b: int) -> HostBatch:
        return builder.build(batches[b], np.random.default_rng([*seed, b]))

    outs = []
    for host in prefetch(range(len(batches)), stage, workers=workers, depth=depth):
        outs.append(encode(to_device_batch(host, device, counter, kind="eval")).cpu())
    return torch.cat(outs) if outs else torch.zeros(0)
