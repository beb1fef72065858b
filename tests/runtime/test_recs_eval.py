"""``qgnn evaluate-recs`` against an independent numpy evaluation of the bundle's own table, and
the same figures from a running server serving that bundle (served top-k = offline ranking)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import recs_testkit as rk
from qgnn.runtime.bundle.reader import load_bundle

from qgnn.cli import main


@pytest.fixture(scope="module")
def data():
    return rk.recommender_data()


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory, data) -> Path:
    return rk.recommender_bundle(tmp_path_factory.mktemp("eval-recs"), "gcn", data)


def _write(path: Path, pairs: np.ndarray, u: int, *, external: bool, sep: str = "\t") -> Path:
    lines = []
    for user, item in pairs.tolist():
        a, b = (str(user + 1), str(item - u + 1)) if external else (str(user), str(item))
        lines.append(sep.join([a, b, "4", "881250949"]))  # rating and time columns ignored
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, data) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("files")
    u = data.num_users
    return {"test": _write(root / "u.test", data.test, u, external=True),
            "train": _write(root / "u.base", data.train, u, external=True),
            "test_nodes": _write(root / "test.csv", data.test, u, external=False, sep=",")}


def _reference(bundle_path: Path, data, ks: list[int]) -> dict[str, float]:
    """Per user: the table's scores s_u s_i (q_u . q_i) over items, training items removed,
    ties by id; Recall, NDCG and HitRate written out loop by loop."""
    b = load_bundle(bundle_path)
    q = np.asarray(b.array("embeddings/values"), np.int64)
    s = np.asarray(b.array("embeddings/scales"), np.float64)
    items = np.arange(data.num_users, data.num_users + data.num_items)
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg", "hit_rate")}
    users = np.unique(data.test[:, 0])
    for user in users:
        had = set(data.train[data.train[:, 0] == user, 1].tolist())
        held = set(data.test[data.test[:, 0] == user, 1].tolist())
        cand = np.array([i for i in items if i not in had])
        scores = s[user] * s[cand] * (q[cand] @ q[user])
        order = cand[np.lexsort((cand, -scores))]
        for k in ks:
            top = order[:k].tolist()
            hits = [i in held for i in top]
            sums[f"recall@{k}"] += sum(hits) / len(held)
            sums[f"hit_rate@{k}"] += float(any(hits))
            dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hits) if h)
            ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(held))))
            sums[f"ndcg@{k}"] += dcg / ideal
    return {name: total / len(users) for name, total in sums.items()}


def _run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(["evaluate-recs", *argv])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else None, captured.err


def test_bundle_metrics_equal_the_numpy_reference(capsys, bundle_path, files, data) -> None:
    code, out, err = _run(capsys, str(bundle_path), "--test", str(files["test"]), "-k", "5,20")
    assert code == 0, err
    expected = _reference(bundle_path, data, [5, 20])
    assert out["metrics"] == pytest.approx(expected, abs=1e-12)
    assert out["users"] == len(np.unique(data.test[:, 0])) and out["skipped_users"] == 0
    code, by_node, err = _run(capsys, str(bundle_path), "--test", str(files["test_nodes"]),
                              "--ids", "node", "-k", "5,20")
    assert code == 0, err
    assert by_node["metrics"] == out["metrics"]


def test_server_metrics_equal_the_bundles(capsys, start_server, bundle_path, files) -> None:
    server = start_server(bundle_path)
    name = load_bundle(bundle_path).name
    code, served, err = _run(capsys, "--model", name, "--port", str(server.grpc_port),
                             "--test", str(files["test"]), "--train", str(files["train"]),
                             "-k", "10")
    assert code == 0, err
    code, offline, err = _run(capsys, str(bundle_path), "--test", str(files["test"]), "-k", "10")
    assert code == 0, err
    assert served["metrics"] == offline["metrics"]


def test_unknown_test_users_are_skipped_and_counted(capsys, bundle_path, files, tmp_path
                                                    ) -> None:
    test = tmp_path / "t.tsv"
    test.write_text(files["test"].read_text() + "nobody\t3\t5\t0\n")
    code, out, err = _run(capsys, str(bundle_path), "--test", str(test))
    assert code == 0, err
    assert out["skipped_users"] == 1


@pytest.mark.parametrize(("content", "extra", "needle"), [
    ("1\t2\n3\n", [], "u.test:2: expected at least 2 columns"),
    ("", [], "no interactions"),
    ("1\t2\n", ["-k", "0"], "--k"),
    ("1\t2\n", ["-k", "x"], "--k"),
])
def test_bad_input_is_one_line_with_exit_code_2(capsys, bundle_path, tmp_path, content, extra,
                                                needle) -> None:
    test = tmp_path / "u.test"
    test.write_text(content)
    code, _, err = _run(capsys, str(bundle_path), "--test", str(test), *extra)
    assert code == 2 and needle in err, err


def test_server_mode_needs_a_train_file(capsys, files) -> None:
    code, _, err = _run(capsys, "--model", "m", "--test", str(files["test"]))
    assert code == 2 and "--train" in err
    code, _, err = _run(capsys, "--test", str(files["test"]))
    assert code == 2 and "BUNDLE or --model" in err
