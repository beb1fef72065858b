"""Bundles written by ``qgnn export`` (qgnn.exporter) served by the engine.

Each model is a freshly initialised, Degree-Quant wrapped stack whose ranges were calibrated on
a small synthetic graph (training would only change the weights), checkpointed and exported
like any run. The engine must give the exporter's own onnxruntime full-graph answer bit for
bit, partitioned and portable alike, and the link table must be what the engine recomputes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

import engine_testkit as tk  # noqa: E402
from qgnn.graph.synth import powerlaw_communities  # noqa: E402
from qgnn.runtime import kernels  # noqa: E402
from qgnn.runtime.bundle.reader import load_bundle  # noqa: E402
from qgnn.runtime.engine import Engine, EngineConfig, quantize_rows, softmax  # noqa: E402


def _export(root: Path, kind: str, task: str = "node", **layer_kwargs) -> Path:
    graph = powerlaw_communities(300, avg_degree=6, num_communities=4, num_features=16, seed=1)
    return tk.export_calibrated(root, graph, kind, task, layer_kwargs=layer_kwargs)


def _full_feeds(bundle) -> dict[str, np.ndarray]:
    """The whole graph as the exported model's inputs."""
    indptr, indices = np.asarray(bundle.array("graph/indptr")), np.asarray(
        bundle.array("graph/indices"))
    feeds = {"x": np.asarray(bundle.array("graph/features")),
             "in_degree": np.diff(indptr).astype(np.int64)}
    for i in range(bundle.manifest.model.num_layers):
        feeds[f"indptr_{i}"], feeds[f"src_{i}"] = indptr, indices
    return feeds


def _onnxruntime_full_graph(bundle_path: Path) -> np.ndarray:
    """The exported model on the whole graph, straight through onnxruntime (default options)."""
    bundle = load_bundle(bundle_path)
    session = ort.InferenceSession(str(bundle.model_path()), providers=["CPUExecutionProvider"])
    return session.run(None, _full_feeds(bundle))[0]


@pytest.fixture(scope="module")
def gcn_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("exported"), "gcn")


def _check_node_bundle(path: Path) -> None:
    expected = _onnxruntime_full_graph(path)
    bundle = load_bundle(path)
    for portable in (False, True):
        engine = Engine(bundle, EngineConfig(portable=portable))
        assert engine.fanouts == (-1, -1)  # the exporter's serving default
        np.testing.assert_array_equal(engine.infer_all(chunk_size=64), expected)
        ids = np.array([5, 299, 0, 5])
        np.testing.assert_array_equal(engine.predict_nodes(ids), softmax(expected[ids]))


def test_exported_gcn_serves_the_exporters_answers(gcn_bundle: Path) -> None:
    _check_node_bundle(gcn_bundle)


def _kernel_ops(engine: Engine) -> set[str]:
    return {k.op_type for phase in engine.executor.plan.kernels for k in phase}


def test_exported_gcn_normalises_and_scales_edges_in_the_fused_kernel(gcn_bundle: Path) -> None:
    ops = _kernel_ops(Engine(load_bundle(gcn_bundle)))
    assert "QGCNAggregate" in ops and "EdgeDst" not in ops  # no self-looped CSR left


def test_exported_gat_runs_attention_and_per_head_weights_in_fused_kernels(tmp_path: Path
                                                                          ) -> None:
    path = _export(tmp_path, "gat", heads=2)
    plan = Engine(load_bundle(path)).executor.plan
    nodes = [k for phase in plan.kernels for k in phase]
    logits = [k for k in nodes if k.op_type == "GatLogits"]  # uint8: QEdgeSoftmax reads them
    assert len(logits) == 2 and all(k.attributes["scores"] is not None for k in logits)
    ops = [k.op_type for k in nodes]
    # the exact softmax with the edge weights' QuantizeLinear: one kernel per layer
    assert ops.count("QEdgeSoftmaxQ") == 2 and not {"EdgeSoftmax", "QEdgeSoftmax"} & set(ops)
    assert "QMessageAggregate" in ops
    left = {n.op_type for s in plan.segments for n in s.nodes}
    assert not left & {"LeakyRelu", "Gather", "MatMulInteger"}
    _check_node_bundle(path)
    expected = _onnxruntime_full_graph(path)
    levels = [lvl for lvl in kernels.levels_supported() if lvl in kernels.levels_built()]
    for level in levels:  # the exact softmax: the same bits at every level
        engine = Engine(load_bundle(path), EngineConfig(isa=level))
        np.testing.assert_array_equal(engine.infer_all(chunk_size=64), expected, err_msg=level)


