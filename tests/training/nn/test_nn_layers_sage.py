"""SAGEConv (mean) against PyG SAGEConv with copied weights, plus its edge-weight behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.layers.sage import SAGEConv
from torch_geometric.nn import SAGEConv as PygSAGEConv


def pair(in_dim: int, out_dim: int) -> tuple[SAGEConv, PygSAGEConv]:
    torch.manual_seed(1)
    ours, ref = SAGEConv(in_dim, out_dim), PygSAGEConv(in_dim, out_dim, aggr="mean")
    with torch.no_grad():
        ref.lin_l.bias.normal_()
        ours.lin_l.weight.copy_(ref.lin_l.weight)
        ours.lin_l.bias.copy_(ref.lin_l.bias)
        ours.lin_r.weight.copy_(ref.lin_r.weight)
    return ours.eval(), ref.eval()


def edges(block):
    return torch.stack([block.src, block.dst])


@pytest.mark.parametrize("graph_name", ["tiny", "cora_like"])
def test_matches_pyg_on_full_graph(graph_name, request):
    graph, x = request.getfixturevalue(graph_name)
    block = full_graph_block(graph)
    ours, ref = pair(x.shape[1], 8)
    torch.testing.assert_close(ours(x, block), ref(x, edges(block)), atol=1e-5, rtol=0)


def test_tiny_graph_by_hand(tiny):
    """Identity weights: out = mean of in-neighbours + self; empty destinations get only self."""
    graph, x = tiny
    layer = SAGEConv(3, 3, bias=False)
    with torch.no_grad():
        layer.lin_l.weight.copy_(torch.eye(3))
        layer.lin_r.weight.copy_(torch.eye(3))
    out = layer(x, full_graph_block(graph))
    expected = x.clone()
    expected[1] += (x[0] + x[2]) / 2
    expected[0] += (x[1] + x[3]) / 2
    expected[2] += (x[0] + x[4]) / 2
    torch.testing.assert_close(out, expected)


def test_bipartite_block_matches_pyg_tuple_input(cora_like, neighbour_block):
    graph, x = cora_like
    seeds = np.random.default_rng(3).choice(graph.num_nodes, 300, replace=False)
    block = neighbour_block(graph, seeds, keep=0.5)
    assert block.num_src > block.num_dst
    x_src = x[block.src_ids]
    ours, ref = pair(x.shape[1], 8)
    expected = ref((x_src, x_src[: block.num_dst]), edges(block),
                   size=(block.num_src, block.num_dst))
    out = ours(x_src, block)
    assert out.shape == (300, 8)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_edge_weights_scale_messages_before_the_mean(tiny):
    graph, x = tiny
    w = torch.tensor([2.0, 0.5, 1.0, 3.0, 1.5, -1.0])
    block = full_graph_block(graph)
    block = block.replace(edge_weight=w[: block.num_edges])
    layer = SAGEConv(3, 4).eval()
    dense = torch.zeros(5, 5)
    dense[block.dst, block.src] = block.edge_weight
    count = torch.bincount(block.dst, minlength=5).clamp(min=1).unsqueeze(1)
    mean = dense @ x / count
    expected = layer.lin_l(mean) + layer.lin_r(x)
    torch.testing.assert_close(layer(x, block), expected)


def test_gradients_reach_every_parameter(cora_like, neighbour_block):
    graph, x = cora_like
    block = neighbour_block(graph, np.arange(50))
    layer = SAGEConv(x.shape[1], 8).train()
    out = layer(x[block.src_ids], block)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_wrong_feature_rows_is_a_clear_error(tiny):
    graph, x = tiny
    with pytest.raises(ValueError, match="num_src=5"):
        SAGEConv(3, 2)(x[:4], full_graph_block(graph))
