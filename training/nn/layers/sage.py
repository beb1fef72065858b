"""GraphSAGE, mean aggregator (Hamilton, Ying & Leskovec, NeurIPS 2017).

``out_v = W_l · mean_{u -> v} x_u + b + W_r · x_v``: the layout of PyG
``SAGEConv(aggr="mean", root_weight=True)``, whose weights (``lin_l``, ``lin_r``) copy over 1:1.
Neighbours are averaged before the projection, as PyG does.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from qgnn.training.nn.block import Block
from qgnn.training.nn.propagate import check_src_rows, propagate
from qgnn.training.nn.quant_sites import PROPAGATE_SITES, QuantSites, Role
from torch import nn
from torch.nn import functional as F


class SAGEConv(nn.Module):
    SITES: ClassVar[dict[str, Role]] = {
        "x": "src", **PROPAGATE_SITES, "weight_l": "param", "lin_l": "dst", "weight_r": "param",
        "lin_r": "dst", "out": "dst"}

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.lin_l = nn.Linear(in_dim, out_dim, bias=bias)  # neighbours (carries the bias)
        self.lin_r = nn.Linear(in_dim, out_dim, bias=False)  # the node itself
        self.q = QuantSites(self.SITES)

    def forward(self, x: torch.Tensor, block: Block) -> torch.Tensor:
        """``x``: (num_src, in_dim) -> (num_dst, out_dim). Edge weights scale messages."""
        check_src_rows("SAGEConv", x, block)
        q = self.q
        x = q("x", x, block)
        neigh = propagate(x, block, reduce="mean", edge_weight=block.edge_weight, q=q)
        neigh = q("lin_l", F.linear(neigh, q("weight_l", self.lin_l.weight), self.lin_l.bias),
                  block)
        root = q("lin_r", F.linear(x[: block.num_dst], q("weight_r", self.lin_r.weight)), block)
        return q("out", neigh + root, block)
