import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.graph.links import LinkData, split_edges
from qgnn.graph.synth import bipartite_recommender
from qgnn.training.presets import TrainConfig
from qgnn.training.tasks.link import (
    DotDecoder,
    MLPDecoder,
    link_model_config,
    pair_keys,
    rank_items,
    sample_negatives,
    sample_non_edges,
    train_link,
)


def community_links(seed=0):
    """Six dense communities; a random node pair is rarely in one, so edges are predictable."""
    rng = np.random.default_rng(seed)
    n, k = 90, 6
    y = np.repeat(np.arange(k), n // k)
    prob = np.where(y[:, None] == y[None, :], 0.5, 0.005)
    upper = np.triu(rng.random((n, n)) < prob, 1)
    src, dst = np.nonzero(upper | upper.T)
    x = (np.eye(k)[y] + 0.5 * rng.standard_normal((n, k))).astype(np.float32)
    g = Graph.from_edges(src, dst, n, x=x, name="communities")
    return split_edges(g, val_fraction=0.1, test_fraction=0.2, seed=seed)


FAST = TrainConfig(epochs=40, lr=0.02, weight_decay=0.0, patience=None)


def test_negatives_keep_sources_and_use_the_item_side():
    rng = np.random.default_rng(0)
    pos = np.array([[0, 5], [1, 6], [2, 7]] * 50)
    neg = sample_negatives(pos, rng, 10, item_range=(5, 10))
    np.testing.assert_array_equal(neg[:, 0], pos[:, 0])
    assert neg[:, 1].min() >= 5 and neg[:, 1].max() < 10


def test_evaluation_negatives_avoid_every_known_pair_and_self_loops():
    rng = np.random.default_rng(0)
    n = 6
    known_pairs = np.array([[0, 1], [0, 2], [0, 3], [1, 2]])
    known = pair_keys(n, known_pairs)
    neg = sample_non_edges(np.repeat(known_pairs, 25, axis=0), rng, n, known)
    keys = neg[:, 0] * n + neg[:, 1]
    assert not np.isin(keys, known).any()
    assert (neg[:, 0] != neg[:, 1]).all()
    # node 0's only non-neighbours are 4 and 5 (both directions of known pairs are excluded)
    assert set(neg[neg[:, 0] == 0, 1]) <= {4, 5}


def test_decoders_score_aligned_pairs_and_all_pairs_alike():
    torch.manual_seed(0)
    a, b = torch.randn(3, 4), torch.randn(5, 4)
    for dec in (DotDecoder(), MLPDecoder(4, 8)):
        grid = dec.all_pairs(a, b)
        assert grid.shape == (3, 5)
        assert torch.allclose(grid[2, 4], dec(a[2:3], b[4:5])[0], atol=1e-6)
    assert torch.allclose(DotDecoder()(a[:1], b[:1]), (a[0] * b[0]).sum().view(1))


def test_gcn_link_prediction_beats_chance_and_is_deterministic():
    data = community_links()
    cfg = link_model_config(data, "gcn", hidden=16)
    res = train_link(data, cfg, FAST, progress=False)
    again = train_link(data, cfg, FAST, progress=False)
    assert res.metric == "roc_auc"
    assert res.test_metric >= 0.85
    assert res.test_metric == again.test_metric and res.history == again.history


def test_bpr_loss_and_mlp_decoder_train():
    data = community_links()
    cfg = link_model_config(data, "gcn", hidden=16)
    res = train_link(data, cfg, TrainConfig(epochs=40, lr=0.02, weight_decay=0.0, patience=None,
                                            loss="bpr", decoder="mlp"), progress=False)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.test_metric >= 0.85


def test_link_batches_step_once_per_batch_and_clip_gradients(monkeypatch):
    """``link_batch_size`` splits an epoch into one optimiser step per shuffled batch (OGB's ddi
    recipe), each on a full-graph forward; the loss is their size-weighted mean."""
    data = community_links()
    cfg = link_model_config(data, "gcn", hidden=16)
    steps = []
    original = torch.optim.Adam.step

    def counting(self, *args, **kwargs):
        steps.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counting)
    batch = (len(data.train) + 2) // 3
    res = train_link(data, cfg, TrainConfig(epochs=30, lr=0.02, weight_decay=0.0, patience=None,
                                            link_batch_size=batch, clip_grad_norm=1.0),
                     progress=False)
    assert len(steps) == 30 * 3
    assert res.test_metric >= 0.85
    with pytest.raises(ValueError, match=r"TrainConfig.link_batch_size"):
        TrainConfig(link_batch_size=0)
    with pytest.raises(ValueError, match=r"TrainConfig.clip_grad_norm"):
        TrainConfig(clip_grad_norm=-1.0)


def test_link_batch_larger_than_the_pairs_is_one_full_batch_step():
    data = community_links()
    cfg = link_model_config(data, "gcn", hidden=16)
    full = train_link(data, cfg, FAST, progress=False)
    big = train_link(data, cfg, FAST.__class__(**{**FAST.to_dict(), "link_batch_size": 10**6}),
                     progress=False)
    assert full.history == big.history


def recommender():
    return bipartite_recommender(40, 30, interactions_per_user=8, num_features=8, seed=0)


