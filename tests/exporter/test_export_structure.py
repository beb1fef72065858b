"""One exported model serves the full graph, sampled subgraphs and padded or merged batches
with the same outputs for the same nodes, at any thread count and optimisation level."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from export_testkit import (
    MODELS,
    community_graph,
    full_feeds,
    merged_feeds,
    model_config,
    relative_error,
    sampled_feeds,
    train_model,
    trained,
)
from qgnn.exporter.emit.stack import emit_stack
from qgnn.exporter.parity import ort_session, run_onnx
from qgnn.exporter.quant_params import read_sites
from qgnn.graph.container import Graph
from qgnn.graph.neighbourhood import khop_blocks
from qgnn.training.nn.block import full_graph_block
from qgnn.training.quant import QuantConfig, quant_state
from qgnn.training.sampling.blocks import to_blocks

DQ8 = QuantConfig(bits=8, p_max=0.5)
PRECISIONS = ("int8", "fp32")


def exported(name, precision, **options):
    graph, model = trained(name, DQ8 if precision == "int8" else None, **options)
    sites = (read_sites(quant_state(model), "", len(model.layers)) if precision == "int8"
             else None)
    return graph, model, emit_stack(model, sites, task="node")


def model_features(graph, em):
    x = graph.x
    return x if em.input_site is None else em.input_site.quantize(x).astype(np.uint8)


def assert_same(a, b, precision):
    if precision == "int8":
        np.testing.assert_array_equal(a, b)
    else:  # float sums run in another order
        assert relative_error(a, b) < 1e-6


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", MODELS)
def test_sampled_subgraph_gives_the_full_graph_rows(name, precision):
    graph, _, em = exported(name, precision)
    session = ort_session(em.model)
    full = run_onnx(session, full_feeds(graph, em))["logits"]
    seeds = np.array([3, 50, 17, 88, 41])
    blocks = khop_blocks(graph.csc, seeds, [-1, -1])
    assert blocks[0].num_src < graph.num_nodes  # a real subgraph
    feeds = sampled_feeds(blocks, model_features(graph, em), np.diff(graph.csc.indptr))
    sub = run_onnx(session, feeds)["logits"]
    assert sub.shape == (seeds.size, graph.num_classes)
    assert_same(sub, full[seeds], precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", MODELS)
def test_merged_and_padded_batches_give_each_requests_rows(name, precision):
    graph, _, em = exported(name, precision)
    session = ort_session(em.model)
    features, degree = model_features(graph, em), np.diff(graph.csc.indptr)
    requests = [khop_blocks(graph.csc, np.array(s), [-1, -1])
                for s in ([3, 50], [17], [50, 60, 2])]  # node 50 in two requests
    alone = [run_onnx(session, sampled_feeds(b, features, degree))["logits"] for b in requests]
    for pad in (0, 4):
        feeds, rows = merged_feeds(requests, features, degree, pad=pad)
        batch = run_onnx(session, feeds)["logits"]
        assert batch.shape[0] == sum(r.size for r in rows) + pad
        for single, where in zip(alone, rows, strict=True):
            assert_same(batch[where], single, precision)


@pytest.mark.parametrize("name", ["gcn", "gat", "sage"])
def test_sampled_subgraph_matches_pytorch_on_the_same_blocks(name):
    graph, model, em = exported(name, "fp32")
    seeds = np.array([5, 6, 70])
    sampled = khop_blocks(graph.csc, seeds, [-1, -1])
    degree = np.diff(graph.csc.indptr)
    ours = run_onnx(ort_session(em.model),
                    sampled_feeds(sampled, graph.x, degree))["logits"]
    with torch.no_grad():
        theirs = model(torch.from_numpy(graph.x[sampled[0].node_ids]),
                       to_blocks(sampled, degree, "sum")).numpy()
    assert relative_error(ours, theirs) < 1e-4


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", MODELS)
def test_one_and_two_threads_give_identical_outputs(name, precision):
    graph, _, em = exported(name, precision)
    feeds = full_feeds(graph, em)
    one = run_onnx(ort_session(em.model, threads=1), feeds)["logits"]
    two = run_onnx(ort_session(em.model, threads=2), feeds)["logits"]
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("name", MODELS)
def test_graph_optimisations_do_not_change_the_integers(name):
    """onnxruntime's fusions (all levels) leave the INT8 model's outputs bit-identical."""
    graph, _, em = exported(name, "int8", residual=True, norm="batch", hidden=6, num_layers=3)
    feeds = full_feeds(graph, em)
    outs = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(em.model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        outs.append(session.run(None, feeds)[0])
    np.testing.assert_array_equal(outs[0], outs[1])


def test_export_is_deterministic():
    _, model = trained("egc", DQ8)
    sites = read_sites(quant_state(model), "", 2)
    first = emit_stack(model, sites, task="node").model.SerializeToString()
    again = emit_stack(model, sites, task="node").model.SerializeToString()
    assert first == again


def test_inputs_are_the_documented_signature():
    graph, _, em = exported("gcn", "int8")
    spec = {i.name: (i.type.tensor_type.elem_type,
                     [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
            for i in em.model.graph.input}
    u8, i64 = 2, 7  # onnx.TensorProto.UINT8, INT64
    assert spec == {"x": (u8, ["num_nodes", graph.num_features]), "in_degree": (i64, ["num_nodes"]),
                    "indptr_0": (i64, ["num_dst_0_plus_1"]), "src_0": (i64, ["num_edges_0"]),
                    "indptr_1": (i64, ["num_dst_1_plus_1"]), "src_1": (i64, ["num_edges_1"])}
    assert [(o.name, o.type.tensor_type.elem_type) for o in em.model.graph.output] == [
        ("logits", 1)]
    assert em.model.ir_version == 10
    assert {(o.domain, o.version) for o in em.model.opset_import} == {("", 21), ("ai.qgnn", 1)}


@pytest.mark.parametrize("name", ["gat", "gcn", "egc"])
def test_stored_self_loops_are_handled_as_in_training(name):
    """GAT drops stored self-loops before adding its own; GCN and EGC keep them and add one."""
    graph = community_graph()
    src, dst = graph.edge_index()
    loops = np.arange(0, graph.num_nodes, 3)
    looped = Graph.from_edges(np.r_[src, loops], np.r_[dst, loops], graph.num_nodes, x=graph.x,
                              y=graph.y, train_mask=graph.train_mask)
    model = train_model(looped, model_config(name, looped), None, steps=5)
    em = emit_stack(model, None, task="node")
    ours = run_onnx(ort_session(em.model), full_feeds(looped, em))["logits"]
    with torch.no_grad():
        theirs = model(torch.from_numpy(looped.x), full_graph_block(looped)).numpy()
    assert relative_error(ours, theirs) < 1e-4
