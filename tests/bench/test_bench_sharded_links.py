"""The sharded-links benchmark's smoke run: both pipelines run, the sharded rows are the unsharded
table's bit for bit, every compared Recommend agrees, and the JSON holds the figures the docs
quote (bytes per shard, load and Recommend p50 per replica)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from qgnn.bench import bench_sharded_links


@pytest.mark.parametrize("flags", [[], ["--replicate-items"]])
def test_smoke_run_is_exact_and_writes_the_figures(tmp_path: Path, flags: list[str]) -> None:
    assert bench_sharded_links.main([
        "--users", "60", "--num-items", "50", "--interactions", "6", "--hidden", "8",
        "--parts", "2", "--repeat", "3", "--load-repeat", "1", "--name", "smoke",
        "--results-dir", str(tmp_path), *flags]) == 0
    results = json.loads((tmp_path / "smoke.json").read_text())["results"]
    assert results["bit_exact"] and results["recommend_mismatches"] == 0
    assert results["recommend_compared"] > 0
    assert set(results["bytes"]) == {"unsharded", "all", "shard-0", "shard-1"}
    assert results["bytes"]["shard-0"] < results["bytes"]["all"]
    for name in ("unsharded", "all", "shard-0"):
        assert results["load"][name]["median_s"] > 0
    assert results["recommend"]["shard-0"]["median_s"] > 0
    assert "Recommend p50 ms" in (tmp_path / "smoke.md").read_text()
    assert results["replicate_items"] == bool(flags)
