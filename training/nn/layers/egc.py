"""EGC (Tailor, Opolka, Liò & Lane, "Do We Need Anisotropic Graph Neural Networks?", ICLR 2022).

Every node holds ``B`` shared basis projections ``W_b x`` (each ``out_dim / H`` wide). Each
aggregator in ``A`` reduces them over in-neighbours plus a self-loop, and each node mixes the
``|A| · B`` results with its own weights ``w_v = W_c x_v + b_c``, separately for each of ``H``
heads:

    out_v = ||_{h=1..H} sum_{a in A} sum_{b=1..B} w_{v,h,a,b} · AGG^a_{u in N(v) ∪ {v}} W_b x_u

Only the ``B`` basis projections travel along edges, so memory is O(E · B · out/H) with no
per-edge ``out``-wide weight. Matches PyG ``EGConv(in, out, aggregators, num_heads=H,
num_bases=B, add_self_loops=True)`` with weights ``bases_lin``, ``comb_lin``, ``bias`` copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from qgnn.training.nn.block import Block
from qgnn.training.nn.layers.gcn import gcn_norm
from qgnn.training.nn.propagate import aggregate, check_src_rows, gather
from qgnn.training.nn.quant_sites import PROPAGATE_SITES, QuantSites, Role
from torch import nn
from torch.nn import functional as F

AGGREGATORS = ("symnorm", "sum", "mean", "max", "min", "var", "std")


def egc_aggregate(msg: torch.Tensor, block: Block, aggregator: str,
                  symnorm: torch.Tensor | None = None) -> torch.Tensor:
    """One EGC aggregator: messages ``(E, F)`` -> ``(num_dst, F)``, built on :func:`aggregate`.

    ``symnorm`` is the per-edge GCN coefficient (E,), needed only by the ``"symnorm"`` aggregator.
    ``std`` is ``sqrt(max(var, 1e-5))``, as in PyG.
    """
    dst, n = block.dst, block.num_dst
    if aggregator == "symnorm":
        if symnorm is None:
            raise ValueError("egc_aggregate: the 'symnorm' aggregator needs symnorm coefficients")
        return aggregate(msg * symnorm.unsqueeze(-1), dst, n, "sum")
    if aggregator in ("sum", "mean", "max"):
        return aggregate(msg, dst, n, aggregator)
    if aggregator == "min":
        return -aggregate(-msg, dst, n, "max")
    if aggregator in ("var", "std"):
        mean = aggregate(msg, dst, n, "mean")
        var = aggregate(msg * msg, dst, n, "mean") - mean * mean
        return var if aggregator == "var" else var.clamp(min=1e-5).sqrt()
    raise ValueError(f"egc_aggregate: aggregator must be one of {AGGREGATORS}, got {aggregator!r}")


class EGConv(nn.Module):
    SITES: ClassVar[dict[str, Role]] = {
        "x": "src", "bases_weight": "param", "bases": "src", "comb_weight": "param", "comb": "dst",
        **PROPAGATE_SITES, "out": "dst"}

    def __init__(self, in_dim: int, out_dim: int, aggregators: Sequence[str] = ("symnorm",),
                 heads: int = 8, bases: int = 4, bias: bool = True) -> None:
        super().__init__()
        aggregators = list(aggregators)
        bad = [a for a in aggregators if a not in AGGREGATORS]
        if not aggregators or bad or len(set(aggregators)) != len(aggregators):
            raise ValueError(f"EGConv: aggregators must be distinct names from {AGGREGATORS}, "
                             f"got {aggregators!r}")
        if heads < 1 or bases < 1:
            raise ValueError(f"EGConv: heads and bases must be >= 1, got heads={heads}, "
                             f"bases={bases}")
        if out_dim % heads:
            raise ValueError(f"EGConv: out_dim={out_dim} must be divisible by heads={heads}")
        self.aggregators, self.heads, self.bases = aggregators, heads, bases
        self.out_dim = out_dim
        self.bases_lin = nn.Linear(in_dim, bases * (out_dim // heads), bias=False)
        self.comb_lin = nn.Linear(in_dim, heads * len(aggregators) * bases)
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None
        nn.init.xavier_uniform_(self.bases_lin.weight)
        self.q = QuantSites(self.SITES)

    def forward(self, x: torch.Tensor, block: Block) -> torch.Tensor:
        """``x``: (num_src, in_dim) -> (num_dst, out_dim). Edge weights scale messages."""
        check_src_rows("EGConv", x, block)
        q, n_dst = self.q, block.num_dst
        x = q("x", x, block)
        basis = q("bases", x @ q("bases_weight", self.bases_lin.weight).t(), block)  # (S, B·F/H)
        comb = q("comb", F.linear(x[:n_dst], q("comb_weight", self.comb_lin.weight),
                                  self.comb_lin.bias), block)  # (num_dst, H·|A|·B)
        looped = block.with_self_loops()
        msg = gather(basis, looped.src)
        if looped.edge_weight is not None:
            msg = msg * looped.edge_weight.unsqueeze(-1)
        msg = q("msg", msg, looped)
        symnorm = None
        if "symnorm" in self.aggregators:
            coef = gcn_norm(looped.replace(edge_weight=None), block.src_in_degree())
            symnorm = q("edge_weight", coef, looped)
        agg = torch.stack([egc_aggregate(msg, looped, a, symnorm) for a in self.aggregators], 1)
        agg = q("agg", agg, block)  # (num_dst, |A|, B·F/H)
        k = len(self.aggregators) * self.bases
        out = comb.reshape(n_dst, self.heads, k) @ agg.reshape(n_dst, k, -1)  # (num_dst, H, F/H)
        out = out.reshape(n_dst, self.out_dim)
        if self.bias is not None:
            out = out + self.bias
        return q("out", out, block)
