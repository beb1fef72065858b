"""bench_recommend runs end to end on a tiny MovieLens-format pair and writes JSON + table."""

from __future__ import annotations

import json

import numpy as np
from qgnn.bench.bench_recommend import OGBL_DDI, main
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


def tiny_ogbl(path):
    """An OGB-format npz: a ring of 30 nodes with chords, fixed negatives."""
    rng = np.random.default_rng(0)
    ring = np.stack([np.arange(30), (np.arange(30) + 1) % 30], 1)
    chords = np.stack([np.arange(30), (np.arange(30) + 2) % 30], 1)
    neg = rng.integers(0, 30, (40, 2))
    np.savez(path, train_pos=ring.astype(np.int16), valid_pos=chords[:15].astype(np.int16),
             valid_neg=neg[:20].astype(np.int16), test_pos=chords[15:].astype(np.int16),
             test_neg=neg[20:].astype(np.int16), num_nodes=np.int32(30))
    return path


def test_ogbl_section_uses_ogbs_recipe_with_flags_on_top(tmp_path):
    npz = tiny_ogbl(tmp_path / "tiny.npz")
    assert main(["--sections", "ogbl", "--ogbl", str(npz), "--models", "gcn",
                 "--precisions", "fp32", "--seeds", "0", "--epochs", "2", "--hidden", "8",
                 "--link-batch-size", "10", "--results-dir", str(tmp_path / "out"),
                 "--name", "o"]) == 0
    out = json.loads((tmp_path / "out" / "o.json").read_text())["results"]
    settings = out["ogbl"]["settings"]
    assert settings == {**OGBL_DDI, "epochs": 2, "hidden": 8, "link_batch_size": 10}
    run = out["ogbl"]["rows"]["gcn/fp32"]["runs"][0]
    assert run["epochs_run"] == 2 and len(run["val_per_epoch"]) == 2
    assert 0.0 <= run["test"] <= 1.0
    assert len(out["load_average_before"]) == 3
