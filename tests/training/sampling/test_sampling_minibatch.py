"""Minibatch training end to end: every model, both samplers, both tasks, the quantisation hooks,
exact layer-wise evaluation, reproducibility across thread counts, and the full-graph hand-off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qgnn.graph.links import split_edges
from qgnn.graph.synth import powerlaw_communities
from qgnn.training.nn.block import Block, full_graph_block
from qgnn.training.nn.models import CLASSIFIER_LAYERS, ModelConfig, build_model
from qgnn.training.presets import TrainConfig
from qgnn.training.sampling.config import SamplingConfig
from qgnn.training.sampling.inference import layerwise_inference
from qgnn.training.sampling.transfer import TransferCounter
from qgnn.training.tasks.link import link_model_config
from qgnn.training.tasks.minibatch import train_minibatch
from qgnn.training.tasks.node import node_model_config, train_node


@pytest.fixture(scope="module")
def graph():
    return powerlaw_communities(600, avg_degree=8, num_features=8, num_communities=4,
                                feature_noise=0.5, seed=5)


def _kw(model: str) -> dict:
    return {"layer_kwargs": {"heads": 2}} if model in ("gat", "egc") else {}


def _sampling(sampler: str, **kw) -> SamplingConfig:
    return SamplingConfig(**({"sampler": sampler, "fanouts": (5, 5), "batch_size": 128,
                              "cache_fraction": 0.05, "device": "cpu"} | kw))


@pytest.mark.parametrize(("model", "sampler"),
                         [(m, "gns") for m in sorted(CLASSIFIER_LAYERS)] + [("sage", "uniform")])
def test_node_training_runs_for_every_model(graph, model, sampler):
    cfg = node_model_config(graph, model, hidden=8, dropout=0.0, **_kw(model))
    result = train_minibatch(graph, cfg, TrainConfig(epochs=2, patience=None),
                             _sampling(sampler), progress=False)
    assert result.epochs_run == 2 and len(result.history) == 2
    assert all(np.isfinite(row["loss"]) for row in result.history)
    extra = result.extra_metrics
    assert extra["h2d_feature_bytes_per_epoch"] > 0 and extra["seeds_per_s"] > 0
    assert (extra["cache_hit_rate"] > 0) == (sampler == "gns")
    assert result.test_metric > 0.4  # 4 well-separated communities: chance is 0.25


def test_gns_learns_the_planted_communities(graph):
    cfg = node_model_config(graph, "sage", hidden=16, dropout=0.0)
    result = train_minibatch(graph, cfg, TrainConfig(epochs=15, patience=None),
                             _sampling("gns"), progress=False)
    assert result.test_metric > 0.8


def test_uint8_feature_staging_learns_as_well_as_float32(graph):
    """The coded rows are what training sees: accuracy must not move beyond run-to-run noise,
    while the feature bytes per epoch fall to a quarter."""
    cfg = node_model_config(graph, "sage", hidden=16, dropout=0.0)
    runs = {dtype: train_minibatch(graph, cfg, TrainConfig(epochs=15, patience=None),
                                   _sampling("gns", feature_dtype=dtype), progress=False)
            for dtype in ("float32", "uint8")}
    assert runs["uint8"].test_metric > 0.8
    assert abs(runs["uint8"].test_metric - runs["float32"].test_metric) <= 0.03
    ratio = (runs["uint8"].extra_metrics["h2d_feature_bytes_per_epoch"]
             / runs["float32"].extra_metrics["h2d_feature_bytes_per_epoch"])
    assert 0.2 < ratio < 0.3


def test_runs_are_reproducible_whatever_the_thread_count(graph):
    cfg = node_model_config(graph, "gcn", hidden=8, dropout=0.3)
    runs = [train_minibatch(graph, cfg, TrainConfig(epochs=2, patience=None),
                            _sampling("gns", workers=w, prefetch=p), progress=False)
            for w, p in ((1, 1), (3, 4))]
    for a, b in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("model", sorted(CLASSIFIER_LAYERS))
@pytest.mark.parametrize("stack", [{}, {"input_proj": True, "residual": True, "norm": "layer"},
                                   {"input_proj": True, "residual": True, "norm": "layer",
                                    "head": True}])
def test_layerwise_inference_equals_the_full_graph_forward(graph, model, stack):
    cfg = ModelConfig(model=model, in_dim=8, out_dim=4, hidden=8, num_layers=3, **stack,
                      **_kw(model))
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    x = torch.from_numpy(graph.x)
    with torch.no_grad():
        full = net(x, full_graph_block(graph))
    counter = TransferCounter()
    out = layerwise_inference(net, x, graph.csc, graph.csc.degree(), torch.device("cpu"),
                              counter, chunk_size=97)
    torch.testing.assert_close(out, full, rtol=1e-4, atol=1e-5)
    assert counter.bytes("eval") > 0 and counter.bytes("features") == 0


def test_sampled_evaluation_with_full_fanouts_matches_full_evaluation(graph):
    """With fanouts -1 a sampled pass is exact, so both evaluation modes must agree."""
    cfg = node_model_config(graph, "sage", hidden=8, dropout=0.0)
    train = TrainConfig(epochs=2, patience=None)
    full = train_minibatch(graph, cfg, train, _sampling("uniform", fanouts=(-1, -1)),
                           progress=False)
    sampled = train_minibatch(graph, cfg, train,
                              _sampling("uniform", fanouts=(-1, -1), eval="sampled",
                                        eval_batch_size=100), progress=False)
    assert [r["loss"] for r in sampled.history] == [r["loss"] for r in full.history]
    for key in ("train", "val", "val_loss"):
        assert [r[key] for r in sampled.history] == pytest.approx([r[key] for r in full.history])
    assert sampled.test_metric == pytest.approx(full.test_metric)


def test_degree_quant_hooks_see_full_graph_degrees(graph):
    from qgnn.training.quant.config import QuantConfig
    from qgnn.training.quant.hooks import make_hooks

    prepare, blocks_for = make_hooks(QuantConfig(bits=8, method="dq", p_min=0.2, p_max=0.8),
                                     graph)
    seen: list[list[Block]] = []

    def recording(blocks, training):
        out = blocks_for(blocks, training)
        if training:
            seen.append(out)
        return out

    cfg = node_model_config(graph, "gcn", hidden=8, dropout=0.0)
    result = train_minibatch(graph, cfg, TrainConfig(epochs=1, patience=None),
                             _sampling("gns"), prepare_model=prepare, blocks_for=recording,
                             progress=False)
    assert np.isfinite(result.test_metric) and seen
    in_deg = graph.in_degree()
    for blocks in seen:
        assert len(blocks) == 2
        for b in blocks:
            assert b.protect is not None and b.protect.shape == (b.num_src,)
            np.testing.assert_array_equal(b.in_degree.numpy(), in_deg[b.src_ids.numpy()])


def test_full_sampler_hands_over_to_full_graph_training(graph):
    cfg = node_model_config(graph, "gcn", hidden=8)
    train = TrainConfig(epochs=3, patience=None)
    via = train_minibatch(graph, cfg, train, SamplingConfig(sampler="full"), progress=False)
    direct = train_node(graph, cfg, train, progress=False)
    assert via.test_metric == direct.test_metric and via.history == direct.history


def test_fanouts_must_match_the_number_of_layers(graph):
    cfg = node_model_config(graph, "sage", hidden=8, num_layers=3)
    with pytest.raises(ValueError, match="fanouts"):
        train_minibatch(graph, cfg, TrainConfig(epochs=1), _sampling("uniform"), progress=False)


def test_data_of_the_wrong_type_is_refused():
    cfg = ModelConfig(model="sage", in_dim=2, out_dim=2)
    with pytest.raises(ValueError, match="Graph or LinkData"):
        train_minibatch(np.zeros(3), cfg, TrainConfig(epochs=1), _sampling("uniform"),
                        progress=False)


@pytest.mark.parametrize(("sampler", "dtype"),
                         [("uniform", "float32"), ("gns", "float32"), ("gns", "uint8")])
def test_link_prediction_learns(graph, sampler, dtype):
    data = split_edges(graph, val_fraction=0.1, test_fraction=0.1, seed=0)
    cfg = link_model_config(data, "sage", hidden=16, dropout=0.0)
    result = train_minibatch(data, cfg, TrainConfig(epochs=6, patience=None, lr=0.01),
                             _sampling(sampler, batch_size=256, feature_dtype=dtype),
                             progress=False)
    assert result.metric == "roc_auc" and result.test_metric > 0.7
    assert result.extra_metrics["h2d_bytes_per_epoch"] > 0


def test_link_prediction_without_features_trains_an_embedding_table(graph):
    data = split_edges(graph.replace(x=None), val_fraction=0.1, test_fraction=0.1, seed=0)
    cfg = link_model_config(data, "gcn", hidden=8, embedding_dim=8, dropout=0.0)
    result = train_minibatch(data, cfg, TrainConfig(epochs=2, patience=None),
                             _sampling("gns", batch_size=256), progress=False)
    assert result.model.embedding is not None and np.isfinite(result.test_metric)
    assert result.extra_metrics["h2d_feature_bytes_per_epoch"] == 0
