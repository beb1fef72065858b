"""GAT (Veličković et al., ICLR 2018): multi-head attention over in-neighbours and the node itself.

Per head ``h``: ``e_uv = LeakyReLU(a_src · W x_u + a_dst · W x_v)``, ``alpha = softmax_u(e_uv)``
over the in-edges of ``v`` plus a self-loop, ``out_v = sum_u alpha_uv W x_u``; heads are
concatenated (hidden layers) or averaged (output layer). Matches PyG
``GATConv(in, head_dim, heads, concat, add_self_loops=True)``: weights ``lin``, ``att_src``,
``att_dst`` and ``bias`` copy over (PyG's ``att_*`` are ``(1, H, C)``, here ``(H, C)``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from qgnn.training.nn.block import Block
from qgnn.training.nn.propagate import check_src_rows, edge_softmax, propagate
from qgnn.training.nn.quant_sites import PROPAGATE_SITES, QuantSites, Role
from qgnn.training.nn.shards import edge_dropout
from torch import nn
from torch.nn import functional as F


def with_fresh_self_loops(block: Block) -> Block:
    """Drop stored self-loops and add exactly one per destination (as PyG GATConv does)."""
    keep = block.src != block.dst
    weight = None if block.edge_weight is None else block.edge_weight[keep]
    return block.replace(src=block.src[keep], dst=block.dst[keep],
                         edge_weight=weight).with_self_loops()


class GATConv(nn.Module):
    SITES: ClassVar[dict[str, Role]] = {
        "x": "src", "weight": "param", "lin": "src", "att_src": "param", "att_dst": "param",
        "logits": "edge", **PROPAGATE_SITES, "out": "dst"}

    def __init__(self, in_dim: int, head_dim: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, attn_dropout: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__()
        if heads < 1:
            raise ValueError(f"GATConv: heads must be >= 1, got {heads}")
        if not 0.0 <= attn_dropout < 1.0:
            raise ValueError(f"GATConv: attn_dropout must be in [0, 1), got {attn_dropout}")
        self.heads, self.head_dim, self.concat = heads, head_dim, concat
        self.negative_slope, self.attn_dropout = negative_slope, attn_dropout
        self.lin = nn.Linear(in_dim, heads * head_dim, bias=False)
        self.att_src = nn.Parameter(torch.empty(heads, head_dim))
        self.att_dst = nn.Parameter(torch.empty(heads, head_dim))
        self.bias = nn.Parameter(torch.zeros(self.out_dim)) if bias else None
        for w in (self.lin.weight, self.att_src, self.att_dst):
            nn.init.xavier_uniform_(w)
        self.q = QuantSites(self.SITES)

    @property
    def out_dim(self) -> int:
        return self.heads * self.head_dim if self.concat else self.head_dim

    def forward(self, x: torch.Tensor, block: Block) -> torch.Tensor:
        """``x``: (num_src, in_dim) -> (num_dst, out_dim).

        Given edge weights multiply the attention coefficients (PyG has no such input).
        """
        check_src_rows("GATConv", x, block)
        q, n_dst = self.q, block.num_dst
        x = q("x", x, block)
        h = q("lin", x @ q("weight", self.lin.weight).t(), block)
        h = h.reshape(-1, self.heads, self.head_dim)  # (num_src, H, C)
        score_src = (h * q("att_src", self.att_src)).sum(-1)  # (num_src, H)
        score_dst = (h[:n_dst] * q("att_dst", self.att_dst)).sum(-1)  # (num_dst, H)
        looped = with_fresh_self_loops(block)
        logits = F.leaky_relu(score_src[looped.src] + score_dst[looped.dst], self.negative_slope)
        alpha = edge_softmax(q("logits", logits, looped), looped.dst, n_dst)  # (E', H)
        if looped.edge_weight is not None:
            alpha = alpha * looped.edge_weight.unsqueeze(-1)
        # Quantised before dropout, so its range is the one inference sees.
        alpha = q("edge_weight", alpha, looped)
        alpha = edge_dropout(alpha, self.attn_dropout, self.training)
        out = propagate(h, looped, reduce="sum", message=lambda m, _: m * alpha.unsqueeze(-1),
                        q=q)  # (num_dst, H, C)
        out = out.flatten(1) if self.concat else out.mean(1)
        if self.bias is not None:
            out = out + self.bias
        return q("out", out, block)
