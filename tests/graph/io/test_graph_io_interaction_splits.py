"""Interaction data as users hold it: train/test files, per-user splits, chosen columns,
duplicates, side features and the dataset spec that carries every option."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qgnn.graph.datasets import (
    dataset_files,
    interactions_spec,
    load_dataset,
    parse_interactions_spec,
)
from qgnn.graph.io.interactions import load_interactions, parse_columns


def _write(path: Path, rows: list[tuple], sep: str = "\t", header: str | None = None) -> Path:
    text = "" if header is None else header + "\n"
    path.write_text(text + "".join(sep.join(map(str, r)) + "\n" for r in rows))
    return path


def _log(users: int = 30, per_user: int = 8, items: int = 50, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for t, i in enumerate(rng.choice(items, per_user, replace=False)):
            rows.append((100 + u, 1000 + int(i), int(rng.integers(1, 6)), int(t * 10 + u)))
    return rows


def _users_of(data, pairs):
    return set(pairs[:, 0].tolist())


def test_train_and_test_files_keep_their_split_and_drop_cold_test_users(tmp_path):
    train = _write(tmp_path / "u1.base", [(1, 10, 5, 1), (1, 11, 4, 2), (2, 10, 3, 3),
                                          (2, 12, 2, 4), (3, 11, 1, 5)])
    test = _write(tmp_path / "u1.test", [(1, 12, 5, 6), (9, 10, 4, 7), (3, 13, 2, 8)])
    data = load_interactions(train, test=test, val_fraction=0.0)
    # users 1,2,3 -> 0..2 (user 9 has no training row: dropped); items 10..13 -> 3..6
    assert data.num_users == 3 and data.num_items == 4
    assert data.meta["user_ids"].tolist() == [1, 2, 3]
    assert [tuple(p) for p in data.test.tolist()] == [(0, 5), (2, 6)]
    assert len(data.train) == 5 and len(data.val) == 0
    assert data.meta["summary"]["test_cold_users_dropped"] == 1
    # item 13 appears only in test: a catalogue node without training edges
    assert data.graph.out_degree()[6] == 0


def test_validation_split_off_the_train_file_and_validation_file(tmp_path):
    rows = _log()
    train = _write(tmp_path / "train.tsv", rows[:200])
    test = _write(tmp_path / "test.tsv", rows[200:])
    data = load_interactions(train, test=test, split="leave_last", val_fraction=0.1)
    assert len(data.val) == 25 and len(data.train) == 175  # one per user of the train file
    val = _write(tmp_path / "val.tsv", rows[190:200])
    train2 = _write(tmp_path / "train2.tsv", rows[:190])
    data = load_interactions(train2, val=val, test=test)
    # user 24's eight rows are all in the validation file: a cold user, dropped
    assert len(data.val) == 2 and len(data.train) == 190
    assert data.meta["summary"]["val_cold_user_interactions_dropped"] == 8


@pytest.mark.parametrize("split", ["time", "user_time", "leave_last", "random"])
def test_split_invariants(tmp_path, split):
    rows = _log()
    path = _write(tmp_path / "log.tsv", rows)
    data = load_interactions(path, split=split, val_fraction=0.125, test_fraction=0.125, seed=3)
    train, val, test = data.train, data.val, data.test
    keys = [set(map(tuple, p.tolist())) for p in (train, val, test)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert sum(map(len, keys)) == len(rows)  # no duplicates in the generator, no cold users
    trained = _users_of(data, train)
    assert _users_of(data, val) <= trained and _users_of(data, test) <= trained
    assert (train[:, 1] >= data.num_users).all() and (test[:, 0] < data.num_users).all()
    time = {(data.meta["user_ids"].tolist().index(u), i): t for u, i, _, t in rows
            for i in [data.meta["item_ids"].tolist().index(i) + data.num_users]}
    if split in ("user_time", "leave_last"):
        for u in trained:  # each user's held-out interactions are later than their training ones
            last_train = max(time[p] for p in keys[0] if p[0] == u)
            held = [time[p] for p in keys[1] | keys[2] if p[0] == u]
            assert all(t > last_train for t in held)
        per_user = np.bincount(test[:, 0], minlength=data.num_users)
        assert (per_user == 1).all()  # 8 per user: round(8 * 0.125) = 1, and leave-last 1
    if split == "time":
        assert max(time[p] for p in keys[0]) <= min(time[p] for p in keys[2])
    if split == "random":
        again = load_interactions(path, split=split, val_fraction=0.125, test_fraction=0.125,
                                  seed=3)
        np.testing.assert_array_equal(again.test, test)
        assert len(test) == 30


def test_leave_last_keeps_one_training_interaction(tmp_path):
    path = _write(tmp_path / "log.tsv", [(1, 10, 5, 1), (2, 10, 5, 1), (2, 11, 5, 2),
                                         (3, 10, 5, 1), (3, 11, 5, 2), (3, 12, 5, 3)])
    data = load_interactions(path, split="leave_last", val_fraction=0.1)
    # user 1: one row -> train; user 2: two -> train + test; user 3: three -> train, val, test
    assert np.bincount(data.train[:, 0]).tolist() == [1, 1, 1]
    assert data.test[:, 0].tolist() == [1, 2] and data.val[:, 0].tolist() == [2]


def test_columns_by_name_and_index_separator_and_min_rating(tmp_path):
    path = _write(tmp_path / "r.csv", [("x", "a", "m1", 4.0, 3), ("y", "b", "m2", 2.0, 1),
                                       ("z", "a", "m2", 5.0, 2)], sep=";",
                  header="extra;uid;mid;stars;when")
    data = load_interactions(path, sep="semicolon", columns="user=uid,item=mid,rating=stars,"
                             "timestamp=when", min_rating=3, val_fraction=0, test_fraction=0.4)
    assert data.meta["user_ids"].tolist() == ["a"] and data.meta["item_ids"].tolist() == [
        "m1", "m2"]
    assert [tuple(p) for p in data.test.tolist()] == [(0, 1)]  # 'a' rated m1 at t=3
    same = load_interactions(path, sep=";", header=True, columns={"user": 1, "item": 2,
                             "rating": 3, "timestamp": 4}, min_rating=3, val_fraction=0,
                             test_fraction=0.4)
    np.testing.assert_array_equal(same.test, data.test)


def test_two_column_implicit_file(tmp_path):
    path = _write(tmp_path / "clicks.txt", [("u1", "i1"), ("u1", "i2"), ("u2", "i1"),
                                            ("u2", "i2")], sep=" ")
    data = load_interactions(path, val_fraction=0, test_fraction=0.25)
    assert len(data.train) == 3 and data.meta["ratings"]["train"].tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="weighted=True needs a rating column"):
        load_interactions(path, weighted=True)


def test_duplicates_error_names_both_lines(tmp_path):
    path = _write(tmp_path / "log.tsv", [(1, 10, 5, 1), (2, 10, 5, 1), (1, 10, 3, 2)])
    with pytest.raises(ValueError, match=r"log\.tsv, lines 1 and 3: user '1' and item '10' "
                                         r"appear more than once; pass duplicates='last'"):
        load_interactions(path, duplicates="error")
    assert load_interactions(path, val_fraction=0, test_fraction=0.4).meta[
        "duplicates_dropped"] == 1


def test_pair_in_train_and_test_files_is_a_conflict(tmp_path):
    train = _write(tmp_path / "a.tsv", [(1, 10, 5, 1), (2, 11, 5, 1)])
    test = _write(tmp_path / "b.tsv", [(3, 12, 5, 1), (2, 11, 4, 2)])
    with pytest.raises(ValueError, match=r"b\.tsv, line 2: user '2' and item '11' are also in "
                                         r".*a\.tsv, line 2"):
        load_interactions(train, test=test)


@pytest.mark.parametrize("kwargs, message", [
    ({"columns": "user=uid,item=1"}, r"no header column named 'uid'"),
    ({"columns": "user=0,item=7"}, r"item column index 7 is beyond the 4 columns"),
    ({"columns": "user=0"}, r"the 'item' column is required"),
    ({"columns": "user=0,colour=1,item=2"}, r"unknown roles \['colour'\]"),
    ({"columns": "user"}, r"expected role=column pairs"),
    ({"split": "weekly"}, r"split must be one of"),
    ({"duplicates": "sum"}, r"duplicates must be one of"),
    ({"val": "v.tsv"}, r"a validation file needs a test file"),
])
def test_bad_options_are_reported(tmp_path, kwargs, message):
    path = _write(tmp_path / "log.tsv", [(1, 10, 5, 1), (2, 10, 5, 2)])
    with pytest.raises(ValueError, match=message):
        load_interactions(path, **kwargs)


def test_malformed_line_in_test_file_is_named(tmp_path):
    train = _write(tmp_path / "a.tsv", [(1, 10, 5, 1), (2, 11, 5, 1)])
    (tmp_path / "b.tsv").write_text("1\t11\t4\t5\n2\t10\tgood\t6\n")
    with pytest.raises(ValueError, match=r"b\.tsv, line 2, column 3: rating 'good' is not a "
                                         r"number"):
        load_interactions(train, test=tmp_path / "b.tsv")


def test_side_features_fill_their_type_block(tmp_path):
    path = _write(tmp_path / "log.tsv", [(1, 10, 5, 1), (2, 11, 5, 2), (2, 10, 5, 3)])
    (tmp_path / "users.tsv").write_text("id\tage\tscore\n2\t30\t0.5\n1\t20\t0.25\n7\t1\t1\n")
    (tmp_path / "items.tsv").write_text("10\t1\n11\t2\n")
    data = load_interactions(path, val_fraction=0, test_fraction=0.3,
                             user_features=tmp_path / "users.tsv",
                             item_features=tmp_path / "items.tsv")
    np.testing.assert_array_equal(data.graph.x, [[20, 0.25, 0], [30, 0.5, 0], [0, 0, 1],
                                                 [0, 0, 2]])
    (tmp_path / "items.tsv").write_text("10\t1\n")
    with pytest.raises(ValueError, match=r"items\.tsv: no feature row for item '11'"):
        load_interactions(path, item_features=tmp_path / "items.tsv")


def test_spec_string_round_trip_and_files(tmp_path):
    train = _write(tmp_path / "a.tsv", [(1, 10, 5, 1), (2, 11, 5, 1), (2, 10, 4, 2)])
    test = _write(tmp_path / "b.tsv", [(1, 11, 4, 2)])
    spec = interactions_spec(train, test=test, sep="\t", weighted=True, val_fraction=0.0,
                             columns="user=0,item=1,rating=2,timestamp=3")
    assert spec == (f"interactions:{train.resolve()}?test={test.resolve()}&sep=tab&"
                    f"weighted=true&val_fraction=0.0&columns=user=0,item=1,rating=2,timestamp=3")
    path, options = parse_interactions_spec(spec)
    assert path == train.resolve() and options["weighted"] is True
    data = load_dataset(spec)
    assert data.graph.edge_weight is not None and len(data.test) == 1
    assert dataset_files(spec) == [train.resolve(), test.resolve()]
    assert dataset_files("cora") == []
    with pytest.raises(ValueError, match=r"option 'colour=red' not understood"):
        load_dataset(f"interactions:{train}?colour=red")
    with pytest.raises(ValueError, match=r"weighted must be true or false"):
        load_dataset(f"interactions:{train}?weighted=yes")


def test_parse_columns_accepts_mapping():
    assert parse_columns({"user": 0, "item": "movie"}) == {"user": 0, "item": "movie"}
    assert parse_columns(None) is None
