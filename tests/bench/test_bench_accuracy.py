import json

import pytest
from qgnn.bench import accuracy
from qgnn.bench.accuracy import (
    DQ_TARGETS,
    AccuracyRow,
    accuracy_table,
    parse_precisions,
    precision_row,
    precision_table,
    quant_config,
    run_accuracy,
    run_precisions,
    select_pairs,
)

from qgnn.cli import main

TINY = "synthetic:powerlaw?nodes=150&features=8&communities=3"


def run(model, dataset, scores):
    """A hand-made result: ``scores`` per seed, one second each, no target yet."""
    return AccuracyRow(model, dataset, "accuracy", list(scores), [1.0] * len(scores), None)


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


def test_precisions_parse_in_table_order_and_reject_unknown_names(capsys):
    assert parse_precisions("qat4,fp32,dq4,dq4") == ("fp32", "dq4", "qat4")
    assert parse_precisions("fp32,dq8,dq4,qat8,qat4") == ("fp32", "dq8", "dq4", "qat8", "qat4")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "accuracy", "--precisions", "fp32,int4"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--precisions" in err and "int4" in err and "dq4" in err


def test_int8_must_stay_within_d_of_the_fp32_mean_of_the_same_run():
    # GCN Cora: INT8 within 0.5 of FP32. FP32 mean 80.3 (80.30000000000001 in binary)
    fp32 = run("gcn", "cora", [80.2, 80.4])
    tie = precision_row("gcn", "cora", {"fp32": fp32, "dq8": run("gcn", "cora", [79.8])})
    assert tie.runs["dq8"].target == pytest.approx(79.8) and tie.verdicts["dq8"] is True
    below = precision_row("gcn", "cora", {"fp32": fp32, "dq8": run("gcn", "cora", [79.7])})
    assert below.verdicts["dq8"] is False
    above = precision_row("gcn", "cora", {"fp32": fp32, "dq8": run("gcn", "cora", [83.0])})
    assert above.verdicts["dq8"] is True  # beating FP32 is no loss
    # GIN allows 1.0: the same 0.6 drop passes there
    gin = precision_row("gin", "cora", {"fp32": run("gin", "cora", [80.2, 80.4]),
                                        "dq8": run("gin", "cora", [79.7])})
    assert gin.verdicts["dq8"] is True
    # without an FP32 run in the table, a relative target has no verdict
    alone = precision_row("gcn", "cora", {"dq8": run("gcn", "cora", [79.7])})
    assert alone.verdicts["dq8"] is None and alone.runs["dq8"].target is None


def test_fp32_and_int4_targets_are_absolute_and_qat_has_none():
    row = precision_row("gcn", "cora", {"fp32": run("gcn", "cora", [80.9]),
                                        "dq4": run("gcn", "cora", [78.0]),
                                        "qat4": run("gcn", "cora", [40.0])})
    assert row.verdicts == {"fp32": False, "dq4": True, "qat4": None}
    assert row.runs["fp32"].target == 81.0 and row.runs["dq4"].target == 78.0
    egc = precision_row("egc", "cora", {"dq4": run("egc", "cora", [76.9])})
    assert egc.verdicts["dq4"] is False  # EGC needs 77.0
    off_table = precision_row("sage", "cora", {"dq4": run("sage", "cora", [10.0])})
    assert off_table.verdicts == {"dq4": None}


def test_precision_table_one_row_per_pair_with_each_verdict():
    rows = [precision_row("gcn", "cora", {"fp32": run("gcn", "cora", [82.0, 82.2]),
                                          "dq8": run("gcn", "cora", [81.4]),
                                          "dq4": run("gcn", "cora", [79.0]),
                                          "qat4": run("gcn", "cora", [70.0])}),
            precision_row("gat", "cora", {"fp32": run("gat", "cora", [81.0]),
                                          "dq8": run("gat", "cora", [80.5]),
                                          "dq4": run("gat", "cora", [74.0]),
                                          "qat4": run("gat", "cora", [60.0])})]
    header, _, gcn, gat = precision_table(rows).splitlines()
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells == ["model", "dataset", "metric", "seeds", "FP32", "DQ INT8", "DQ INT4",
                     "QAT INT4", "FP32 target", "DQ INT8 target", "DQ INT4 target"]
    gcn_cells = [c.strip() for c in gcn.strip("|").split("|")]
    assert gcn_cells[4:8] == ["82.10 ± 0.14", "81.40 ± 0.00", "79.00 ± 0.00", "70.00 ± 0.00"]
    assert gcn_cells[8:] == ["81.0 pass", "81.60 (FP32 - 0.5) FAIL", "78.0 pass"]
    gat_cells = [c.strip() for c in gat.strip("|").split("|")]
    assert gat_cells[8:] == ["82.0 FAIL", "80.30 (FP32 - 0.7) pass", "75.0 FAIL"]


def test_quantised_runs_use_the_train_command_config_with_model_presets():
    dq4 = quant_config("gcn", "dq4")
    assert (dq4.bits, dq4.method, dq4.momentum, dq4.p_min, dq4.p_max) == (4, "dq", 0.1, 0.1, 0.2)
    assert quant_config("gcn", "qat8").method == "qat" and quant_config("gcn", "fp32") is None
    # EGC tracks ranges faster (0.25 at INT4, 0.5 at INT8) with both methods; GCN keeps 0.1
    assert quant_config("egc", "dq4").momentum == 0.25
    assert quant_config("egc", "qat4").momentum == 0.25
    assert quant_config("egc", "dq8").momentum == 0.5
    assert quant_config("gcn", "dq8").momentum == 0.1
    # EGC and GCN DQ INT8 use the plain STE; Degree-Quant's clipped one stays everywhere else
    assert quant_config("egc", "dq8").ste == "plain" and quant_config("egc", "dq4").ste == "clipped"
    assert quant_config("gcn", "dq8").ste == "plain" and quant_config("gcn", "dq4").ste == "clipped"
    assert quant_config("gat", "dq8").ste == "clipped"


