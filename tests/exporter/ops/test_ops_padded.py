"""ai.qgnn::AggregatePadded and QAggregatePadded (padded fixed-fanout layout): by hand, by a
loop oracle over the grid, against the CSR ops on the same edges, and the function bodies on
onnxruntime against the references."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from qgnn.exporter.ops.aggregate_padded import aggregate_padded
from qgnn.exporter.ops.q_aggregate_padded import q_aggregate_padded

REDUCES = ("sum", "mean", "max")

# The 5-node graph of the CSR tests as a grid, padding anywhere in a row (-1).
NBR = np.array([[1, -1, 2], [0, 0, 3], [-1, -1, -1], [-1, 2, -1], [-1, -1, -1]], dtype=np.int64)
X = np.array([[1, -1], [2, 0], [-3, 5], [4, 2], [0.5, -2]], dtype=np.float32)
W = np.array([[0.5, np.nan, 2], [1, -1, 3], [np.nan] * 3, [7, 4, 9], [0, 0, 0]], dtype=np.float32)
HAND_FLOAT = {
    ("sum", False): [[-1, 5], [6, 0], [0, 0], [-3, 5], [0, 0]],
    ("mean", False): [[-0.5, 2.5], [2, 0], [0, 0], [-3, 5], [0, 0]],
    ("max", False): [[2, 5], [4, 2], [0, 0], [-3, 5], [0, 0]],
    ("sum", True): [[-5, 10], [12, 6], [0, 0], [-12, 20], [0, 0]],
    ("max", True): [[1, 10], [12, 6], [0, 0], [-12, 20], [0, 0]],
}
X_Q = np.array([[13, 255], [15, 250], [10, 0], [20, 0], [11, 10]], dtype=np.uint8)
W_Q = np.array([[9, 200, 12], [10, 11, 8], [1, 2, 3], [77, 14, 99], [0, 0, 0]], dtype=np.uint8)
HAND_QUANT = {  # s_x 0.5, zp_x 10, s_y 1, zp_y 3; weighted s_w 0.25, zp_w 10 (see the CSR test)
    ("sum", False): [[5, 118], [11, 243], [3, 3], [3, 0], [3, 3]],
    ("mean", False): [[4, 61], [6, 83], [3, 3], [3, 0], [3, 3]],
    ("max", False): [[5, 123], [8, 125], [3, 3], [3, 0], [3, 3]],
    ("sum", True): [[2, 0], [1, 36], [3, 3], [3, 0], [3, 3]],
    ("max", True): [[3, 1], [3, 34], [3, 3], [3, 0], [3, 3]],
}


def float_feeds(x, nbr, w=None) -> dict[str, np.ndarray]:
    return {"x": x, "nbr": nbr} | ({} if w is None else {"w": w})


def quant_feeds(x_q, s_x, zp_x, nbr, w=None, s_y=1.0, zp_y=3) -> dict[str, np.ndarray]:
    feeds = {"x_q": x_q, "x_scale": np.array(s_x, np.float32),
             "x_zero_point": np.array(zp_x, np.uint8), "nbr": nbr,
             "y_scale": np.array(s_y, np.float32), "y_zero_point": np.array(zp_y, np.uint8)}
    if w is not None:
        feeds |= {"w_q": w[0], "w_scale": np.array(w[1], np.float32),
                  "w_zero_point": np.array(w[2], np.uint8)}
    return feeds


@pytest.mark.parametrize(("reduce", "weighted"), sorted(HAND_FLOAT))
def test_hand_example_float(op_runner, reduce, weighted):
    feeds = float_feeds(X, NBR, W if weighted else None)
    want = np.array(HAND_FLOAT[reduce, weighted], dtype=np.float32)
    np.testing.assert_array_equal(op_runner.reference("AggregatePadded", feeds, reduce=reduce),
                                  want)
    got = op_runner.ort("AggregatePadded", feeds, reduce=reduce)
    np.testing.assert_array_equal(got, want)  # NaN weights at padding never leak


@pytest.mark.parametrize(("reduce", "weighted"), sorted(HAND_QUANT))
def test_hand_example_quant(op_runner, reduce, weighted):
    feeds = quant_feeds(X_Q, 0.5, 10, NBR, (W_Q, 0.25, 10) if weighted else None)
    want = np.array(HAND_QUANT[reduce, weighted], dtype=np.uint8)
    np.testing.assert_array_equal(op_runner.reference("QAggregatePadded", feeds, reduce=reduce),
                                  want)
    np.testing.assert_array_equal(op_runner.ort("QAggregatePadded", feeds, reduce=reduce), want)


def loop_grid(x, nbr, w, reduce) -> np.ndarray:
    """Independent oracle: loops over each grid row's non-padding slots, float64."""
    out = np.zeros((nbr.shape[0], x.shape[1]))
    for v in range(nbr.shape[0]):
        msgs = [x[u].astype(np.float64) * (1.0 if w is None else float(w[v, k]))
                for k, u in enumerate(nbr[v]) if u >= 0]
        if msgs:
            out[v] = {"sum": np.sum, "mean": np.mean, "max": np.max}[reduce](msgs, axis=0)
    return out


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_reference_matches_loop_oracle(structure, reduce, weighted, float_close):
    rng = np.random.default_rng(2)
    nbr = structure.padded(rng, extra=2)
    x = rng.normal(size=(structure.num_src, 3)).astype(np.float32)
    w = rng.normal(size=nbr.shape).astype(np.float32) if weighted else None
    magnitude = loop_grid(np.abs(x), nbr, None if w is None else np.abs(w), "sum")
    float_close(aggregate_padded(x, nbr, w, reduce=reduce), loop_grid(x, nbr, w, reduce),
                1e-2 * magnitude)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_float_body_matches_reference_and_csr(op_runner, structure, features, reduce, weighted,
                                              float_close):
    rng = np.random.default_rng(features)
    nbr = structure.padded(rng)
    x = rng.normal(size=(structure.num_src, features)).astype(np.float32)
    w_grid = np.full(nbr.shape, np.nan, dtype=np.float32)
    w_edges = rng.normal(size=structure.num_edges).astype(np.float32)
    w_grid[nbr >= 0] = w_edges  # row-major order of the grid = CSR edge order
    feeds = float_feeds(x, nbr, w_grid if weighted else None)
    got = op_runner.ort("AggregatePadded", feeds, reduce=reduce)
    magnitude = aggregate_padded(np.abs(x), nbr, np.abs(w_grid) if weighted else None,
                                 reduce=reduce)
    float_close(got, op_runner.reference("AggregatePadded", feeds, reduce=reduce), magnitude)
    csr = {"x": x, "indptr": structure.indptr, "src": structure.src}
    if weighted:
        csr["w"] = w_edges
    float_close(got, op_runner.ort("Aggregate", csr, reduce=reduce), magnitude)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_quant_body_matches_reference_and_csr(op_runner, structure, features, reduce, weighted):
    rng = np.random.default_rng(features)
    nbr = structure.padded(rng)
    x_q = rng.integers(0, 256, size=(structure.num_src, features)).astype(np.uint8)
    w_grid = rng.integers(0, 256, size=nbr.shape).astype(np.uint8)  # garbage at padding
    s_x, s_w, s_y = (float(v) for v in rng.uniform(0.001, 0.2, size=3))
    zp_x, zp_w, zp_y = (int(v) for v in rng.integers(0, 256, size=3))
    feeds = quant_feeds(x_q, s_x, zp_x, nbr, (w_grid, s_w, zp_w) if weighted else None,
                        s_y=s_y, zp_y=zp_y)
    got = op_runner.ort("QAggregatePadded", feeds, reduce=reduce)
    assert got.dtype == np.uint8 and got.shape == (structure.num_dst, features)
    np.testing.assert_array_equal(got, op_runner.reference("QAggregatePadded", feeds,
                                                           reduce=reduce))
    csr = {k: v for k, v in feeds.items() if k not in ("nbr", "w_q")}
    csr |= {"indptr": structure.indptr, "src": structure.src}
    if weighted:
        csr["w_q"] = w_grid[nbr >= 0]
    np.testing.assert_array_equal(got, op_runner.ort("QAggregate", csr, reduce=reduce))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduce", REDUCES)
