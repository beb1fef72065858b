"""GNS: the input-layer estimator is unbiased for the full sum and mean (statistically, over
cache draws and neighbour draws), and the sampled blocks have the structure the models need."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.graph.synth import powerlaw_communities
from qgnn.training.nn.propagate import aggregate
from qgnn.training.sampling.blocks import to_block
from qgnn.training.sampling.gns import GNSSampler, relabel

DRAWS = 2000
Z = 5.0  # per-cell bound; 2 x 240 cells, Bonferroni at 5 sigma keeps a false alarm below 1e-3


def _with_features(g: Graph):
    x = np.random.default_rng(0).standard_normal((g.num_nodes, 2))
    csc = g.csc
    dst = np.repeat(np.arange(g.num_nodes), np.diff(csc.indptr))
    exact_sum = np.zeros_like(x)
    np.add.at(exact_sum, dst, x[csc.indices])
    deg = np.diff(csc.indptr)
    exact_mean = exact_sum / np.maximum(deg, 1)[:, None]
    return g, x, exact_sum, exact_mean


@pytest.fixture(scope="module")
def small():
    return _with_features(powerlaw_communities(120, avg_degree=6, num_features=2, seed=3,
                                               power=2.1))


@pytest.fixture(scope="module")
def multigraph():
    """Repeated edges and self-loops: a source with two edges into v is one cache event."""
    rng = np.random.default_rng(11)
    src = np.concatenate([rng.integers(0, 50, 300), np.repeat([3, 7], 60)])
    dst = np.concatenate([rng.integers(0, 50, 300), rng.integers(0, 10, 120)])
    src = np.concatenate([src, src[:30], np.arange(5)])
    dst = np.concatenate([dst, dst[:30], np.arange(5)])
    return _with_features(Graph.from_edges(src, dst, 50))


def _estimates(g, x, sampler, draws, seed, *, fixed_cache=False):
    """Per draw: a fresh cache (or the one drawn first, ``fixed_cache``), then the input layer
    for every node; returns the sum-form and mean-form aggregations, each (draws, N, F)."""
    n = g.num_nodes
    rng = np.random.default_rng(seed)
    scratch = np.empty(n, np.int64)
    in_deg = g.csc.degree()
    seeds = np.arange(n)
    sums, means = [], []
    xt = torch.from_numpy(x)
    for draw in range(draws):
        if draw == 0 or not fixed_cache:
            sampler.refresh(rng)
        sb = sampler.sample(seeds, rng, scratch)[0]
        msg = x[sb.node_ids[sb.src]] * sb.edge_weight[:, None]
        est = np.zeros_like(x)
        np.add.at(est, sb.dst, msg)
        sums.append(est)
        block = to_block(sb, in_deg, "mean")
        m = xt[block.src_ids[block.src]] * block.edge_weight.double()[:, None]
        means.append(aggregate(m, block.dst, block.num_dst, "mean").numpy())
    return np.stack(sums), np.stack(means)


def _z_scores(samples, exact):
    mean = samples.mean(0)
    sd = samples.std(0, ddof=1)
    se = sd / np.sqrt(samples.shape[0])
    deterministic = se < 1e-12
    assert np.allclose(mean[deterministic], exact[deterministic])
    return (mean[~deterministic] - exact[~deterministic]) / se[~deterministic]


@pytest.mark.parametrize("which", ["small", "multigraph"])
def test_gns_input_layer_is_unbiased_for_sum_and_mean(which, request):
    g, x, exact_sum, exact_mean = request.getfixturevalue(which)
    sampler = GNSSampler(g.csc, [3], 0.2, g.out_degree())
    # the graphs exercise every branch: capped hubs, cache subsampling, and the fallback
    assert (sampler.inclusion == 1).any() and (sampler.miss > 0.3).any()
    sums, means = _estimates(g, x, sampler, DRAWS, seed=1)
    for samples, exact in ((sums, exact_sum), (means, exact_mean)):
        z = _z_scores(samples, exact)
        assert np.abs(z).max() < Z
        assert 0.7 < np.mean(z**2) < 1.4  # no systematic shift hiding below the per-cell bound


def test_dropping_the_miss_probability_factor_is_detected_as_bias(small):
    """Negative control: the same test fails for the estimator without the (1 - q_v) factor,
    so the bound above has the power to see a wrong weight."""
    g, x, exact_sum, _ = small
    sampler = GNSSampler(g.csc, [3], 0.2, g.out_degree())
    sampler.miss = np.zeros_like(sampler.miss)
    sums, _ = _estimates(g, x, sampler, 400, seed=2)
    assert np.abs(_z_scores(sums, exact_sum)).max() > 2 * Z


def test_normalized_estimator_rescales_cache_draws_to_the_full_degree(small):
    g, x, _, _ = small
    sampler = GNSSampler(g.csc, [3], 0.2, g.out_degree(), estimator="normalized")
    sampler.refresh(np.random.default_rng(3))
    sb = sampler.sample(np.arange(g.num_nodes), np.random.default_rng(4),
                        np.empty(g.num_nodes, np.int64))[0]
    deg = np.diff(g.csc.indptr)
    total = np.bincount(sb.dst, weights=sb.edge_weight, minlength=sb.num_dst)
    has = np.bincount(sb.dst, minlength=sb.num_dst) > 0
    np.testing.assert_allclose(total[has], deg[has], rtol=1e-5)
    # mean form: a convex combination of the sampled neighbours' features
    block = to_block(sb, g.csc.degree(), "mean")
    m = torch.from_numpy(x)[block.src_ids[block.src]] * block.edge_weight.double()[:, None]
    est = aggregate(m, block.dst, block.num_dst, "mean").numpy()
    vals = x[sb.node_ids[sb.src]]
    lo = np.full_like(x, np.inf)
    hi = np.full_like(x, -np.inf)
    np.minimum.at(lo, sb.dst, vals)
    np.maximum.at(hi, sb.dst, vals)
    assert (est[has] >= lo[has] - 1e-9).all() and (est[has] <= hi[has] + 1e-9).all()
    with pytest.raises(ValueError, match="estimator"):
        GNSSampler(g.csc, [3], 0.2, g.out_degree(), estimator="ratio")


@pytest.mark.parametrize("which", ["small", "multigraph"])
def test_stratified_estimator_is_unbiased_given_any_one_cache(which, request):
    """Stratified: cached and non-cached in-edges are each estimated from their own uniform
    draw, so the estimate is unbiased conditional on the cache, with no 1/pi weights; the
    Horvitz-Thompson estimator is only unbiased on average over caches (negative control)."""
    g, x, exact_sum, exact_mean = request.getfixturevalue(which)
    sampler = GNSSampler(g.csc, [3], 0.2, g.out_degree(), estimator="stratified",
                         uncached_fanout=2)
    sums, means = _estimates(g, x, sampler, DRAWS, seed=12, fixed_cache=True)
    for samples, exact in ((sums, exact_sum), (means, exact_mean)):
        z = _z_scores(samples, exact)
        assert np.abs(z).max() < Z
        assert 0.7 < np.mean(z**2) < 1.4
    horvitz = GNSSampler(g.csc, [3], 0.2, g.out_degree())
    sums, _ = _estimates(g, x, horvitz, 400, seed=12, fixed_cache=True)
    se = sums.std(0, ddof=1) / np.sqrt(sums.shape[0])
    assert (np.abs(sums.mean(0) - exact_sum) > 2 * Z * se + 1e-9).any()


def test_stratified_draws_cached_then_a_few_non_cached_in_edges(small):
    g, _, _, _ = small
    csc = g.csc
    sampler = GNSSampler(csc, [3], 0.2, g.out_degree(), estimator="stratified",
                         uncached_fanout=2)
    cache = sampler.refresh(np.random.default_rng(5))
    seeds = np.arange(g.num_nodes)
    sb = sampler.sample(seeds, np.random.default_rng(6), np.empty(g.num_nodes, np.int64))[0]
    assert (np.diff(sb.dst) >= 0).all()
    src_glob = sb.node_ids[sb.src]
    cached_src = cache.slot[src_glob] >= 0
    cached_deg = np.diff(cache.adjacency.indptr)
    full_deg = np.diff(csc.indptr)
    from_cache = cached_deg > 0
    n_cached = np.bincount(sb.dst[cached_src], minlength=sb.num_dst)
    n_other = np.bincount(sb.dst[~cached_src], minlength=sb.num_dst)
    np.testing.assert_array_equal(n_cached[from_cache], np.minimum(cached_deg, 3)[from_cache])
    assert (n_other[from_cache] <= 2).all() and n_other[from_cache].sum() > 0
    np.testing.assert_array_equal(n_other[~from_cache], np.minimum(full_deg, 3)[~from_cache])
    on_cache_row = from_cache[sb.dst]
    np.testing.assert_allclose(sb.edge_weight[cached_src & on_cache_row],
                               (cached_deg / np.maximum(n_cached, 1))[sb.dst][
                                   cached_src & on_cache_row], rtol=1e-6)
    other = ~cached_src & on_cache_row  # non-cached draws: d_v / (draws made, kept or not)
    np.testing.assert_allclose(sb.edge_weight[other],
                               (full_deg / np.minimum(full_deg, 2))[sb.dst][other], rtol=1e-6)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="uncached_fanout"):
            GNSSampler(csc, [3], 0.2, g.out_degree(), estimator="stratified",
                       uncached_fanout=bad)


def test_input_layer_structure(small):
    g, _, _, _ = small
    csc = g.csc
    sampler = GNSSampler(csc, [4, 3], 0.1, g.out_degree())
    cache = sampler.refresh(np.random.default_rng(5))
    seeds = np.array([7, 3, 50, 11])
    first, last = sampler.sample(seeds, np.random.default_rng(6), np.empty(g.num_nodes, np.int64))
    np.testing.assert_array_equal(last.node_ids[:last.num_dst], seeds)
    np.testing.assert_array_equal(first.node_ids[:first.num_dst], last.node_ids)
    assert np.unique(first.node_ids).size == first.num_src
    assert (np.diff(first.dst) >= 0).all()
    dst_glob, src_glob = first.node_ids[first.dst], first.node_ids[first.src]
    # every sampled edge is a real edge u -> v, and its id names it in CSR order
    src_of_edge = np.repeat(np.arange(g.num_nodes), np.diff(g.indptr))
    np.testing.assert_array_equal(g.indices[first.edge_ids], dst_glob)
    np.testing.assert_array_equal(src_of_edge[first.edge_ids], src_glob)
    cached_deg = np.diff(cache.adjacency.indptr)[last.node_ids]
    full_deg = np.diff(csc.indptr)[last.node_ids]
    drawn = np.bincount(first.dst, minlength=first.num_dst)
    from_cache = cached_deg > 0
    # nodes with a cached in-neighbour draw only cached ones, at most the fanout, distinct
    assert (cache.slot[src_glob[from_cache[first.dst]]] >= 0).all()
    np.testing.assert_array_equal(drawn[from_cache], np.minimum(cached_deg, 3)[from_cache])
    np.testing.assert_array_equal(drawn[~from_cache], np.minimum(full_deg, 3)[~from_cache])
    pairs = first.dst * g.num_nodes + first.src
    assert np.unique(pairs).size == pairs.size
    w_fallback = first.edge_weight[~from_cache[first.dst]]
    np.testing.assert_allclose(w_fallback, (full_deg / np.maximum(drawn, 1))[first.dst][
        ~from_cache[first.dst]], rtol=1e-6)


def test_all_layers_mode_draws_every_hop_from_the_cache(small):
    g, _, _, _ = small
    csc = g.csc
    sampler = GNSSampler(csc, [4, 3], 0.1, g.out_degree(), layers="all")
    cache = sampler.refresh(np.random.default_rng(5))
    seeds = np.array([7, 3, 50, 11])
    first, last = sampler.sample(seeds, np.random.default_rng(6), np.empty(g.num_nodes, np.int64))
    np.testing.assert_array_equal(last.node_ids[:last.num_dst], seeds)
    np.testing.assert_array_equal(first.node_ids[:first.num_dst], last.node_ids)
    src_of_edge = np.repeat(np.arange(g.num_nodes), np.diff(g.indptr))
    for block, fanout in ((last, 4), (first, 3)):
        dst_glob, src_glob = block.node_ids[block.dst], block.node_ids[block.src]
        np.testing.assert_array_equal(g.indices[block.edge_ids], dst_glob)
        np.testing.assert_array_equal(src_of_edge[block.edge_ids], src_glob)
        dst_nodes = block.node_ids[:block.num_dst]
        cached_deg = np.diff(cache.adjacency.indptr)[dst_nodes]
        from_cache = cached_deg > 0
        assert (cache.slot[src_glob[from_cache[block.dst]]] >= 0).all()
        drawn = np.bincount(block.dst, minlength=block.num_dst)
        np.testing.assert_array_equal(drawn[from_cache],
                                      np.minimum(cached_deg, fanout)[from_cache])
    with pytest.raises(ValueError, match="layers"):
        GNSSampler(csc, [3], 0.1, g.out_degree(), layers="some")


def test_all_layers_mode_is_unbiased_at_the_upper_hop_too(small):
    """A one-layer sampler in ``all`` mode is the input-layer sampler; at two hops the upper
    block's weighted sum over exact inputs is unbiased in the same way."""
    g, x, exact_sum, _ = small
    sampler = GNSSampler(g.csc, [3, 3], 0.2, g.out_degree(), layers="all")
    nodes = np.arange(g.num_nodes)
    rng = np.random.default_rng(8)
    scratch = np.empty(g.num_nodes, np.int64)
    sums = []
    for _ in range(DRAWS):
        sampler.refresh(rng)
        upper = sampler.sample(nodes, rng, scratch)[1]
        est = np.zeros_like(x)
        np.add.at(est, upper.dst, x[upper.node_ids[upper.src]] * upper.edge_weight[:, None])
        sums.append(est)
    z = _z_scores(np.stack(sums), exact_sum)
    assert np.abs(z).max() < Z


