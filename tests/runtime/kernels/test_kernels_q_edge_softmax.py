"""q_edge_softmax (GAT's exact softmax of quantised logits) against the op's numpy reference and
its function body on stock onnxruntime, bit for bit, at every ISA level and thread count."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from qgnn.contract import softmax_table
from qgnn.contract.softmax import MAX_DEGREE, ONE
from qgnn.exporter.ops import make_op_model
from qgnn.exporter.ops.q_edge_softmax import q_edge_softmax as reference
from qgnn.runtime.kernels import q_edge_softmax

f32 = np.float32


def stock(q: np.ndarray, indptr: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The op's function body on stock onnxruntime."""
    model = make_op_model("QEdgeSoftmax", {"logits_q": (TensorProto.UINT8, ["E", "H"]),
                                           "indptr": (TensorProto.INT64, ["D1"]),
                                           "table": (TensorProto.INT64, ["T"])})
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"logits_q": q, "indptr": indptr, "table": table})[0]


def bits_of(a: np.ndarray) -> np.ndarray:
    assert a.dtype == np.float32
    return a.view(np.uint32)


@pytest.mark.parametrize(("num_dst", "edges", "heads", "empty"), [
    (1, 1, 1, 0.0), (50, 333, 4, 0.3), (2000, 20011, 8, 0.1), (40, 7, 3, 0.5), (30, 400, 70, 0.0),
    (5, 2000, 4, 0.0)])  # the last: segments of ~400 edges, several blocks of values each
@pytest.mark.parametrize("bits", [8, 4])
def test_equals_reference_and_stock_onnxruntime(make_csr, guarded, num_dst, edges, heads, empty,
                                                bits) -> None:
    indptr, _, _ = make_csr(num_dst, edges, 1, empty)
    rng = np.random.default_rng(edges + bits)
    q = rng.integers(0, 2**bits, (edges, heads)).astype(np.uint8)
    for scale in (0.002, 0.04, 2.5):
        table = softmax_table(f32(scale), bits)
        want = reference(q, indptr, table)
        np.testing.assert_array_equal(bits_of(stock(q, indptr, table)), bits_of(want))
        for threads in (1, 2, 3):
            got = q_edge_softmax(guarded(q), guarded(indptr), guarded(table),
                                 num_threads=threads)
            np.testing.assert_array_equal(bits_of(got), bits_of(want))


def test_one_edge_equal_logits_and_empty_destinations(make_csr) -> None:
    indptr = np.array([0, 1, 1, 4, 4, 9], np.int64)
    q = np.array([[9], [5], [5], [5], [0], [0], [0], [0], [0]], np.uint8)
    got = q_edge_softmax(q, indptr, softmax_table(0.3, 8))
    np.testing.assert_array_equal(got[:, 0], f32([1, 1 / 3, 1 / 3, 1 / 3, .2, .2, .2, .2, .2]))
    assert q_edge_softmax(np.zeros((0, 2), np.uint8), [0, 0, 0],
                          softmax_table(0.3, 8)).shape == (0, 2)
    assert q_edge_softmax(np.zeros((3, 0), np.uint8), [0, 3],
                          softmax_table(0.3, 8)).shape == (3, 0)


def test_threads_split_and_agree(make_csr, parts_used) -> None:
    indptr, _, _ = make_csr(5000, 200_000, 1)
    q = np.random.default_rng(3).integers(0, 256, (200_000, 4)).astype(np.uint8)
    table = softmax_table(0.02, 8)
    one = q_edge_softmax(q, indptr, table, num_threads=1)
    two = q_edge_softmax(q, indptr, table, num_threads=2)
    assert parts_used() == 2
    np.testing.assert_array_equal(bits_of(one), bits_of(two))


