"""A user-item run exported as users run it: train and test files given by relative paths,
exported from another folder; the bundle carries node types, the dataset's ids, the
serving-only seen interactions and the ratings, and refuses a dataset that changed."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from qgnn.exporter.export import export_run
from qgnn.graph.datasets import load_dataset
from qgnn.graph.synth import movielens_udata
from qgnn.runtime.bundle.reader import load_bundle

from qgnn.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One weighted SAGE run on a small MovieLens-format train/test pair, trained from the
    data folder with relative paths."""
    root = tmp_path_factory.mktemp("rec")
    data = root / "data"
    data.mkdir()
    movielens_udata(data / "u1.base", num_users=40, num_items=60, min_per_user=6,
                    mean_per_user=10, test_path=data / "u1.test", seed=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(data)
        assert main(["train", "--dataset", "u1.base", "--test-file", "u1.test", "--task", "link",
                     "--model", "sage", "--weighted", "--epochs", "2", "--hidden", "8",
                     "--embedding-dim", "8", "--k", "5", "--no-progress",
                     "--out", str(root / "run")]) == 0
    return root


def test_bundle_carries_types_ids_seen_and_ratings(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # export does not depend on the working directory
    summary = export_run(trained / "run", tmp_path / "b")
    with load_bundle(summary.bundle, verify=True) as bundle:
        spec = bundle.manifest.raw["training"]["dataset"]
        data = load_dataset(spec)
        u, i = data.num_users, data.num_items
        assert bundle.manifest.graph.node_types == {"user": u, "item": i}
        node_type = bundle.array("graph/node_type.npy")
        assert node_type.dtype == np.int8 and node_type.tolist() == [0] * u + [1] * i
        users = bundle.array("graph/external_ids_user.npy")
        items = bundle.array("graph/external_ids_item.npy")
        assert users.dtype.kind == "U" and items.dtype.kind == "U"
        assert users.tolist() == [str(x) for x in data.meta["user_ids"].tolist()]
        assert items.tolist() == [str(x) for x in data.meta["item_ids"].tolist()]
        # seen CSR: exactly the validation and test pairs, per user, sorted item node ids
        indptr = bundle.array("graph/seen_indptr.npy")
        indices = bundle.array("graph/seen_indices.npy")
        assert indptr.dtype == indices.dtype == np.int64 and len(indptr) == u + 1
        held = {(int(a), int(b)) for a, b in np.concatenate([data.val, data.test])}
        got = {(user, int(item)) for user in range(u)
               for item in indices[indptr[user]:indptr[user + 1]]}
        assert got == held
        assert all((np.diff(indices[indptr[k]:indptr[k + 1]]) > 0).all() for k in range(u))
        # ratings: aligned with graph/indices.npy (in-neighbour CSR by destination)
        weight = bundle.array("graph/edge_weight.npy")
        src = bundle.array("graph/indices.npy")
        dst = np.repeat(np.arange(u + i), np.diff(bundle.array("graph/indptr.npy")))
        rating = {(int(a), int(b)): r for (a, b), r in zip(
            data.train, data.meta["ratings"]["train"], strict=True)}
        assert weight.dtype == np.float32 and len(weight) == len(src)
        assert all(w == rating[(min(s, d), max(s, d))] for s, d, w in zip(
            src.tolist(), dst.tolist(), weight.tolist(), strict=True))


def test_moved_dataset_is_named_and_found_with_dataset_flag(trained, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(trained / "data", moved)
    original = trained / "data" / "u1.base"
    saved = original.read_bytes()
    original.write_bytes(saved + b"999\t1\t5\t1\n")
    try:
        with pytest.raises(ValueError, match=r"u1\.base: sha256 .* differs .* changed since"):
            export_run(trained / "run", tmp_path / "b1")
        original.unlink()
        with pytest.raises(ValueError, match=r"u1\.base not found .* --dataset"):
            export_run(trained / "run", tmp_path / "b2")
        # the training file's new path; the recorded test file is still where it was
        summary = export_run(trained / "run", tmp_path / "b3", dataset=str(moved / "u1.base"))
        assert summary.manifest.graph.node_types["user"] > 0
    finally:
        original.write_bytes(saved)


def test_train_summary_reports_ranking_against_most_popular(trained):
    import json

    summary = json.loads((trained / "run" / "summary.json").read_text())
    for split in ("val", "test"):
        for name in ("recall@5", "ndcg@5", "hit_rate@5"):
            assert 0.0 <= summary[f"{split}_{name}"] <= 1.0
            assert 0.0 <= summary[f"{split}_most_popular_{name}"] <= 1.0
