"""ai.qgnn::QGCNAggregate (GCN's normalised sum over A + I, coefficients quantised inside): the
integers by hand, by an independent loop oracle, from the portable body on onnxruntime and on
onnx.reference, and equal to today's multi-node export (self-looped CSR, coefficients,
QuantizeLinear, then QMessageAggregate or the weighted QAggregate), with and without the
message site."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx.reference import ReferenceEvaluator
from qgnn.exporter.emit.common import Csr, Emitter, gcn_coefficients
from qgnn.exporter.onnx_builder import GraphBuilder
from qgnn.exporter.ops import make_op_node, reference_ops
from qgnn.exporter.ops.q_gcn_aggregate import INPUTS, q_gcn_aggregate, self_looped
from qgnn.exporter.quant_params import Site

OP = "QGCNAggregate"

# In-edges of 0: 1 and a stored loop 0 -> 0; of 1: none (only the added loop); of 2: 3.
# Source 3 is no destination.
INDPTR = np.array([0, 2, 2, 3], dtype=np.int64)
SRC = np.array([1, 0, 3], dtype=np.int64)
# Powers of two (and 5/16) so every coefficient is exact: looped edges of 0: 1 -> 0 (0.5),
# 0 -> 0 (0.25), loop (0.25); of 1: loop (1.0); of 2: 3 -> 2 (0.078125), loop (0.0625).
INV = np.array([0.5, 1.0, 0.25, 0.3125], dtype=np.float32)
# zp_x = 10: centred rows [2, 0], [3, -3], [0, 10], [10, 1]
X_Q = np.array([[12, 10], [13, 7], [10, 20], [20, 11]], dtype=np.uint8)


def scalar(value: float, dtype: type) -> np.ndarray:
    return np.array(value, dtype=dtype)


def feeds_of(x_q=X_Q, zp_x=10, indptr=INDPTR, src=SRC, inv=INV, *, s_x=0.5, s_w=1 / 32,
             zp_w=2, s_m: float | None = 1 / 16, zp_m=100, s_y=0.5,
             zp_y=50) -> dict[str, np.ndarray]:
    """Op inputs; ``s_m`` None leaves the message site out."""
    feeds = {"x_q": x_q, "x_scale": scalar(s_x, np.float32),
             "x_zero_point": scalar(zp_x, np.uint8), "indptr": indptr, "src": src,
             "inv_sqrt_degree": inv, "w_scale": scalar(s_w, np.float32),
             "w_zero_point": scalar(zp_w, np.uint8), "y_scale": scalar(s_y, np.float32),
             "y_zero_point": scalar(zp_y, np.uint8)}
    if s_m is not None:
        feeds |= {"m_scale": scalar(s_m, np.float32), "m_zero_point": scalar(zp_m, np.uint8)}
    return feeds


def reference(feeds: dict[str, np.ndarray], **attributes) -> np.ndarray:
    return q_gcn_aggregate(*[feeds.get(k) for k in INPUTS], **attributes)


# Weights q_w = coef * 32 + 2, centred: 16, 8, 8 | 32 | 2.5 -> 2 (half to even), 2.
# Without the message site M = 0.5 * (1/32) / 0.5 = 1/32, products (x - 10) * c:
#   v0: [48, -48] + [16, 0] + [16, 0] = [80, -48] -> [2.5, -1.5] -> [2, -2]
#   v1: [96, -96] -> [3, -3];  v2: [20, 2] + [0, 20] = [20, 22] -> [0.625, 0.6875] -> [1, 1]
# With it M_m = 0.5 * (1/32) * 16 = 0.25 and M_y = (1/16) / 0.5 = 0.125, messages rint(p / 4):
#   v0: [12, -12] + [4, 0] + [4, 0] = [20, -12] -> [2, -2];  v1: [24, -24] -> [3, -3]
#   v2: [5, 0] (0.5 -> 0) + [0, 5] = [5, 5] -> [1, 1]
# msg_bits 4 with zp_m = 8 clamps messages to [-8, 7]: v0 [7, -8] + [4, 0] + [4, 0] = [15, -8]
#   -> [1.875, -1] -> [2, -1]; v1 [7, -8] -> [0.875, -1] -> [1, -1]; v2 [5, 5] -> [1, 1]
# w_bits 4 clamps centred weights to [-2, 13] (16 and 32 -> 13), no message site:
#   v0: [39, -39] + [16, 0] + [16, 0] = [71, -39] -> [2.22, -1.22] -> [2, -1]; v1 [39, -39]
#   -> [1, -1]; v2 as before.
HAND = {
    "plain": ({"s_m": None}, {}, [[52, 48], [53, 47], [51, 51]]),
    "message": ({}, {}, [[52, 48], [53, 47], [51, 51]]),
    "message_int4": ({"zp_m": 8}, {"msg_bits": 4}, [[52, 49], [51, 49], [51, 51]]),
    "plain_w_int4": ({"s_m": None}, {"w_bits": 4}, [[52, 49], [51, 49], [51, 51]]),
}


@pytest.mark.parametrize("case", sorted(HAND))
def test_hand_example(op_runner, case):
    changes, attrs, rows = HAND[case]
    feeds = feeds_of(**changes)
    want = np.array(rows, dtype=np.uint8)
    np.testing.assert_array_equal(reference(feeds, **attrs), want)
    np.testing.assert_array_equal(op_runner.reference(OP, feeds, **attrs), want)
    np.testing.assert_array_equal(op_runner.ort(OP, feeds, **attrs), want)


def test_self_looped_appends_one_loop_per_destination():
    indptr, src = self_looped(INDPTR, SRC)
    np.testing.assert_array_equal(indptr, [0, 3, 4, 6])
    np.testing.assert_array_equal(src, [1, 0, 0, 1, 3, 2])


def loop_oracle(feeds: dict[str, np.ndarray], bits: int, w_bits: int,
                msg_bits: int) -> np.ndarray:
    """Independent oracle: Python ints per destination, feature and looped edge; the float32
    steps in the op's order; Python's round() (half to even)."""
    x_q, indptr, src, inv = (feeds[k] for k in ("x_q", "indptr", "src", "inv_sqrt_degree"))
    zp = {k: int(feeds[f"{k}_zero_point"]) for k in "xwy"}
    s = {k: feeds[f"{k}_scale"][()] for k in "xwy"}
    message = "m_scale" in feeds
    if message:
        zp["m"], s["m"] = int(feeds["m_zero_point"]), feeds["m_scale"][()]
        msg_mult = np.float32(np.float32(s["x"] * s["w"]) / s["m"])
        mult = np.float32(s["m"] / s["y"])
    else:
        mult = np.float32(np.float32(s["x"] * s["w"]) / s["y"])
    out = np.zeros((indptr.size - 1, x_q.shape[1]), dtype=np.uint8)
    for v in range(indptr.size - 1):
        sources = [int(u) for u in src[indptr[v]:indptr[v + 1]]] + [v]
        weights = []
        for u in sources:
            with np.errstate(over="ignore"):
                scaled = float(np.float32(np.float32(inv[u] * inv[v]) / s["w"]))
            q = round(min(max(scaled, -1e6), 1e6)) + zp["w"]  # +-inf saturates like any
            weights.append(min(max(q, 0), 2 ** w_bits - 1) - zp["w"])
        for f in range(x_q.shape[1]):
            acc = 0
            for u, w in zip(sources, weights, strict=True):
                p = (int(x_q[u, f]) - zp["x"]) * w
                if message:
                    q = round(float(np.float32(np.float32(p) * msg_mult))) + zp["m"]
                    p = min(max(q, 0), 2 ** msg_bits - 1) - zp["m"]
                acc += p
            q = round(float(np.float32(np.float32(acc) * mult))) + zp["y"]
            out[v, f] = min(max(q, 0), 2 ** bits - 1)
    return out


def random_feeds(structure, features: int, message: bool, bits: int = 8, w_bits: int = 8,
                 msg_bits: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Weights, messages and outputs spread over their ranges (some saturating). The inverse
    degrees are those of random in-degrees, plus a longer tail the op must ignore."""
    rng = np.random.default_rng(seed)
    n = structure.num_src
    degree = rng.integers(0, 40, size=n + 3)
    inv = (1.0 / np.sqrt(degree.astype(np.float32) + np.float32(1.0))).astype(np.float32)
    s_x = float(rng.uniform(0.01, 0.2))
    s_w = float(rng.uniform(0.5, 1.5)) / 2 ** w_bits  # coefficients span most of [0, 1]
    s_m = float(rng.uniform(0.3, 3.0)) * s_x * s_w * 2 ** 14 / 2 ** msg_bits
    s_y = (float(rng.uniform(0.5, 4.0)) * (s_m * 2 ** msg_bits if message else s_x * s_w * 2 ** 12)
           / 2 ** bits)
    return feeds_of(rng.integers(0, 2 ** bits, size=(n, features)).astype(np.uint8),
                    int(rng.integers(0, 2 ** bits)), structure.indptr, structure.src, inv,
                    s_x=s_x, s_w=s_w, zp_w=int(rng.integers(0, 2 ** w_bits)),
                    s_m=s_m if message else None, zp_m=int(rng.integers(0, 2 ** msg_bits)),
                    s_y=s_y, zp_y=int(rng.integers(0, 2 ** bits)))


