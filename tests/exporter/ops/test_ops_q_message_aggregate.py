"""ai.qgnn::QMessageAggregate (rule 3 into a message site, then rule 4, fused): the contract's
integers by hand, by an independent loop oracle, from the portable body on onnxruntime and on
onnx.reference, and equal to today's two-step export (edge_scale, then QAggregate by edge id)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx.reference import ReferenceEvaluator
from qgnn.exporter.emit.common import Csr, Emitter
from qgnn.exporter.onnx_builder import GraphBuilder
from qgnn.exporter.ops import reference_ops
from qgnn.exporter.ops.q_message_aggregate import INPUTS, q_message_aggregate
from qgnn.exporter.quant_params import Site

REDUCES = ("sum", "mean", "max")
OP = "QMessageAggregate"

# In-edges of 0: 1, 2; of 1: 0, 0, 3; of 2: none; of 3: 2; of 4: none.
INDPTR = np.array([0, 2, 5, 5, 6, 6], dtype=np.int64)
SRC = np.array([1, 2, 0, 0, 3, 2], dtype=np.int64)
# zp_x = 10: centred rows [3, 245], [5, 240], [0, -10], [10, -10], [1, 0]
X_Q = np.array([[13, 255], [15, 250], [10, 0], [20, 0], [11, 10]], dtype=np.uint8)
# zp_w = 10: centred weights [-1, 2, 0, 1, -2, 4]
W_Q = np.array([9, 12, 10, 11, 8, 14], dtype=np.uint8)


def scalar(value: float, dtype: type) -> np.ndarray:
    return np.array(value, dtype=dtype)


def feeds_of(x_q, zp_x, indptr, src, w_q, zp_w, *, s_x=0.5, s_w=0.25, s_m=0.25, zp_m=100,
             s_y=0.5, zp_y=60) -> dict[str, np.ndarray]:
    return {"x_q": x_q, "x_scale": scalar(s_x, np.float32),
            "x_zero_point": scalar(zp_x, np.uint8), "indptr": indptr, "src": src, "w_q": w_q,
            "w_scale": scalar(s_w, np.float32), "w_zero_point": scalar(zp_w, np.uint8),
            "m_scale": scalar(s_m, np.float32), "m_zero_point": scalar(zp_m, np.uint8),
            "y_scale": scalar(s_y, np.float32), "y_zero_point": scalar(zp_y, np.uint8)}


def reference(feeds: dict[str, np.ndarray], **attributes) -> np.ndarray:
    return q_message_aggregate(*[feeds[k] for k in INPUTS], **attributes)


# M_m = 0.125 / 0.25 = 0.5, zp_m = 100. Products p per edge: [-5, -240], [0, -20], [0, 0],
# [3, 245], [-20, 20], [0, -40]; p * M_m rounds half to even (-2.5 -> -2, 1.5 -> 2,
# 122.5 -> 122) and -120 + 100 saturates at 0, so the centred messages c are
# [-2, -100], [0, -10], [0, 0], [2, 122], [-10, 10], [0, -20] (msg_bits 8).
# M_y = 0.25 / 0.5 = 0.5, zp_y = 60.
HAND = {
    # acc [[-2, -110], [-8, 132], -, [0, -20], -]
    ("sum", 8): [[59, 5], [56, 126], [60, 60], [60, 50], [60, 60]],
    # M_y / 2 = 0.25: -0.5 -> -0 and -27.5 -> -28; float32(0.5 / 3): -1.33 -> -1, 22.0000004
    ("mean", 8): [[60, 32], [59, 82], [60, 60], [60, 50], [60, 60]],
    # max [[0, -10], [2, 122], -, [0, -20], -]
    ("max", 8): [[60, 55], [61, 121], [60, 60], [60, 50], [60, 60]],
    # msg_bits 4 with zp_m = 8: c clamps to [-8, 7]: [-2, -8], [0, -8], [0, 0], [2, 7],
    # [-8, 7], [0, -8]; acc [[-2, -16], [-6, 14], -, [0, -8], -]
    ("sum", 4): [[59, 52], [57, 67], [60, 60], [60, 56], [60, 60]],
}


@pytest.mark.parametrize(("reduce", "msg_bits"), sorted(HAND))
def test_hand_example(op_runner, reduce, msg_bits):
    feeds = feeds_of(X_Q, 10, INDPTR, SRC, W_Q, 10, zp_m=100 if msg_bits == 8 else 8)
    want = np.array(HAND[reduce, msg_bits], dtype=np.uint8)
    attrs = {"reduce": reduce, "msg_bits": msg_bits}
    np.testing.assert_array_equal(reference(feeds, **attrs), want)
    np.testing.assert_array_equal(op_runner.reference(OP, feeds, **attrs), want)
    np.testing.assert_array_equal(op_runner.ort(OP, feeds, **attrs), want)


def loop_oracle(feeds: dict[str, np.ndarray], reduce: str, bits: int,
                msg_bits: int) -> np.ndarray:
    """Independent oracle: Python ints per (destination, feature, edge), float32 steps in the
    contract's order, Python's round() (half to even)."""
    x_q, indptr, src, w_q = feeds["x_q"], feeds["indptr"], feeds["src"], feeds["w_q"]
    zp = {k: int(feeds[f"{k}_zero_point"]) for k in ("x", "w", "m", "y")}
    s = {k: feeds[f"{k}_scale"][()] for k in ("x", "w", "m", "y")}
    msg_mult = np.float32(np.float32(s["x"] * s["w"]) / s["m"])
    mult = np.float32(s["m"] / s["y"])
    features = x_q.shape[1]
    heads = 1 if w_q.ndim == 1 else w_q.shape[1]
    out = np.zeros((indptr.size - 1, features), dtype=np.uint8)
    for v in range(indptr.size - 1):
        edges = range(indptr[v], indptr[v + 1])
        m_v = mult if reduce != "mean" else np.float32(mult / np.float32(max(len(edges), 1)))
        for f in range(features):
            head = f // (features // heads)
            vals = []
            for e in edges:
                w = int(w_q[e] if w_q.ndim == 1 else w_q[e, head]) - zp["w"]
                p = (int(x_q[src[e], f]) - zp["x"]) * w
                q = round(float(np.float32(np.float32(p) * msg_mult))) + zp["m"]
                vals.append(min(max(q, 0), 2 ** msg_bits - 1) - zp["m"])
            acc = 0 if not vals else max(vals) if reduce == "max" else sum(vals)
            q = round(float(np.float32(np.float32(acc) * m_v))) + zp["y"]
            out[v, f] = min(max(q, 0), 2 ** bits - 1)
    return out


def random_feeds(structure, features: int, heads: int | None, scales: str, bits: int = 8,
                 msg_bits: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """``heads`` None: one weight per edge (E,); else (E, heads). ``scales="ties"`` makes both
    multipliers 0.5, so many values end in .5."""
    rng = np.random.default_rng(seed)
    x_q = rng.integers(0, 2 ** bits, size=(structure.num_src, features)).astype(np.uint8)
    shape = structure.num_edges if heads is None else (structure.num_edges, heads)
    w_q = rng.integers(0, 256, size=shape).astype(np.uint8)
    if scales == "ties":
        s_x, s_w, s_m, s_y = 0.5, 0.25, 0.25, 0.5
    else:
        # messages and outputs spread over their ranges, some saturating
        s_x, s_w = (float(v) for v in rng.uniform(0.001, 0.2, size=2))
        s_m = float(rng.uniform(0.3, 3.0)) * s_x * s_w * 2 ** 14 / 2 ** msg_bits
        s_y = float(rng.uniform(0.5, 4.0)) * s_m * 2 ** msg_bits / 2 ** bits
    return feeds_of(x_q, int(rng.integers(0, 2 ** bits)), structure.indptr, structure.src, w_q,
                    int(rng.integers(0, 256)), s_x=s_x, s_w=s_w, s_m=s_m,
                    zp_m=int(rng.integers(0, 2 ** msg_bits)), s_y=s_y,
                    zp_y=int(rng.integers(0, 2 ** bits)))


def heads_for(features: int) -> int:
    """A head count dividing ``features`` with more than one head where possible."""
    return 4 if features % 4 == 0 else features


@pytest.mark.parametrize(("bits", "msg_bits"), [(8, 8), (4, 8), (8, 4), (4, 4)])
@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_reference_matches_loop_oracle(structure, reduce, per_head, bits, msg_bits):
    for scales in ("ties", "random"):
        feeds = random_feeds(structure, 4, 2 if per_head else None, scales, bits, msg_bits)
        np.testing.assert_array_equal(
            reference(feeds, reduce=reduce, bits=bits, msg_bits=msg_bits),
            loop_oracle(feeds, reduce, bits, msg_bits))


@pytest.mark.parametrize("scales", ["ties", "random"])
@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_body_matches_reference(op_runner, structure, features, reduce, per_head, scales):
    heads = heads_for(features) if per_head else None
    feeds = random_feeds(structure, features, heads, scales, seed=features)
    got = op_runner.ort(OP, feeds, reduce=reduce)
    assert got.dtype == np.uint8 and got.shape == (structure.num_dst, features)
    want = reference(feeds, reduce=reduce)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(op_runner.reference(OP, feeds, reduce=reduce), want)


@pytest.mark.parametrize(("bits", "msg_bits"), [(4, 8), (8, 4), (4, 4)])
@pytest.mark.parametrize("reduce", REDUCES)
def test_body_matches_reference_int4(op_runner, mixed_structure, reduce, bits, msg_bits):
    feeds = random_feeds(mixed_structure, 8, 2, "random", bits, msg_bits, seed=3)
    attrs = {"reduce": reduce, "bits": bits, "msg_bits": msg_bits}
    got = op_runner.ort(OP, feeds, **attrs)
    assert got.max() <= 2 ** bits - 1
    np.testing.assert_array_equal(got, reference(feeds, **attrs))


def test_one_weight_per_head_equals_per_edge_weights(op_runner, mixed_structure):
    feeds = random_feeds(mixed_structure, 6, None, "random", seed=5)
    per_head = feeds | {"w_q": np.repeat(feeds["w_q"][:, None], 3, axis=1)}
    for reduce in REDUCES:
        want = reference(feeds, reduce=reduce)
        np.testing.assert_array_equal(reference(per_head, reduce=reduce), want)
        np.testing.assert_array_equal(op_runner.ort(OP, per_head, reduce=reduce), want)


@pytest.mark.parametrize("reduce", REDUCES)
def test_saturating_extremes(op_runner, mixed_structure, reduce):
    """Products up to 65025 in magnitude, every message pinned at 0 or 2^msg_bits - 1 (M_m =
    1000), outputs saturating (M_y = 100)."""
    rng = np.random.default_rng(9)
    s = mixed_structure
    x_q = rng.choice(np.array([0, 255], np.uint8), size=(s.num_src, 5))
    w_q = rng.choice(np.array([0, 255], np.uint8), size=s.num_edges)
    for zp_x, zp_w, zp_m, msg_bits in ((0, 128, 128, 8), (255, 0, 200, 8), (128, 128, 7, 4)):
        feeds = feeds_of(x_q, zp_x, s.indptr, s.src, w_q, zp_w, s_x=1.0, s_w=1.0, s_m=1e-3,
                         zp_m=zp_m, s_y=1e-5, zp_y=100)
        attrs = {"reduce": reduce, "msg_bits": msg_bits}
        want = reference(feeds, **attrs)
        np.testing.assert_array_equal(want, loop_oracle(feeds, reduce, 8, msg_bits))
        np.testing.assert_array_equal(op_runner.ort(OP, feeds, **attrs), want)
        assert want.min() == 0 or want.max() == 255


# -- equality with today's two-step export -------------------------------------------------

def _site(key: str, scale: np.ndarray, zero_point: np.ndarray, bits: int) -> Site:
    return Site(key, np.asarray(scale, np.float32).reshape(()),
                np.asarray(zero_point, np.int64).reshape(()), bits, False, "src")


def two_step_and_fused(feeds: dict[str, np.ndarray], reduce: str, bits: int,
                       msg_bits: int) -> onnx.ModelProto:
    """One exported graph computing both formulations with the emitter: outputs ``two_step``
    (Emitter.edge_scale, then QAggregate over edge ids) and ``fused``."""
    g = GraphBuilder()
    em = Emitter(g)
    heads = None if feeds["w_q"].ndim == 1 else feeds["w_q"].shape[1]
    features = feeds["x_q"].shape[1]
    x_q = g.input("x_q", TensorProto.UINT8, ["N", features])
    w_q = g.input("w_q", TensorProto.UINT8, ["E"] if heads is None else ["E", heads])
    csr = Csr(em, g.input("indptr", TensorProto.INT64, ["D1"]),
              g.input("src", TensorProto.INT64, ["E"]), "csr")
    h, w = (_site(k, feeds[f"{k}_scale"], feeds[f"{k}_zero_point"], 8) for k in ("x", "w"))
    msg = _site("m", feeds["m_scale"], feeds["m_zero_point"], msg_bits)
    out = _site("y", feeds["y_scale"], feeds["y_zero_point"], bits)
    head_split = None if heads is None else (heads, features // heads)
    messages = em.edge_scale(x_q, h, csr.src, w_q, w, msg, "msg", heads=head_split)
    two = em.q_aggregate(messages, msg, csr, csr.edge_ids, out, reduce, "agg")
    fused = em.q_message_aggregate(x_q, h, csr, w_q, w, msg, out, reduce, "fused")
    g.output(two, "two_step", TensorProto.UINT8, None)
    g.output(fused, "fused", TensorProto.UINT8, None)
    return g.model("two_step_and_fused")


@pytest.mark.parametrize(("bits", "msg_bits"), [(8, 8), (4, 4), (8, 4)])
@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_equals_the_two_step_export(structure, reduce, per_head, bits, msg_bits):
    for scales in ("ties", "random"):
        feeds = random_feeds(structure, 8, 2 if per_head else None, scales, bits, msg_bits,
                             seed=21)
        model = two_step_and_fused(feeds, reduce, bits, msg_bits)
        graph_feeds = {k: feeds[k] for k in ("x_q", "w_q", "indptr", "src")}
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        two, fused = session.run(["two_step", "fused"], graph_feeds)
        np.testing.assert_array_equal(fused, two)
        np.testing.assert_array_equal(
            reference(feeds, reduce=reduce, bits=bits, msg_bits=msg_bits), two)
        evaluated = ReferenceEvaluator(model, new_ops=reference_ops()).run(
            ["fused"], graph_feeds)[0]
        np.testing.assert_array_equal(evaluated, two)


# -- validation ----------------------------------------------------------------------------

def test_model_checks_and_infers(op_runner):
    for w_q in (W_Q, np.stack([W_Q, W_Q], axis=1)):
        model = op_runner.model(OP, feeds_of(X_Q, 10, INDPTR, SRC, w_q, 10), reduce="mean")
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        out = inferred.graph.output[0].type.tensor_type
        assert out.elem_type == onnx.TensorProto.UINT8 and len(out.shape.dim) == 2


def _call(**changes):
    feeds = feeds_of(X_Q, 10, INDPTR, SRC, W_Q, 10)
    attrs = {k: changes.pop(k) for k in ("reduce", "bits", "msg_bits") if k in changes}
    return reference(feeds | changes, **attrs)


@pytest.mark.parametrize(("changes", "message"), [
    ({"x_q": X_Q.astype(np.int8)}, "x_q must be uint8"),
    ({"w_q": W_Q.astype(np.int64)}, "w_q must be uint8"),
    ({"src": SRC.astype(np.int32)}, "src must be int64"),
    ({"src": np.array([1, 2, 0, 0, 5, 2], np.int64)}, r"src holds 5, outside \[0, 5\)"),
    ({"src": np.array([1, 2, -1, 0, 3, 2], np.int64)}, r"src holds -1"),
    ({"w_q": W_Q[:4]}, r"w_q has 4 rows, expected one per edge \(6\)"),
    ({"w_q": np.zeros((6, 3), np.uint8)}, r"w_q has 3 heads, which must divide the 2 columns"),
    ({"w_q": np.zeros((6, 0), np.uint8)}, "w_q has 0 heads"),
    ({"w_q": np.zeros((6, 1, 1), np.uint8)}, "w_q must have rank 1"),
    ({"m_scale": scalar(0.0, np.float32)}, "m_scale must be finite and > 0"),
    ({"m_zero_point": scalar(3, np.int8)}, "m_zero_point must be a uint8 scalar"),
    ({"w_scale": np.ones(2, np.float32)}, "w_scale must be a float32 scalar"),
    ({"m_scale": scalar(1e-38, np.float32), "x_scale": scalar(1e30, np.float32)},
     "multiplier overflows float32"),
    ({"msg_bits": 9}, "attribute msg_bits must be in"),
    ({"bits": 0}, "attribute bits must be in"),
    ({"reduce": "min"}, "reduce must be one of"),
    ({"indptr": np.array([0, 2, 5, 5, 6, 7], np.int64)}, r"indptr\[-1\] = 7 must equal"),
])
def test_reference_rejects_bad_inputs(changes, message):
    with pytest.raises(ValueError, match=message):
        _call(**changes)


def test_reference_refuses_int32_overflow():
    """|c| <= 255, so only an in-degree above 8,421,504 can overflow: 8,421,505 saturated
    messages into one destination."""
    num_edges = 8_421_505
    feeds = feeds_of(np.array([[255]], np.uint8), 0, np.array([0, num_edges], np.int64),
                     np.zeros(num_edges, np.int64), np.full(num_edges, 255, np.uint8), 0,
                     s_x=1.0, s_w=1.0, s_m=1.0, zp_m=0)
    with pytest.raises(ValueError, match="int32 accumulator overflows"):
        reference(feeds)
