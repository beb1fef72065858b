"""The GNS cache: inclusion probabilities, the Poisson draw, the cache-restricted CSR and the
probability that the cache misses a whole neighbourhood, each against a direct oracle."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.graph.container import Graph
from qgnn.graph.synth import powerlaw_communities
from qgnn.training.sampling import cache as cache_mod
from qgnn.training.sampling.cache import (
    build_cache,
    draw_cache,
    inclusion_probabilities,
    miss_probability,
    restrict_to_cache,
    segment_sum,
)


def test_inclusion_probabilities_hand_case_caps_the_hub_and_rescales_the_rest():
    # lam = 2/12 would give the degree-8 node 1.33; capped at 1, the rest share 1 over degree 4
    pi = inclusion_probabilities(np.array([1, 1, 2, 8, 0]), 2)
    np.testing.assert_allclose(pi, [0.25, 0.25, 0.5, 1.0, 0.0])


def test_inclusion_probabilities_sum_to_target_and_are_proportional_below_the_cap():
    deg = powerlaw_communities(2000, avg_degree=8, num_features=1, seed=0).out_degree()
    pi = inclusion_probabilities(deg, 40)
    assert pi.sum() == pytest.approx(40)
    assert pi.max() <= 1.0 and (pi[deg == 0] == 0).all()
    free = (pi < 1) & (deg > 0)
    ratio = pi[free] / deg[free]
    np.testing.assert_allclose(ratio, ratio[0])
    assert (deg[pi == 1] >= deg[free].max()).all()


def test_inclusion_probabilities_take_every_positive_node_when_the_target_is_large():
    np.testing.assert_array_equal(inclusion_probabilities(np.array([3, 0, 1]), 5), [1, 0, 1])


@pytest.mark.parametrize("bad", [0, -1.0])
def test_inclusion_probabilities_refuse_a_non_positive_size(bad):
    with pytest.raises(ValueError, match="expected_size"):
        inclusion_probabilities(np.array([1, 2]), bad)


def test_draw_cache_keeps_each_node_with_its_probability(monkeypatch):
    monkeypatch.setattr(cache_mod, "DRAW_CHUNK", 7)  # several chunks, one partial
    pi = np.array([0.0, 0.1, 0.5, 0.9, 1.0, 0.3, 0.05, 0.7, 0.2, 0.6, 0.4])
    rng = np.random.default_rng(0)
    draws = 4000
    counts = np.zeros(pi.size)
    for _ in range(draws):
        ids = draw_cache(pi, rng)
        assert (np.diff(ids) > 0).all()
        counts[ids] += 1
    sd = np.sqrt(pi * (1 - pi) / draws)
    assert (np.abs(counts / draws - pi) <= 5 * sd + 1e-12).all()


def _random_graph(n: int = 60, m: int = 400, seed: int = 1) -> Graph:
    rng = np.random.default_rng(seed)
    return Graph.from_edges(rng.integers(0, n, m), rng.integers(0, n, m), n)


def test_restrict_to_cache_matches_per_node_filtering():
    g = _random_graph()
    csc = g.csc
    in_cache = np.random.default_rng(2).random(g.num_nodes) < 0.3
    sub = restrict_to_cache(csc, in_cache)
    for v in range(g.num_nodes):
        lo, hi = csc.indptr[v], csc.indptr[v + 1]
        keep = in_cache[csc.indices[lo:hi]]
        np.testing.assert_array_equal(sub.indices[sub.indptr[v]:sub.indptr[v + 1]],
                                      csc.indices[lo:hi][keep])
        np.testing.assert_array_equal(sub.edge_ids[sub.indptr[v]:sub.indptr[v + 1]],
                                      csc.edge_ids[lo:hi][keep])


@pytest.mark.parametrize("chunk", [3, 1 << 23])
def test_segment_sum_and_miss_probability_match_loops(monkeypatch, chunk):
    monkeypatch.setattr(cache_mod, "SEGMENT_CHUNK", chunk)
    g = _random_graph()
    csc = g.csc
    pi = np.random.default_rng(3).random(g.num_nodes) * 0.6
    pi[[4, 9]] = 1.0  # certain members: any neighbourhood holding them is never missed
    values = np.random.default_rng(4).standard_normal(g.num_nodes)
    sums = segment_sum(csc.indptr, csc.indices, values)
    once = segment_sum(csc.indptr, csc.indices, values, distinct=True)
    q = miss_probability(csc, pi)
    repeated = 0
    for v in range(g.num_nodes):
        nbrs = csc.indices[csc.indptr[v]:csc.indptr[v + 1]]
        repeated += nbrs.size - np.unique(nbrs).size
        assert sums[v] == pytest.approx(values[nbrs].sum(), abs=1e-12)
        assert once[v] == pytest.approx(values[np.unique(nbrs)].sum(), abs=1e-12)
        # a source with several edges into v is one cache event, counted once
        assert q[v] == pytest.approx(np.prod(1 - pi[np.unique(nbrs)]), abs=1e-12)
    assert repeated > 0  # the random multigraph does exercise repeated sources


def test_build_cache_slots_point_back_to_cached_ids():
    g = _random_graph()
    ids = np.array([2, 5, 11, 40])
    c = build_cache(g.csc, ids)
    assert c.size == 4
    np.testing.assert_array_equal(c.slot[ids], np.arange(4))
    assert (np.delete(c.slot, ids) == -1).all()
    assert np.isin(c.adjacency.indices, ids).all()
