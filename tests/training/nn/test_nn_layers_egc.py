"""EGConv against PyG EGConv(aggregators, num_heads, num_bases, add_self_loops=True)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.layers.egc import EGConv
from qgnn.training.nn.quant_sites import QuantSites
from torch_geometric.nn import EGConv as PygEGConv

# (aggregators, heads, bases, out_dim)
CONFIGS = [
    (["symnorm"], 8, 4, 16),
    (["sum", "mean", "max"], 4, 2, 8),
    (["symnorm", "min", "std", "var"], 2, 3, 6),
    (["max"], 1, 1, 5),
]


def pair(in_dim: int, out_dim: int, aggregators: list[str], heads: int,
         bases: int) -> tuple[EGConv, PygEGConv]:
    torch.manual_seed(4)
    ours = EGConv(in_dim, out_dim, aggregators, heads=heads, bases=bases)
    ref = PygEGConv(in_dim, out_dim, aggregators, num_heads=heads, num_bases=bases,
                    add_self_loops=True)
    with torch.no_grad():
        ref.bias.normal_()
        ours.bases_lin.weight.copy_(ref.bases_lin.weight)
        ours.comb_lin.weight.copy_(ref.comb_lin.weight)
        ours.comb_lin.bias.copy_(ref.comb_lin.bias)
        ours.bias.copy_(ref.bias)
    return ours.eval(), ref.eval()


def edges(block):
    return torch.stack([block.src, block.dst])


@pytest.mark.parametrize("graph_name", ["tiny", "cora_like"])
@pytest.mark.parametrize(("aggregators", "heads", "bases", "out_dim"), CONFIGS)
def test_matches_pyg_on_full_graph(graph_name, aggregators, heads, bases, out_dim, request):
    graph, x = request.getfixturevalue(graph_name)
    block = full_graph_block(graph)
    ours, ref = pair(x.shape[1], out_dim, aggregators, heads, bases)
    torch.testing.assert_close(ours(x, block), ref(x, edges(block)), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("aggregators", "heads", "bases", "out_dim"), CONFIGS)
def test_sampled_block_matches_full_graph_on_its_destinations(cora_like, neighbour_block,
                                                              aggregators, heads, bases, out_dim):
    """PyG EGConv takes no bipartite input; a block that keeps every in-edge of its destinations
    (and knows the full-graph degrees for symnorm) must reproduce the full-graph rows."""
    graph, x = cora_like
    seeds = np.random.default_rng(6).choice(graph.num_nodes, 300, replace=False)
    block = neighbour_block(graph, seeds)
    assert block.num_src > block.num_dst
    ours, ref = pair(x.shape[1], out_dim, aggregators, heads, bases)
    full = ref(x, edges(full_graph_block(graph)))
    torch.testing.assert_close(ours(x[block.src_ids], block), full[seeds], atol=1e-5, rtol=0)


def test_integer_edge_weight_equals_repeated_edge(tiny):
    """Edge weights scale messages: with the sum aggregator a weight of 2 is the edge twice."""
    graph, x = tiny
    block = full_graph_block(graph)
    weight = torch.tensor([2.0, 1.0, 1.0, 2.0, 1.0, 1.0])
    repeated = torch.cat([edges(block), edges(block)[:, weight == 2]], dim=1)
    ours, ref = pair(3, 4, ["sum"], 2, 2)
    torch.testing.assert_close(ours(x, block.replace(edge_weight=weight)), ref(x, repeated),
                               atol=1e-5, rtol=0)


class ShapeRecorder(QuantSites):
    def forward(self, name, tensor, block=None):
        self.shapes[name] = tuple(tensor.shape)
        return super().forward(name, tensor, block)


def test_only_basis_projections_travel_along_edges(tiny):
    graph, x = tiny
    layer = EGConv(3, 16, ["symnorm", "max"], heads=4, bases=2)
    layer.q = ShapeRecorder(layer.SITES)
    layer.q.shapes = {}
    layer(x, full_graph_block(graph))
    looped_edges = graph.num_edges + graph.num_nodes
    assert layer.q.shapes["msg"] == (looped_edges, 2 * 16 // 4)
    assert layer.q.shapes["agg"] == (5, 2, 2 * 16 // 4)
    assert layer.q.shapes["comb"] == (5, 4 * 2 * 2)


def test_gradients_reach_every_parameter(cora_like, neighbour_block):
    graph, x = cora_like
    block = neighbour_block(graph, np.arange(50))
    layer = EGConv(x.shape[1], 8, ["symnorm", "mean", "std"], heads=2, bases=2).train()
    out = layer(x[block.src_ids], block)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"aggregators": ["median"]}, "median"),
    ({"aggregators": []}, "aggregators"),
    ({"aggregators": ["sum", "sum"]}, "aggregators"),
    ({"heads": 3}, "divisible by heads=3"),
    ({"bases": 0}, "bases=0"),
])
def test_bad_hyper_parameters_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EGConv(3, 8, **{"heads": 2, **kwargs})