def _legacy_gat(model_bytes: bytes) -> bytes:
    """The model as the exporter wrote GAT before the exact softmax: each ``QEdgeSoftmax`` of
    the uint8 logits replaced by ``EdgeSoftmax`` of their ``DequantizeLinear``."""
    import onnx
    from qgnn.exporter.ops import function_protos, make_op_node

    model = onnx.ModelProto.FromString(model_bytes)
    producers = {o: n for n in model.graph.node for o in n.output}
    nodes = []
    for node in model.graph.node:
        if node.op_type != "QEdgeSoftmax":
            nodes.append(node)
            continue
        logits_q, indptr, _ = node.input
        quantize = producers[logits_q]
        while quantize.op_type != "QuantizeLinear":  # the Clip of bits < 8
            quantize = producers[quantize.input[0]]
        dq = f"{logits_q}_legacy_dq"
        nodes.append(onnx.helper.make_node("DequantizeLinear",
                                           [logits_q, *quantize.input[1:3]], [dq]))
        nodes.append(make_op_node("EdgeSoftmax", [dq, indptr], list(node.output)))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    tables = {n.input[2] for n in producers.values() if n.op_type == "QEdgeSoftmax"}
    kept = [t for t in model.graph.initializer if t.name not in tables]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    del model.functions[:]
    model.functions.extend(function_protos(n for n in nodes if n.domain == "ai.qgnn"))
    return model.SerializeToString()


def test_a_legacy_float_softmax_gat_keeps_its_answers(tmp_path: Path) -> None:
    """Bundles exported before QEdgeSoftmax hold EdgeSoftmax of dequantised logits: they still
    load, run it in its own kernel (after the fused GatLogitsF32) and answer as stock
    onnxruntime does on the same file."""
    from qgnn.runtime.engine.executor import PartitionedExecutor, PortableExecutor
    from qgnn.runtime.engine.session import SessionConfig

    path = _export(tmp_path, "gat", heads=2)
    bundle = load_bundle(path)
    legacy = _legacy_gat(bundle.model_path().read_bytes())
    feeds = _full_feeds(bundle)
    session = ort.InferenceSession(legacy, providers=["CPUExecutionProvider"])
    want = session.run(None, feeds)[0]
    fast = PartitionedExecutor(legacy, SessionConfig())
    ops = [k.op_type for phase in fast.plan.kernels for k in phase]
    assert ops.count("EdgeSoftmax") == 2 and ops.count("GatLogitsF32") == 2
    assert "QEdgeSoftmax" not in ops
    for executor in (fast, PortableExecutor(legacy, SessionConfig())):
        np.testing.assert_array_equal(executor.run(feeds)["logits"], want)
    new = _onnxruntime_full_graph(path)
    # the two softmaxes agree to ~1e-7: an edge weight moves only next to a rounding boundary
    assert (new == want).mean() >= 0.99


def test_exported_gcn_capped_partitioned_equals_portable(gcn_bundle: Path) -> None:
    bundle = load_bundle(gcn_bundle)
    fast = Engine(bundle, EngineConfig(fanouts=(3, 2)))
    stock = Engine(bundle, EngineConfig(fanouts=(3, 2), portable=True))
    ids = np.arange(0, 300, 7)
    np.testing.assert_array_equal(fast.predict_nodes(ids), stock.predict_nodes(ids))


def test_exported_link_table_is_what_the_engine_recomputes(tmp_path: Path) -> None:
    path = _export(tmp_path, "gcn", task="link")
    bundle = load_bundle(path)
    engine = Engine(bundle)
    z = engine.forward(engine.store.snapshot(), np.arange(300))
    values, scales = quantize_rows(z)
    np.testing.assert_array_equal(values, np.asarray(bundle.array("embeddings/values")))
    np.testing.assert_array_equal(scales, np.asarray(bundle.array("embeddings/scales")))
    ids, probs = engine.recommend(3, 5, exclude_seen=True)
    assert ids.size == 5 and np.all(np.diff(probs) <= 0)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "kwargs"), [("sage", {}), ("gin", {}),
                                              ("gat", {"heads": 2}),
                                              ("egc", {"heads": 2, "bases": 2})])
def test_every_exported_layer_type(tmp_path: Path, kind: str, kwargs: dict) -> None:
    _check_node_bundle(_export(tmp_path, kind, **kwargs))


