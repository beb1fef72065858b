"""The layer zoo inside the GNN stack (build_model) and the quantisation-site contract."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.layers.egc import EGConv
from qgnn.training.nn.layers.gat import GATConv
from qgnn.training.nn.layers.gin import GINConv
from qgnn.training.nn.layers.sage import SAGEConv
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.nn.quant_sites import QuantSites

MODELS = {
    "gcn": {},
    "sage": {},
    "gin": {"train_eps": True},
    "gat": {"heads": 4, "out_heads": 2},
    "egc": {"heads": 4, "bases": 2, "aggregators": ["symnorm", "max", "std"]},
}


@pytest.fixture(scope="module")
def small() -> tuple[Graph, torch.Tensor]:
    rng = np.random.default_rng(7)
    src, dst = rng.integers(0, 80, 200), rng.integers(0, 80, 200)
    keep = src != dst
    graph = Graph.from_edges(src[keep], dst[keep], 80).to_undirected()
    return graph, torch.from_numpy(rng.standard_normal((80, 8)).astype(np.float32))


def config(model: str, **changes) -> ModelConfig:
    return ModelConfig(model=model, in_dim=8, out_dim=3, hidden=16, num_layers=2, dropout=0.3,
                       layer_kwargs=dict(MODELS[model]), **changes)


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("stack", [{}, {"norm": "batch", "residual": True, "input_proj": True},
                                   {"norm": "layer", "residual": True, "head": True}])
def test_minibatch_blocks_train_and_match_full_graph_in_eval(small, layer_blocks, model, stack):
    graph, x = small
    torch.manual_seed(0)
    net = build_model(config(model, **stack))
    seeds = np.arange(0, 80, 7)
    blocks = layer_blocks(graph, seeds, 2)
    assert blocks[0].num_src > blocks[0].num_dst > blocks[1].num_dst
    for train in (True, False):
        net.train(train)
        net.zero_grad(set_to_none=True)
        out = net(x[blocks[0].src_ids], blocks)
        assert out.shape == (len(seeds), 3)
        (out * torch.randn_like(out)).sum().backward()
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (train, name)
            assert p.grad.abs().sum() > 0, (train, name)
    with torch.no_grad():
        full = net(x, full_graph_block(graph))
        mini = net(x[blocks[0].src_ids], blocks)
    torch.testing.assert_close(mini, full[seeds], atol=1e-5, rtol=0)


def test_output_head_keeps_every_convolution_hidden_and_scores_with_a_linear(small):
    graph, x = small
    cfg = config("gcn", head=True, norm="layer", residual=True)
    cfg.num_layers = 3
    net = build_model(cfg)
    assert [layer.lin.out_features for layer in net.layers] == [16, 16, 16]
    assert all(isinstance(n, torch.nn.LayerNorm) for n in net.norms)
    assert (net.head.in_features, net.head.out_features) == (16, 3)
    net.eval()
    with torch.no_grad():
        block = full_graph_block(graph)
        hidden = net.begin(x, block)
        for i in range(3):
            hidden = net.step(i, hidden, block)
        out = net(x, block)
    torch.testing.assert_close(out, hidden @ net.head.weight.t() + net.head.bias)
    assert net.head.q.sites == {"x": "dst", "weight": "param", "out": "dst"}


def test_gat_factory_concatenates_hidden_heads_and_averages_output_heads():
    net = build_model(config("gat"))
    hidden, last = net.layers
    assert (hidden.heads, hidden.head_dim, hidden.concat) == (4, 4, True)
    assert (last.heads, last.head_dim, last.concat) == (2, 3, False)
    averaged = build_model(ModelConfig(model="gat", in_dim=8, out_dim=3, hidden=16,
                                       layer_kwargs={"heads": 3, "concat": False}))
    assert (averaged.layers[0].heads, averaged.layers[0].out_dim) == (3, 16)


@pytest.mark.parametrize(("model", "layer_kwargs", "match"), [
    ("gcn", {"heads": 2}, r"\['heads'\] not understood by model 'gcn'"),
    ("sage", {"aggr": "max"}, "aggr"),
    ("gin", {"hidden": 4}, "known keys"),
    ("gat", {"heads": 3}, "heads=3 must divide the layer width 16"),
    ("egc", {"heads": 5}, "heads=5 must divide the layer width 16"),
    ("egc", {"out_heads": 2}, "out_heads=2 must divide the layer width 3"),
    ("egc", {"aggregators": ["sum", "median"]}, "median"),
])
def test_bad_layer_kwargs_are_clear_errors(model, layer_kwargs, match):
    cfg = ModelConfig(model=model, in_dim=8, out_dim=3, hidden=16, layer_kwargs=layer_kwargs)
    with pytest.raises(ValueError, match=match):
        build_model(cfg)


class RoleChecker(QuantSites):
    """Counts site calls and checks each tensor has one row per node/edge its role promises."""

    def forward(self, name, tensor, block=None):
        self.calls[name] += 1
        role = self.sites.get(name)
        rows = {"src": block.num_src if block else None, "dst": block.num_dst if block else None,
                "edge": block.num_edges if block else None}.get(role)
        if role != "param":
            assert block is not None and tensor.shape[0] == rows, (name, role, tensor.shape)
        return super().forward(name, tensor, block)


@pytest.mark.parametrize("make", [
    lambda: SAGEConv(8, 6),
    lambda: GINConv(8, 6, 10),
    lambda: GATConv(8, 3, heads=2),
    lambda: EGConv(8, 6, ["symnorm", "mean"], heads=2, bases=3),
], ids=["sage", "gin", "gat", "egc"])
def test_every_declared_site_is_called_once_with_rows_matching_its_role(small, neighbour_block,
                                                                          make):
    graph, x = small
    block = neighbour_block(graph, np.arange(0, 80, 5), keep=0.7)
    block = block.replace(edge_weight=torch.rand(block.num_edges) + 0.5)
    layer = make()
    layer.q = RoleChecker(layer.SITES)
    layer.q.calls = Counter()
    out = layer(x[block.src_ids], block)
    assert out.shape[0] == block.num_dst
    assert layer.q.calls == Counter(dict.fromkeys(layer.SITES, 1))

