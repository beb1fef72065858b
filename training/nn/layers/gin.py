"""GIN (Xu, Hu, Leskovec & Jegelka, ICLR 2019): an MLP over the node plus the sum of neighbours.

``out_v = MLP((1 + eps) · x_v + sum_{u -> v} x_u)`` with ``MLP = Linear -> BatchNorm? -> ReLU ->
Linear``: PyG ``GINConv(nn.Sequential(Linear, BatchNorm1d, ReLU, Linear), eps, train_eps)``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from qgnn.training.nn.block import Block
from qgnn.training.nn.propagate import check_src_rows, propagate
from qgnn.training.nn.quant_sites import PROPAGATE_SITES, QuantSites, Role
from torch import nn
from torch.nn import functional as F


class GINConv(nn.Module):
    SITES: ClassVar[dict[str, Role]] = {
        "x": "src", **PROPAGATE_SITES, "combined": "dst", "weight1": "param", "lin1": "dst",
        "hidden": "dst", "weight2": "param", "out": "dst"}

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, eps: float = 0.0,
                 train_eps: bool = False, batch_norm: bool = True) -> None:
        super().__init__()
        hidden_dim = out_dim if hidden_dim is None else hidden_dim
        self.lin1 = nn.Linear(in_dim, hidden_dim)
        self.norm = nn.BatchNorm1d(hidden_dim) if batch_norm else nn.Identity()
        self.lin2 = nn.Linear(hidden_dim, out_dim)
        if train_eps:
            self.eps = nn.Parameter(torch.tensor(float(eps)))
        else:
            self.register_buffer("eps", torch.tensor(float(eps)))
        self.q = QuantSites(self.SITES)

    def forward(self, x: torch.Tensor, block: Block) -> torch.Tensor:
        """``x``: (num_src, in_dim) -> (num_dst, out_dim). Edge weights scale messages."""
        check_src_rows("GINConv", x, block)
        q = self.q
        x = q("x", x, block)
        neigh = propagate(x, block, reduce="sum", edge_weight=block.edge_weight, q=q)
        h = q("combined", neigh + (1 + self.eps) * x[: block.num_dst], block)
        h = q("lin1", F.linear(h, q("weight1", self.lin1.weight), self.lin1.bias), block)
        h = q("hidden", torch.relu(self.norm(h)), block)
        return q("out", F.linear(h, q("weight2", self.lin2.weight), self.lin2.bias), block)
