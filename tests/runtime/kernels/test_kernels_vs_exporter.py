"""The compiled kernels agree with the exporter's numpy references of the ai.qgnn ops (the spec
the ONNX function bodies are tested against): bit-exact integers, float32 within 1e-5."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")  # the exporter's references live with the export extra

from qgnn.exporter.ops.aggregate import aggregate as ref_aggregate
from qgnn.exporter.ops.edge_softmax import edge_softmax as ref_edge_softmax
from qgnn.exporter.ops.q_aggregate import q_aggregate as ref_q_aggregate
from qgnn.exporter.ops.q_aggregate_padded import (
    q_aggregate_padded as ref_q_aggregate_padded,
)
from qgnn.runtime.kernels import (
    aggregate_f32,
    edge_softmax_f32,
    qaggregate,
    qaggregate_padded,
    requant_multiplier,
)


def f32(v: float) -> np.ndarray:
    return np.array(v, np.float32)


def u8(v: int) -> np.ndarray:
    return np.array(v, np.uint8)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("bits", [8, 4])
def test_qaggregate_matches_reference(make_csr, reduce, weighted, bits):
    rng = np.random.default_rng(bits)
    indptr, src, _ = make_csr(80, 900, 60, empty_frac=0.15)
    x = rng.integers(0, 2**bits, (60, 37), dtype=np.uint8)
    w = rng.integers(0, 256, len(src), dtype=np.uint8) if weighted else None
    s_x, s_w, s_y = 0.0371, 0.0093, 0.0517
    want = ref_q_aggregate(x, f32(s_x), u8(3), indptr, src, w, f32(s_w) if weighted else None,
                           u8(130) if weighted else None, f32(s_y), u8(9), reduce, bits)
    mult = requant_multiplier(s_x, s_y, s_w if weighted else None)
    got = qaggregate(x, 3, indptr, src, mult, 9, reduce, w, 130, bits=bits)
    np.testing.assert_array_equal(got, want)


def test_qaggregate_padded_matches_reference():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (50, 24), dtype=np.uint8)
    nbr = rng.integers(-1, 50, (30, 7))
    w = rng.integers(0, 256, nbr.shape, dtype=np.uint8)
    for reduce in ("sum", "mean", "max"):
        want = ref_q_aggregate_padded(x, f32(0.02), u8(100), nbr, w, f32(0.5), u8(128),
                                      f32(0.3), u8(128), reduce)
        got = qaggregate_padded(x, 100, nbr, requant_multiplier(0.02, 0.3, 0.5), 128, reduce,
                                w, 128)
        np.testing.assert_array_equal(got, want)


def test_overflow_is_refused_like_the_reference():
    src = np.zeros(40_000, np.int64)
    indptr = np.array([0, 40_000])
    x, w = np.full((1, 1), 255, np.uint8), np.full(40_000, 255, np.uint8)
    with pytest.raises(ValueError, match="overflow"):
        ref_q_aggregate(x, f32(1.0), u8(0), indptr, src, w, f32(1.0), u8(0), f32(1.0), u8(0))
    with pytest.raises(ValueError, match="overflow"):
        qaggregate(x, 0, indptr, src, 1.0, 0, "sum", w, 0)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_aggregate_and_softmax_match_reference(make_csr, reduce):
    rng = np.random.default_rng(0)
    indptr, src, _ = make_csr(70, 800, 50, empty_frac=0.2)
    x = rng.standard_normal((50, 19)).astype(np.float32)
    w = rng.standard_normal(len(src)).astype(np.float32)
    want = ref_aggregate(x, indptr, src, w, reduce)
    np.testing.assert_allclose(aggregate_f32(x, indptr, src, reduce, w), want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())
    logits = rng.standard_normal((len(src), 3)).astype(np.float32) * 5
    np.testing.assert_allclose(edge_softmax_f32(logits, indptr), ref_edge_softmax(logits, indptr),
                               rtol=1e-5, atol=1e-7)
