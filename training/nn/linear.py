"""A ``nn.Linear`` with quantisation sites, for the parts of a stack outside the convolutions.

The input projection and the output head are dense layers like the ones inside each convolution;
declaring their sites lets Degree-Quant train them in INT8 and the exporter emit them as integer
matmuls, so a small model is not dominated by float weights (parameter names stay those of
``nn.Linear``: ``weight``, ``bias``).
"""

from __future__ import annotations

import torch
from qgnn.training.nn.block import Block
from qgnn.training.nn.quant_sites import QuantSites, Role
from torch import nn
from torch.nn import functional as F


class QLinear(nn.Linear):
    """``x @ W.T + b`` with sites ``x``, ``weight`` and ``out``; ``role`` says what a row is
    (``"src"`` for the layer-0 sources an input projection reads, ``"dst"`` for the destinations
    an output head scores), so Degree-Quant protects the right rows."""

    def __init__(self, in_dim: int, out_dim: int, role: Role) -> None:
        super().__init__(in_dim, out_dim)
        self.q = QuantSites({"x": role, "weight": "param", "out": role})

    def forward(self, x: torch.Tensor, block: Block | None = None) -> torch.Tensor:
        q = self.q
        return q("out", F.linear(q("x", x, block), q("weight", self.weight), self.bias), block)
