"""GINConv against PyG GINConv(Linear-BatchNorm-ReLU-Linear) with copied weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.layers.gin import GINConv
from torch import nn
from torch_geometric.nn import GINConv as PygGINConv


def pair(in_dim: int, out_dim: int, hidden: int = 16, eps: float = 0.0, train_eps: bool = False,
         batch_norm: bool = True) -> tuple[GINConv, PygGINConv]:
    torch.manual_seed(2)
    ours = GINConv(in_dim, out_dim, hidden, eps=eps, train_eps=train_eps, batch_norm=batch_norm)
    mlp = nn.Sequential(nn.Linear(in_dim, hidden),
                        nn.BatchNorm1d(hidden) if batch_norm else nn.Identity(), nn.ReLU(),
                        nn.Linear(hidden, out_dim))
    ref = PygGINConv(mlp, eps=eps, train_eps=train_eps)
    with torch.no_grad():
        if batch_norm:  # non-trivial running statistics and affine terms, so eval mode tests them
            for t in (mlp[1].running_mean, mlp[1].weight, mlp[1].bias):
                t.normal_()
            mlp[1].running_var.uniform_(0.5, 2.0)
        ours.lin1.load_state_dict(mlp[0].state_dict())
        ours.norm.load_state_dict(mlp[1].state_dict())
        ours.lin2.load_state_dict(mlp[3].state_dict())
    return ours.eval(), ref.eval()


def edges(block):
    return torch.stack([block.src, block.dst])


@pytest.mark.parametrize("graph_name", ["tiny", "cora_like"])
@pytest.mark.parametrize(("eps", "train_eps", "batch_norm"),
                         [(0.0, False, True), (0.3, True, True), (-0.2, False, False)])
def test_matches_pyg_on_full_graph(graph_name, eps, train_eps, batch_norm, request):
    graph, x = request.getfixturevalue(graph_name)
    block = full_graph_block(graph)
    ours, ref = pair(x.shape[1], 8, eps=eps, train_eps=train_eps, batch_norm=batch_norm)
    torch.testing.assert_close(ours(x, block), ref(x, edges(block)), atol=1e-5, rtol=0)


def test_bipartite_block_matches_pyg_tuple_input(cora_like, neighbour_block):
    graph, x = cora_like
    seeds = np.random.default_rng(4).choice(graph.num_nodes, 300, replace=False)
    block = neighbour_block(graph, seeds, keep=0.5)
    assert block.num_src > block.num_dst
    x_src = x[block.src_ids]
    ours, ref = pair(x.shape[1], 8, eps=0.1, train_eps=True)
    expected = ref((x_src, x_src[: block.num_dst]), edges(block),
                   size=(block.num_src, block.num_dst))
    torch.testing.assert_close(ours(x_src, block), expected, atol=1e-5, rtol=0)


def test_integer_edge_weight_equals_repeated_edge(tiny):
    """Edge weights scale messages: a weight of 2 sums like the edge listed twice (PyG oracle)."""
    graph, x = tiny
    block = full_graph_block(graph)
    weight = torch.tensor([1.0, 2.0, 1.0, 1.0, 2.0, 1.0])
    twice = weight == 2
    repeated = torch.cat([edges(block), edges(block)[:, twice]], dim=1)
    ours, ref = pair(3, 4)
    torch.testing.assert_close(ours(x, block.replace(edge_weight=weight)), ref(x, repeated),
                               atol=1e-5, rtol=0)


def test_gradients_reach_every_parameter(cora_like, neighbour_block):
    graph, x = cora_like
    block = neighbour_block(graph, np.arange(50))
    layer = GINConv(x.shape[1], 8, 16, train_eps=True).train()
    out = layer(x[block.src_ids], block)
    (out * torch.randn_like(out)).sum().backward()
    names = {name for name, _ in layer.named_parameters()}
    assert "eps" in names
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fixed_eps_is_a_buffer_not_a_parameter():
    layer = GINConv(3, 2, eps=0.5)
    assert "eps" not in dict(layer.named_parameters())
    assert float(layer.state_dict()["eps"]) == 0.5
