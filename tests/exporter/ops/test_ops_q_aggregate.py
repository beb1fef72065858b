"""ai.qgnn::QAggregate (uint8, CSR): the contract's integers, by hand, by an independent loop
oracle (Python ints, Python's half-to-even round), and from the portable function body."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from onnx.numpy_helper import from_array
from qgnn.exporter.ops import IR_VERSION, function_protos, make_op_node, opset_imports
from qgnn.exporter.ops.q_aggregate import q_aggregate

REDUCES = ("sum", "mean", "max")

# The 5-node graph of test_ops_aggregate: in-edges of 0: 1, 2; of 1: 0, 0, 3; of 2: none;
# of 3: 2; of 4: none.
INDPTR = np.array([0, 2, 5, 5, 6, 6], dtype=np.int64)
SRC = np.array([1, 2, 0, 0, 3, 2], dtype=np.int64)
# zp_x = 10: centred column 0 = [3, 5, 0, 10, 1], column 1 = [245, 240, -10, -10, 0]
X_Q = np.array([[13, 255], [15, 250], [10, 0], [20, 0], [11, 10]], dtype=np.uint8)
# zp_w = 10: centred weights [-1, 2, 0, 1, -2, 4]
W_Q = np.array([9, 12, 10, 11, 8, 14], dtype=np.uint8)


def scalar(value: float, dtype: type) -> np.ndarray:
    return np.array(value, dtype=dtype)


def feeds_of(x_q, s_x, zp_x, indptr, src, w=None, s_y=1.0, zp_y=3) -> dict[str, np.ndarray]:
    feeds = {"x_q": x_q, "x_scale": scalar(s_x, np.float32),
             "x_zero_point": scalar(zp_x, np.uint8), "indptr": indptr, "src": src,
             "y_scale": scalar(s_y, np.float32), "y_zero_point": scalar(zp_y, np.uint8)}
    if w is not None:
        w_q, s_w, zp_w = w
        feeds |= {"w_q": w_q, "w_scale": scalar(s_w, np.float32),
                  "w_zero_point": scalar(zp_w, np.uint8)}
    return feeds


# s_x = 0.5, s_y = 1 (M = 0.5), zp_y = 3; weighted: s_w = 0.25 (M = 0.125). Acc -> y by hand:
HAND = {
    # acc [[5, 230], [16, 480], [0, 0], [0, -10], [0, 0]]; 2.5 -> 2 (even); -5 + 3 clips to 0
    ("sum", False, 8): [[5, 118], [11, 243], [3, 3], [3, 0], [3, 3]],
    ("sum", False, 4): [[5, 15], [11, 15], [3, 3], [3, 0], [3, 3]],
    # M / deg: 0.25 (1.25 -> 1, 57.5 -> 58 even), float32(0.5 / 3) (2.67 -> 3, 80.0000024 -> 80)
    ("mean", False, 8): [[4, 61], [6, 83], [3, 3], [3, 0], [3, 3]],
    # max: [[5, 240], [10, 245], -, [0, -10], -]: 2.5 -> 2, 122.5 -> 122 (even)
    ("max", False, 8): [[5, 123], [8, 125], [3, 3], [3, 0], [3, 3]],
    # acc [[-5, -260], [-17, 265], -, [0, -40], -] * 0.125: -0.625 -> -1, -32.5 -> -32 (even)
    ("sum", True, 8): [[2, 0], [1, 36], [3, 3], [3, 0], [3, 3]],
    # max of products: [[0, -20], [3, 245], -, [0, -40], -]: -2.5 -> -2, 30.625 -> 31
    ("max", True, 8): [[3, 1], [3, 34], [3, 3], [3, 0], [3, 3]],
    # M / deg = 0.0625, float32(0.125 / 3): -0.3125 -> 0, -16.25 -> -16, -0.71 -> -1, 11.04 -> 11
    ("mean", True, 8): [[3, 0], [2, 14], [3, 3], [3, 0], [3, 3]],
}


@pytest.mark.parametrize(("reduce", "weighted", "bits"), sorted(HAND))
def test_hand_example(op_runner, reduce, weighted, bits):
    feeds = feeds_of(X_Q, 0.5, 10, INDPTR, SRC, (W_Q, 0.25, 10) if weighted else None)
    want = np.array(HAND[reduce, weighted, bits], dtype=np.uint8)
    attrs = {"reduce": reduce, "bits": bits}
    np.testing.assert_array_equal(op_runner.reference("QAggregate", feeds, **attrs), want)
    np.testing.assert_array_equal(op_runner.ort("QAggregate", feeds, **attrs), want)


def loop_q_aggregate(feeds: dict[str, np.ndarray], reduce: str, bits: int) -> np.ndarray:
    """Independent oracle: Python ints per (destination, feature), float32 steps in the
    contract's order, Python's round() (half to even)."""
    x_q, indptr, src = feeds["x_q"], feeds["indptr"], feeds["src"]
    zp_x, zp_y = int(feeds["x_zero_point"]), int(feeds["y_zero_point"])
    mult = feeds["x_scale"][()]
    weights = None
    if "w_q" in feeds:
        mult = np.float32(mult * feeds["w_scale"][()])
        weights = [int(w) - int(feeds["w_zero_point"]) for w in feeds["w_q"]]
    mult = np.float32(mult / feeds["y_scale"][()])
    out = np.zeros((indptr.size - 1, x_q.shape[1]), dtype=np.uint8)
    for v in range(indptr.size - 1):
        edges = range(indptr[v], indptr[v + 1])
        m_v = mult if reduce != "mean" else np.float32(mult / np.float32(max(len(edges), 1)))
        for f in range(x_q.shape[1]):
            vals = [(int(x_q[src[e], f]) - zp_x) * (1 if weights is None else weights[e])
                    for e in edges]
            acc = 0 if not vals else max(vals) if reduce == "max" else sum(vals)
            q = round(float(np.float32(np.float32(acc) * m_v))) + zp_y
            out[v, f] = min(max(q, 0), 2 ** bits - 1)
    return out


def random_feeds(structure, features: int, weighted: bool, scales: str, bits: int,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """``scales="ties"`` picks M = 0.5 (0.125 weighted) so many products end in .5."""
    rng = np.random.default_rng(seed)
    top = 2 ** bits
    x_q = rng.integers(0, top, size=(structure.num_src, features)).astype(np.uint8)
    if scales == "ties":
        s_x, s_w, s_y = 0.5, 0.25, 1.0
    else:
        s_x, s_w, s_y = (float(v) for v in rng.uniform(0.001, 0.2, size=3))
    w = None
    if weighted:
        w = (rng.integers(0, top, size=structure.num_edges).astype(np.uint8), s_w,
             int(rng.integers(0, top)))
    return feeds_of(x_q, s_x, int(rng.integers(0, top)), structure.indptr, structure.src, w,
                    s_y=s_y, zp_y=int(rng.integers(0, top)))


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_reference_matches_loop_oracle(structure, reduce, weighted, bits):
    for scales in ("ties", "random"):
        feeds = random_feeds(structure, 3, weighted, scales, bits)
        args = [feeds.get(k) for k in ("x_q", "x_scale", "x_zero_point", "indptr", "src", "w_q",
                                       "w_scale", "w_zero_point", "y_scale", "y_zero_point")]
        np.testing.assert_array_equal(q_aggregate(*args, reduce=reduce, bits=bits),
                                      loop_q_aggregate(feeds, reduce, bits))


@pytest.mark.parametrize("scales", ["ties", "random"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_body_matches_reference(op_runner, structure, features, reduce, weighted, scales):
    feeds = random_feeds(structure, features, weighted, scales, 8, seed=features)
    got = op_runner.ort("QAggregate", feeds, reduce=reduce)
    assert got.dtype == np.uint8 and got.shape == (structure.num_dst, features)
    np.testing.assert_array_equal(got, op_runner.reference("QAggregate", feeds, reduce=reduce))


@pytest.mark.parametrize("reduce", REDUCES)
def test_body_matches_reference_int4(op_runner, structure, reduce):
    """bits=4: INT4 activations in uint8, output saturating at 15."""
    feeds = random_feeds(structure, 7, True, "random", 4, seed=3)
    got = op_runner.ort("QAggregate", feeds, reduce=reduce, bits=4)
    assert got.size == 0 or got.max() <= 15
    np.testing.assert_array_equal(got, op_runner.reference("QAggregate", feeds, reduce=reduce,
                                                           bits=4))


def _hubs(num_dst: int, degree: int) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.arange(num_dst + 1, dtype=np.int64) * degree
    return indptr, np.zeros(num_dst * degree, dtype=np.int64)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_int32_limit_is_exact(op_runner, reduce):
    """At the largest weighted in-degree the contract guarantees (33,025 x 255 x 255 < 2^31),
    with running sums far past 2^32 across destinations, body == reference exactly."""
    indptr, src = _hubs(4, 33025)
    x_q = np.array([[255], [0]], dtype=np.uint8)
    w_q = np.full(src.size, 255, dtype=np.uint8)
    feeds = feeds_of(x_q, 0.01, 0, indptr, src, (w_q, 0.02, 0), s_y=50000.0, zp_y=0)
    want = op_runner.reference("QAggregate", feeds, reduce=reduce)
    np.testing.assert_array_equal(op_runner.ort("QAggregate", feeds, reduce=reduce), want)
    acc = 33025 * 255 * 255
    mult = np.float32(np.float32(np.float32(0.01) * np.float32(0.02)) / np.float32(50000.0))
    if reduce == "mean":
        mult = np.float32(mult / np.float32(33025))
    assert want[0, 0] == min(round(float(np.float32(np.float32(acc) * mult))), 255)


def test_reference_refuses_int32_overflow():
    indptr, src = _hubs(1, 33100)
    feeds = feeds_of(np.array([[255]], dtype=np.uint8), 0.01, 0, indptr, src,
                     (np.full(src.size, 255, dtype=np.uint8), 0.02, 0))
    with pytest.raises(ValueError, match="int32 accumulator overflows"):
        q_aggregate(*[feeds.get(k) for k in (
            "x_q", "x_scale", "x_zero_point", "indptr", "src", "w_q", "w_scale", "w_zero_point",
            "y_scale", "y_zero_point")])


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_model_checks_and_infers(op_runner, reduce, weighted):
    feeds = feeds_of(X_Q, 0.5, 10, INDPTR, SRC, (W_Q, 0.25, 10) if weighted else None)
    model = op_runner.model("QAggregate", feeds, reduce=reduce)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out = inferred.graph.output[0].type.tensor_type
    assert out.elem_type == onnx.TensorProto.UINT8 and len(out.shape.dim) == 2


def _call(**changes):
    feeds = feeds_of(X_Q, 0.5, 10, INDPTR, SRC) | changes
    return q_aggregate(feeds["x_q"], feeds["x_scale"], feeds["x_zero_point"], feeds["indptr"],
                       feeds["src"], feeds.get("w_q"), feeds.get("w_scale"),
                       feeds.get("w_zero_point"), feeds["y_scale"], feeds["y_zero_point"],
                       reduce=feeds.get("reduce", "sum"), bits=feeds.get("bits", 8))


def test_reference_rejects_bad_inputs():
    with pytest.raises(ValueError, match="x_q must be uint8"):
        _call(x_q=X_Q.astype(np.int8))
    with pytest.raises(ValueError, match="x_scale must be finite and > 0"):
        _call(x_scale=scalar(0.0, np.float32))
    with pytest.raises(ValueError, match="y_scale must be a float32 scalar"):
        _call(y_scale=np.ones(2, np.float32))
    with pytest.raises(ValueError, match="y_zero_point must be a uint8 scalar"):
        _call(y_zero_point=scalar(3, np.int8))
    with pytest.raises(ValueError, match="bits must be in"):
        _call(bits=9)
    with pytest.raises(ValueError, match="come together"):
        _call(w_q=W_Q)
    with pytest.raises(ValueError, match="w_q has 2 entries"):
        _call(w_q=W_Q[:2], w_scale=scalar(1.0, np.float32), w_zero_point=scalar(0, np.uint8))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_constant_scales_survive_graph_optimisation(mixed_structure, reduce, weighted):
    """As exported: scales and zero points are initializers, which onnxruntime constant-folds
    into the inlined body; integers match the reference with all optimisations on or off."""
    feeds = random_feeds(mixed_structure, 7, weighted, "random", 8, seed=11)
    constants = {k: v for k, v in feeds.items() if v.ndim == 0}
    dynamic = {k: v for k, v in feeds.items() if v.ndim > 0}
    names = ["x_q", "x_scale", "x_zero_point", "indptr", "src", "w_q", "w_scale", "w_zero_point",
             "y_scale", "y_zero_point"]
    node = make_op_node("QAggregate", [k if k in feeds else "" for k in names], ["y"],
                        reduce=reduce)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype),
                                       [f"{k}{i}" for i in range(v.ndim)])
         for k, v in dynamic.items()],
        [helper.make_tensor_value_info("y", onnx.TensorProto.UINT8, [None, None])],
        initializer=[from_array(v, k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION,
                              functions=function_protos([node]))
    args = [feeds.get(k) for k in names]
    want = q_aggregate(*args, reduce=reduce)
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        session = ort.InferenceSession(model.SerializeToString(), opts,
                                       providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(session.run(None, dynamic)[0], want)


def test_one_element_scales_work_like_scalars(op_runner):
    """Scales and zero points may be shape (1,) as in ONNX QuantizeLinear."""
    feeds = feeds_of(X_Q, 0.5, 10, INDPTR, SRC)
    ones = {k: v.reshape(1) for k, v in feeds.items() if v.ndim == 0}
    for reduce in REDUCES:
        want = np.array(HAND[reduce, False, 8], dtype=np.uint8)
        np.testing.assert_array_equal(op_runner.ort("QAggregate", feeds | ones, reduce=reduce),
                                      want)
        np.testing.assert_array_equal(
            op_runner.reference("QAggregate", feeds | ones, reduce=reduce), want)
