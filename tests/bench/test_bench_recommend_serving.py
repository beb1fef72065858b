"""The cold-start benchmark's smoke run: every route it times gives the same user output bit for
bit (it checks before timing), the recomputed rows are the frontier, and the JSON holds the
figures the docs quote (wall and CPU p50/p99 per route, load average)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from qgnn.bench import bench_recommend_serving


def test_smoke_run_is_exact_and_writes_the_figures(tmp_path: Path) -> None:
    assert bench_recommend_serving.main([
        "--models", "gcn,sage,lightgcn", "--users", "30", "--num-items", "40",
        "--interactions", "12", "--items", "4", "--hidden", "8", "--layers", "3",
        "--repeat", "2", "--name", "smoke", "--results-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "smoke.json").read_text())["results"]
    assert len(results["load_average_before"]) == 3
    for kind, r in results["models"].items():
        assert r["bit_exact"], kind
        rows = r["rows_recomputed_per_layer"]
        assert len(rows) == 3 and rows[1:] == [5, 1], (kind, rows)
        assert (rows[0] > 5) == (kind != "sage")  # in-degree readers: the items' other users
        for route in ("served", "cached", "khop", "inductive"):
            assert r[route]["p99_s"] >= r[route]["median_s"] > 0
            assert r["cpu"][route]["median_s"] > 0
    assert results["models"]["sage"]["route"] == "cache"
    assert "load average" in (tmp_path / "smoke.md").read_text()
