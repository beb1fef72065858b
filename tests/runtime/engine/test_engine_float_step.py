"""Fused elementwise float steps (runtime/engine/float_step.py): each pattern the exporter writes
runs as one FloatStep kernel node and equals stock onnxruntime bit for bit at every ISA level;
chains that are read elsewhere, exposed, or not exactly the pattern stay in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from qgnn.exporter.ops import IR_VERSION, opset_imports
from qgnn.runtime import kernels
from qgnn.runtime.engine.executor import PartitionedExecutor, PortableExecutor
from qgnn.runtime.engine.partition import partition
from qgnn.runtime.engine.session import SessionConfig

F = 24
# Dyadic scales: (q - 128) * 0.375 / 0.25 = 1.5 (q - 128) is a rounding tie for every odd q - 128
# and passes both ends of [0, 255] around zero point 128; constants of 1/8 steps keep the ties.
A_SCALE, B_SCALE, Y_SCALE = 0.375, 0.125, 0.25

needs_kernels = pytest.mark.skipif(not kernels.available(), reason="kernels not built")


def _levels() -> list[str]:
    return [lvl for lvl in kernels.levels_supported() if lvl in kernels.levels_built()]


class _Model:
    """Builds a one-chain model: uint8 inputs a (and b), uint8 output y."""

    def __init__(self, ties: bool, bits: int = 8) -> None:
        self.rng = np.random.default_rng(7)
        self.ties, self.bits = ties, bits
        self.nodes: list[onnx.NodeProto] = []
        self.inits = [numpy_helper.from_array(np.float32(v), n) for n, v in
                      (("s_a", A_SCALE), ("s_b", B_SCALE), ("s_y", Y_SCALE))]
        self.inits += [numpy_helper.from_array(np.uint8(v), n) for n, v in
                       (("zp_a", 128), ("zp_b", 100), ("zp_y", 128 if bits == 8 else 5),
                        ("lo", 0), ("hi", 2**bits - 1))]
        self.count = 0

    def const(self, value: np.ndarray) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def column(self, scalar: bool = False) -> np.ndarray:
        """A per-column (or scalar) float32 constant: eighths in [-4, 4] when testing ties."""
        shape = () if scalar else (F,)
        if self.ties:
            return (self.rng.integers(-32, 33, shape) / 8).astype(np.float32)
        return self.rng.uniform(-3, 3, shape).astype(np.float32)

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        self.count += 1
        out = f"t{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def dq(self, x: str) -> str:
        return self.op("DequantizeLinear", [x, f"s_{x}", f"zp_{x}"])

    def model(self, value: str, *, two: bool = False, b_rows: int | None = None,
              extra_outputs: tuple[str, ...] = ()) -> onnx.ModelProto:
        q = self.op("QuantizeLinear", [value, "s_y", "zp_y"])
        if self.bits < 8:
            q = self.op("Clip", [q, "lo", "hi"])
        self.nodes.append(helper.make_node("Identity", [q], ["y"]))
        inputs = [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, F])]
        if two:
            inputs.append(helper.make_tensor_value_info("b", TensorProto.UINT8, [b_rows, F]))
        outputs = [helper.make_tensor_value_info(n, TensorProto.UINT8 if n == "y" else
                                                 TensorProto.FLOAT, None)
                   for n in ("y", *extra_outputs)]
        graph = helper.make_graph(self.nodes, "g", inputs, outputs, self.inits)
        return helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION)


def _batch_norm(m: _Model, x: str) -> str:
    alpha = m.column().astype(np.float64)
    beta = m.column().astype(np.float64)
    wide = m.op("Cast", [x], to=TensorProto.DOUBLE)
    y = m.op("Add", [m.op("Mul", [wide, m.const(alpha)]), m.const(beta)])
    return m.op("Cast", [y], to=TensorProto.FLOAT)


# name -> (builder(model) -> (value, two inputs), the FloatStep's op names in order)
PATTERNS = {
    "requantize": (lambda m: (m.dq("a"), False), []),
    "gcn_bias": (lambda m: (m.op("Add", [m.dq("a"), m.const(m.column())]), False), ["add"]),
    "relu": (lambda m: (m.op("Relu", [m.dq("a")]), False), ["relu"]),
    "sage_sum": (lambda m: (m.op("Add", [m.dq("a"), m.dq("b")]), True), ["add_b"]),
    "gin_combine": (lambda m: (m.op("Add", [m.dq("a"), m.op("Mul", [
        m.dq("b"), m.const(m.column(scalar=True))])]), True), ["mul", "add_b"]),
    "batch_norm_relu": (lambda m: (m.op("Relu", [_batch_norm(m, m.dq("a"))]), False),
                        ["affine_f64", "relu"]),
    "residual_relu": (lambda m: (m.op("Relu", [m.op("Add", [m.op("Add", [
        m.dq("a"), m.const(m.column())]), m.dq("b")])]), True), ["add", "add_b", "relu"]),
    "sub_div_mul": (lambda m: (m.op("Mul", [m.const(m.column().reshape(1, F)), m.op("Div", [
        m.op("Sub", [m.const(m.column(scalar=True)), m.dq("a")]), m.const(np.float32(4))])]),
        False), ["rsub", "div", "mul"]),
    "sub_const": (lambda m: (m.op("Sub", [m.dq("a"), m.const(m.column())]), False), ["sub"]),
}


def _run_everywhere(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Stock onnxruntime's y, after asserting every ISA level's fused run gives the same."""
    data = model.SerializeToString()
    stock = PortableExecutor(data, SessionConfig()).run(feeds)["y"]
    for isa in _levels():
        for threads in (1, 2):
            fast = PartitionedExecutor(data, SessionConfig(threads=threads), isa=isa).run(feeds)
            np.testing.assert_array_equal(fast["y"], stock, err_msg=f"{isa} x{threads}")
    return stock