WIDTHS = [(8, 8, 8), (4, 4, 4), (8, 4, 8), (4, 8, 3)]  # (bits, w_bits, msg_bits)


@pytest.mark.parametrize(("bits", "w_bits", "msg_bits"), WIDTHS)
@pytest.mark.parametrize("message", [True, False])
def test_reference_matches_loop_oracle(structure, message, bits, w_bits, msg_bits):
    feeds = random_feeds(structure, 3, message, bits, w_bits, msg_bits, seed=bits + w_bits)
    attrs = {"bits": bits, "w_bits": w_bits, "msg_bits": msg_bits}
    np.testing.assert_array_equal(reference(feeds, **attrs),
                                  loop_oracle(feeds, bits, w_bits, msg_bits))


@pytest.mark.parametrize("message", [True, False])
def test_body_matches_reference(op_runner, structure, features, message):
    feeds = random_feeds(structure, features, message, seed=features)
    got = op_runner.ort(OP, feeds)
    assert got.dtype == np.uint8 and got.shape == (structure.num_dst, features)
    want = reference(feeds)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(op_runner.reference(OP, feeds), want)


@pytest.mark.parametrize(("bits", "w_bits", "msg_bits"), WIDTHS[1:])
@pytest.mark.parametrize("message", [True, False])
def test_body_matches_reference_narrow(op_runner, mixed_structure, message, bits, w_bits,
                                       msg_bits):
    feeds = random_feeds(mixed_structure, 8, message, bits, w_bits, msg_bits, seed=3)
    attrs = {"bits": bits, "w_bits": w_bits, "msg_bits": msg_bits}
    got = op_runner.ort(OP, feeds, **attrs)
    assert got.max() <= 2 ** bits - 1
    np.testing.assert_array_equal(got, reference(feeds, **attrs))


