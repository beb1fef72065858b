import dataclasses

import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.training.nn.models import ModelConfig
from qgnn.training.presets import TrainConfig
from qgnn.training.tasks.node import node_model_config, train_node


def community_graph(num_classes=3, per_class=40, seed=0, feature_noise=1.0):
    """Planted communities: dense inside a class, sparse across; noisy class-indicator features."""
    rng = np.random.default_rng(seed)
    n = num_classes * per_class
    y = np.repeat(np.arange(num_classes), per_class)
    same = y[:, None] == y[None, :]
    prob = np.where(same, 0.15, 0.01)
    upper = np.triu(rng.random((n, n)) < prob, 1)
    src, dst = np.nonzero(upper | upper.T)
    x = np.eye(num_classes, dtype=np.float32)[y] + feature_noise * rng.standard_normal(
        (n, num_classes)).astype(np.float32)
    role = rng.permutation(n) % 4  # 1/4 train, 1/4 val, 1/2 test
    return Graph.from_edges(src, dst, n, x=x, y=y, train_mask=role == 0, val_mask=role == 1,
                            test_mask=role >= 2, name="communities")


FAST = TrainConfig(epochs=60, lr=0.05, weight_decay=5e-4, patience=20)


def test_gcn_learns_planted_communities():
    g = community_graph()
    res = train_node(g, node_model_config(g, "gcn", hidden=16), FAST, progress=False)
    assert res.metric == "accuracy"
    assert res.test_metric >= 0.9
    assert res.num_params == 3 * 16 + 16 + 16 * 3 + 3


def test_same_seed_same_run_other_seed_other_run():
    g = community_graph()
    cfg = node_model_config(g, "gcn", hidden=8)
    a = train_node(g, cfg, FAST, progress=False)
    b = train_node(g, cfg, FAST, progress=False)
    c = train_node(g, cfg, dataclasses.replace(FAST, seed=1), progress=False)
    assert a.history == b.history and a.test_metric == b.test_metric
    assert a.history[0]["loss"] != c.history[0]["loss"]


def test_best_epoch_is_restored_and_early_stopping_counts_patience():
    g = community_graph()
    cfg = node_model_config(g, "gcn", hidden=8)
    res = train_node(g, cfg, TrainConfig(epochs=300, lr=0.05, patience=5), progress=False)
    vals = [row["val"] for row in res.history]
    assert res.val_metric == pytest.approx(max(vals))
    assert res.val_metric == pytest.approx(vals[res.best_epoch])
    # stopped exactly `patience` epochs after the last improvement
    assert res.epochs_run == res.best_epoch + 1 + 5 < 300


def test_binary_task_is_scored_by_roc_auc():
    g = community_graph(num_classes=2)
    res = train_node(g, node_model_config(g, "gcn", hidden=8), FAST, progress=False)
    assert res.metric == "roc_auc" and 0.9 <= res.test_metric <= 1.0
    with pytest.raises(ValueError, match=r"roc_auc needs two classes"):
        g3 = community_graph(num_classes=3)
        train_node(g3, node_model_config(g3, "gcn"), dataclasses.replace(FAST, metric="roc_auc"),
                   progress=False)


class Scaled(torch.nn.Module):
    """Wraps a model with one extra learnable output scale, as a quantisation wrapper would."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x, blocks):
        return self.inner(x, blocks) * self.scale


def test_hooks_prepare_model_before_optimiser_and_see_every_pass():
    g = community_graph()
    calls = []

    def blocks_for(block, training):
        calls.append(training)
        return block

    res = train_node(g, node_model_config(g, "gcn", hidden=8),
                     dataclasses.replace(FAST, epochs=3, patience=None),
                     prepare_model=Scaled, blocks_for=blocks_for, progress=False)
    assert isinstance(res.model, Scaled)
    assert res.model.scale.item() != 1.0  # the optimiser was built after the wrapper
    # train then evaluate each epoch, and one final evaluation of the best state
    assert calls == [True, False] * 3 + [False]


def test_model_config_must_match_graph():
    g = community_graph()
    bad = ModelConfig(model="gcn", in_dim=5, out_dim=3)
    with pytest.raises(ValueError, match=r"ModelConfig.in_dim: the graph has 3 features, got 5"):
        train_node(g, bad, FAST, progress=False)
    with pytest.raises(ValueError, match=r"ModelConfig.out_dim"):
        train_node(g, ModelConfig(model="gcn", in_dim=3, out_dim=2), FAST, progress=False)


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"TrainConfig.lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match=r"TrainConfig.epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match=r"TrainConfig.metric"):
        TrainConfig(metric="f1")
    with pytest.raises(ValueError, match=r"TrainConfig.patience"):
        TrainConfig(patience=-1)


def test_best_tracker_breaks_ties_by_validation_loss_and_counts_patience():
    from qgnn.training.progress import BestTracker

    model = torch.nn.Linear(1, 1)
    tracker = BestTracker(patience=2)
    steps = [(0.5, 1.0), (0.7, 0.9), (0.7, 0.8), (0.7, 0.85), (0.6, 0.5)]
    stops = []
    for epoch, (metric, loss) in enumerate(steps):
        with torch.no_grad():
            model.weight.fill_(epoch)
        tracker.update(epoch, metric, loss, model)
        stops.append(tracker.should_stop)
    assert tracker.best_epoch == 2  # same accuracy as epoch 1, lower loss
    assert stops == [False, False, False, False, True]
    tracker.restore(model)
    assert model.weight.item() == 2.0


def test_training_leaves_torch_determinism_setting_as_it_was():
    g = community_graph()
    before = torch.are_deterministic_algorithms_enabled()
    train_node(g, node_model_config(g, "gcn", hidden=4), dataclasses.replace(FAST, epochs=1),
               progress=False)
    assert torch.are_deterministic_algorithms_enabled() == before