def test_quant_flags_override_presets_as_on_the_train_command():
    egc = quant_config("egc", "dq8", ["--ste", "clipped", "--p-max", "0"])
    assert (egc.ste, egc.p_max, egc.momentum) == ("clipped", 0.0, 0.5)
    assert quant_config("gcn", "fp32", ["--ste", "plain"]) is None
    with pytest.raises(ValueError, match="--quant-flags"):
        quant_config("gcn", "dq8", ["--no-such-flag"])
    with pytest.raises(ValueError, match="--quant-flags"):
        quant_config("gcn", "dq8", ["--ste", "sideways"])


def test_cli_records_quant_flags_and_rejects_bad_ones_before_training(tmp_path, monkeypatch):
    seen = {}

    def fake(pairs, seeds, precisions, **kwargs):
        seen.update(kwargs)
        return [precision_row(m, d, {p: run(m, d, [80.0] * len(seeds)) for p in precisions},
                              {p: {"sites": 1} for p in precisions if p != "fp32"})
                for m, d in pairs]

    monkeypatch.setattr(accuracy, "run_precisions", fake)
    args = ["bench", "accuracy", "--precisions", "dq8", "--models", "egc", "--datasets",
            "cora", "--seeds", "1", "--results-dir", str(tmp_path), "--name", "abl"]
    assert main([*args, "--quant-flags", "--ste clipped"]) == 0
    assert seen["quant_flags"] == ["--ste", "clipped"]
    assert json.loads((tmp_path / "abl.json").read_text())["results"]["quant_flags"] == [
        "--ste", "clipped"]
    seen.clear()
    assert main([*args, "--quant-flags", "--bogus 1"]) == 2  # a usage error, nothing trained
    assert not seen


def test_smoke_one_seed_few_epochs():
    rows = run_accuracy([("gcn", TINY)], [0], epochs=2)
    (row,) = rows
    assert row.metric == "accuracy" and len(row.scores) == 1 and 0 <= row.mean <= 100
    assert row.target is None


def test_smoke_dq_run_trains_a_quantised_model():
    (row,) = run_precisions([("gcn", TINY)], [0], ("fp32", "dq4"), epochs=2)
    assert set(row.runs) == {"fp32", "dq4"} and all(len(r.scores) == 1 for r in row.runs.values())
    assert "fp32" not in row.quant
    dq4 = row.quant["dq4"]
    assert dq4["config"]["bits"] == 4 and dq4["config"]["method"] == "dq"
    assert dq4["sites"] > 0  # calibrated quantisation sites: the model trained quantised


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    rc = main(["bench", "accuracy", "--models", "gcn", "--datasets", TINY, "--seeds", "1",
               "--epochs", "2", "--results-dir", str(tmp_path), "--name", "smoke"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| gcn " in out and "test (mean ± std)" in out
    data = json.loads((tmp_path / "smoke.json").read_text())
    assert data["results"]["rows"][0]["model"] == "gcn"
    assert "precisions" not in data["results"]  # the FP32-only JSON keeps its shape
    assert data["machine"]["versions"]["torch"]


def test_cli_quantised_table_defaults_to_the_degree_quant_pairs(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake(pairs, seeds, precisions, **kwargs):
        seen.update(pairs=list(pairs), seeds=list(seeds), precisions=tuple(precisions))
        return [precision_row(m, d, {p: run(m, d, [80.0] * len(seeds)) for p in precisions},
                              {p: {"sites": 1} for p in precisions if p != "fp32"})
                for m, d in pairs]

    monkeypatch.setattr(accuracy, "run_precisions", fake)
    rc = main(["bench", "accuracy", "--precisions", "fp32,dq8,dq4,qat8,qat4", "--seeds", "3",
               "--results-dir", str(tmp_path), "--name", "dq"])
    assert rc == 0
    assert seen["pairs"] == list(DQ_TARGETS) and len(seen["pairs"]) == 5
    assert seen["seeds"] == [0, 1, 2]
    assert seen["precisions"] == ("fp32", "dq8", "dq4", "qat8", "qat4")
    lines = capsys.readouterr().out.splitlines()
    assert "QAT INT4" in [c.strip() for c in lines[0].strip("|").split("|")]
    assert sum(line.startswith("| ") for line in lines) == 1 + 5  # header + one row per pair
    results = json.loads((tmp_path / "dq.json").read_text())["results"]
    assert results["precisions"] == ["fp32", "dq8", "dq4", "qat8", "qat4"]
    first = results["rows"][0]
    assert (first["model"], first["dataset"]) == ("gcn", "cora")
    assert first["precisions"]["dq4"]["scores"] == [80.0, 80.0, 80.0]
    assert first["precisions"]["dq8"]["rule"] == "FP32 - 0.5"
    assert first["precisions"]["dq8"]["passed"] is True
    assert first["precisions"]["qat4"]["rule"] is None and first["precisions"]["qat4"]["quant"]
