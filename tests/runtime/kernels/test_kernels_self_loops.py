"""looped_indptr / looped_src kernels against the exporter's LoopedIndptr / LoopedSrc
references, at every ISA level (conftest), 1, 2 and 7 threads, and on empty graphs."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.exporter.ops.self_loops import looped_indptr as ref_indptr
from qgnn.exporter.ops.self_loops import looped_src as ref_src
from qgnn.runtime.kernels._ext import ext
from qgnn.runtime.kernels.graph_ops import looped_indptr, looped_src


def with_stored_loops(rng: np.random.Generator, csr, frac: float = 0.2):
    """The graph with about ``frac`` of its edges turned into self-loops, one edge repeated."""
    indptr, src, dst = csr
    src = src.copy()
    loops = rng.random(src.size) < frac
    src[loops] = dst[loops]
    if src.size > 2:
        src[1] = src[0]
    return indptr, src


def check(indptr: np.ndarray, src: np.ndarray, drop: int, threads: int) -> None:
    got_ptr = looped_indptr(indptr, src, bool(drop), num_threads=threads)
    got_src = looped_src(indptr, src, bool(drop), num_threads=threads)
    assert got_ptr.dtype == np.int64 and got_src.dtype == np.int64
    np.testing.assert_array_equal(got_ptr, ref_indptr(indptr, src, drop))
    np.testing.assert_array_equal(got_src, ref_src(indptr, src, drop))


@pytest.mark.parametrize("drop", [0, 1])
@pytest.mark.parametrize("threads", [1, 2, 7])
def test_matches_reference(make_csr, drop, threads):
    rng = np.random.default_rng(threads)
    for num_dst, num_edges, num_src, empty in ((1, 5, 3, 0.0), (40, 300, 60, 0.3),
                                               (500, 4000, 500, 0.5), (9, 0, 9, 0.0)):
        check(*with_stored_loops(rng, make_csr(num_dst, num_edges, num_src, empty)), drop,
              threads)


@pytest.mark.parametrize("drop", [0, 1])
@pytest.mark.parametrize("threads", [2, 7])
def test_large_graph_splits_and_matches(make_csr, parts_used, drop, threads):
    rng = np.random.default_rng(7)
    indptr, src = with_stored_loops(rng, make_csr(200_000, 2_000_000, 300_000, 0.2))
    check(indptr, src, drop, threads)
    assert parts_used() == threads


@pytest.mark.parametrize("drop", [0, 1])
def test_empty_graphs(drop):
    none = np.zeros(0, np.int64)
    np.testing.assert_array_equal(looped_indptr(np.zeros(1, np.int64), none, bool(drop)), [0])
    assert looped_src(np.zeros(1, np.int64), none, bool(drop)).size == 0
    np.testing.assert_array_equal(looped_indptr(np.zeros(4, np.int64), none, bool(drop)),
                                  [0, 1, 2, 3])
    np.testing.assert_array_equal(looped_src(np.zeros(4, np.int64), none, bool(drop)),
                                  [0, 1, 2])


def test_only_loops_dropped():
    indptr, src = np.array([0, 2, 3], np.int64), np.array([0, 0, 1], np.int64)
    np.testing.assert_array_equal(looped_indptr(indptr, src, True), [0, 1, 2])
    np.testing.assert_array_equal(looped_src(indptr, src, True), [0, 1])


@pytest.mark.parametrize("fn", ["looped_indptr", "looped_src"])
def test_extension_rejects_bad_inputs(isa, fn):
    kernel = getattr(ext(isa), fn)
    ok, one = np.array([0, 1], np.int64), np.array([0], np.int64)
    with pytest.raises(ValueError, match=r"indptr\[0\] must be 0"):
        kernel(np.array([1, 1], np.int64), one, 0, 1)
    with pytest.raises(ValueError, match="non-decreasing"):
        kernel(np.array([0, 2, 1], np.int64), one, 0, 1)
    with pytest.raises(ValueError, match=r"indptr\[-1\] = 1 must equal"):
        kernel(ok, np.array([0, 0], np.int64), 0, 1)
    with pytest.raises(ValueError, match="src must have dtype int64"):
        kernel(ok, np.array([0], np.int32), 0, 1)
    for drop in (0, 1):
        with pytest.raises(ValueError, match=r"src\[0\] = -3 is not a source id"):
            kernel(ok, np.array([-3], np.int64), drop, 2)
    with pytest.raises(ValueError, match="drop_existing must be 0 or 1"):
        kernel(ok, one, 2, 1)
    with pytest.raises(ValueError, match="num_threads"):
        kernel(ok, one, 0, 0)
