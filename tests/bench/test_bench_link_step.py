"""bench_link_step times each phase of one ogbl-ddi link step on both aggregation paths."""

from __future__ import annotations

import json

from qgnn.bench.bench_link_step import main
from qgnn.training.nn import propagate


def test_both_paths_write_phase_timings(tmp_path):
    original = propagate._sparse_ok
    assert main(["--models", "gcn", "--paths", "sparse,per-edge", "--hidden", "4",
                 "--batch", "64", "--repeat", "1", "--results-dir", str(tmp_path),
                 "--name", "s"]) == 0
    assert propagate._sparse_ok is original  # the per-edge switch is undone
    rows = json.loads((tmp_path / "s.json").read_text())["results"]["rows"]
    assert set(rows) == {"gcn/sparse", "gcn/per-edge"}
    assert all(set(r) == {"forward", "score", "backward", "step"} for r in rows.values())
    assert "| gcn" in (tmp_path / "s.md").read_text()