@pytest.mark.parametrize(("kind", "kwargs"), [("gcn", {}), ("sage", {}), ("gin", {}),
                                              ("gat", {"heads": 2}),
                                              ("egc", {"heads": 2, "bases": 2})])
def test_every_exported_weight_matrix_runs_in_the_qlinear_kernel(tmp_path: Path, kind: str,
                                                                 kwargs: dict) -> None:
    """The exporter's requantised linear layers are what fusion.py recognises: no
    MatMulInteger with a constant weight is left to onnxruntime (EGC's product of two
    activations has no constant weight and stays there)."""
    from qgnn.runtime.engine.executor import PartitionedExecutor
    from qgnn.runtime.engine.session import SessionConfig

    bundle = load_bundle(_export(tmp_path, kind, **kwargs))
    executor = PartitionedExecutor(bundle.model_path().read_bytes(), SessionConfig())
    plan = executor.plan
    fused = [k for phase in plan.kernels for k in phase if k.op_type == "QLinear"]
    left = [n for s in plan.segments for n in s.nodes if n.op_type == "MatMulInteger"
            and n.input[1] in plan.initializers]
    assert fused and not left


# FloatStep outputs and their ops per layer type: the rule-5 chains the exporter writes between
# two uint8 sites (bias adds, the ReLU into the next layer's input, requantised messages, the sum
# of two branches, eval BatchNorm + ReLU). Left to onnxruntime: chains from float tensors (GCN's
# edge coefficients; GAT's logits have their own kernel, gat_fusion.py), GAT's head mean
# (ReduceSum), EGC's aggregator mix, and each model's last DequantizeLinear (its float output).
FUSED_FLOAT_STEPS = {
    "gcn": {"layers.0/out": ["add"], "layers.0/next_x": ["relu"], "layers.1/out": ["add"]},
    "sage": {"layers.0/msg": [], "layers.0/out": ["add_b"], "layers.0/next_x": ["relu"],
             "layers.1/msg": [], "layers.1/out": ["add_b"]},
    "gin": {"layers.0/msg": [], "layers.0/combined": ["add_b"],
            "layers.0/hidden": ["affine_f64", "relu"], "layers.0/next_x": ["relu"],
            "layers.1/msg": [], "layers.1/combined": ["add_b"],
            "layers.1/hidden": ["affine_f64", "relu"]},
    "gat": {"layers.0/out": ["add"], "layers.0/next_x": ["relu"]},
    "egc": {"layers.0/msg": [], "layers.0/next_x": ["relu"], "layers.1/msg": []},
}


# The kernel each step runs in (output_tables.py): one-input steps fold into the aggregate or
# linear layer before them, or merge into the float step before them, where nothing else reads
# the tensor in between.
FOLDED_INTO = {
    "gcn": dict.fromkeys(FUSED_FLOAT_STEPS["gcn"], "QGCNAggregate"),
    "sage": dict.fromkeys(FUSED_FLOAT_STEPS["sage"], "FloatStep"),
    "gin": {"layers.0/msg": "FloatStep", "layers.0/combined": "FloatStep",
            "layers.0/hidden": "QLinear", "layers.0/next_x": "QLinear",
            "layers.1/msg": "FloatStep", "layers.1/combined": "FloatStep",
            "layers.1/hidden": "QLinear"},
    "gat": dict.fromkeys(FUSED_FLOAT_STEPS["gat"], "FloatStep"),
    "egc": {"layers.0/msg": "QLinear", "layers.0/next_x": "FloatStep",
            "layers.1/msg": "QLinear"},
}


@pytest.mark.parametrize(("kind", "kwargs"), [("gcn", {}), ("sage", {}), ("gin", {}),
                                              ("gat", {"heads": 2}),
                                              ("egc", {"heads": 2, "bases": 2})])
def test_exported_float_steps_run_fused_with_the_exporters_answers(tmp_path: Path, kind: str,
                                                                   kwargs: dict) -> None:
    path = _export(tmp_path, kind, **kwargs)
    plan = Engine(load_bundle(path)).executor.plan
    fused, hosts = {}, {}
    for spec in (k for phase in plan.kernels for k in phase):
        steps = [spec.attributes] if spec.op_type == "FloatStep" else []
        steps += spec.attributes.get("then", []) + spec.attributes.get("output_steps", [])
        for step in steps:
            name = step.get("output", spec.output)
            fused[name] = [op[0] for op in step["ops"]]
            hosts[name] = spec.op_type
    assert fused == FUSED_FLOAT_STEPS[kind]
    assert hosts == FOLDED_INTO[kind]
    _check_node_bundle(path)
