import json
import subprocess
import sys

import pytest
from qgnn.training.checkpoint import load_run
from qgnn.training.cli import dataset_slug

from qgnn.cli import main

GRAPH = "synthetic:powerlaw?nodes=200&features=8&communities=4"
RECOMMENDER = "synthetic:recommender?users=30&items=20&interactions_per_user=5&features=8"


def test_train_saves_a_run_and_prints_one_summary_line(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--dataset", GRAPH, "--epochs", "3", "--hidden", "8", "--lr", "0.02",
               "--seed", "3", "--out", str(out), "--no-progress"])
    assert rc == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{GRAPH} gcn node: test accuracy ") and str(out) in line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and 0.0 <= summary["test_metric"] <= 1.0
    ckpt = load_run(out)
    # flags override the preset; the rest of the preset stays
    assert ckpt.model_config.hidden == 8 and ckpt.train_config.lr == 0.02
    assert ckpt.train_config.seed == 3 and ckpt.train_config.weight_decay == 5e-4
    assert ckpt.metrics["test_metric"] == summary["test_metric"]


def test_summary_path_and_link_task(tmp_path, capsys):
    summary_path = tmp_path / "s" / "summary.json"
    rc = main(["train", "--dataset", RECOMMENDER, "--task", "link", "--epochs", "2",
               "--hidden", "8", "--out", str(tmp_path / "link"), "--summary", str(summary_path),
               "--no-progress"])
    assert rc == 0
    summary = json.loads(summary_path.read_text())
    assert summary["task"] == "link" and summary["metric"] == "recall@20"
    assert "test_ndcg@20" in summary and len(summary["history"]) == 2
    assert "test_ndcg@20" in capsys.readouterr().out
    assert load_run(tmp_path / "link").task == "link"


def test_bad_dataset_and_wrong_task_exit_2_with_one_line(tmp_path, capsys):
    assert main(["train", "--dataset", str(tmp_path / "missing.npz"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qgnn train: error: dataset") and err.count("\n") == 1
    assert main(["train", "--dataset", RECOMMENDER, "--task", "node", "--no-progress"]) == 2
    assert "use --task link" in capsys.readouterr().err


def test_argument_errors_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dropout", "1.5"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["train", "--model", "mlp"])
    assert exc.value.code == 2


def test_plot_writes_curves_or_says_why_not(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--dataset", GRAPH, "--epochs", "2", "--hidden", "4", "--out", str(out),
               "--no-progress", "--plot"])
    assert rc == 0
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "--plot needs matplotlib" in capsys.readouterr().err
        assert not (out / "curves.png").exists()
    else:
        assert (out / "curves.png").stat().st_size > 0


def test_registering_the_command_does_not_import_torch():
    code = ("import sys, argparse, qgnn.training.cli as c; "
            "c.add_parsers(argparse.ArgumentParser().add_subparsers()); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("spec", "slug"), [
    ("cora", "cora"), ("/data/graphs/tolokers.npz", "tolokers"),
    ("synthetic:powerlaw?nodes=10", "powerlaw"), ("interactions:/x/u.data", "u"),
    ("edges.csv.gz", "edges"),
])
def test_default_run_directory_names(spec, slug):
    assert dataset_slug(spec) == slug


def test_interaction_flags_are_recorded_in_an_absolute_spec(tmp_path, monkeypatch, capsys):
    from qgnn.graph.synth import movielens_udata

    movielens_udata(tmp_path / "u1.base", num_users=20, num_items=30, min_per_user=5,
                    mean_per_user=8, test_path=tmp_path / "u1.test", seed=0)
    monkeypatch.chdir(tmp_path)
    rc = main(["train", "--dataset", "u1.base", "--test-file", "u1.test", "--task", "link",
               "--model", "lightgcn", "--split-by", "leave_last", "--sep", "tab",
               "--columns", "user=0,item=1,rating=2,timestamp=3", "--min-rating", "2",
               "--loss", "softmax", "--negatives", "4", "--layers", "2", "--hidden", "8",
               "--epochs", "2", "--k", "5", "--no-progress", "--out", "run"])
    assert rc == 0
    err = capsys.readouterr().err
    assert '"test_cold_users_dropped"' in err  # the data summary is logged
    ckpt = load_run(tmp_path / "run")
    base, test = (tmp_path / "u1.base").resolve(), (tmp_path / "u1.test").resolve()
    assert ckpt.dataset == (f"interactions:{base}?test={test}&split=leave_last&sep=tab&"
                            f"columns=user=0,item=1,rating=2,timestamp=3&min_rating=2.0")
    assert [f["path"] for f in ckpt.extra["dataset_files"]] == [str(base), str(test)]
    assert ckpt.train_config.loss == "softmax" and ckpt.train_config.negatives == 4
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metric"] == "recall@5" and "test_most_popular_recall@5" in summary


def test_lightgcn_refuses_the_node_task(capsys):
    assert main(["train", "--dataset", GRAPH, "--model", "lightgcn", "--epochs", "1",
                 "--no-progress"]) == 2
    assert "use --task link" in capsys.readouterr().err