def _feeds(rows: int, two: bool, b_rows: int | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows)
    feeds = {"a": rng.integers(0, 256, (rows, F)).astype(np.uint8)}
    if two:
        feeds["b"] = rng.integers(0, 256, (b_rows or rows, F)).astype(np.uint8)
    return feeds


@needs_kernels
@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_each_pattern_is_fused_and_equals_onnxruntime(name: str, ties: bool) -> None:
    build, expected_ops = PATTERNS[name]
    m = _Model(ties)
    value, two = build(m)
    model = m.model(value, two=two)
    plan = partition(model.SerializeToString())
    fused = [k for phase in plan.kernels for k in phase]
    assert [k.op_type for k in fused] == ["FloatStep"]
    assert [op[0] for op in fused[0].attributes["ops"]] == expected_ops
    assert [n.op_type for s in plan.segments for n in s.nodes] == ["Identity"]
    stock = _run_everywhere(model, _feeds(30_000, two))  # big enough to run on two threads
    if ties and name in ("requantize", "gcn_bias", "sage_sum"):
        assert stock.min() == 0 and stock.max() == 255  # both saturations exercised


@needs_kernels
@pytest.mark.parametrize("bits", [4, 7])
def test_narrow_outputs_fuse_their_clip(bits: int) -> None:
    m = _Model(True, bits)
    model = m.model(m.op("Relu", [m.op("Add", [m.dq("a"), m.const(m.column())])]))
    plan = partition(model.SerializeToString())
    (spec,) = [k for phase in plan.kernels for k in phase]
    assert spec.op_type == "FloatStep" and spec.attributes["bits"] == bits
    assert _run_everywhere(model, _feeds(500, False)).max() == 2**bits - 1


@needs_kernels
def test_second_input_broadcast_over_rows_as_onnxruntime_does() -> None:
    m = _Model(False)
    model = m.model(m.op("Add", [m.dq("a"), m.dq("b")]), two=True, b_rows=1)
    assert [k.op_type for p in partition(model.SerializeToString()).kernels for k in p] == [
        "FloatStep"]
    _run_everywhere(model, _feeds(64, True, b_rows=1))


def _not_fused(model: onnx.ModelProto) -> None:
    plan = partition(model.SerializeToString())
    assert not any(plan.kernels)
    ops = [n.op_type for s in plan.segments for n in s.nodes]
    assert "DequantizeLinear" in ops and "QuantizeLinear" in ops


def test_chain_exposed_or_read_elsewhere_is_not_fused() -> None:
    m = _Model(False)
    mid = m.op("Add", [m.dq("a"), m.const(m.column())])
    _not_fused(m.model(m.op("Relu", [mid]), extra_outputs=(mid,)))
    m = _Model(False)
    mid = m.op("Add", [m.dq("a"), m.const(m.column())])
    m.nodes.append(helper.make_node("Neg", [mid], ["other"]))
    _not_fused(m.model(m.op("Relu", [mid]), extra_outputs=("other",)))


def test_inexact_patterns_are_left_to_onnxruntime() -> None:
    m = _Model(False)  # the constant divided by the value: not a whitelisted op
    _not_fused(m.model(m.op("Div", [m.const(np.float32(2)), m.dq("a")])))
    m = _Model(False)  # a scale computed at run time
    m.inits = [t for t in m.inits if t.name != "s_a"]
    m.nodes.append(helper.make_node("Abs", ["s_y"], ["s_a"]))
    _not_fused(m.model(m.op("Relu", [m.dq("a")])))
    m = _Model(False)  # a per-row constant (N, 1) is not per column
    _not_fused(m.model(m.op("Add", [m.dq("a"), m.const(np.ones((3, 1), np.float32))])))
    m = _Model(False)  # an op outside the whitelist
    _not_fused(m.model(m.op("Sigmoid", [m.dq("a")])))