def test_edge_weights_at_a_quantisation_tie_are_equal_everywhere() -> None:
    """An alpha that lands exactly on a QuantizeLinear rounding boundary: the float path could
    round it either way on different hosts (a last-bit difference in exp); here the alpha bits
    are the contract's, so stock onnxruntime, the kernel and the reference quantise it alike."""
    table = softmax_table(f32(0.05), 8)
    indptr = np.array([0, 2], np.int64)
    q = np.array([[10], [9]], np.uint8)
    alpha = reference(q, indptr, table)[0, 0]
    tie = None
    for k in range(1, 255):
        scale = f32(np.float64(alpha) / (k + 0.5))
        if np.divide(alpha, scale, dtype=f32) == f32(k + 0.5):
            tie = (k, scale)
            break
    assert tie is not None
    k, scale = tie
    node = helper.make_node("QuantizeLinear", ["alpha", "scale", "zp"], ["alpha_q"])
    graph = helper.make_graph(
        [node], "quantise", [helper.make_tensor_value_info("alpha", TensorProto.FLOAT, [2, 1])],
        [helper.make_tensor_value_info("alpha_q", TensorProto.UINT8, [2, 1])],
        [helper.make_tensor("scale", TensorProto.FLOAT, [], [float(scale)]),
         helper.make_tensor("zp", TensorProto.UINT8, [], [0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = [session.run(None, {"alpha": a})[0] for a in (
        stock(q, indptr, table), q_edge_softmax(q, indptr, table), reference(q, indptr, table))]
    outs.append(q_edge_softmax(q, indptr, table, scale=scale, zero_point=0))  # fused
    assert outs[0][0, 0] == k + (k % 2)  # half to even
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


def quantise(alpha: np.ndarray, scale: float, zp: int, bits: int) -> np.ndarray:
    """onnxruntime's QuantizeLinear (float32 division, half to even) and the Clip of bits < 8."""
    q = np.rint(np.divide(alpha, f32(scale), dtype=f32)) + zp
    return np.clip(q, 0, 2**bits - 1).astype(np.uint8)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("heads", [1, 4, 7, 70])
def test_quantised_output_is_quantize_linear_of_the_alphas(make_csr, bits, heads) -> None:
    indptr, _, _ = make_csr(40, 3011, 1, 0.2)  # ~90 edges a destination: several blocks
    rng = np.random.default_rng(bits)
    q = rng.integers(0, 256, (3011, heads)).astype(np.uint8)
    table = softmax_table(f32(0.03), 8)
    alpha = reference(q, indptr, table)
    for scale, zp in ((1 / 255, 0), (0.0625, 3), (0.004, 9), (1e-30, 0), (7.0, 200)):
        want = quantise(alpha, scale, zp, bits)
        for threads in (1, 2):
            got = q_edge_softmax(q, indptr, table, scale=scale, zero_point=zp, bits=bits,
                                 num_threads=threads)
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, want, err_msg=f"{scale} {zp}")


def test_degree_limit_is_the_contracts() -> None:
    table = softmax_table(0.1, 1)
    for degree, ok in ((MAX_DEGREE, True), (MAX_DEGREE + 1, False)):
        q = np.zeros((degree, 1), np.uint8)
        indptr = np.array([0, 0, degree], np.int64)
        if ok:
            out = q_edge_softmax(q, indptr, table)
            assert out[0, 0] == f32(1.0 / degree)
        else:
            with pytest.raises(ValueError, match=f"destination 1 has {degree} in-edges, more "
                                                 f"than {MAX_DEGREE}"):
                q_edge_softmax(q, indptr, table)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: q_edge_softmax(np.zeros((3, 2), np.uint8), [0, 2], softmax_table(0.1, 8)),
     r"indptr\[-1\] = 2 must equal the number of edges len\(logits_q\) = 3"),
    (lambda: q_edge_softmax(np.zeros((3, 2), np.uint8), [0, 3, 1, 3], softmax_table(0.1, 8)),
     "non-decreasing"),
    (lambda: q_edge_softmax(np.zeros((3, 2), np.float32), [0, 3], softmax_table(0.1, 8)),
     "logits_q must have dtype uint8"),
    (lambda: q_edge_softmax(np.zeros(3, np.uint8), [0, 3], softmax_table(0.1, 8)),
     "logits_q must have 2 dimension"),
    (lambda: q_edge_softmax(np.zeros((3, 1), np.uint8), [0, 3], softmax_table(0.1, 8)[:200]),
     "table must hold 2\\^bits entries \\(bits 1..8\\), got 200"),
    (lambda: q_edge_softmax(np.zeros((3, 1), np.uint8), [0, 3], np.full(512, ONE)),
     "table must hold 2\\^bits entries"),
    (lambda: q_edge_softmax(np.zeros((3, 1), np.uint8), [0, 3], np.array([ONE + 1, 0])),
     "table\\[0\\] must be 2\\^30"),
    (lambda: q_edge_softmax(np.zeros((3, 1), np.uint8), [0, 3], np.array([ONE, ONE + 1])),
     "non-increasing"),
    (lambda: q_edge_softmax(np.zeros((3, 1), np.uint8), [0, 3], np.array([ONE, -1])),
     "non-increasing"),
    (lambda: q_edge_softmax(np.zeros((3, 1), np.uint8), [0, 3], np.array([ONE, 0], np.int32)),
     "table must have dtype int64"),
    (lambda: q_edge_softmax(np.array([[0], [16], [3]], np.uint8), [0, 3],
                            softmax_table(0.1, 4)),
     r"logit 16 at \[1, 0\] is beyond the table of 16 entries"),
    (lambda: q_edge_softmax(np.zeros((3, 1), np.uint8), [0, 3], softmax_table(0.1, 8),
                            num_threads=0), "num_threads"),
    (lambda: q_edge_softmax(np.zeros((3, 1), np.uint8), [0, 3], softmax_table(0.1, 8),
                            scale=0.0), "scale must be a finite float32 > 0"),
    (lambda: q_edge_softmax(np.zeros((3, 1), np.uint8), [0, 3], softmax_table(0.1, 8),
                            scale=np.nan), "scale must be a finite float32 > 0"),
    (lambda: q_edge_softmax(np.zeros((3, 1), np.uint8), [0, 3], softmax_table(0.1, 8),
                            scale=0.1, zero_point=256), "zero_point must be in"),
    (lambda: q_edge_softmax(np.zeros((3, 1), np.uint8), [0, 3], softmax_table(0.1, 8),
                            scale=0.1, bits=9), "bits must be in"),
])
def test_bad_input_is_a_clear_value_error(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call()
