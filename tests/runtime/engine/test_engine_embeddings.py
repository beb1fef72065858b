"""INT8 embedding retrieval: exact top-k of ``s_i * q_i`` against a float64 numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.runtime import kernels
from qgnn.runtime.engine.embeddings import EmbeddingIndex, quantize_rows


def _table(n: int, d: int, seed: int, spread: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d)).astype(np.float32)
    z *= rng.uniform(1.0, spread, (n, 1)).astype(np.float32)
    return quantize_rows(z)


def _reference(values, scales, query, k, exclude=(), candidates=None, rows=None):
    """Best k ids by float64 s_i * (q . q_i), ties by id; ``rows`` overrides (id -> (q, s))."""
    values = values.astype(np.float64)
    scales = scales.astype(np.float64)
    score = scales * (values @ query.astype(np.float64))
    ids = np.arange(values.shape[0])
    if rows is not None:
        extra_ids, extra_q, extra_s = rows
        score = np.concatenate([score, np.full(max(0, extra_ids.max() + 1 - score.size), -1)])
        ids = np.arange(score.size)
        score[extra_ids] = extra_s.astype(np.float64) * (extra_q.astype(np.float64)
                                                          @ query.astype(np.float64))
    keep = np.ones(score.size, bool)
    keep[list(exclude)] = False
    if candidates is not None:
        mask = np.zeros(score.size, bool)
        mask[candidates] = True
        keep &= mask
    if rows is None:
        keep &= True
    else:
        present = np.zeros(score.size, bool)
        present[:values.shape[0]] = True
        present[rows[0]] = True
        keep &= present
    order = np.lexsort((ids[keep], -score[keep]))[:k]
    return ids[keep][order], score[keep][order]


def test_quantize_rows_matches_the_bundle_rule() -> None:
    z = np.array([[0.0, 0.0], [1.27, -0.635], [-2.54, 0.01]], np.float32)
    q, s = quantize_rows(z)
    np.testing.assert_array_equal(s, np.float32([1.0, 0.01, 0.02]))
    np.testing.assert_array_equal(q, [[0, 0], [127, -64], [-127, 0]])  # -63.5 -> -64 (even)


@pytest.mark.parametrize("spread", [1.0, 4.0])
def test_topk_equals_float_reference(spread: float) -> None:
    values, scales = _table(3000, 32, seed=1, spread=spread)
    index = EmbeddingIndex(values, scales)
    rng = np.random.default_rng(2)
    for _ in range(15):
        query = values[rng.integers(3000)]
        exclude = np.unique(rng.integers(0, 3000, 40))
        ids, scores = index.topk(query, 20, exclude=exclude)
        ref_ids, ref_scores = _reference(values, scales, query, 20, exclude)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-12)


def test_coarse_shortlist_is_deepened_until_certified(monkeypatch) -> None:
    """One row with a 50x larger scale leaves the others only ~7 levels in the common-scale
    shortlist table, so its ranking is coarse: the certified bound must deepen the shortlist
    (here 40 -> 160 -> 640 rows) and the answer must still be exact."""
    import qgnn.runtime.engine.embeddings as module

    depths: list[int] = []
    real = module._kernel_topk

    def spy(query, table, k, *rest):
        depths.append(k)
        return real(query, table, k, *rest)

    monkeypatch.setattr(module, "_kernel_topk", spy)
    rng = np.random.default_rng(3)
    values = rng.integers(-127, 128, (3000, 16)).astype(np.int8)
    scales = np.full(3000, 0.02, np.float32)
    scales[0] = 1.0
    ids, _ = EmbeddingIndex(values, scales).topk(values[5], 10)
    np.testing.assert_array_equal(ids, _reference(values, scales, values[5], 10)[0])
    assert len(depths) > 1 and depths == sorted(depths)


def test_ties_go_to_the_smaller_id() -> None:
    values = np.tile(np.array([[3, -1, 2, 0]], np.int8), (50, 1))
    scales = np.ones(50, np.float32)
    ids, _ = EmbeddingIndex(values, scales).topk(np.array([1, 1, 1, 1], np.int8), 5,
                                                  exclude=np.array([1, 3]))
    np.testing.assert_array_equal(ids, [0, 2, 4, 5, 6])


def test_candidates_contiguous_and_scattered() -> None:
    values, scales = _table(1000, 16, seed=4)
    index = EmbeddingIndex(values, scales)
    query = values[7]
    for cand in (np.arange(300, 700), np.unique(np.random.default_rng(5).integers(0, 1000, 90))):
        ids, _ = index.topk(query, 12, exclude=np.array([310, 500]), candidates=cand)
        ref_ids, _ = _reference(values, scales, query, 12, [310, 500], cand)
        np.testing.assert_array_equal(ids, ref_ids)
    ids, _ = index.topk(query, 12, candidates=np.array([5, 6]))
    assert sorted(ids.tolist()) == [5, 6]  # fewer than k eligible


def test_patches_and_request_local_rows() -> None:
    values, scales = _table(400, 8, seed=6)
    index = EmbeddingIndex(values, scales)
    new_values, new_scales = _table(3, 8, seed=7, spread=10.0)
    index.update(np.array([10, 400, 401]), new_values, new_scales)  # 2 rows grow the table
    assert index.num_rows == 402
    all_values = np.concatenate([values, new_values[1:]])
    all_scales = np.concatenate([scales, new_scales[1:]])
    all_values[10], all_scales[10] = new_values[0], new_scales[0]
    got_values, got_scales = index.rows(np.array([10, 401, 0]))
    np.testing.assert_array_equal(got_values, all_values[[10, 401, 0]])
    np.testing.assert_array_equal(got_scales, all_scales[[10, 401, 0]])
    query = all_values[401]
    ids, _ = index.topk(query, 15)
    np.testing.assert_array_equal(ids, _reference(all_values, all_scales, query, 15)[0])
    local_q, local_s = _table(2, 8, seed=8, spread=20.0)
    extra = (np.array([3, 402]), local_q, local_s)
    ids, _ = index.topk(query, 15, extra=extra)
    ref, _ = _reference(all_values, all_scales, query, 15, rows=extra)
    np.testing.assert_array_equal(ids, ref)


def test_large_patch_is_folded_into_the_base() -> None:
    values, scales = _table(100, 8, seed=9)
    index = EmbeddingIndex(values, scales)
    fresh_values, fresh_scales = _table(20, 8, seed=10)
    index.update(np.arange(100, 120), fresh_values, fresh_scales)
    state = index._state
    assert state.patch_ids.size == 0 and state.base.values.shape[0] == 120
    both_values = np.concatenate([values, fresh_values])
    both_scales = np.concatenate([scales, fresh_scales])
    ids, _ = index.topk(both_values[3], 9)
    np.testing.assert_array_equal(ids, _reference(both_values, both_scales, both_values[3],
                                                  9)[0])


def test_numpy_fallback_gives_the_kernel_answer(monkeypatch) -> None:
    values, scales = _table(800, 16, seed=11)
    query = values[1]
    exclude = np.array([4, 5, 6])
    expected = _reference(values, scales, query, 10, exclude)[0]
    monkeypatch.setattr(kernels, "available", lambda: False)
    ids, _ = EmbeddingIndex(values, scales).topk(query, 10, exclude=exclude)
    np.testing.assert_array_equal(ids, expected)


def test_bad_tables_are_refused() -> None:
    with pytest.raises(ValueError, match="int8"):
        EmbeddingIndex(np.zeros((2, 2), np.float32), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="scales must be finite and > 0"):
        EmbeddingIndex(np.zeros((2, 2), np.int8), np.array([1.0, 0.0], np.float32))
