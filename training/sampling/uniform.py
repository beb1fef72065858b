"""Node-wise uniform neighbour sampling (GraphSAGE, Hamilton et al., NeurIPS 2017): the baseline.

Every node of every hop draws up to ``fanout`` in-neighbours uniformly without replacement; the
draw itself is :func:`qgnn.graph.neighbourhood.khop_blocks` (vectorised, no per-node loop).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qgnn.graph.container import Adjacency
from qgnn.graph.neighbourhood import SampledBlock, khop_blocks
from qgnn.training.sampling.config import check_fanouts


class UniformSampler:
    """L blocks (input layer first) for a batch of distinct seeds; it holds no cache."""

    cache = None

    def __init__(self, csc: Adjacency, fanouts: Sequence[int]) -> None:
        self.csc = csc
        self.fanouts = check_fanouts(tuple(fanouts))

    @property
    def num_nodes(self) -> int:
        return int(self.csc.indptr.size - 1)

    def sample(self, seeds: np.ndarray, rng: np.random.Generator,
               scratch: np.ndarray) -> list[SampledBlock]:
        """``scratch``: a per-thread int64 work array of at least ``num_nodes`` entries."""
        return khop_blocks(self.csc, seeds, self.fanouts, seed=rng, scratch=scratch)
