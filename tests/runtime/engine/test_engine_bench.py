"""The benchmark's GCN files compute what the benchmark claims: FP32 ONNX = the torch.sparse
reference = torch_geometric's GCNConv; INT8 partitioned = INT8 on stock onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

from qgnn.bench.bench_engine import BenchGcn  # noqa: E402
from qgnn.graph.synth import powerlaw_communities  # noqa: E402
from qgnn.runtime import kernels  # noqa: E402
from qgnn.runtime.engine.executor import PartitionedExecutor, PortableExecutor  # noqa: E402
from qgnn.runtime.engine.session import SessionConfig  # noqa: E402


@pytest.mark.slow  # torch_geometric's import alone takes seconds
@pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")
def test_bench_gcn_files_compute_the_gcn() -> None:
    from torch_geometric.nn import GCNConv

    graph = powerlaw_communities(400, avg_degree=8, num_features=16, seed=2)
    gcn = BenchGcn(graph, (16, 12, 6))
    fp32 = PortableExecutor(gcn.model(False).SerializeToString(), SessionConfig()).run(
        gcn.feeds(False))["logits"]
    np.testing.assert_allclose(fp32, gcn.reference, rtol=1e-4, atol=1e-5)
    convs = [GCNConv(16, 12), GCNConv(12, 6)]
    for conv, w, b in zip(convs, gcn.weights, gcn.biases, strict=True):
        conv.lin.weight.data = torch.from_numpy(w.T.copy())
        conv.bias.data = torch.from_numpy(b)
    csc = graph.csc
    edge_index = torch.from_numpy(np.stack([csc.indices.astype(np.int64), np.repeat(
        np.arange(400), np.diff(csc.indptr))]))
    with torch.no_grad():
        x = torch.from_numpy(graph.x)
        pyg = convs[1](torch.relu(convs[0](x, edge_index)), edge_index).numpy()
    np.testing.assert_allclose(pyg, gcn.reference, rtol=1e-4, atol=1e-5)
    int8 = gcn.model(True).SerializeToString()
    fast = PartitionedExecutor(int8, SessionConfig()).run(gcn.feeds(True))["logits"]
    stock = PortableExecutor(int8, SessionConfig()).run(gcn.feeds(True))["logits"]
    np.testing.assert_array_equal(fast, stock)
    assert np.mean(fast.argmax(1) == gcn.reference.argmax(1)) > 0.9
