"""The two callables the training loop takes to train a quantised model.

``prepare_model(model) -> model`` swaps the model's quantisation seams (once, before the
optimiser is built); ``blocks_for(block_or_blocks, training) -> list[Block]`` attaches this
pass's Degree-Quant protection mask (plain QAT and eval passes get the blocks unprotected).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from qgnn.graph.container import Graph
from qgnn.training.nn.block import Block
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.degree_quant import DegreeProtection
from qgnn.training.quant.sites import quantize_model
from torch import nn

PrepareModel = Callable[[nn.Module], nn.Module]
BlocksFor = Callable[[Block | Sequence[Block], bool], list[Block]]


def _num_layers(model: nn.Module) -> int:
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError(f"prepare_model: expected a model with a non-empty `layers` "
                         f"ModuleList (qgnn GNN), got {type(model).__name__}")
    return len(layers)


def make_hooks(cfg: QuantConfig, graph_in_degree: Graph | np.ndarray | torch.Tensor,
               *, num_layers: int | None = None,
               generator: torch.Generator | None = None) -> tuple[PrepareModel, BlocksFor]:
    """``(prepare_model, blocks_for)`` for ``cfg``.

    ``graph_in_degree``: the full training graph (or its in-degree array), whose degree CDF sets
    the protection probabilities. ``num_layers`` defaults to the prepared model's depth.
    ``generator`` (on the blocks' device) makes the masks reproducible; else torch's global RNG.
    """
    protection = (DegreeProtection(graph_in_degree, cfg.p_min, cfg.p_max, cfg.mask)
                  if cfg.method == "dq" else None)
    depth = [num_layers]

    def prepare_model(model: nn.Module) -> nn.Module:
        if depth[0] is None:
            depth[0] = _num_layers(model)
        return quantize_model(model, cfg)

    def blocks_for(block_or_blocks: Block | Sequence[Block], training: bool) -> list[Block]:
        if depth[0] is None:
            raise RuntimeError("blocks_for: call prepare_model(model) first (or pass "
                               "num_layers to make_hooks)")
        layers = depth[0]
        if protection is not None:
            return protection.annotate_blocks(block_or_blocks, layers, generator, training)
        blocks = [block_or_blocks] * layers if isinstance(block_or_blocks, Block) \
            else list(block_or_blocks)
        return [b if b.protect is None else b.replace(protect=None) for b in blocks]

    return prepare_model, blocks_for
