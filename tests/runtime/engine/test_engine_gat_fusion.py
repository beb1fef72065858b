"""GAT's attention logits (runtime/engine/gat_fusion.py): the chain the exporter writes runs as
one GatLogits kernel node and equals stock onnxruntime bit for bit at every ISA level; chains
that are read elsewhere or not exactly the pattern stay (in part) in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from qgnn.contract import WEIGHT_STORAGE_OFFSET, attention_matrix, weight_storage
from qgnn.exporter.ops import IR_VERSION, opset_imports
from qgnn.runtime import kernels
from qgnn.runtime.engine.executor import PartitionedExecutor, PortableExecutor
from qgnn.runtime.engine.partition import partition
from qgnn.runtime.engine.session import SessionConfig

HEADS, DIM, N, D, E = 4, 8, 3000, 1000, 20_000
needs_kernels = pytest.mark.skipif(not kernels.available(), reason="kernels not built")


def _levels() -> list[str]:
    return [lvl for lvl in kernels.levels_supported() if lvl in kernels.levels_built()]


def _model(*, dequantize: bool = True, float_scores: bool = False, dense: bool = False,
           expose: str | None = None, bits: int = 8) -> onnx.ModelProto:
    """lin (N, H*C) uint8, its first D rows lin_dst, src/dst (E,) -> the exporter's logit chain.
    ``float_scores``: the scores are graph inputs; ``dense``: one weight entry off the block
    diagonal; ``expose``: that intermediate is a graph output too."""
    rng = np.random.default_rng(3)
    inits, nodes = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def scores(side: str, x: str) -> str:
        att = attention_matrix(rng.integers(-127, 128, (HEADS, DIM)).astype(np.int8))
        if dense:
            att[0, HEADS - 1] = 5
        nodes.extend([
            helper.make_node("MatMulInteger", [x, const(f"A_{side}", weight_storage(att)),
                                               const(f"zp_{side}", np.uint8(37)),
                                               const(f"wzp_{side}",
                                                     np.uint8(WEIGHT_STORAGE_OFFSET))],
                             [f"dots_{side}"]),
            helper.make_node("Cast", [f"dots_{side}"], [f"dotsf_{side}"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"dotsf_{side}", const(
                f"c_{side}", rng.uniform(1e-4, 1e-3, HEADS).astype(np.float32))],
                [f"score_{side}"])])
        return f"score_{side}"

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, [None]) for n in ("src", "dst")]
    if float_scores:
        s, t = "score_src", "score_dst"
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, HEADS])
                   for n in (s, t)]
    else:
        s, t = scores("src", "lin"), scores("dst", "lin_dst")
        inputs += [helper.make_tensor_value_info(n, TensorProto.UINT8, [None, HEADS * DIM])
                   for n in ("lin", "lin_dst")]
    nodes += [helper.make_node("Gather", [s, "src"], ["gs"], axis=0),
              helper.make_node("Gather", [t, "dst"], ["gt"], axis=0),
              helper.make_node("Add", ["gs", "gt"], ["v"]),
              helper.make_node("LeakyRelu", ["v"], ["l"], alpha=0.2),
              helper.make_node("QuantizeLinear", ["l", const("s", np.float32(0.0625)),
                                                  const("zp", np.uint8(9 if bits < 8 else 128))],
                               ["q"])]
    last = "q"
    if bits < 8:
        nodes.append(helper.make_node("Clip", ["q", const("lo", np.uint8(0)),
                                               const("hi", np.uint8(2**bits - 1))], ["qc"]))
        last = "qc"
    if dequantize:
        nodes.append(helper.make_node("DequantizeLinear", [last, "s", "zp"], ["f"]))
        last = "f"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT if dequantize
                                             else TensorProto.UINT8, None)]
    if expose:
        outputs.append(helper.make_tensor_value_info(
            expose, TensorProto.UINT8 if expose == "q" else TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "gat", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION)


def _feeds(float_scores: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    feeds = {"src": rng.integers(0, N, E).astype(np.int64),
             "dst": np.sort(rng.integers(0, D, E)).astype(np.int64)}
    if float_scores:  # multiples of 1/32 against scale 1/16: many rounding ties
        feeds["score_src"] = (rng.integers(-300, 300, (N, HEADS)) / 32).astype(np.float32)
        feeds["score_dst"] = (rng.integers(-300, 300, (D, HEADS)) / 32).astype(np.float32)
    else:
        feeds["lin"] = rng.integers(0, 256, (N, HEADS * DIM)).astype(np.uint8)
        feeds["lin_dst"] = np.ascontiguousarray(feeds["lin"][:D])
    return feeds


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    data = model.SerializeToString()
    stock = PortableExecutor(data, SessionConfig()).run(feeds)
    for isa in _levels():
        for threads in (1, 2):
            fast = PartitionedExecutor(data, SessionConfig(threads=threads), isa=isa).run(feeds)
            for name, value in stock.items():
                np.testing.assert_array_equal(fast[name], value, err_msg=f"{name} {isa}")


def _plan(model: onnx.ModelProto) -> tuple[list, list[str]]:
    plan = partition(model.SerializeToString())
    return ([k for phase in plan.kernels for k in phase],
            [n.op_type for s in plan.segments for n in s.nodes])


@needs_kernels
@pytest.mark.parametrize("dequantize", [True, False])
@pytest.mark.parametrize("bits", [8, 4])
def test_exporters_chain_is_one_kernel_node_equal_to_onnxruntime(dequantize: bool,
                                                                  bits: int) -> None:
    model = _model(dequantize=dequantize, bits=bits)
    kernel_nodes, left = _plan(model)
    assert [k.op_type for k in kernel_nodes] == ["GatLogitsF32" if dequantize else "GatLogits"]
    assert kernel_nodes[0].attributes["scores"] is not None
    assert left == ["Identity"]
    _check(model, _feeds(False))


@needs_kernels
def test_float_scores_fuse_the_edge_part_only() -> None:
    model = _model(float_scores=True)
    kernel_nodes, left = _plan(model)
    assert [k.op_type for k in kernel_nodes] == ["GatLogitsF32"]
    assert kernel_nodes[0].attributes["scores"] is None and left == ["Identity"]
    _check(model, _feeds(True))


@needs_kernels
def test_a_weight_off_the_block_diagonal_leaves_the_scores_to_onnxruntime() -> None:
    model = _model(dense=True)
    kernel_nodes, left = _plan(model)
    assert [k.op_type for k in kernel_nodes] == ["GatLogitsF32"]
    assert kernel_nodes[0].attributes["scores"] is None
    assert left.count("MatMulInteger") == 2
    _check(model, _feeds(False))


@needs_kernels
@pytest.mark.parametrize(("expose", "fused", "scores"), [("v", None, False),
                                                         ("q", "GatLogits", True),
                                                         ("score_src", "GatLogitsF32", False)])
def test_exposed_intermediates_stay_in_onnxruntime(expose: str, fused: str | None,
                                                   scores: bool) -> None:
    model = _model(expose=expose)
    kernel_nodes, _ = _plan(model)
    assert [k.op_type for k in kernel_nodes] == ([fused] if fused else [])
    if fused:
        assert (kernel_nodes[0].attributes["scores"] is not None) == scores
    _check(model, _feeds(False))


def _softmax_model(*, bits: int = 8, expose_alpha: bool = False, scale: float = 0.01,
                   table: np.ndarray | None = None) -> onnx.ModelProto:
    """logits_q (E, H) uint8, indptr -> QEdgeSoftmax -> QuantizeLinear [-> Clip]: the exporter's
    edge weights."""
    from qgnn.contract import softmax_table
    from qgnn.exporter.ops import function_protos, make_op_node

    table = softmax_table(np.float32(0.07), 8) if table is None else table
    inits = [numpy_helper.from_array(table, "table"),
             numpy_helper.from_array(np.float32(scale), "s"),
             numpy_helper.from_array(np.uint8(3), "zp")]
    nodes = [make_op_node("QEdgeSoftmax", ["logits_q", "indptr", "table"], ["alpha"]),
             helper.make_node("QuantizeLinear", ["alpha", "s", "zp"], ["w"])]
    last = "w"
    if bits < 8:
        inits += [numpy_helper.from_array(np.uint8(0), "lo"),
                  numpy_helper.from_array(np.uint8(2**bits - 1), "hi")]
        nodes.append(helper.make_node("Clip", ["w", "lo", "hi"], ["wc"]))
        last = "wc"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.UINT8, None)]
    if expose_alpha:
        outputs.append(helper.make_tensor_value_info("alpha", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "softmax", [helper.make_tensor_value_info("logits_q", TensorProto.UINT8,
                                                         [None, HEADS]),
                           helper.make_tensor_value_info("indptr", TensorProto.INT64, [None])],
        outputs, inits)
    return helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION,
                             functions=function_protos(n for n in nodes if n.domain))


def _softmax_feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    deg = rng.choice([0, 1, 2, 3, 9, 40], D)
    return {"logits_q": rng.integers(0, 256, (int(deg.sum()), HEADS)).astype(np.uint8),
            "indptr": np.concatenate([[0], np.cumsum(deg)]).astype(np.int64)}


@needs_kernels
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("scale", [0.01, 1 / 64, 0.3])
def test_softmax_and_edge_weight_quantiser_are_one_kernel_node(bits: int, scale: float) -> None:
    model = _softmax_model(bits=bits, scale=scale)
    kernel_nodes, left = _plan(model)
    assert [k.op_type for k in kernel_nodes] == ["QEdgeSoftmaxQ"]
    assert kernel_nodes[0].attributes["bits"] == bits and left == ["Identity"]
    _check(model, _softmax_feeds())


@needs_kernels
def test_a_softmax_read_elsewhere_keeps_its_float_alphas() -> None:
    model = _softmax_model(expose_alpha=True)
    kernel_nodes, left = _plan(model)
    assert [k.op_type for k in kernel_nodes] == ["QEdgeSoftmax"]
    assert left == ["QuantizeLinear", "Identity"]
    _check(model, _softmax_feeds())


@needs_kernels
def test_a_bad_softmax_table_is_refused_at_load() -> None:
    from qgnn.contract import softmax_table

    model = _softmax_model(table=softmax_table(np.float32(0.07), 8)[:100])
    with pytest.raises(ValueError, match=r"QEdgeSoftmaxQ node .*table must hold 2\^bits"):
        PartitionedExecutor(model.SerializeToString(), SessionConfig())
