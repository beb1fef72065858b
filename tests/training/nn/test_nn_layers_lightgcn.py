"""LightGCN against a dense numpy reference of its propagation (He et al., SIGIR 2020, eq. 3-4):
``E_{k+1} = D^-1/2 A D^-1/2 E_k`` without self-loops, output the mean of ``E_0 .. E_K``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.models import ModelConfig, build_model


def _bipartite(users=5, items=7, seed=0):
    rng = np.random.default_rng(seed)
    pairs = {(int(u), int(i) + users) for u, i in zip(rng.integers(0, users, 16),
                                                      rng.integers(0, items, 16), strict=True)}
    src = np.array([p[0] for p in pairs] + [p[1] for p in pairs])
    dst = np.array([p[1] for p in pairs] + [p[0] for p in pairs])
    return Graph.from_edges(src, dst, users + items + 1)  # the last node is isolated


@pytest.mark.parametrize("layers", [1, 3])
def test_matches_dense_reference(layers):
    graph = _bipartite()
    n, dim = graph.num_nodes, 4
    e0 = np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32)
    a = np.zeros((n, n))
    src, dst = graph.edge_index()
    a[dst, src] = 1.0
    deg = np.maximum(a.sum(1), 1)
    p = a / np.sqrt(deg)[:, None] / np.sqrt(deg)[None, :]
    terms = [e0.astype(np.float64)]
    for _ in range(layers):
        terms.append(p @ terms[-1])
    expected = np.mean(terms, axis=0)
    model = build_model(ModelConfig("lightgcn", dim, dim, hidden=dim, num_layers=layers,
                                    dropout=0.0))
    assert sum(t.numel() for t in model.parameters()) == 0  # weight-free
    with torch.no_grad():
        out = model(torch.from_numpy(e0), full_graph_block(graph)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # the isolated node keeps only its own embedding, averaged with zeros
    np.testing.assert_allclose(out[-1], e0[-1] / (layers + 1), rtol=1e-6)


def test_width_must_be_kept_and_no_extras():
    with pytest.raises(ValueError, match="in_dim 4 must equal out_dim 8"):
        build_model(ModelConfig("lightgcn", 4, 8, hidden=8, num_layers=1))
    with pytest.raises(ValueError, match="takes no input_proj, head, residual or norm"):
        build_model(ModelConfig("lightgcn", 4, 4, hidden=4, residual=True))


def test_layerwise_inference_equals_the_full_graph_forward():
    from qgnn.training.sampling.inference import layerwise_inference
    from qgnn.training.sampling.transfer import TransferCounter

    graph = _bipartite(users=20, items=30, seed=3)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((graph.num_nodes, 8))
                         .astype(np.float32))
    model = build_model(ModelConfig("lightgcn", 8, 8, hidden=8, num_layers=3, dropout=0.0))
    model.eval()
    with torch.no_grad():
        full = model(x, full_graph_block(graph))
        in_degree = np.diff(graph.csc.indptr).astype(np.int64)
        chunked = layerwise_inference(model, x, graph.csc, in_degree, torch.device("cpu"),
                                      TransferCounter(), chunk_size=7)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-6)
