"""The measurement behind ``qgnn bench dq-cost`` (torch; imported only when it runs)."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from qgnn.bench.harness import interleave
from qgnn.graph.container import Graph
from qgnn.graph.datasets import load_dataset
from qgnn.graph.transforms import row_normalize
from qgnn.training.data import NodeData, node_data
from qgnn.training.nn.block import Block
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.hooks import make_hooks
from torch import nn
from torch.nn import functional as F

Epoch = Callable[[], None]
BlocksFor = Callable[[Block, bool], Block | Sequence[Block]]
TARGET, REFERENCE = 2.0, 5.7


def make_epoch(model: nn.Module, data: NodeData, blocks_for: BlocksFor) -> Epoch:
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)

    def epoch() -> None:
        model.train()
        optimiser.zero_grad(set_to_none=True)
        logits = model(data.x, blocks_for(data.block, True))
        F.cross_entropy(logits[data.train_mask], data.y[data.train_mask]).backward()
        optimiser.step()
        model.eval()
        with torch.no_grad():
            model(data.x, blocks_for(data.block, False))

    return epoch


def variants(data: NodeData, graph: Graph, bits: int, hidden: int) -> dict[str, Epoch]:
    """FP32, QAT and DQ epochs of one GCN, all from the same initial weights."""
    torch.manual_seed(0)
    base = build_model(ModelConfig("gcn", data.num_features, data.num_classes, hidden=hidden))
    out = {"fp32": make_epoch(copy.deepcopy(base), data, lambda block, training: block)}
    for method in ("qat", "dq"):
        prepare_model, blocks_for = make_hooks(QuantConfig(bits=bits, method=method), graph)
        out[method] = make_epoch(prepare_model(copy.deepcopy(base)), data, blocks_for)
    return out


def measure(bits: int, repeat: int, warmup: int, hidden: int, dataset: str) -> dict[str, Any]:
    loaded = load_dataset(dataset)
    if not isinstance(loaded, Graph):
        raise ValueError(f"--dataset: expected a node-classification graph, got {dataset!r}")
    graph = row_normalize(loaded)
    data = node_data(graph)
    timings = interleave(variants(data, graph, bits, hidden), repeat=repeat, warmup=warmup)
    med = {name: t.median for name, t in timings.items()}
    return {
        "dataset": dataset, "model": "gcn", "hidden": hidden, "bits": bits,
        "threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
        "epoch": {name: t.to_dict() for name, t in timings.items()},
        "dq_over_qat": med["dq"] / med["qat"], "qat_over_fp32": med["qat"] / med["fp32"],
        "target_dq_over_qat": TARGET, "reference_dq_over_qat": REFERENCE,
    }
