"""ai.qgnn::Aggregate (float, CSR): hand-computed values, an independent loop oracle, and the
portable function body on onnxruntime against the numpy reference."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from qgnn.exporter.ops.aggregate import aggregate

REDUCES = ("sum", "mean", "max")

# 5 nodes; in-edges of 0: from 1, 2; of 1: from 0, 0 (repeated), 3; of 2: none; of 3: from 2;
# of 4: none.
INDPTR = np.array([0, 2, 5, 5, 6, 6], dtype=np.int64)
SRC = np.array([1, 2, 0, 0, 3, 2], dtype=np.int64)
X = np.array([[1, -1], [2, 0], [-3, 5], [4, 2], [0.5, -2]], dtype=np.float32)
W = np.array([0.5, 2, 1, -1, 3, 4], dtype=np.float32)
HAND = {
    ("sum", False): [[-1, 5], [6, 0], [0, 0], [-3, 5], [0, 0]],
    ("mean", False): [[-0.5, 2.5], [2, 0], [0, 0], [-3, 5], [0, 0]],
    ("max", False): [[2, 5], [4, 2], [0, 0], [-3, 5], [0, 0]],
    # 0.5 x1 + 2 x2; 1 x0 - 1 x0 + 3 x3; 4 x2
    ("sum", True): [[-5, 10], [12, 6], [0, 0], [-12, 20], [0, 0]],
    ("mean", True): [[-2.5, 5], [4, 2], [0, 0], [-12, 20], [0, 0]],
    ("max", True): [[1, 10], [12, 6], [0, 0], [-12, 20], [0, 0]],
}


def _feeds(x, indptr, src, w=None) -> dict[str, np.ndarray]:
    feeds = {"x": x, "indptr": indptr, "src": src}
    if w is not None:
        feeds["w"] = w
    return feeds


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_hand_example(op_runner, reduce, weighted):
    feeds = _feeds(X, INDPTR, SRC, W if weighted else None)
    want = np.array(HAND[reduce, weighted], dtype=np.float32)
    np.testing.assert_array_equal(op_runner.reference("Aggregate", feeds, reduce=reduce), want)
    np.testing.assert_array_equal(op_runner.ort("Aggregate", feeds, reduce=reduce), want)


def loop_aggregate(x, indptr, src, w, reduce) -> np.ndarray:
    """Independent oracle: Python loops over each destination's edges, float64."""
    out = np.zeros((indptr.size - 1, x.shape[1]))
    for v in range(indptr.size - 1):
        msgs = [x[src[e]].astype(np.float64) * (1.0 if w is None else float(w[e]))
                for e in range(indptr[v], indptr[v + 1])]
        if msgs:
            out[v] = {"sum": np.sum, "mean": np.mean, "max": np.max}[reduce](msgs, axis=0)
    return out


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_reference_matches_loop_oracle(structure, reduce, weighted, float_close):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(structure.num_src, 3)).astype(np.float32)
    w = rng.normal(size=structure.num_edges).astype(np.float32) if weighted else None
    got = aggregate(x, structure.indptr, structure.src, w, reduce=reduce)
    want = loop_aggregate(x, structure.indptr, structure.src, w, reduce)
    magnitude = loop_aggregate(np.abs(x), structure.indptr, structure.src,
                               None if w is None else np.abs(w), "sum")
    float_close(got, want, 1e-2 * magnitude)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_body_matches_reference(op_runner, structure, features, reduce, weighted, float_close):
    rng = np.random.default_rng(features)
    x = rng.normal(size=(structure.num_src, features)).astype(np.float32)
    w = rng.normal(size=structure.num_edges).astype(np.float32) if weighted else None
    feeds = _feeds(x, structure.indptr, structure.src, w)
    got = op_runner.ort("Aggregate", feeds, reduce=reduce)
    want = op_runner.reference("Aggregate", feeds, reduce=reduce)
    assert got.shape == (structure.num_dst, features)
    magnitude = aggregate(np.abs(x), structure.indptr, structure.src,
                          None if w is None else np.abs(w), reduce=reduce)
    float_close(got, want, magnitude)
    if reduce == "max":
        np.testing.assert_array_equal(got, want)


def test_sum_keeps_precision_after_a_large_prefix(op_runner):
    """The body's running sum is float64: a segment 1e9 times smaller than the running sum
    before it keeps float32 precision (a float32 running sum, spacing 0.125 at 2e6, would
    return 0 or 0.125 here)."""
    x = np.array([[1e3], [1e-3]], dtype=np.float32)
    indptr = np.array([0, 2000, 2003], dtype=np.int64)
    src = np.array([0] * 2000 + [1, 1, 1], dtype=np.int64)
    got = op_runner.ort("Aggregate", _feeds(x, indptr, src), reduce="sum")
    np.testing.assert_allclose(got[:, 0], [2e6, 3 * np.float64(np.float32(1e-3))], rtol=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_model_checks_and_infers(op_runner, reduce, weighted):
    feeds = _feeds(X, INDPTR, SRC, W if weighted else None)
    model = op_runner.model("Aggregate", feeds, reduce=reduce)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out = inferred.graph.output[0].type.tensor_type
    assert out.elem_type == onnx.TensorProto.FLOAT and len(out.shape.dim) == 2


def test_reference_rejects_bad_structure():
    with pytest.raises(ValueError, match="indptr must be non-decreasing"):
        aggregate(X, np.array([0, 3, 2, 6, 6, 6], dtype=np.int64), SRC)
    with pytest.raises(ValueError, match=r"indptr\[-1\] = 5 must equal len\(src\) = 6"):
        aggregate(X, np.array([0, 2, 5, 5, 5, 5], dtype=np.int64), SRC)
    with pytest.raises(ValueError, match="src holds 5"):
        aggregate(X, INDPTR, np.array([1, 2, 0, 0, 5, 2], dtype=np.int64))
    with pytest.raises(ValueError, match="indptr must be int64"):
        aggregate(X, INDPTR.astype(np.int32), SRC)
    with pytest.raises(ValueError, match="w has 2 entries"):
        aggregate(X, INDPTR, SRC, np.ones(2, np.float32))
    with pytest.raises(ValueError, match="reduce must be one of"):
        aggregate(X, INDPTR, SRC, reduce="min")
