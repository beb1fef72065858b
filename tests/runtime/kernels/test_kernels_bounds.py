"""No kernel reads past the end of an input: every array ends right before a guard page."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.runtime import kernels as K


@pytest.mark.parametrize("k", [1, 2, 3, 5, 6, 7, 64, 65])
@pytest.mark.parametrize("n", [1, 3, 4, 5, 9])
def test_qlinear_reads_only_its_inputs(isa, guarded, n, k):
    rng = np.random.default_rng(n * 100 + k)
    x = rng.integers(0, 256, (n, k), dtype=np.uint8)
    w = rng.integers(-127, 128, (k, 17), dtype=np.int8)
    want = K.qlinear(x, 3, w, None, 0.01, 9)
    np.testing.assert_array_equal(K.qlinear(guarded(x), 3, guarded(w), None, 0.01, 9), want)


@pytest.mark.parametrize("dim", [1, 7, 63, 64, 65, 129])
def test_topk_reads_only_its_inputs(isa, guarded, dim):
    rng = np.random.default_rng(dim)
    table = rng.integers(-127, 128, (37, dim), dtype=np.int8)
    query = rng.integers(-127, 128, dim, dtype=np.int8)
    want = K.int8_topk(query, table, 5)
    got = K.int8_topk(guarded(query), guarded(table), 5, candidates=guarded(np.arange(37)))
    np.testing.assert_array_equal(got[0], want[0])
    got32 = K.int8_topk(guarded(query.astype(np.int32)), guarded(table), 5)
    np.testing.assert_array_equal(got32[0], want[0])


@pytest.mark.parametrize("feats", [1, 5, 16, 17, 48, 64, 70])
@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_graph_kernels_read_only_their_inputs(guarded, feats, reduce):
    rng = np.random.default_rng(feats)
    src = np.array([0, 4, 4, 2, 4, 1, 3, 4])  # the last row (4) is gathered often
    indptr = np.array([0, 3, 3, 8])
    xq = rng.integers(0, 256, (5, feats), dtype=np.uint8)
    wq = rng.integers(0, 256, 8, dtype=np.uint8)
    xf = rng.standard_normal((5, feats)).astype(np.float32)
    wf = rng.standard_normal(8).astype(np.float32)
    g_indptr, g_src = guarded(indptr), guarded(src)
    np.testing.assert_array_equal(
        K.qaggregate(guarded(xq), 3, g_indptr, g_src, 0.1, 5, reduce, guarded(wq), 7),
        K.qaggregate(xq, 3, indptr, src, 0.1, 5, reduce, wq, 7))
    np.testing.assert_array_equal(
        K.aggregate_f32(guarded(xf), g_indptr, g_src, reduce, guarded(wf)),
        K.aggregate_f32(xf, indptr, src, reduce, wf))
    logits = rng.standard_normal((8, feats)).astype(np.float32)
    np.testing.assert_array_equal(K.edge_softmax_f32(guarded(logits), g_indptr),
                                  K.edge_softmax_f32(logits, indptr))


def test_quantisers_read_only_their_inputs(guarded):
    x = np.linspace(-3, 3, 1001, dtype=np.float32)
    np.testing.assert_array_equal(K.quantize_u8(guarded(x), 0.05, 60), K.quantize_u8(x, 0.05, 60))
    np.testing.assert_array_equal(K.quantize_s8(guarded(x), 0.05), K.quantize_s8(x, 0.05))
    q = K.quantize_u8(x, 0.05, 60)
    np.testing.assert_array_equal(K.dequantize_u8(guarded(q), 0.05, 60),
                                  K.dequantize_u8(q, 0.05, 60))