def test_sample_needs_a_cache_and_distinct_seeds(small):
    g = small[0]
    sampler = GNSSampler(g.csc, [3], 0.1, g.out_degree())
    scratch = np.empty(g.num_nodes, np.int64)
    with pytest.raises(RuntimeError, match="refresh"):
        sampler.sample(np.array([1, 2]), np.random.default_rng(0), scratch)
    sampler.refresh(np.random.default_rng(0))
    with pytest.raises(ValueError, match="distinct"):
        sampler.sample(np.array([1, 1]), np.random.default_rng(0), scratch)


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_cache_fraction_out_of_range_is_refused(small, fraction):
    g = small[0]
    with pytest.raises(ValueError, match="cache_fraction"):
        GNSSampler(g.csc, [3], fraction, g.out_degree())


def test_relabel_puts_destinations_first_and_maps_back():
    scratch = np.full(20, 123456, np.int64)
    dst = np.array([9, 4, 15])
    nbr = np.array([4, 7, 15, 2, 7, 9, 2, 7])
    ids, src = relabel(dst, nbr, scratch)
    np.testing.assert_array_equal(ids, [9, 4, 15, 2, 7])  # new ids by last appearance
    np.testing.assert_array_equal(ids[src], nbr)
    ids, src = relabel(np.zeros(0, np.int64), np.array([5, 5, 3]), scratch)
    np.testing.assert_array_equal(ids[src], [5, 5, 3])
    assert sorted(ids) == [3, 5]
