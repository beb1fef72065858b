"""Uniform sampling -> torch blocks: chaining, global ids, full-graph in-degrees, importance
weights in the form each layer needs, and exactness with full fanouts for every model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.graph.synth import powerlaw_communities
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.models import CLASSIFIER_LAYERS, ModelConfig, build_model
from qgnn.training.sampling.blocks import convert_weights, to_blocks, weight_convention
from qgnn.training.sampling.uniform import UniformSampler


@pytest.fixture(scope="module")
def graph() -> Graph:
    return powerlaw_communities(400, avg_degree=8, num_features=6, seed=2)


def _sample(graph, fanouts, seeds, seed=0):
    sampler = UniformSampler(graph.csc, fanouts)
    return sampler.sample(seeds, np.random.default_rng(seed), np.empty(graph.num_nodes, np.int64))


def test_blocks_chain_and_carry_ids_and_full_degrees(graph):
    seeds = np.array([5, 17, 300, 2])
    sampled = _sample(graph, [4, 3, 2], seeds)
    in_deg = graph.in_degree()
    blocks = to_blocks(sampled, graph.csc.degree(), "sum")
    assert len(blocks) == 3
    np.testing.assert_array_equal(blocks[-1].src_ids[:blocks[-1].num_dst].numpy(), seeds)
    for inner, outer in zip(blocks[1:], blocks[:-1], strict=True):
        assert inner.num_src == outer.num_dst
        np.testing.assert_array_equal(inner.src_ids.numpy(), outer.src_ids[:outer.num_dst])
    for b, sb in zip(blocks, sampled, strict=True):
        np.testing.assert_array_equal(b.in_degree.numpy(), in_deg[sb.node_ids])
        drawn = np.bincount(sb.dst, minlength=sb.num_dst)
        assert drawn.max() <= 4
        full = in_deg[sb.node_ids[:sb.num_dst]]
        np.testing.assert_allclose(b.edge_weight.numpy(), (full / drawn)[sb.dst], rtol=1e-6)


def test_mean_form_weights_are_one_under_uniform_sampling(graph):
    sampled = _sample(graph, [3, 3], np.arange(0, 400, 7))
    for b in to_blocks(sampled, graph.csc.degree(), "mean"):
        np.testing.assert_allclose(b.edge_weight.numpy(), 1.0, rtol=1e-6)


def test_convert_weights_hand_case():
    # destination 0: full degree 4, two drawn (w = 2 each); destination 1: degree 3, one drawn
    w = np.array([2.0, 2.0, 3.0])
    dst = np.array([0, 0, 1])
    mean = convert_weights(w, dst, 2, np.array([4, 3]), "mean")
    np.testing.assert_allclose(mean, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="convention"):
        convert_weights(w, dst, 2, np.array([4, 3]), "max")


def test_weight_convention_follows_each_layers_aggregation():
    cfg = lambda m, **kw: ModelConfig(model=m, in_dim=3, out_dim=2, **kw)  # noqa: E731
    assert weight_convention(cfg("sage")) == "mean"
    assert weight_convention(cfg("gcn")) == "sum"
    assert weight_convention(cfg("gin")) == "sum"
    assert weight_convention(cfg("gat")) == "mean"
    assert weight_convention(cfg("egc")) == "sum"
    assert weight_convention(cfg("egc", layer_kwargs={"aggregators": ["mean", "max"]})) == "mean"
    assert set(CLASSIFIER_LAYERS) <= {"gcn", "gin", "sage", "gat", "egc"}


def test_graph_edge_weights_multiply_into_the_block(graph):
    w = np.linspace(0.5, 2.0, graph.num_edges)
    g = graph.replace(edge_weight=w)
    sampled = _sample(g, [-1], np.array([1, 2, 3]))
    block = to_blocks(sampled, g.csc.degree(), "sum", g.edge_weight)[0]
    np.testing.assert_allclose(block.edge_weight.numpy(), w[sampled[0].edge_ids], rtol=1e-6)


@pytest.mark.parametrize("model", sorted(CLASSIFIER_LAYERS))
def test_full_fanout_blocks_reproduce_full_graph_outputs(graph, model):
    kwargs = {"layer_kwargs": {"heads": 2}} if model in ("gat", "egc") else {}
    cfg = ModelConfig(model=model, in_dim=6, out_dim=4, hidden=8, num_layers=2, dropout=0.0,
                      **kwargs)
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    x = torch.from_numpy(graph.x)
    seeds = np.array([3, 99, 250, 0, 41])
    sampled = _sample(graph, [-1, -1], seeds)
    blocks = to_blocks(sampled, graph.csc.degree(), weight_convention(cfg))
    with torch.no_grad():
        full = net(x, full_graph_block(graph))[torch.from_numpy(seeds)]
        part = net(x[blocks[0].src_ids], blocks)
    torch.testing.assert_close(part, full, rtol=1e-4, atol=1e-5)
