"""bench/bench_kernels.py: its graph and traffic bookkeeping, and a full smoke run (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qgnn.bench import bench_kernels as bk


def test_random_csr_is_destination_sorted_and_complete():
    indptr, src, dst = bk.random_csr(np.random.default_rng(0), 50, 400)
    assert indptr[0] == 0 and indptr[-1] == 400 and np.all(np.diff(indptr) >= 0)
    np.testing.assert_array_equal(dst, np.repeat(np.arange(50), np.diff(indptr)))
    assert src.min() >= 0 and src.max() < 50


def test_qaggregate_figure_counts_every_byte_it_implies():
    res = bk.bench_qaggregate(np.random.default_rng(0), 100, 1000, 16, 2, 2, copy_gbps=10.0)
    # src 8 B/edge + one 16-byte row per edge + indptr + output
    assert res["traffic_bytes"] == 8 * 1000 + 1000 * 16 + 8 * 101 + 100 * 16
    assert res["bandwidth_bound_s"] == pytest.approx(res["traffic_bytes"] / 10e9)
    assert res["x_bandwidth_bound"] == pytest.approx(res["median_s"] / res["bandwidth_bound_s"])


def test_embeddings_have_the_requested_shape_and_structure():
    table, queries = bk.embeddings(np.random.default_rng(1), 2000, 32)
    assert table.shape == (2000, 32) and table.dtype == np.float32
    assert queries(3).shape == (3, 32)
    # rank-16 factors dominate: the top 16 singular values hold most of the energy
    sv = np.linalg.svd(table, compute_uv=False)
    assert (sv[:16] ** 2).sum() / (sv**2).sum() > 0.8


def test_edge_softmax_figure_times_both_forms_and_checks_the_exact_one(isa):
    res = bk.bench_edge_softmax(np.random.default_rng(0), 500, 4000, 4, 2, 2, [isa])
    assert res["edges"] == 4500 and res["exact_bit_identical_across_levels"]
    assert set(res["median_s"]) == {f"{form} [{isa}]" for form in (
        "edge_softmax_f32", "q_edge_softmax", "edge_softmax_f32, then quantize_u8",
        "q_edge_softmax, quantised")}
    assert 0 <= res["max_relative_difference_float_vs_exact"] < 1e-5


@pytest.mark.slow
def test_quick_run_writes_the_json(tmp_path):
    bk.main(["--quick", "--repeat", "2", "--results-dir", str(tmp_path)])
    res = json.loads((tmp_path / "kernels-quick.json").read_text())["results"]
    assert res["qaggregate"]["edges"] == 100_000
    assert set(res["topk"]["recall_at_k"]) >= {"int8 query", "int32 query"}
    assert all(q["bit_identical_to_ort"] in (True, None) for q in res["qlinear"])
    assert all(q["bit_identical_across_levels"] for q in res["qlinear"])
    assert res["edge_softmax"]["exact_bit_identical_across_levels"]
