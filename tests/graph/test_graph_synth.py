"""Synthetic generators: structure, statistics the models rely on, determinism, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from qgnn.graph.synth import bipartite_recommender, powerlaw_communities
from scipy import sparse, stats


@pytest.fixture(scope="module")
def community_graph():
    return powerlaw_communities(20_000, num_features=32, seed=0)


def _hill_exponent(degrees: np.ndarray, k: int) -> float:
    """Hill estimator of the tail exponent of P(degree = d) ~ d^-power from the top k degrees."""
    d = np.sort(degrees)[::-1].astype(np.float64)
    return 1.0 + k / float(np.log(d[:k] / d[k]).sum())


def _nearest_centroid_accuracy(g, x: np.ndarray) -> float:
    centroids = np.stack([x[g.train_mask & (g.y == c)].mean(0) for c in range(g.num_classes)])
    dist = ((x[g.test_mask, None, :] - centroids[None]) ** 2).sum(-1)
    return float((dist.argmin(1) == g.y[g.test_mask]).mean())


def test_powerlaw_graph_is_simple_undirected_with_exact_edge_count(community_graph):
    g = community_graph
    src, dst = g.edge_index()
    assert g.num_nodes == 20_000 and g.num_edges == 200_000  # 2 * round(N * avg_degree / 2)
    assert g.meta["num_pairs"] == g.meta["num_pairs_target"] == 100_000
    assert g.is_symmetric()
    assert not (src == dst).any()
    key = src * g.num_nodes + dst
    assert (np.diff(key) > 0).all()  # sorted CSR without repeated (src, dst)
    assert g.indices.dtype == np.int64 and g.indptr.dtype == np.int64
    assert g.x.dtype == np.float32 and g.x.shape == (20_000, 32)


def test_powerlaw_labels_are_balanced_communities_with_requested_homophily(community_graph):
    g = community_graph
    assert np.bincount(g.y).tolist() == [2500] * 8
    src, dst = g.edge_index()
    same = float((g.y[src] == g.y[dst]).mean())
    # 0.8 by construction; repeated pairs (removed, then redrawn) are more often intra-community,
    # which lowers it by about 1%; the binomial noise on 1e5 pairs is 0.0013.
    assert 0.77 < same <= 0.805
    low = powerlaw_communities(20_000, num_features=1, homophily=0.1, seed=0)
    s, d = low.edge_index()
    assert abs(float((low.y[s] == low.y[d]).mean()) - 0.1) < 0.01


def test_powerlaw_endpoints_are_independent_given_communities(community_graph):
    # Node ids are random with respect to activity and community, so under the model the two
    # endpoint ids of an edge are uncorrelated (sd of Spearman's rho over 1e5 pairs: ~0.003);
    # pairing sorted draws without the shuffle makes it ~0.9.
    g = community_graph
    src, dst = g.edge_index()
    assert abs(stats.spearmanr(src, dst)[0]) < 0.03


@pytest.mark.parametrize("power", [2.5, 3.0])
def test_powerlaw_degree_tail_follows_power(power):
    g = powerlaw_communities(50_000, num_features=1, power=power, seed=1)
    # Hill standard error (power - 1) / sqrt(500) <= 0.09; 0.25 leaves room for the cutoff bias.
    assert abs(_hill_exponent(g.out_degree(), 500) - power) < 0.25
    assert g.out_degree().max() > 20 * g.out_degree().mean()


def test_powerlaw_features_carry_labels_and_aggregation_helps(community_graph):
    g = community_graph
    adj = sparse.csr_matrix((np.ones(g.num_edges), g.indices, g.indptr))  # symmetric graph
    agg = (adj @ g.x + g.x) / (g.out_degree() + 1)[:, None]  # mean over the node and neighbours
    own, mean_of_neighbours = (_nearest_centroid_accuracy(g, x) for x in (g.x, agg))
    assert 0.2 < own < 0.6  # informative (chance is 1/8) but noisy ...
    assert mean_of_neighbours > own + 0.2  # ... so message passing pays off


def test_powerlaw_feature_centroids_are_unit_vectors_per_community():
    g = powerlaw_communities(4_000, num_features=16, feature_noise=0.0, seed=3)
    centroids = np.stack([g.x[g.y == c][0] for c in range(8)])
    for c in range(8):
        assert np.array_equal(g.x[g.y == c], np.broadcast_to(centroids[c], (500, 16)))
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-6)


def test_powerlaw_masks_partition_nodes_by_fraction(community_graph):
    g = community_graph
    masks = np.stack([g.train_mask, g.val_mask, g.test_mask])
    assert (masks.sum(0) == 1).all()
    assert masks.sum(1).tolist() == [12_000, 4_000, 4_000]


def test_powerlaw_is_deterministic_and_structure_ignores_features():
    a = powerlaw_communities(3_000, num_features=8, seed=7)
    b = powerlaw_communities(3_000, num_features=8, seed=7)
    c = powerlaw_communities(3_000, num_features=4, feature_noise=2.0, seed=7)
    d = powerlaw_communities(3_000, num_features=8, seed=8)
    for name in ("indptr", "indices", "x", "y", "train_mask", "test_mask"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert np.array_equal(a.indices, c.indices) and np.array_equal(a.y, c.y)
    assert not np.array_equal(a.indices, d.indices)


def test_powerlaw_small_chunks_and_topup_keep_graph_valid():
    # Tiny chunks and a dense graph exercise the multi-chunk fill and the redraw rounds.
    g = powerlaw_communities(300, avg_degree=40.0, num_communities=3, num_features=2,
                             homophily=0.9, chunk_size=257, seed=2)
    src, dst = g.edge_index()
    assert g.is_symmetric() and not (src == dst).any()
    assert (np.diff(src * g.num_nodes + dst) > 0).all()
    assert g.num_edges == 2 * g.meta["num_pairs"]
    assert g.meta["num_pairs"] == 6_000


def test_powerlaw_single_community_has_every_edge_inside():
    g = powerlaw_communities(500, num_communities=1, num_features=2, homophily=0.0, seed=0)
    assert (g.y == 0).all() and g.num_edges == 5_000


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"num_nodes": 1}, "num_nodes"),
    ({"num_nodes": 100, "num_communities": 101}, "num_communities"),
    ({"num_nodes": 100, "avg_degree": 0.0}, "avg_degree"),
    ({"num_nodes": 100, "avg_degree": 99.5}, "avg_degree"),
    ({"num_nodes": 100, "homophily": 1.5}, "homophily"),
    ({"num_nodes": 100, "power": 2.0}, "power"),
    ({"num_nodes": 100, "num_features": 0}, "num_features"),
    ({"num_nodes": 100, "feature_noise": -1.0}, "feature_noise"),
    ({"num_nodes": 100, "train_fraction": 0.9, "val_fraction": 0.2}, "val_fraction"),
    ({"num_nodes": 100, "chunk_size": 0}, "chunk_size"),
    ({"num_nodes": 100, "seed": -1}, "seed"),
    ({"num_nodes": 100, "homophily": float("nan")}, "homophily"),
])
def test_powerlaw_rejects_bad_parameters(kwargs, field):
    n = kwargs.pop("num_nodes")
    with pytest.raises(ValueError, match=field):
        powerlaw_communities(n, **kwargs)


@pytest.fixture(scope="module")
def recsys():
    return bipartite_recommender(1_000, 400, interactions_per_user=20, seed=0)


def _all_pairs(ld) -> np.ndarray:
    return np.concatenate([ld.train, ld.val, ld.test])


def test_recommender_interactions_are_distinct_per_user_and_typed(recsys):
    ld = recsys
    pairs = _all_pairs(ld)
    assert ld.bipartite and ld.num_users == 1_000 and ld.num_items == 400
    assert pairs.shape == (20_000, 2)
    assert (pairs[:, 0] < 1_000).all() and (pairs[:, 1] >= 1_000).all()
    assert np.bincount(pairs[:, 0], minlength=1_000).tolist() == [20] * 1_000
    assert np.unique(pairs[:, 0] * 1_400 + pairs[:, 1]).size == pairs.shape[0]
    assert ld.graph.node_type.tolist() == [0] * 1_000 + [1] * 400


def test_recommender_split_is_ordered_in_time(recsys):
    ld = recsys
    ts = ld.meta["timestamps"]
    assert [ld.train.shape[0], ld.val.shape[0], ld.test.shape[0]] == [16_000, 2_000, 2_000]
    assert ts["train"].max() < ts["val"].min() and ts["val"].max() < ts["test"].min()
    for name in ("train", "val", "test"):
        assert ts[name].shape == (getattr(ld, name).shape[0],)
        assert (np.diff(ts[name]) >= 0).all()


def test_recommender_graph_holds_only_training_interactions_both_ways(recsys):
    ld = recsys
    g = ld.graph
    src, dst = g.edge_index()
    n = g.num_nodes
    expected = np.concatenate([ld.train[:, 0] * n + ld.train[:, 1],
                               ld.train[:, 1] * n + ld.train[:, 0]])
    assert np.array_equal(np.sort(src * n + dst), np.sort(expected))


def test_recommender_popularity_is_skewed(recsys):
    counts = np.bincount(_all_pairs(recsys)[:, 1] - 1_000, minlength=400)
    top_share = np.sort(counts)[::-1][:40].sum() / counts.sum()
    flat = bipartite_recommender(1_000, 400, popularity=0.0, seed=0)
    flat_counts = np.bincount(_all_pairs(flat)[:, 1] - 1_000, minlength=400)
    flat_share = np.sort(flat_counts)[::-1][:40].sum() / flat_counts.sum()
    assert top_share > 0.3 and top_share > flat_share + 0.1


def test_recommender_first_draw_follows_the_softmax():
    # temperature -> inf leaves only the shared Zipf bias, so every user's first (earliest) item is
    # a draw from softmax(bias); a chi-square goodness-of-fit test at the 0.1% level.
    users, items = 20_000, 30
    ld = bipartite_recommender(users, items, interactions_per_user=3, temperature=1e9,
                               popularity=1.0, val_fraction=0.0, test_fraction=0.0, seed=4)
    times = ld.meta["timestamps"]["train"]
    first = np.full(users, np.inf)
    np.minimum.at(first, ld.train[:, 0], times)
    earliest = ld.train[times == first[ld.train[:, 0]], 1] - users
    assert earliest.size == users
    bias = ld.meta["oracle"]["item_bias"]
    p = np.exp(bias) / np.exp(bias).sum()
    observed = np.bincount(earliest, minlength=items)
    assert stats.chisquare(observed, p * users).pvalue > 1e-3


def test_recommender_held_out_items_follow_the_latent_taste(recsys):
    ld = recsys
    oracle = ld.meta["oracle"]
    scores = oracle["user_latent"] @ oracle["item_latent"].T / np.sqrt(16)
    rng = np.random.default_rng(0)
    test = ld.test
    positive = scores[test[:, 0], test[:, 1] - 1_000]
    negative = scores[test[:, 0], rng.integers(0, 400, test.shape[0])]
    auc = float((positive[:, None] > negative[None, :]).mean())
    assert auc > 0.75


def test_recommender_features_preserve_latent_inner_products():
    ld = bipartite_recommender(50, 40, dim=8, num_features=12, interactions_per_user=5,
                               feature_noise=0.0, seed=1)
    oracle = ld.meta["oracle"]
    latent = np.concatenate([oracle["user_latent"], oracle["item_latent"]])
    x = ld.graph.x.astype(np.float64)
    np.testing.assert_allclose(x @ x.T, latent @ latent.T, atol=1e-3)
    narrow = bipartite_recommender(50, 40, dim=8, num_features=4, interactions_per_user=5, seed=1)
    assert narrow.graph.x.shape == (90, 4) and narrow.graph.x.dtype == np.float32


def test_recommender_is_deterministic():
    a = bipartite_recommender(200, 100, seed=3)
    b = bipartite_recommender(200, 100, seed=3)
    c = bipartite_recommender(200, 100, seed=4)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.graph.x, b.graph.x)
    assert not np.array_equal(a.train, c.train)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"num_users": 0}, "num_users"),
    ({"interactions_per_user": 101}, "interactions_per_user"),
    ({"dim": 0}, "dim"),
    ({"temperature": 0.0}, "temperature"),
    ({"popularity": -1.0}, "popularity"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "test_fraction"),
    ({"num_features": 0}, "num_features"),
])
def test_recommender_rejects_bad_parameters(kwargs, field):
    args = {"num_users": 10, "num_items": 100, **kwargs}
    with pytest.raises(ValueError, match=field):
        bipartite_recommender(args.pop("num_users"), args.pop("num_items"), **args)


@pytest.mark.slow
def test_powerlaw_million_nodes_fits_memory_budget():
    """1M nodes / 10M directed edges / 128-d features in a fresh process: peak RSS < 1.5 GiB
    (features alone are 0.5 GiB); the figure is printed for the docs."""
    out = subprocess.run([sys.executable, "-m", "qgnn.bench.bench_sampling", "generate",
                          "--nodes", "1000000", "--features", "128"],
                         check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(result)
    assert result["edges"] == 10_000_000
    assert result["peak_rss_gib"] < 1.5
