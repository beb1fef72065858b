"""int8_topk against an exact int64 numpy ranking: same ids, same scores, ties to the smaller id."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.runtime.kernels import int8_topk


def oracle(query, table, k, exclude=None, candidates=None):
    ids = np.arange(len(table)) if candidates is None else np.unique(candidates)
    if exclude is not None:
        ids = ids[~np.isin(ids, exclude)]
    # float64 BLAS is exact here (|score| < 2^53) and much faster than an int64 matmul
    scores = (table[ids].astype(np.float64) @ query.astype(np.float64)).astype(np.int64)
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]


def check(query, table, k, exclude=None, candidates=None, **kw):
    ids, scores = int8_topk(query, table, k, exclude, candidates, **kw)
    want_ids, want_scores = oracle(query, table, k, exclude, candidates)
    assert ids.dtype == np.int64 and scores.dtype == np.int32
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    return ids, scores


@pytest.mark.parametrize("dim", [1, 7, 63, 64, 65, 128, 130, 600])
def test_matches_oracle_across_dims(isa, dim):
    rng = np.random.default_rng(dim)
    table = rng.integers(-127, 128, (3000, dim), dtype=np.int8)
    query = rng.integers(-128, 128, dim, dtype=np.int8)
    check(query, table, 20)
    check(query, table, 1)
    check(query.astype(np.int32) * 100, table, 25)


def test_ties_go_to_the_smaller_id(isa):
    rng = np.random.default_rng(1)
    rows = rng.integers(-127, 128, (10, 64), dtype=np.int8)
    table = rows[rng.integers(0, 10, 5000)]  # 5000 rows, only 10 distinct: ties everywhere
    query = rng.integers(-127, 128, 64, dtype=np.int8)
    ids, scores = check(query, table, 50, num_threads=2)
    for s in np.unique(scores):
        assert np.all(np.diff(ids[scores == s]) > 0)


def test_exclusions_candidates_and_short_results(isa):
    rng = np.random.default_rng(2)
    table = rng.integers(-127, 128, (2000, 32), dtype=np.int8)
    query = rng.integers(-127, 128, 32, dtype=np.int8)
    best, _ = int8_topk(query, table, 10)
    ids, _ = check(query, table, 10, exclude=best[:5])
    assert not np.isin(ids, best[:5]).any()
    cands = rng.integers(0, 2000, 300)  # with duplicates
    check(query, table, 10, candidates=cands)
    check(query, table, 10, exclude=cands[:100], candidates=cands)
    check(query, table, 10, candidates=cands[:4])  # fewer candidates than k
    ids, scores = int8_topk(query, table, 5, exclude=np.arange(2000))
    assert ids.shape == (0,) and scores.shape == (0,)
    ids, _ = int8_topk(query, table, 5, exclude=np.arange(1998))
    np.testing.assert_array_equal(np.sort(ids), [1998, 1999])
    ids, _ = check(query, table, 5000)  # k > N returns every row, ranked
    assert len(ids) == 2000
    assert int8_topk(query, table, 3, candidates=[])[0].shape == (0,)
    assert int8_topk(query, table[:0], 3)[0].shape == (0,)


def test_extreme_values_score_exactly(isa):
    table = np.array([[127] * 64, [-127] * 64, [-128] * 64, [0] * 64], np.int8)
    for q in (np.full(64, -128, np.int8), np.full(64, 127, np.int8)):
        check(q, table, 4)


def test_thread_counts_agree(isa, parts_used):
    rng = np.random.default_rng(3)
    table = rng.integers(-127, 128, (200_000, 64), dtype=np.int8)
    query = rng.integers(-127, 128, 64, dtype=np.int8)
    exclude = rng.integers(0, 200_000, 500)
    runs = []
    for t in (1, 2, 7):
        runs.append(int8_topk(query, table, 30, exclude, num_threads=t))
        assert parts_used() == t
    for ids, scores in runs[1:]:
        np.testing.assert_array_equal(ids, runs[0][0])
        np.testing.assert_array_equal(scores, runs[0][1])
    check(query, table, 30, exclude)


def test_int32_query_that_could_overflow_is_refused():
    table = np.zeros((4, 64), np.int8)
    check(np.full(64, (2**31 - 1) // 256 // 64, np.int32), table, 2)
    with pytest.raises(ValueError, match="could overflow int32 scores"):
        int8_topk(np.full(64, (2**31 - 1) // 256 // 64 + 1, np.int32), table, 2)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"query": np.zeros(8, np.int16)}, "query must have dtype int8 or int32, got int16"),
    ({"query": np.zeros(8, np.float32)}, "query must have dtype int8 or int32"),
    ({"query": np.zeros(9, np.int8)}, "query has 9 values but table rows have 8"),
    ({"query": np.zeros((1, 8), np.int8)}, r"query must have 1 dimension\(s\)"),
    ({"table": np.zeros((5, 8), np.uint8)}, "table must have dtype int8, got uint8"),
    ({"k": 0}, r"k must be in \[1, "),
    ({"k": 2.5}, "k must be an integer"),
    ({"exclude": [1, 5]}, r"exclude holds id 5, outside the table's rows \[0, 5\)"),
    ({"candidates": [-1, 2]}, r"candidates holds id -1, outside the table's rows \[0, 5\)"),
    ({"candidates": np.array([0.0, 1.0])}, "candidates must hold integer ids, got dtype float64"),
    ({"exclude": np.zeros((2, 2), np.int64)}, "exclude must be 1-D"),
])
def test_bad_inputs(kwargs, message):
    args = dict(query=np.zeros(8, np.int8), table=np.zeros((5, 8), np.int8), k=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        int8_topk(**args)


def test_non_contiguous_table_is_copied():
    rng = np.random.default_rng(4)
    wide = rng.integers(-127, 128, (300, 64), dtype=np.int8)
    query = rng.integers(-127, 128, 32, dtype=np.int8)
    check(query, wide[:, ::2], 7)