@pytest.mark.parametrize("message", [True, False])
def test_saturating_extremes(op_runner, mixed_structure, message):
    """Weights pinned at both range ends (tiny and huge s_w), every message saturated (M_m =
    1000), outputs saturating (M_y = 100; without messages M = 10^5)."""
    rng = np.random.default_rng(9)
    s = mixed_structure
    x_q = rng.choice(np.array([0, 255], np.uint8), size=(s.num_src, 5))
    inv = rng.choice(np.array([1e-3, 1.0, 3e4], np.float32), size=s.num_src)
    for zp_x, zp_w, s_w, zp_m in ((0, 0, 1e-6, 128), (255, 200, 1.0, 7), (128, 3, 1e-30, 0)):
        feeds = feeds_of(x_q, zp_x, s.indptr, s.src, inv, s_x=1.0, s_w=s_w, zp_w=zp_w,
                         s_m=s_w * 1e-3 if message else None, zp_m=zp_m, s_y=s_w * 1e-5,
                         zp_y=100)
        want = reference(feeds)
        np.testing.assert_array_equal(want, loop_oracle(feeds, 8, 8, 8))
        np.testing.assert_array_equal(op_runner.ort(OP, feeds), want)
        assert want.min() == 0 or want.max() == 255


# -- equality with today's multi-node export -----------------------------------------------

