"""GCN (Kipf & Welling, ICLR 2017): symmetric-normalised sum over in-neighbours and self."""

from __future__ import annotations

from typing import ClassVar

import torch
from qgnn.training.nn.block import Block
from qgnn.training.nn.propagate import propagate
from qgnn.training.nn.quant_sites import PROPAGATE_SITES, QuantSites, Role
from torch import nn


def gcn_source_scale(in_degree: torch.Tensor) -> torch.Tensor:
    """``(d_u + 1)^-1/2``: each node's factor in the symmetric normalisation. Owner-side
    aggregation (docs/partitioned.md) applies it to sources before summing them; a row with
    in-degree 0 then passes through with factor 1."""
    return (in_degree.to(torch.float32) + 1.0).rsqrt()


def gcn_norm(looped: Block, in_degree: torch.Tensor) -> torch.Tensor:
    """Per-edge ``(d_u + 1)^-1/2 (d_v + 1)^-1/2`` on a block that already has self-loops.

    ``in_degree`` is each source's in-degree without the loop: the full-graph degree where the
    block knows it, so a sampled block normalises exactly as the full graph does. Importance
    weights in ``edge_weight`` multiply in.
    """
    inv_sqrt = gcn_source_scale(in_degree)
    norm = inv_sqrt[looped.src] * inv_sqrt[looped.dst]
    if looped.edge_weight is not None:
        norm = norm * looped.edge_weight
    return norm


class GCNConv(nn.Module):
    SITES: ClassVar[dict[str, Role]] = {
        "x": "src", "weight": "param", "lin": "src", **PROPAGATE_SITES, "out": "dst",
    }

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None
        self.q = QuantSites(self.SITES)
        nn.init.xavier_uniform_(self.lin.weight)

    def forward(self, x: torch.Tensor, block: Block) -> torch.Tensor:
        q = self.q
        x = q("x", x, block)
        h = q("lin", x @ q("weight", self.lin.weight).t(), block)
        looped = block.with_self_loops()
        norm = gcn_norm(looped, block.src_in_degree())
        out = propagate(h, looped, reduce="sum", edge_weight=norm, q=q)
        if self.bias is not None:
            out = out + self.bias
        return q("out", out, block)
