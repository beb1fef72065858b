"""bench_link_step times each phase of one ogbl-ddi link step on every aggregation route, and
the aggregation alone on the dense and CSR routes."""

from __future__ import annotations

import json

from qgnn.bench.bench_link_step import main
from qgnn.training.nn import propagate, spmm


def test_every_route_writes_phase_timings_and_is_undone(tmp_path):
    saved = propagate._sparse_ok, spmm.dense_ok, propagate.gathered_propagate
    assert main(["--models", "gcn", "--paths", "sparse,csr,per-edge,dq8,dq8-per-edge",
                 "--hidden", "4", "--batch", "64", "--repeat", "1",
                 "--results-dir", str(tmp_path), "--name", "s"]) == 0
    assert (propagate._sparse_ok, spmm.dense_ok, propagate.gathered_propagate) == saved
    rows = json.loads((tmp_path / "s.json").read_text())["results"]["rows"]
    assert set(rows) == {"gcn/sparse", "gcn/csr", "gcn/per-edge", "gcn/dq8", "gcn/dq8-per-edge"}
    assert all(set(r) == {"forward", "score", "backward", "step", "step_cpu"}
               for r in rows.values())
    assert "| gcn" in (tmp_path / "s.md").read_text()


def test_aggregation_times_dense_against_csr(tmp_path):
    assert main(["--aggregation", "--hidden", "4", "--repeat", "1",
                 "--results-dir", str(tmp_path), "--name", "a"]) == 0
    rows = json.loads((tmp_path / "a.json").read_text())["results"]["rows"]
    assert set(rows) == {"gcn/dense", "gcn/csr", "sage/dense", "sage/csr"}
    assert all(r["aggregate_cpu"] > 0 for r in rows.values())


def test_profile_lists_the_costliest_operators_of_a_step(tmp_path):
    part = spmm.TABLE_PART_BYTES
    assert main(["--models", "gcn", "--paths", "dq8", "--hidden", "4", "--batch", "64",
                 "--repeat", "1", "--profile", "3", "--table-part-bytes", "64",
                 "--results-dir", str(tmp_path), "--name", "p"]) == 0
    assert part == spmm.TABLE_PART_BYTES  # the table ranges were set for the run only
    ops = json.loads((tmp_path / "p.json").read_text())["results"]["profiles"]["gcn/dq8"]
    assert len(ops) == 3 and all(o["self_cpu_s"] >= 0 and o["calls"] >= 1 for o in ops)
    assert [o["self_cpu_s"] for o in ops] == sorted((o["self_cpu_s"] for o in ops), reverse=True)
    assert "self CPU s" in (tmp_path / "p.md").read_text()