def _site(key: str, scale: float, zero_point: int, bits: int) -> Site:
    return Site(key, np.asarray(scale, np.float32).reshape(()),
                np.asarray(zero_point, np.int64).reshape(()), bits, False, "src")


def multi_node_and_fused(feeds: dict[str, np.ndarray], bits: int, w_bits: int,
                         msg_bits: int) -> onnx.ModelProto:
    """One graph computing both formulations with the emitter: ``multi_node`` (looped CSR in
    standard ops, gcn_coefficients, QuantizeLinear, then QMessageAggregate or the weighted
    QAggregate, as the GCN and EGC emitters did) and ``fused`` (QGCNAggregate)."""
    g = GraphBuilder()
    em = Emitter(g)
    features = feeds["x_q"].shape[1]
    x_q = g.input("x_q", TensorProto.UINT8, ["N", features])
    inv = g.input("inv_sqrt_degree", TensorProto.FLOAT, ["N_inv"])
    csr = Csr(em, g.input("indptr", TensorProto.INT64, ["D1"]),
              g.input("src", TensorProto.INT64, ["E"]), "csr")
    x = _site("x", feeds["x_scale"], int(feeds["x_zero_point"]), 8)
    w = _site("w", feeds["w_scale"], int(feeds["w_zero_point"]), w_bits)
    out = _site("y", feeds["y_scale"], int(feeds["y_zero_point"]), bits)
    msg = (_site("m", feeds["m_scale"], int(feeds["m_zero_point"]), msg_bits)
           if "m_scale" in feeds else None)
    looped = csr.with_self_loops(drop_existing=False)
    ew = em.quantize(gcn_coefficients(em, looped, inv, "gcn_norm"), w, "edge_weight")
    if msg is None:
        multi = em.q_aggregate(x_q, x, looped, looped.src, out, "sum", "agg", weight=(ew, w))
    else:
        multi = em.q_message_aggregate(x_q, x, looped, ew, w, msg, out, "sum", "agg")
    fused = em.q_gcn_aggregate(x_q, x, csr, inv, w, msg, out, "fused")
    g.output(multi, "multi_node", TensorProto.UINT8, None)
    g.output(fused, "fused", TensorProto.UINT8, None)
    return g.model("multi_node_and_fused")


@pytest.mark.parametrize(("bits", "w_bits", "msg_bits"), WIDTHS)
@pytest.mark.parametrize("message", [True, False])
def test_equals_the_multi_node_export(structure, message, bits, w_bits, msg_bits):
    """Random graphs with stored self-loops, repeated edges, isolated nodes, destinations
    without in-edges, no edges and no destinations."""
    feeds = random_feeds(structure, 8, message, bits, w_bits, msg_bits, seed=21)
    model = multi_node_and_fused(feeds, bits, w_bits, msg_bits)
    graph_feeds = {k: feeds[k] for k in ("x_q", "inv_sqrt_degree", "indptr", "src")}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    multi, fused = session.run(["multi_node", "fused"], graph_feeds)
    np.testing.assert_array_equal(fused, multi)
    attrs = {"bits": bits, "w_bits": w_bits, "msg_bits": msg_bits}
    np.testing.assert_array_equal(reference(feeds, **attrs), multi)
    evaluated = ReferenceEvaluator(model, new_ops=reference_ops()).run(
        ["fused"], graph_feeds)[0]
    np.testing.assert_array_equal(evaluated, multi)


