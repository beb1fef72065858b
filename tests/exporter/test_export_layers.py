"""Every layer type exports to a checked ONNX graph whose INT8 integers are the integer
formulation of the Degree-Quant model, and whose FP32 outputs match PyTorch."""

from __future__ import annotations

import mlas_emulation
import numpy as np
import onnx
import pytest
import torch
from export_testkit import (
    MODELS,
    block_structures,
    dyadic,
    full_feeds,
    make_arithmetic_exact,
    relative_error,
    trained,
)
from qgnn.contract import WEIGHT_STORAGE_OFFSET
from qgnn.exporter.emit.stack import emit_stack
from qgnn.exporter.export import check_model
from qgnn.exporter.ops import reference_ops
from qgnn.exporter.parity import (
    compare_integers,
    fake_quant_integers,
    ort_session,
    run_onnx,
    torch_edge_order,
)
from qgnn.exporter.quant_params import read_sites
from qgnn.training.nn.block import full_graph_block
from qgnn.training.quant import QuantConfig, quant_state
from qgnn.training.quant.integer_ref import integer_forward

DQ8 = QuantConfig(bits=8, p_max=0.5)
# The ai.qgnn aggregation ops an INT8 export must contain (the test EGC runs every aggregator).
AGGREGATION = {"gcn": {"QGCNAggregate"}, "gat": {"QMessageAggregate"},
               "egc": {"QGCNAggregate", "QAggregate"}}


def export(model, quantised=True, debug=False):
    sites = read_sites(quant_state(model), "", len(model.layers)) if quantised else None
    return emit_stack(model, sites, task="node", debug=debug)


def run(em, graph, features=None, threads=1):
    return run_onnx(ort_session(em.model, threads), full_feeds(graph, em, features))


def torch_logits(model, graph, features=None):
    x = torch.from_numpy(graph.x if features is None else features)
    with torch.no_grad():
        return model(x, full_graph_block(graph)).numpy()


@pytest.mark.parametrize("name", MODELS)
def test_fp32_export_matches_pytorch_within_1e4(name):
    graph, model = trained(name, None)
    em = export(model, quantised=False)
    check_model(em.model)
    assert em.input_dtype == "float32" and em.input_site is None
    out = run(em, graph)["logits"]
    assert relative_error(out, torch_logits(model, graph)) < 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_int8_export_is_a_checked_integer_graph(name):
    _, model = trained(name, DQ8)
    em = export(model)
    check_model(em.model)
    ops = {n.op_type for n in em.model.graph.node}
    aggregation = AGGREGATION.get(name, {"QAggregate"})
    assert {"MatMulInteger", "QuantizeLinear", "DequantizeLinear"} | aggregation <= ops
    assert "MatMul" not in ops and "Gemm" not in ops  # no float matrix product left
    weights = [i for i in em.model.graph.initializer if i.name.endswith("weight_q")]
    assert weights and all(w.data_type == onnx.TensorProto.UINT8 for w in weights)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in em.model.graph.initializer}
    for node in (n for n in em.model.graph.node if n.op_type == "MatMulInteger"):
        zp = inits[node.input[3]] if node.input[1].endswith("weight_q") else None
        assert zp is None or (zp.dtype == np.uint8 and zp == WEIGHT_STORAGE_OFFSET)
    assert {f.name for f in em.model.functions} >= aggregation
    assert em.input_dtype == "uint8" and em.model.graph.input[0].type.tensor_type.elem_type \
        == onnx.TensorProto.UINT8


@pytest.mark.parametrize("name", MODELS)
def test_int8_outputs_track_the_fake_quantised_model(name):
    """Trained DQ model: integers agree at (nearly) every site; where the contract's integer
    arithmetic rounds a float tie differently, by one step."""
    graph, model = trained(name, DQ8)
    em = export(model, debug=True)
    outs = run(em, graph)
    logits, ints = fake_quant_integers(model, torch.from_numpy(graph.x),
                                       full_graph_block(graph))
    report = compare_integers(em.debug_tensors, outs, ints, block_structures(graph, 2))
    assert {r.key for r in report} == {k for k, v in quant_state(model).items() if not v["signed"]}
    total = sum(r.size for r in report)
    assert sum(r.mismatches for r in report) <= 0.01 * total
    step = float(quant_state(model)["layers.1.q.out"]["scale"][0])
    assert np.abs(outs["logits"] - logits).max() <= 3 * step * (1 + 1e-6)
    assert (outs["logits"].argmax(1) == logits.argmax(1)).mean() >= 0.95