def test_bipartite_ranking_excludes_seen_items_and_only_ranks_items():
    data = recommender()
    h = torch.randn(data.graph.num_nodes, 4, generator=torch.Generator().manual_seed(0))

    class Model(torch.nn.Module):
        decoder = DotDecoder()

    ranked, truth = rank_items(Model(), h, data, 10, test=True)
    users = np.unique(data.test[:, 0])
    seen = pair_keys(data.graph.num_nodes, data.train, data.val)
    keys = users[:, None] * data.graph.num_nodes + ranked
    assert not np.isin(keys, seen).any()
    assert ranked.min() >= data.num_users and ranked.max() < data.graph.num_nodes
    # truth rows point back at the users they came from
    np.testing.assert_array_equal(users[truth[:, 0]], data.test[:, 0])
    # the first column is each user's best-scoring unseen item (brute force)
    scores = (h[users] @ h[data.num_users:].t()).numpy()
    for row, user in enumerate(users):
        seen_items = [i for u, i in np.concatenate([data.train, data.val]) if u == user]
        scores[row, np.array(seen_items, dtype=np.int64) - data.num_users] = -np.inf
    np.testing.assert_array_equal(ranked[:, 0], scores.argmax(axis=1) + data.num_users)


def test_bipartite_training_reports_recall_and_ndcg():
    data = recommender()
    res = train_link(data, link_model_config(data, "gcn", hidden=16),
                     TrainConfig(epochs=30, lr=0.02, weight_decay=0.0, patience=None, loss="bpr",
                                 k=5), progress=False)
    assert res.metric == "recall@5"
    figures = {f"{split}_{m}" for split in ("val", "test")
               for m in ("roc_auc", "hits@5", "recall@5", "ndcg@5", "hit_rate@5",
                         "most_popular_recall@5", "most_popular_ndcg@5",
                         "most_popular_hit_rate@5")}
    assert set(res.extra_metrics) == figures
    assert res.test_metric == res.extra_metrics["test_recall@5"]
    assert res.val_metric == res.extra_metrics["val_recall@5"]
    assert 0.0 <= res.extra_metrics["test_ndcg@5"] <= 1.0
    assert res.extra_metrics["test_recall@5"] <= res.extra_metrics["test_hit_rate@5"]


def test_featureless_graph_learns_an_embedding_table():
    data = recommender()
    bare = LinkData(data.graph.replace(x=None), data.train, data.val, data.test,
                    data.num_users, data.num_items)
    cfg = link_model_config(bare, "gcn", hidden=8, embedding_dim=6)
    res = train_link(bare, cfg, TrainConfig(epochs=3, patience=None, k=5), progress=False)
    assert res.model.embedding.weight.shape == (bare.graph.num_nodes, 6)


def test_link_configuration_errors_name_the_field():
    data = community_links()
    with pytest.raises(ValueError, match=r"TrainConfig.metric: recall ranks items"):
        train_link(data, link_model_config(data, "gcn"), TrainConfig(metric="recall"),
                   progress=False)
    with pytest.raises(ValueError, match=r"ModelConfig.in_dim: the graph has 6 features, got 3"):
        cfg = link_model_config(data, "gcn")
        cfg.in_dim = 3
        train_link(data, cfg, FAST, progress=False)
    with pytest.raises(ValueError, match=r"TrainConfig.k: 31 exceeds the 30 items"):
        train_link(recommender(), link_model_config(recommender(), "gcn"), TrainConfig(k=31),
                   progress=False)


def test_evaluation_negatives_exist_when_a_user_has_every_item():
    """A user linked to every item has no negative of its own: its rows take another
    positive's user, and no negative is a known pair (the generated MovieLens smoke run hit
    this with a dense user)."""
    users, items = 3, 4
    full = np.array([[0, users + j] for j in range(items)])  # user 0 has every item
    other = np.array([[1, users], [2, users + 1]])
    pos = np.concatenate([full, other])
    known = pair_keys(users + items, pos)
    neg = sample_non_edges(np.repeat(pos, 10, axis=0), np.random.default_rng(0), users + items,
                           known, (users, users + items))
    assert not np.isin(neg[:, 0] * (users + items) + neg[:, 1], known).any()
    assert 0 not in set(neg[:, 0]) and set(neg[:, 0]) <= {1, 2}
    assert ((neg[:, 1] >= users) & (neg[:, 1] < users + items)).all()


def test_uniform_negative_pairs_draw_both_ends_and_refuse_user_item_graphs():
    from qgnn.training.tasks.link import sample_negatives

    pairs = np.array([[0, 1]] * 2000)
    rng = np.random.default_rng(0)
    kept = sample_negatives(pairs, rng, 50, count=2)
    assert kept.shape == (4000, 2) and (kept[:, 0] == 0).all()
    both = sample_negatives(pairs, rng, 50, count=2, uniform_pairs=True)
    assert both.shape == (4000, 2)
    assert len(np.unique(both[:, 0])) == 50 and len(np.unique(both[:, 1])) == 50
    with pytest.raises(ValueError, match="user-item"):
        sample_negatives(pairs, rng, 50, item_range=(10, 50), uniform_pairs=True)
    with pytest.raises(ValueError, match="negative_pairs"):
        TrainConfig(negative_pairs="both")
