import json

import pytest
from qgnn.bench.accuracy import AccuracyRow, accuracy_table, run_accuracy, select_pairs

from qgnn.cli import main

TINY = "synthetic:powerlaw?nodes=150&features=8&communities=3"


def test_row_statistics_and_verdict():
    row = AccuracyRow("gcn", "cora", "accuracy", [80.0, 82.0, 84.0], [1.0, 2.0, 3.0], 81.0)
    assert row.mean == 82.0 and row.std == pytest.approx(2.0)  # sample std
    assert row.passed is True
    assert AccuracyRow("gcn", "cora", "accuracy", [80.0], [1.0], 81.0).passed is False
    assert AccuracyRow("gcn", "x", "accuracy", [80.0], [1.0], None).passed is None


def test_table_shows_mean_std_target_and_verdict():
    rows = [AccuracyRow("gcn", "cora", "accuracy", [81.5, 81.7], [2.0, 4.0], 81.0),
            AccuracyRow("gat", "cora", "accuracy", [80.0], [2.0], 82.0)]
    lines = accuracy_table(rows).splitlines()
    assert "81.60 ± 0.14" in lines[2] and "pass" in lines[2] and "81.0" in lines[2]
    assert "FAIL" in lines[3] and "82.0" in lines[3]


def test_select_pairs_filters_the_targets():
    assert select_pairs(["gat"], None) == [("gat", "cora")]
    assert ("gcn", "tolokers") in select_pairs(None, ["tolokers"])
    assert select_pairs(["sage"], ["citeseer"]) == [("sage", "citeseer")]
    with pytest.raises(ValueError, match="no target matches"):
        select_pairs(["mlp"], None)


def test_smoke_one_seed_few_epochs():
    rows = run_accuracy([("gcn", TINY)], [0], epochs=2)
    (row,) = rows
    assert row.metric == "accuracy" and len(row.scores) == 1 and 0 <= row.mean <= 100
    assert row.target is None


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    rc = main(["bench", "accuracy", "--models", "gcn", "--datasets", TINY, "--seeds", "1",
               "--epochs", "2", "--results-dir", str(tmp_path), "--name", "smoke"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| gcn " in out and "test (mean ± std)" in out
    data = json.loads((tmp_path / "smoke.json").read_text())
    assert data["results"]["rows"][0]["model"] == "gcn"
    assert data["machine"]["versions"]["torch"]
