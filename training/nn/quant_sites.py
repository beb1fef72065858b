"""Named points in a layer where a tensor may be quantised: the seam Degree-Quant plugs into.

Every layer declares its sites and the role of each (what a row of the tensor is), then calls
``self.q(name, tensor, block)`` at each one. In FP32 this is the identity. Quantisation-aware
training swaps each layer's :class:`QuantSites` for a quantising subclass (see
``qgnn.training.quant``) that keeps one range tracker per site, so the learned scales and zero
points are data recorded per tensor name, and the exporter finds them by the same names.

Roles decide which rows Degree-Quant protection exempts:
- ``"src"``: one row per source node of the block (``block.protect``)
- ``"dst"``: one row per destination node (``block.protect_dst()``)
- ``"edge"``: one row per edge; protected when its source is (``block.protect_edges()``)
- ``"param"``: a parameter (weights, attention vectors); never protected
"""

from __future__ import annotations

from typing import Literal

import torch
from qgnn.training.nn.block import Block
from torch import nn

Role = Literal["src", "dst", "edge", "param"]
ROLES: tuple[Role, ...] = ("src", "dst", "edge", "param")

# Sites propagate() applies for every layer; layers add their own to these.
PROPAGATE_SITES: dict[str, Role] = {"edge_weight": "edge", "msg": "edge", "agg": "dst"}


class QuantSites(nn.Module):
    """Full precision: returns tensors unchanged, but knows the site names and roles."""

    def __init__(self, sites: dict[str, Role]) -> None:
        super().__init__()
        for name, role in sites.items():
            if role not in ROLES:
                raise ValueError(f"QuantSites: site {name!r} has role {role!r}, expected one of "
                                 f"{ROLES}")
        self.sites = dict(sites)

    def forward(self, name: str, tensor: torch.Tensor, block: Block | None = None) -> torch.Tensor:
        if name not in self.sites:
            raise KeyError(f"QuantSites: {name!r} is not a declared site ({sorted(self.sites)})")
        return tensor

    def gathers(self) -> bool:
        """Whether :meth:`gathered` may stand in for :meth:`forward` on per-edge tensors: only
        a seam whose quantisation is elementwise with one scale per tensor says yes; others
        (and this full-precision one, which never quantises messages) get every per-edge
        message built."""
        return False

    def protected(self, name: str, block: Block | None) -> torch.Tensor | None:
        """Rows of site ``name`` that bypass quantisation this pass; none in full precision."""
        return None

    def gathered(self, name: str, table: torch.Tensor, index: torch.Tensor,
                 block: Block | None = None) -> torch.Tensor:
        """Site ``name`` applied to ``table[index]`` without building it: returns the table
        whose rows at ``index`` are the result (the table itself in full precision)."""
        if name not in self.sites:
            raise KeyError(f"QuantSites: {name!r} is not a declared site ({sorted(self.sites)})")
        return table

    def extra_repr(self) -> str:
        return ", ".join(f"{k}:{v}" for k, v in self.sites.items())


def protection_rows(role: Role, block: Block | None) -> torch.Tensor | None:
    """The bool row mask of tensor rows that stay in full precision, for a site's role."""
    if block is None or block.protect is None or role == "param":
        return None
    if role == "src":
        return block.protect
    if role == "dst":
        return block.protect_dst()
    return block.protect_edges()
