"""Interaction logs: a u.data-style generator (MovieLens itself may not be committed) and a plain
Python re-implementation of the documented split as the oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qgnn.graph.io.interactions import load_interactions


def write_udata(path: Path, *, rows: int = 3000, users: int = 120, items: int = 400,
                seed: int = 0, sep: str = "\t") -> list[tuple[int, int, int, int]]:
    """MovieLens-100K layout: user item rating timestamp, sparse 1-based ids, tied timestamps."""
    rng = np.random.default_rng(seed)
    user_pool = rng.choice(np.arange(1, 5 * users), users, replace=False)
    item_pool = rng.choice(np.arange(1, 5 * items), items, replace=False)
    log = list(zip(rng.choice(user_pool, rows).tolist(), rng.choice(item_pool, rows).tolist(),
                   rng.integers(1, 6, rows).tolist(),
                   (874_724_710 + rng.integers(0, rows // 3, rows) * 60).tolist(), strict=True))
    path.write_text("".join(sep.join(map(str, r)) + "\n" for r in log))
    return log


def oracle(log, val_fraction=0.1, test_fraction=0.1, min_rating=None):
    """The documented rules, written with Python sorting and dicts."""
    rows = [(t, line, u, i, r) for line, (u, i, r, t) in enumerate(log)
            if min_rating is None or r >= min_rating]
    users = {u: k for k, u in enumerate(sorted({row[2] for row in rows}))}
    items = {i: k + len(users) for k, i in enumerate(sorted({row[3] for row in rows}))}
    latest = {}
    for row in sorted(rows):  # (time, line) order; later rows overwrite earlier ones
        latest[(row[2], row[3])] = row
    kept = sorted(latest.values())
    m = len(kept)
    num_test, num_val = round(m * test_fraction), round(m * val_fraction)
    a, b = m - num_test - num_val, m - num_test
    parts = [kept[:a], kept[a:b], kept[b:]]
    trained = {row[2] for row in parts[0]}  # users with a training interaction
    parts = [parts[0]] + [[row for row in p if row[2] in trained] for p in parts[1:]]
    users = {u: k for k, u in enumerate(sorted(trained))}
    items = {i: k + len(users) for k, i in enumerate(sorted({r[3] for p in parts for r in p}))}
    pairs = tuple([(users[u], items[i]) for _, _, u, i, _ in p] for p in parts)
    ratings = tuple([r for *_, r in p] for p in parts)
    return users, items, pairs, ratings


def _as_list(pairs: np.ndarray) -> list[tuple[int, int]]:
    return [tuple(p) for p in pairs.tolist()]


@pytest.mark.parametrize("min_rating", [None, 4])
def test_generated_log_matches_oracle(tmp_path, min_rating):
    log = write_udata(tmp_path / "u.data")
    data = load_interactions(tmp_path / "u.data", min_rating=min_rating, weighted=True)
    users, items, splits, ratings = oracle(log, min_rating=min_rating)
    assert (data.num_users, data.num_items) == (len(users), len(items))
    assert data.meta["user_ids"].tolist() == sorted(users)
    assert data.meta["item_ids"].tolist() == sorted(items)
    for name, expected, rating in zip(("train", "val", "test"), splits, ratings, strict=True):
        assert _as_list(getattr(data, name)) == expected
        np.testing.assert_array_equal(data.meta["ratings"][name], rating)
    assert data.meta["duplicates_dropped"] > 0  # the generator repeats some pairs


def test_message_passing_graph_holds_training_pairs_both_ways(tmp_path):
    write_udata(tmp_path / "u.data", rows=800)
    data = load_interactions(tmp_path / "u.data", weighted=True)
    g = data.graph
    src, dst = g.edge_index()
    edges = set(zip(src.tolist(), dst.tolist(), strict=True))
    train = set(_as_list(data.train))
    assert edges == train | {(i, u) for u, i in train} and g.num_edges == 2 * len(train)
    assert not edges & set(_as_list(np.concatenate([data.val, data.test])))
    assert g.node_type.tolist() == [0] * data.num_users + [1] * data.num_items
    # weight of (u, i) and (i, u) is that pair's rating
    rating = dict(zip(_as_list(data.train), data.meta["ratings"]["train"].tolist(), strict=True))
    assert all(g.edge_weight[k] == rating[(min(s, d), max(s, d))]
               for k, (s, d) in enumerate(zip(src.tolist(), dst.tolist(), strict=True)))
    assert g.edge_weight.dtype == np.float32
    assert load_interactions(tmp_path / "u.data").graph.edge_weight is None


def test_split_follows_time_not_file_order(tmp_path):
    # distinct timestamps written in scrambled order
    lines = [(1, 10, 5, 500), (2, 10, 4, 100), (1, 11, 3, 300), (3, 12, 2, 900), (2, 12, 1, 700),
             (3, 10, 5, 200), (1, 12, 4, 800), (2, 11, 3, 400), (3, 11, 2, 600), (4, 10, 1, 1000)]
    (tmp_path / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in lines))
    data = load_interactions(tmp_path / "u.data", val_fraction=0.2, test_fraction=0.2)
    # users 1..3 -> 0..2, items 10,11,12 -> 3,4,5; time order: t=100..1000
    assert _as_list(data.train) == [(1, 3), (2, 3), (0, 4), (1, 4), (0, 3), (2, 4)]
    assert _as_list(data.val) == [(1, 5), (0, 5)]
    # user 4 appears only in test: dropped (no training interaction to rank from), counted
    assert _as_list(data.test) == [(2, 5)] and data.num_users == 3
    assert data.meta["ratings"]["test"].tolist() == [2.0]
    assert data.meta["summary"]["test_cold_users_dropped"] == 1
    assert data.meta["summary"]["test_cold_user_interactions_dropped"] == 1


def test_ties_break_by_line_and_repeated_pairs_keep_the_latest(tmp_path):
    text = "1 7 5 50\n2 7 4 50\n1 8 3 50\n2 8 2 50\n1 7 1 60\n"
    (tmp_path / "log.txt").write_text(text)
    data = load_interactions(tmp_path / "log.txt", val_fraction=0.25, test_fraction=0.25)
    # pair (1,7) re-rated at t=60 keeps only that interaction; the t=50 ties stay in line order
    assert _as_list(data.train) == [(1, 2), (0, 3)]
    assert _as_list(data.val) == [(1, 3)]
    assert _as_list(data.test) == [(0, 2)]
    assert data.meta["ratings"]["test"].tolist() == [1.0]
    assert data.meta["duplicates_dropped"] == 1


def test_text_ids_header_and_double_colon_separator(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n"
                                          "ann,m2,4.5,3\nbob,m1,3.0,1\nann,m1,2.5,2\n")
    data = load_interactions(tmp_path / "ratings.csv", val_fraction=0, test_fraction=1 / 3)
    assert data.meta["user_ids"].tolist() == ["ann", "bob"]
    assert _as_list(data.train) == [(1, 2), (0, 2)] and _as_list(data.test) == [(0, 3)]
    (tmp_path / "ratings.dat").write_text("1::20::5::9\n1::21::3::8\n")
    data = load_interactions(tmp_path / "ratings.dat", sep="::", val_fraction=0,
                             test_fraction=0.5)
    assert _as_list(data.test) == [(0, 1)]


def test_explicit_tab_keeps_spaces_inside_ids(tmp_path):
    (tmp_path / "log.tsv").write_text("Ann Lee\tThe Film\t4\t1\nBo\tThe Film\t5\t2\n"
                                      "Bo\tA Sequel\t3\t3\n")
    data = load_interactions(tmp_path / "log.tsv", sep="\t", val_fraction=0,
                             test_fraction=1 / 3)
    assert data.meta["user_ids"].tolist() == ["Ann Lee", "Bo"]
    assert data.meta["item_ids"].tolist() == ["A Sequel", "The Film"]


def test_three_columns_use_file_order_as_time(tmp_path):
    (tmp_path / "log.csv").write_text("5,1,1\n3,1,2\n5,2,3\n")
    data = load_interactions(tmp_path / "log.csv", val_fraction=0, test_fraction=1 / 3)
    assert _as_list(data.test) == [(1, 3)] and data.meta["time_column"] is False


@pytest.mark.parametrize("text, kwargs, message", [
    ("1\t2\t5\t9\n1\t3\tfive\t10\n", {}, r"log\.txt, line 2, column 3: rating 'five' is not a "
                                        r"number"),
    ("1\t2\t5\t9\n1\t3\t4\tnoon\n", {}, r"line 2, column 4: timestamp 'noon' is not a number"),
    ("1\t2\t5\t9\n1\t3\tnan\t10\n", {}, r"log\.txt, line 2: non-finite rating nan"),
    ("1\t2\t5\t9\n\n1\t3\t4\tinf\n", {}, r"log\.txt, line 3: non-finite timestamp inf"),
    ("1\t2\t5\t9\t0\n", {}, r"expected 2 to 4 columns \(user item \[rating \[timestamp\]\]\), "
                           r"got 5; choose them with columns="),
    ("1\n", {}, r"expected 2 to 4 columns"),
    ("1\t2\t5\t9\n1\t3\t4\n", {}, r"log\.txt, line 2: 3 columns, expected 4"),
    ("1\t2\t1\t9\n", {"min_rating": 3}, r"no interaction has rating >= 3"),
    ("1\t2\t5\t9\n", {"val_fraction": 0.5, "test_fraction": 0.5}, r"leaves no training"),
    ("1\t2\t5\t9\n", {"test_fraction": -0.1}, r"test_fraction must be in \[0, 1\)"),
    ("1\t2\t5\t9\n2\t2\t5\t9\n", {"val_fraction": 0.5, "test_fraction": 0.4},
     r"2 interactions leave no training data"),
])
def test_bad_logs_are_reported(tmp_path, text, kwargs, message):
    (tmp_path / "log.txt").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_interactions(tmp_path / "log.txt", **kwargs)