@pytest.mark.parametrize(("name", "bits", "per_channel"), [
    ("gcn", 8, False), ("sage", 4, True), ("gin", 8, False), ("gat", 4, True), ("gat", 8, False),
    pytest.param("gcn", 8, True, marks=pytest.mark.slow),
    pytest.param("gcn", 4, False, marks=pytest.mark.slow),
    pytest.param("sage", 8, False, marks=pytest.mark.slow)])
def test_equals_the_numpy_integer_reference_exactly(name, bits, per_channel):
    """qgnn.training.quant.integer_ref (an independent numpy oracle of the integer
    formulation) gives the same integers at every site and the same logits, bit for bit, on a
    trained model."""
    graph, model = trained(name, QuantConfig(bits=bits, per_channel=per_channel, p_max=0.5))
    em = export(model, debug=True)
    outs = run(em, graph)
    block = full_graph_block(graph)
    params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    trace: dict[str, np.ndarray] = {}
    ref = integer_forward(name, graph.x, params, quant_state(model), block.src.numpy(),
                          block.dst.numpy(), 2, trace)
    for tensor in em.debug_tensors:
        ours = outs[tensor.output].astype(np.int64)
        if tensor.layout != "node":  # integer_ref appends loops after all edges, as training
            ours = ours[torch_edge_order(tensor.layout, *block_structures(graph, 1)[0])]
        np.testing.assert_array_equal(ours, trace[tensor.key], err_msg=tensor.key)
    np.testing.assert_array_equal(outs["logits"], ref)
    assert max(int(outs[t.output].max()) for t in em.debug_tensors) <= 2**bits - 1


@pytest.mark.parametrize(("name", "options"), [
    *[pytest.param(name, {}, id=name) for name in MODELS],
    pytest.param("gcn", {"input_proj": True, "head": True}, id="gcn-proj-head")])
def test_int8_export_is_exact_on_a_saturating_avx2_matmul(name, options):
    """Evaluated with onnxruntime's AVX2 uint8 x int8 arithmetic (saturating 16-bit pair sums,
    mlas_emulation), the export gives the exact logits: its weights are stored as uint8."""
    graph, model = trained(name, DQ8, **options)
    em = export(model)
    feeds = full_feeds(graph, em)
    exact = run(em, graph)["logits"]
    avx2 = mlas_emulation.avx2_evaluator(em.model, reference_ops())
    np.testing.assert_array_equal(avx2.run(["logits"], feeds)[0], exact)


CASES = [pytest.param(name, {}, id=name) for name in MODELS] + [
    pytest.param("gcn", {"residual": True, "norm": "batch", "hidden": 5}, id="gcn-residual-bn"),
    pytest.param("gin", {"input_proj": True, "residual": True, "norm": "batch", "num_layers": 3},
                 id="gin-proj-residual-bn-3layers"),
    pytest.param("gcn", {"input_proj": True, "residual": True, "norm": "batch", "head": True},
                 id="gcn-proj-residual-bn-head"),
    pytest.param("sage", {"head": True, "residual": True}, id="sage-head-residual"),
    pytest.param("sage", {"bits": 4}, id="sage-int4", marks=pytest.mark.slow),
    pytest.param("gat", {"per_channel": True}, id="gat-per-channel", marks=pytest.mark.slow),
    pytest.param("egc", {"bits": 4}, id="egc-int4", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "options"), CASES)
