"""GATConv against PyG GATConv(heads, concat, add_self_loops=True) with copied weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.layers.gat import GATConv
from torch_geometric.nn import GATConv as PygGATConv

CONFIGS = [(1, True), (4, True), (3, False)]  # (heads, concat)


def pair(in_dim: int, head_dim: int, heads: int, concat: bool,
         attn_dropout: float = 0.0) -> tuple[GATConv, PygGATConv]:
    torch.manual_seed(3)
    ours = GATConv(in_dim, head_dim, heads=heads, concat=concat, attn_dropout=attn_dropout)
    ref = PygGATConv(in_dim, head_dim, heads=heads, concat=concat, add_self_loops=True)
    with torch.no_grad():
        ref.bias.normal_()
        ours.lin.weight.copy_(ref.lin.weight)
        ours.att_src.copy_(ref.att_src.view(heads, head_dim))
        ours.att_dst.copy_(ref.att_dst.view(heads, head_dim))
        ours.bias.copy_(ref.bias)
    return ours.eval(), ref.eval()


def edges(block):
    return torch.stack([block.src, block.dst])


@pytest.mark.parametrize("graph_name", ["tiny", "cora_like"])
@pytest.mark.parametrize(("heads", "concat"), CONFIGS)
def test_matches_pyg_on_full_graph(graph_name, heads, concat, request):
    graph, x = request.getfixturevalue(graph_name)
    block = full_graph_block(graph)
    ours, ref = pair(x.shape[1], 4, heads, concat)
    out = ours(x, block)
    assert out.shape == (graph.num_nodes, ours.out_dim)
    torch.testing.assert_close(out, ref(x, edges(block)), atol=1e-5, rtol=0)


def test_stored_self_loops_are_replaced_like_pyg(tiny):
    """A graph that already has loops (here on nodes 1 and 3) still gets one loop per node."""
    graph, x = tiny
    src, dst = graph.edge_index()
    looped = Graph.from_edges(np.concatenate([src, [1, 3]]), np.concatenate([dst, [1, 3]]), 5)
    block = full_graph_block(looped)
    ours, ref = pair(3, 4, 2, True)
    torch.testing.assert_close(ours(x, block), ref(x, edges(block)), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours(x, block), ours(x, full_graph_block(graph)))


@pytest.mark.parametrize(("heads", "concat"), CONFIGS)
def test_bipartite_block_matches_pyg_tuple_input(cora_like, neighbour_block, heads, concat):
    graph, x = cora_like
    seeds = np.random.default_rng(5).choice(graph.num_nodes, 300, replace=False)
    block = neighbour_block(graph, seeds, keep=0.5)
    assert block.num_src > block.num_dst
    x_src = x[block.src_ids]
    ours, ref = pair(x.shape[1], 4, heads, concat)
    expected = ref((x_src, x_src[: block.num_dst]), edges(block),
                   size=(block.num_src, block.num_dst))
    torch.testing.assert_close(ours(x_src, block), expected, atol=1e-5, rtol=0)


def test_attention_dropout_only_in_training(tiny):
    graph, x = tiny
    block = full_graph_block(graph)
    layer, _ = pair(3, 4, 2, True, attn_dropout=0.5)
    torch.testing.assert_close(layer(x, block), layer(x, block))
    layer.train()
    torch.manual_seed(0)
    outs = [layer(x, block) for _ in range(4)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])
    no_dropout, _ = pair(3, 4, 2, True)
    torch.testing.assert_close(no_dropout.train()(x, block), no_dropout.eval()(x, block))


def test_edge_weights_scale_attention_coefficients(tiny):
    """out_v = sum_u alpha_uv w_uv W x_u + b, with PyG's attention coefficients as the oracle."""
    graph, x = tiny
    block = full_graph_block(graph)
    heads, head_dim = 2, 4
    layer, ref = pair(3, head_dim, heads, True)
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0, -1.0, 1.5])
    _, (looped, alpha) = ref(x, edges(block), return_attention_weights=True)
    loop_weight = torch.ones(looped.shape[1] - block.num_edges)  # PyG appends the loops last
    scale = alpha * torch.cat([weight, loop_weight]).unsqueeze(1)  # (E', H)
    h = ref.lin(x).view(-1, heads, head_dim)
    expected = torch.zeros(5, heads, head_dim).index_add_(
        0, looped[1], scale.unsqueeze(-1) * h[looped[0]])
    expected = expected.flatten(1) + ref.bias
    out = layer(x, block.replace(edge_weight=weight))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_gradients_reach_every_parameter(cora_like, neighbour_block):
    graph, x = cora_like
    block = neighbour_block(graph, np.arange(50))
    layer = GATConv(x.shape[1], 4, heads=2, attn_dropout=0.2).train()
    out = layer(x[block.src_ids], block)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_hyper_parameters_are_clear_errors():
    with pytest.raises(ValueError, match="heads"):
        GATConv(3, 4, heads=0)
    with pytest.raises(ValueError, match="attn_dropout"):
        GATConv(3, 4, attn_dropout=1.0)