def _two_steps(mid_is_output: bool = False) -> onnx.ModelProto:
    """GCN's layer tail: requantise with a per-column bias (out), then ReLU and requantise
    again (next_x), the second step reading the first's uint8 output."""
    m = _Model(True)
    m.inits += [numpy_helper.from_array(np.float32(0.5), "s_mid"),
                numpy_helper.from_array(np.uint8(120), "zp_mid")]
    mid = m.op("QuantizeLinear", [m.op("Add", [m.dq("a"), m.const(m.column())]), "s_mid",
                                  "zp_mid"])
    second = m.op("Relu", [m.op("DequantizeLinear", [mid, "s_mid", "zp_mid"])])
    if mid_is_output:
        m.nodes.append(helper.make_node("Identity", [mid], ["mid"]))
    model = m.model(second)
    if mid_is_output:
        model.graph.output.append(helper.make_tensor_value_info("mid", TensorProto.UINT8, None))
    return model


@needs_kernels
def test_chained_one_input_steps_merge_into_one_table() -> None:
    """Two one-input steps in a row become one FloatStep (the second in ``then``) that runs as
    one byte table, equal to stock onnxruntime at every level and thread count."""
    model = _two_steps()
    (spec,) = [k for phase in partition(model.SerializeToString()).kernels for k in phase]
    assert spec.op_type == "FloatStep" and [o[0] for o in spec.attributes["ops"]] == ["add"]
    assert [[o[0] for o in s["ops"]] for s in spec.attributes["then"]] == [["relu"]]
    stock = _run_everywhere(model, _feeds(30_000, False))
    assert stock.min() == 128 and stock.max() == 255  # ReLU's floor at zp_y, and saturation


@needs_kernels
def test_steps_are_not_merged_when_the_middle_is_an_output() -> None:
    model = _two_steps(mid_is_output=True)
    fused = [k for phase in partition(model.SerializeToString()).kernels for k in phase]
    assert [k.op_type for k in fused] == ["FloatStep", "FloatStep"]
    assert not any("then" in k.attributes for k in fused)
    _run_everywhere(model, _feeds(500, False))


@needs_kernels
def test_sage_sum_then_relu_runs_as_one_pair_table(monkeypatch) -> None:
    """SAGE's layer tail (lin_l + lin_r requantised, then ReLU requantised again) is one
    two-input FloatStep with the ReLU in ``then``; it runs as one 256 x 256 table of byte pairs
    at every level, equal to stock onnxruntime."""
    m = _Model(True)
    m.inits += [numpy_helper.from_array(np.float32(0.5), "s_mid"),
                numpy_helper.from_array(np.uint8(120), "zp_mid")]
    mid = m.op("QuantizeLinear", [m.op("Add", [m.dq("a"), m.dq("b")]), "s_mid", "zp_mid"])
    model = m.model(m.op("Relu", [m.op("DequantizeLinear", [mid, "s_mid", "zp_mid"])]), two=True)
    (spec,) = [k for phase in partition(model.SerializeToString()).kernels for k in phase]
    assert [o[0] for o in spec.attributes["ops"]] == ["add_b"]
    assert [[o[0] for o in s["ops"]] for s in spec.attributes["then"]] == [["relu"]]
    calls = []
    pair = kernels.lut2_u8
    monkeypatch.setattr(kernels, "lut2_u8", lambda *a, **k: calls.append(k["isa"]) or pair(*a, **k))
    stock = _run_everywhere(model, _feeds(30_000, True))
    assert calls == [lvl for lvl in _levels() for _ in range(2)]  # per level and thread count
    assert stock.min() == 128 and stock.max() == 255


@needs_kernels
def test_a_lone_two_input_step_takes_the_pair_table_at_baseline_only(monkeypatch) -> None:
    """Without steps merged after it the float loops are faster at the vector levels."""
    m = _Model(True)
    model = m.model(m.op("Add", [m.dq("a"), m.dq("b")]), two=True)
    calls = []
    pair = kernels.lut2_u8
    monkeypatch.setattr(kernels, "lut2_u8", lambda *a, **k: calls.append(k["isa"]) or pair(*a, **k))
    _run_everywhere(model, _feeds(3000, True))
    assert calls == ["baseline"] * 2