def test_integers_are_exact_when_float32_arithmetic_is(name, options):
    """With power-of-two scales and biases on their accumulator grids, the fake-quantised
    model's float32 arithmetic is exact, so every site's integers and the logits must equal
    the export's bit for bit (degree 4 / 3 + loop keeps mean divisions exact)."""
    options = dict(options)
    quant = QuantConfig(bits=options.pop("bits", 8), per_channel=options.pop("per_channel",
                                                                           False), p_max=0.5)
    graph, model = trained(name, quant, degree=3 if name in ("egc", "gat", "gcn") else 4,
                           **options)
    make_arithmetic_exact(model)
    em = export(model, debug=True)
    float_input = not options.get("input_proj") and options.get("residual") and options.get(
        "hidden") == graph.num_features
    assert em.input_dtype == ("float32" if float_input else "uint8")
    features = dyadic(graph.x) if float_input else graph.x
    outs = run(em, graph, features)
    logits, ints = fake_quant_integers(model, torch.from_numpy(features),
                                       full_graph_block(graph))
    layers = len(model.layers)
    report = compare_integers(em.debug_tensors, outs, ints, block_structures(graph, layers))
    assert [(r.key, r.mismatches) for r in report if r.mismatches] == []
    assert len(report) == len([k for k, v in quant_state(model).items() if not v["signed"]])
    np.testing.assert_array_equal(outs["logits"], logits)


def test_debug_outputs_only_in_debug_mode():
    _, model = trained("sage", DQ8)
    plain, debug = export(model), export(model, debug=True)
    assert [o.name for o in plain.model.graph.output] == ["logits"]
    assert plain.debug_tensors == []
    names = [o.name for o in debug.model.graph.output]
    assert names[-1] == "logits" or "logits" in names
    assert {t.output for t in debug.debug_tensors} == set(names) - {"logits"}
    assert all(n.startswith("debug/layers.") for n in set(names) - {"logits"})


def intermediate_shapes(model: onnx.ModelProto, feeds: dict[str, np.ndarray]
                        ) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor the main graph computes, from one onnxruntime run."""
    typed = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in typed.graph.value_info}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for name in (o for n in model.graph.node for o in n.output if o and o not in known):
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
    session = ort_session(probe, 1)
    values = session.run(None, feeds)
    return {o.name: v.shape for o, v in zip(session.get_outputs(), values, strict=True)}


def test_int8_gcn_builds_no_tensor_per_looped_edge():
    """QGCNAggregate builds the self-loops and quantised coefficients inside: outside a debug
    export no tensor of the INT8 GCN graph has a row per edge (the src inputs aside), not even
    a 1-D one; the debug export adds the ``edge_weight`` and ``msg`` sites per looped edge."""
    graph, model = trained("gcn", DQ8)
    for debug in (False, True):
        em = export(model, debug=debug)
        feeds = full_feeds(graph, em)
        edges = min(len(v) for k, v in feeds.items() if k.startswith("src_"))
        assert edges > graph.num_nodes
        long = {k for k, shape in intermediate_shapes(em.model, feeds).items()
                if len(shape) >= 1 and shape[0] >= edges}
        if debug:
            assert any("edge_weight" in k for k in long) and any("/msg" in k for k in long)
        else:
            assert long == set(), long


@pytest.mark.parametrize("name", ["gcn", "gat"])
def test_int8_gcn_and_gat_never_build_edge_by_feature_tensors(name):
    """Edge scaling and aggregation are one QMessageAggregate (GCN: QGCNAggregate): no tensor in
    the exported graph has a row per edge and a column per feature (GAT's per-edge, per-head
    attention, E x H, is all that scales with E beyond 1-D tensors). A debug export adds the
    ``msg`` site."""
    graph, model = trained(name, DQ8)
    heads = getattr(model.layers[0], "heads", 1)
    for debug in (False, True):
        em = export(model, debug=debug)
        feeds = full_feeds(graph, em)
        edges = min(len(v) for k, v in feeds.items() if k.startswith("src_"))
        wide = {k: shape for k, shape in intermediate_shapes(em.model, feeds).items()
                if len(shape) >= 2 and shape[0] >= edges and np.prod(shape[1:]) > heads}
        if debug:
            assert any("/msg" in k for k in wide), wide
        else:
            assert wide == {}, wide