def test_structures_cover_stored_loops_and_empty_destinations(mixed_structure):
    s = mixed_structure
    dst = np.repeat(np.arange(s.num_dst), np.diff(s.indptr))
    assert (s.src == dst).any()  # a stored self-loop counts twice
    assert (np.diff(s.indptr) == 0).any()
    assert np.setdiff1d(np.arange(s.num_src), s.src).size  # isolated sources


# -- validation ----------------------------------------------------------------------------

def test_model_checks_and_infers(op_runner):
    for s_m in (1 / 16, None):
        model = op_runner.model(OP, feeds_of(s_m=s_m), w_bits=4)
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        out = inferred.graph.output[0].type.tensor_type
        assert out.elem_type == onnx.TensorProto.UINT8 and len(out.shape.dim) == 2


def test_overloads_name_the_message_site():
    inputs = ["x", "sx", "zx", "p", "s", "inv", "sw", "zw", "sm", "zm", "sy", "zy"]
    assert make_op_node(OP, inputs, ["y"]).overload == "message"
    assert make_op_node(OP, [*inputs[:8], "", "", *inputs[10:]], ["y"]).overload == ""
    with pytest.raises(ValueError, match="come together"):
        make_op_node(OP, [*inputs[:8], "sm", "", *inputs[10:]], ["y"])


def _call(**changes):
    attrs = {k: changes.pop(k) for k in ("bits", "w_bits", "msg_bits") if k in changes}
    return reference(feeds_of() | changes, **attrs)


@pytest.mark.parametrize(("changes", "message"), [
    ({"x_q": X_Q.astype(np.int8)}, "x_q must be uint8"),
    ({"inv_sqrt_degree": INV.astype(np.float64)}, "inv_sqrt_degree must be float32"),
    ({"inv_sqrt_degree": INV[:, None]}, "inv_sqrt_degree must have rank 1"),
    ({"inv_sqrt_degree": INV[:3]}, r"inv_sqrt_degree has 3 entries, expected one per source "
                                   r"row \(4\)"),
    ({"inv_sqrt_degree": np.array([0.5, np.nan, 1, 1], np.float32)},
     r"inv_sqrt_degree\[1\] = nan is not finite"),
    ({"inv_sqrt_degree": np.array([0.5, 1, 1, np.inf], np.float32)}, "is not finite"),
    ({"src": SRC.astype(np.int32)}, "src must be int64"),
    ({"src": np.array([1, 0, 4], np.int64)}, r"src holds 4, outside \[0, 4\)"),
    ({"indptr": np.array([0, 2, 2, 4], np.int64)}, r"indptr\[-1\] = 4 must equal"),
    ({"indptr": np.array([0, 1, 1, 2, 2, 3], np.int64)},
     "5 destinations but only 4 source rows"),
    ({"w_scale": scalar(0.0, np.float32)}, "w_scale must be finite and > 0"),
    ({"w_zero_point": scalar(3, np.int8)}, "w_zero_point must be a uint8 scalar"),
    ({"m_scale": None}, "m_scale and m_zero_point come together"),
    ({"m_scale": scalar(-1.0, np.float32)}, "m_scale must be finite and > 0"),
    ({"w_bits": 9}, "attribute w_bits must be in"),
    ({"msg_bits": 0}, "attribute msg_bits must be in"),
    ({"bits": 9}, "attribute bits must be in"),
])
def test_reference_rejects_bad_inputs(changes, message):
    with pytest.raises(ValueError, match=message):
        _call(**changes)


def test_reference_refuses_int32_overflow():
    """Without the message site a term reaches 65,025: 33,024 in-edges plus the loop fit int32,
    one more edge does not."""
    def feeds(edges: int) -> dict[str, np.ndarray]:
        return feeds_of(np.array([[255]], np.uint8), 0, np.array([0, edges], np.int64),
                        np.zeros(edges, np.int64), np.array([1.0], np.float32), s_x=1.0,
                        s_w=1 / 255, zp_w=0, s_m=None, s_y=1e9, zp_y=0)
    assert reference(feeds(33_024)).shape == (1, 1)
    with pytest.raises(ValueError, match="int32 accumulator overflows"):
        reference(feeds(33_025))
