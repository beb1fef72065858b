"""Degree-Quant's stochastic protection (Tailor, Fernandez-Marques & Lane, ICLR 2021, Sec. 4).

High in-degree nodes aggregate many messages, so their quantisation error and their gradient
error are the largest. In each training forward pass every node is protected (runs in full
precision) with probability ``p = p_min + (p_max - p_min) * CDF(in_degree)``, the CDF taken
over the full graph's in-degree distribution. Nothing is protected in eval mode.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from qgnn.graph.container import Graph
from qgnn.training.nn.block import Block
from qgnn.training.quant.options import MASK_MODES, MaskMode


def check_probabilities(p_min: float, p_max: float) -> None:
    for name, value in (("p_min", p_min), ("p_max", p_max)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")
    if p_min > p_max:
        raise ValueError(f"p_min: must not exceed p_max ({p_max!r}), got {p_min!r}")


def degree_cdf(in_degree: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``cdf[d]`` = fraction of nodes with in-degree ``<= d``, for ``d = 0 .. max degree``."""
    deg = torch.as_tensor(np.asarray(in_degree) if not isinstance(in_degree, torch.Tensor)
                          else in_degree)
    if deg.dim() != 1 or deg.numel() == 0:
        raise ValueError(f"in_degree: expected a non-empty 1-D array, got shape "
                         f"{tuple(deg.shape)}")
    if deg.dtype.is_floating_point or deg.dtype == torch.bool:
        raise ValueError(f"in_degree: expected integer degrees, got dtype {deg.dtype}")
    deg = deg.to(torch.int64)
    if int(deg.min()) < 0:
        raise ValueError(f"in_degree: degrees must be >= 0, got {int(deg.min())}")
    counts = torch.bincount(deg)
    return torch.cumsum(counts, 0).to(torch.float64) / deg.numel()


def protection_probabilities(in_degree: torch.Tensor, cdf: torch.Tensor, p_min: float,
                             p_max: float) -> torch.Tensor:
    """Per-node protection probability ``(R,)`` float32 for nodes of the given in-degrees.

    Degrees above the table's maximum (a node of a different graph) count as the top of the CDF.
    """
    check_probabilities(p_min, p_max)
    table = (p_min + (p_max - p_min) * cdf).to(torch.float32).to(in_degree.device)
    return table[in_degree.to(torch.int64).clamp(0, table.numel() - 1)]


class DegreeProtection:
    """Draws Degree-Quant protection masks and attaches them to blocks.

    ``graph_in_degree`` is the full graph's in-degree (or the graph): its distribution defines
    the CDF, so sampled minibatches use the same probabilities as full-graph training. With
    ``mask="per-layer"`` each layer draws its own mask; ``"shared"`` draws once per forward pass
    for all layers (the paper's Algorithm 1; the authors' code notes per-layer masks were used
    for most experiments and differences were small).
    """

    def __init__(self, graph_in_degree: Graph | np.ndarray | torch.Tensor, p_min: float,
                 p_max: float, mask: MaskMode = "per-layer") -> None:
        check_probabilities(p_min, p_max)
        if mask not in MASK_MODES:
            raise ValueError(f"mask: expected one of {MASK_MODES}, got {mask!r}")
        if isinstance(graph_in_degree, Graph):
            graph_in_degree = graph_in_degree.in_degree()
        self.cdf = degree_cdf(graph_in_degree)
        self.p_min, self.p_max, self.mask = p_min, p_max, mask

    def probabilities(self, in_degree: torch.Tensor) -> torch.Tensor:
        return protection_probabilities(in_degree, self.cdf, self.p_min, self.p_max)

    def draw(self, block: Block, generator: torch.Generator | None) -> torch.Tensor:
        """One Bernoulli draw ``(num_src,)`` bool over the block's sources."""
        probs = self.probabilities(block.src_in_degree())
        return torch.bernoulli(probs, generator=generator).to(torch.bool)

    def annotate_blocks(self, block_or_blocks: Block | Sequence[Block], num_layers: int,
                        generator: torch.Generator | None = None,
                        training: bool = True) -> list[Block]:
        """Per-layer blocks with ``protect`` set (training) or cleared (eval).

        One block (full-graph training) is used by every layer. Per-layer sampled blocks must
        chain: layer ``l + 1``'s sources are layer ``l``'s destinations (the first ``num_dst``
        sources), which is what lets a shared mask be drawn once and sliced.
        """
        blocks = _per_layer(block_or_blocks, num_layers)
        if not training:
            return [b if b.protect is None else b.replace(protect=None) for b in blocks]
        if self.mask == "per-layer":
            return [b.replace(protect=self.draw(b, generator)) for b in blocks]
        if isinstance(block_or_blocks, Block):
            protected = block_or_blocks.replace(protect=self.draw(block_or_blocks, generator))
            return [protected] * num_layers
        mask = self.draw(blocks[0], generator)
        return [b.replace(protect=mask[: b.num_src]) for b in blocks]


def _per_layer(block_or_blocks: Block | Sequence[Block], num_layers: int) -> list[Block]:
    if num_layers < 1:
        raise ValueError(f"num_layers: expected >= 1, got {num_layers!r}")
    if isinstance(block_or_blocks, Block):
        return [block_or_blocks] * num_layers
    blocks = list(block_or_blocks)
    if len(blocks) != num_layers:
        raise ValueError(f"annotate_blocks: {num_layers} layers need as many blocks, got "
                         f"{len(blocks)}")
    for i, (prev, nxt) in enumerate(itertools.pairwise(blocks)):
        if nxt.num_src != prev.num_dst:
            raise ValueError(f"annotate_blocks: block {i + 1} has {nxt.num_src} sources but "
                             f"block {i} has {prev.num_dst} destinations")
    return blocks
