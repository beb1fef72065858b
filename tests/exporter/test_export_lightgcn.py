"""LightGCN exports like every layer type: FP32 equal to PyTorch, INT8 equal to the numpy
integer formulation bit for bit, and a Degree-Quant run's bundle within a few output steps of
the fake-quantised PyTorch model, served from its INT8 embedding table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_testkit import relative_error, save_trained_run
from qgnn.exporter.emit.stack import emit_stack
from qgnn.exporter.export import check_model, export_run, load_run_model
from qgnn.exporter.parity import ort_session, run_onnx
from qgnn.graph.synth import bipartite_recommender
from qgnn.runtime.bundle.layout import GRAPH_FEATURES
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.training.nn.block import full_graph_block
from qgnn.training.quant import QuantConfig
from qgnn.training.quant.integer_ref import integer_forward


def _data():
    return bipartite_recommender(30, 24, interactions_per_user=6, num_features=4, seed=2)


@pytest.fixture(scope="module", params=[8, 4])
def run(request, tmp_path_factory):
    quant = QuantConfig(bits=request.param)
    directory = tmp_path_factory.mktemp(f"lightgcn{request.param}") / "run"
    save_trained_run(directory, task="link", model="lightgcn", quant=quant, data=_data(),
                     epochs=6, num_layers=3)
    return load_run_model(directory), directory


def _feeds(graph, em, features):
    csc = graph.csc
    x = features if em.input_site is None else em.input_site.quantize(features).astype(np.uint8)
    feeds = {"x": x, "in_degree": np.diff(csc.indptr).astype(np.int64)}
    for i in range(em.num_layers):
        feeds[f"indptr_{i}"] = csc.indptr.astype(np.int64)
        feeds[f"src_{i}"] = csc.indices.astype(np.int64)
    return feeds


def test_int8_export_equals_the_integer_reference(run):
    loaded, _ = run
    graph = _data().graph
    table = loaded.model.embedding.weight.detach().numpy()
    em = emit_stack(loaded.gnn, loaded.sites, task="link")
    check_model(em.model)
    ops = {n.op_type for n in em.model.graph.node}
    assert "QMessageAggregate" in ops and "QGCNAggregate" not in ops and "Relu" not in ops
    out = run_onnx(ort_session(em.model, 1), _feeds(graph, em, table))["embeddings"]
    src, dst = graph.edge_index()
    params = {k.removeprefix("encoder."): v.detach().numpy()
              for k, v in loaded.model.state_dict().items() if k.startswith("encoder.")}
    state = {k.removeprefix("encoder."): v for k, v in loaded.quant_state.items()}
    ref = integer_forward("lightgcn", table, params, state, src, dst, 3)
    np.testing.assert_array_equal(out, ref)


def test_bundle_serves_an_int8_embedding_table_within_steps_of_pytorch(run, tmp_path):
    loaded, directory = run
    data = _data()
    summary = export_run(directory, tmp_path / "bundle", graph=data)
    table = loaded.model.embedding.weight.detach().numpy()
    with load_bundle(summary.bundle) as bundle:
        features = bundle.array(GRAPH_FEATURES)
        assert features.dtype == np.uint8
        np.testing.assert_array_equal(features, loaded.sites[0]["x"].quantize(table))
        assert bundle.manifest.model.type == "lightgcn"
        assert bundle.manifest.raw["model"]["precision"] == "int8"
    assert summary.parity is not None and summary.parity.max_error_steps <= 3
    # served like every other model: the engine loads it and recommends items
    from qgnn.runtime.engine.engine import Engine

    with load_bundle(summary.bundle) as bundle:
        engine = Engine(bundle)
        ids, _ = engine.recommend(0, 5, exclude_seen=True)
        assert bundle.array("graph/node_type.npy").sum() == data.num_items
    assert len(ids) == 5


def test_fp32_export_matches_pytorch(tmp_path):
    directory = save_trained_run(tmp_path / "run", task="link", model="lightgcn", data=_data(),
                                 epochs=4, num_layers=2)
    loaded = load_run_model(directory)
    graph = _data().graph
    em = emit_stack(loaded.gnn, None, task="link")
    check_model(em.model)
    table = loaded.model.embedding.weight.detach().numpy()
    out = run_onnx(ort_session(em.model, 1), _feeds(graph, em, table))["embeddings"]
    with torch.no_grad():
        ref = loaded.model(None, full_graph_block(graph)).numpy()
    assert relative_error(out, ref) < 1e-5