def test_models_check_and_infer(op_runner, reduce, weighted):
    for op, feeds in (
            ("AggregatePadded", float_feeds(X, NBR, W if weighted else None)),
            ("QAggregatePadded", quant_feeds(X_Q, 0.5, 10, NBR,
                                             (W_Q, 0.25, 10) if weighted else None))):
        model = op_runner.model(op, feeds, reduce=reduce)
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        assert len(inferred.graph.output[0].type.tensor_type.shape.dim) == 2


def test_references_reject_bad_grids():
    with pytest.raises(ValueError, match=r"nbr holds -2, outside \[-1, 5\)"):
        aggregate_padded(X, np.array([[-2, 0]], dtype=np.int64))
    with pytest.raises(ValueError, match=r"nbr holds 5, outside \[-1, 5\)"):
        aggregate_padded(X, np.array([[5, 0]], dtype=np.int64))
    with pytest.raises(ValueError, match="nbr must have rank 2"):
        aggregate_padded(X, np.array([0, 1], dtype=np.int64))
    with pytest.raises(ValueError, match=r"w has shape \(2, 3\), expected nbr's \(5, 3\)"):
        aggregate_padded(X, NBR, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"w_q has shape \(5, 2\)"):
        q_aggregate_padded(X_Q, np.array(0.5, np.float32), np.array(10, np.uint8), NBR,
                           W_Q[:, :2], np.array(0.25, np.float32), np.array(10, np.uint8),
                           np.array(1.0, np.float32), np.array(3, np.uint8))
