"""The distributed bench's graph: every rank draws only its own in-edges, and the shares of W
ranks are exactly the single rank's graph, split into about equal edge counts."""

from __future__ import annotations

import itertools

import numpy as np
from qgnn.bench.bench_distributed import in_degrees, local_edges, node_range


def test_shares_of_any_world_size_reassemble_the_one_rank_graph():
    degree = in_degrees(5000, 12.0, seed=3)
    whole = local_edges(degree, *node_range(degree, 0, 1), seed=3)
    assert whole[0].size == degree.sum()
    np.testing.assert_array_equal(np.bincount(whole[1], minlength=degree.size), degree)
    for world in (2, 3, 4):
        ranges = [node_range(degree, r, world) for r in range(world)]
        assert ranges[0][0] == 0 and ranges[-1][1] == degree.size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        parts = [local_edges(degree, first, last, seed=3) for first, last in ranges]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole[0])
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole[1])
        sizes = [p[0].size for p in parts]
        assert max(sizes) - min(sizes) <= 2 * degree.max()  # about E / W each
