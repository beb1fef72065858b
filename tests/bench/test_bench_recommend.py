"""bench_recommend runs end to end on a tiny MovieLens-format pair and writes JSON + table."""

from __future__ import annotations

import json

from qgnn.bench.bench_recommend import main
from qgnn.graph.synth import movielens_udata


def test_movielens_section_writes_per_seed_figures(tmp_path):
    movielens_udata(tmp_path / "a.base", num_users=25, num_items=40, min_per_user=6,
                    mean_per_user=9, test_path=tmp_path / "a.test", seed=3)
    assert main(["--sections", "movielens", "--models", "lightgcn", "--precisions", "fp32,dq8",
                 "--seeds", "0,1", "--epochs", "2", "--hidden", "8", "--k", "5",
                 "--movielens", str(tmp_path / "a.base"), "--movielens-test",
                 str(tmp_path / "a.test"), "--results-dir", str(tmp_path / "out"),
                 "--name", "rec"]) == 0
    result = json.loads((tmp_path / "out" / "rec.json").read_text())["results"]
    rows = result["movielens"]["rows"]
    assert [r["seed"] for r in rows["lightgcn/dq8"]["runs"]] == [0, 1]
    diffs = [a["test"] - b["test"] for a, b in zip(rows["lightgcn/dq8"]["runs"],
                                                   rows["lightgcn/fp32"]["runs"], strict=True)]
    assert abs(rows["lightgcn/dq8"]["minus_fp32"]["mean"] - sum(diffs) / 2) < 1e-12
    assert 0.0 <= rows["lightgcn/fp32"]["most_popular"] <= 1.0
    assert "most-popular Recall@5" in (tmp_path / "out" / "rec.md").read_text()
