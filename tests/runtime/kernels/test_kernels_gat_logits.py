"""gat_logits against stock onnxruntime's Gather/Add/LeakyRelu/QuantizeLinear chain and a numpy
float32 oracle, bit for bit (run once per ISA level)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from qgnn.runtime.kernels import gat_logits

f32 = np.float32


def oracle(s, t, src, dst, slope, scale, zp, bits=8, dequantize=False):
    """One numpy float32 operation at a time, as the ONNX chain reads."""
    v = s[src] + t[dst]
    v = np.where(v >= 0, v, v * f32(slope)).astype(f32)
    q = np.clip(np.rint(v / f32(scale)) + f32(zp), 0, 2**bits - 1)
    return ((q - zp).astype(f32) * f32(scale)) if dequantize else q.astype(np.uint8)


def stock(s, t, src, dst, slope, scale, zp, dequantize=False):
    """The chain the exporter writes, run by stock onnxruntime (8 bits)."""
    nodes = [helper.make_node("Gather", ["s", "src"], ["gs"], axis=0),
             helper.make_node("Gather", ["t", "dst"], ["gt"], axis=0),
             helper.make_node("Add", ["gs", "gt"], ["v"]),
             helper.make_node("LeakyRelu", ["v"], ["l"], alpha=float(slope)),
             helper.make_node("QuantizeLinear", ["l", "scale", "zp"], ["q"])]
    out = "q"
    if dequantize:
        nodes.append(helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["f"]))
        out = "f"
    h = s.shape[1]
    graph = helper.make_graph(
        nodes, "logits",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [None, h]),
         helper.make_tensor_value_info("t", TensorProto.FLOAT, [None, h]),
         helper.make_tensor_value_info("src", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("dst", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT if dequantize else TensorProto.UINT8,
                                       [None, h])],
        [helper.make_tensor("scale", TensorProto.FLOAT, [], [float(scale)]),
         helper.make_tensor("zp", TensorProto.UINT8, [], [int(zp)])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"s": s, "t": t, "src": src, "dst": dst})[0]


def _case(rng, ns, nt, h, e):
    s = (rng.normal(size=(ns, h)) * 3).astype(f32)
    t = (rng.normal(size=(nt, h)) * 3).astype(f32)
    return s, t, rng.integers(0, ns, e).astype(np.int64), rng.integers(0, nt, e).astype(np.int64)


@pytest.mark.parametrize(("ns", "nt", "h", "e"), [(1, 1, 1, 1), (50, 20, 4, 333),
                                                  (3000, 1000, 8, 20011), (40, 40, 3, 7)])
@pytest.mark.parametrize("dequantize", [False, True])
def test_equals_stock_onnxruntime_and_numpy(ns, nt, h, e, dequantize, guarded) -> None:
    rng = np.random.default_rng(ns + e)
    s, t, src, dst = _case(rng, ns, nt, h, e)
    for slope, scale, zp in ((0.2, 0.05, 128), (0.01, 0.031, 7), (1.5, 0.2, 250)):
        want = stock(s, t, src, dst, slope, scale, zp, dequantize)
        for threads in (1, 2):
            got = gat_logits(guarded(s), guarded(t), guarded(src), guarded(dst), slope, scale,
                             zp, dequantize=dequantize, num_threads=threads)
            assert got.dtype == (np.float32 if dequantize else np.uint8)
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, oracle(s, t, src, dst, slope, scale, zp,
                                                  dequantize=dequantize))


def test_ties_round_to_even_saturate_and_keep_signed_zero() -> None:
    # scores k * 0.25 / scale 0.5: every odd k is a tie; the range runs past both ends
    k = np.arange(-600, 601, dtype=f32)
    s = (k * f32(0.25)).reshape(-1, 1)
    t = np.array([[0.0], [-0.0]], f32)
    src = np.arange(k.size, dtype=np.int64)
    for d in (0, 1):
        dst = np.full(k.size, d, np.int64)
        got = gat_logits(s, t, src, dst, 1.0, 0.5, 100)
        np.testing.assert_array_equal(got, stock(s, t, src, dst, 1.0, 0.5, 100))
        assert got.min() == 0 and got.max() == 255
        assert got[600 + 1, 0] == 100 and got[600 + 3, 0] == 102  # 0.5 -> 0, 1.5 -> 2
    neg = gat_logits(s, t, src, np.zeros(k.size, np.int64), 0.2, 0.5, 100, dequantize=True)
    np.testing.assert_array_equal(neg, stock(s, t, src, np.zeros(k.size, np.int64), 0.2, 0.5,
                                             100, dequantize=True))


def test_fewer_bits_saturate_at_their_top() -> None:
    rng = np.random.default_rng(3)
    s, t, src, dst = _case(rng, 30, 30, 4, 500)
    for bits in (1, 4, 7):
        got = gat_logits(s, t, src, dst, 0.2, 0.01, 1, bits=bits)
        np.testing.assert_array_equal(got, oracle(s, t, src, dst, 0.2, 0.01, 1, bits=bits))
        assert got.max() == 2**bits - 1


def test_negative_indices_count_from_the_end_as_gather_does() -> None:
    rng = np.random.default_rng(4)
    s, t, src, dst = _case(rng, 10, 6, 2, 40)
    src_neg, dst_neg = src - 10, dst - 6
    np.testing.assert_array_equal(gat_logits(s, t, src_neg, dst_neg, 0.2, 0.05, 128),
                                  stock(s, t, src, dst, 0.2, 0.05, 128))


def test_bad_input_names_the_value() -> None:
    rng = np.random.default_rng(5)
    s, t, src, dst = _case(rng, 10, 6, 2, 40)
    bad = src.copy()
    bad[17] = 10
    with pytest.raises(ValueError, match=r"src\[17\] = 10 is out of range \[-10, 10\)"):
        gat_logits(s, t, bad, dst, 0.2, 0.05, 128)
    bad = dst.copy()
    bad[3] = -7
    with pytest.raises(ValueError, match=r"dst\[3\] = -7 is out of range \[-6, 6\)"):
        gat_logits(s, t, src, bad, 0.2, 0.05, 128)
    with pytest.raises(ValueError, match="heads"):
        gat_logits(s, t[:, :1].copy(), src, dst, 0.2, 0.05, 128)
    with pytest.raises(ValueError, match="dst must have 40 rows"):
        gat_logits(s, t, src, dst[:-1], 0.2, 0.05, 128)
    with pytest.raises(ValueError, match="scale"):
        gat_logits(s, t, src, dst, 0.2, 0.0, 128)
    with pytest.raises(ValueError, match="zp 200 exceeds"):
        gat_logits(s, t, src, dst, 0.2, 0.05, 200, bits=4)
    with pytest.raises(ValueError, match="slope must be finite"):
        gat_logits(s, t, src, dst, float("nan"), 0.05, 128)


def test_no_edges_gives_an_empty_table() -> None:
    s = np.zeros((3, 4), f32)
    out = gat_logits(s, s, np.zeros(0, np.int64), np.zeros(0, np.int64), 0.2, 0.1, 0)
    assert out.shape == (0, 4) and out.dtype == np.uint8


def _stock_scores(x, zp, att, scale):
    """MatMulInteger with the block-diagonal matrix, Cast, Mul: what the exporter writes."""
    from qgnn.contract import WEIGHT_STORAGE_OFFSET, attention_matrix, weight_storage

    h, c = att.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w", "zp", "wzp"], ["acc"]),
         helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["accf", "c"], ["y"])], "scores",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [None, h * c])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, h])],
        [helper.make_tensor("w", TensorProto.UINT8, [h * c, h],
                            weight_storage(attention_matrix(att)).ravel().tolist()),
         helper.make_tensor("zp", TensorProto.UINT8, [], [zp]),
         helper.make_tensor("wzp", TensorProto.UINT8, [], [WEIGHT_STORAGE_OFFSET]),
         helper.make_tensor("c", TensorProto.FLOAT, [h], np.broadcast_to(scale, h).tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize(("n", "h", "c"), [(1, 1, 1), (77, 4, 32), (5000, 8, 16), (300, 3, 7),
                                           (40, 1, 512)])
def test_head_scores_equal_onnxruntimes_matmulinteger_and_the_contract(n, h, c, guarded) -> None:
    from qgnn.contract import head_scores as contract_scores
    from qgnn.runtime.kernels import head_scores

    rng = np.random.default_rng(n + h)
    x = rng.integers(0, 256, (n, h * c)).astype(np.uint8)
    att = rng.integers(-128, 128, (h, c)).astype(np.int8)
    att[0, 0] = -128  # the extreme int8 value too
    scale = rng.uniform(1e-5, 1e-2, h).astype(np.float32)
    for zp in (0, 131, 255):
        want = _stock_scores(x, zp, att, scale)
        np.testing.assert_array_equal(contract_scores(x, zp, att, scale), want)
        for threads in (1, 2):
            got = head_scores(guarded(x), zp, guarded(att), scale, num_threads=threads)
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(head_scores(x, 5, att, np.float32(0.5)),
                                  _stock_scores(x, 5, att, np.float32(0.5)))


def test_head_scores_bad_shapes_are_named() -> None:
    from qgnn.runtime.kernels import head_scores

    x = np.zeros((3, 8), np.uint8)
    with pytest.raises(ValueError, match=r"x_q \(3, 8\), att \(3, 3\)"):
        head_scores(x, 0, np.zeros((3, 3), np.int8), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="x_zp"):
        head_scores(x, 300, np.zeros((2, 4), np.int8), np.ones(2, np.float32))
