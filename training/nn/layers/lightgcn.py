"""LightGCN propagation (He et al., SIGIR 2020): no weights, no self-loops, no non-linearity.

``out[v] = sum over in-neighbours u of x[u] / sqrt(d_u d_v)``, with ``d`` the full-graph
in-degree (clamped at 1, so an isolated node's coefficient never divides by zero; it has no
edge to use it on anyway). The stack (``GNN`` with a layer-mean spec) averages the embedding and
every layer's output. Sites: ``x`` (the layer's input), the propagation's ``edge_weight``/
``msg``/``agg``, and ``out`` (what the next layer and the mean read).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from qgnn.training.nn.block import Block
from qgnn.training.nn.propagate import propagate
from qgnn.training.nn.quant_sites import PROPAGATE_SITES, QuantSites, Role
from torch import nn


def lightgcn_norm(block: Block, in_degree: torch.Tensor) -> torch.Tensor:
    """Per-edge float32 ``max(d_u, 1)^-1/2 max(d_v, 1)^-1/2`` (no loops added)."""
    inv_sqrt = in_degree.to(torch.float32).clamp(min=1.0).rsqrt()
    return inv_sqrt[block.src] * inv_sqrt[block.dst]


class LightGCNConv(nn.Module):
    SITES: ClassVar[dict[str, Role]] = {"x": "src", **PROPAGATE_SITES, "out": "dst"}

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if in_dim != out_dim:
            raise ValueError(f"LightGCN propagates embeddings unchanged in width: in_dim "
                             f"{in_dim} must equal out_dim {out_dim} (give --hidden and "
                             f"--embedding-dim the same value)")
        self.dim = in_dim
        self.q = QuantSites(self.SITES)

    def forward(self, x: torch.Tensor, block: Block) -> torch.Tensor:
        q = self.q
        x = q("x", x, block)
        norm = lightgcn_norm(block, block.src_in_degree())
        out = propagate(x, block, reduce="sum", edge_weight=norm, q=q)
        return q("out", out, block)
