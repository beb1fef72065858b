"""The engine as a recommender: items only, user checks, exclude-seen over everything the user
has, cold-start users through the layer cache, served top-k equal to the offline ranking.

Bundles are bipartite link models exported the normal way plus the recommender files
(tests/recs_testkit.py). The oracle for rankings is numpy over the bundle's own INT8 embedding
table (no engine code); the oracle for a cold-start user is the engine's k-hop route on the same
overlay graph, itself checked against onnxruntime on full graphs in test_engine_exported.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import recs_testkit as rk  # noqa: E402
from qgnn.runtime.bundle.reader import load_bundle  # noqa: E402
from qgnn.runtime.engine import Engine, EngineConfig, quantize_rows  # noqa: E402
from qgnn.runtime.errors import InvalidRequestError  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return rk.recommender_data()


@pytest.fixture(scope="module")
def gcn_path(tmp_path_factory: pytest.TempPathFactory, data) -> Path:
    return rk.recommender_bundle(tmp_path_factory.mktemp("recs"), "gcn", data)


@pytest.fixture(scope="module")
def engine(gcn_path: Path) -> Engine:
    return Engine(load_bundle(gcn_path))


def offline_topk(bundle_path: Path, user: int, k: int, data, exclude_seen: bool = True
                 ) -> np.ndarray:
    """Independent ranking: scores s_u s_i (q_u . q_i) from the bundle's table over items, the
    user's train, validation and test items removed, ties by ascending id."""
    b = load_bundle(bundle_path)
    q = np.asarray(b.array("embeddings/values"), np.int64)
    s = np.asarray(b.array("embeddings/scales"), np.float64)
    items = np.arange(data.num_users, data.num_users + data.num_items)
    scores = s[user] * s[items] * (q[items] @ q[user])
    if exclude_seen:
        pairs = np.concatenate([data.train, data.val, data.test])
        had = pairs[pairs[:, 0] == user, 1]
        keep = ~np.isin(items, had)
        items, scores = items[keep], scores[keep]
    order = np.lexsort((items, -scores))
    return items[order[:k]]


def test_recommend_returns_items_only(engine: Engine, data) -> None:
    for user in range(data.num_users):
        ids, _ = engine.recommend(user, 20)
        assert ids.size == 20
        assert (ids >= data.num_users).all(), f"user {user} was recommended users"


def test_item_as_user_is_refused_naming_it(engine: Engine, data) -> None:
    item = data.num_users + 3
    with pytest.raises(InvalidRequestError, match=rf"{item}.*is an item, not a user"):
        engine.recommend(item, 5)
    with pytest.raises(InvalidRequestError, match=r"candidate_ids.*is a user, not an item"):
        engine.recommend(0, 5, candidates=[data.num_users, 4])
    with pytest.raises(InvalidRequestError, match="not a node of the graph"):
        engine.recommend(data.num_users + data.num_items, 5)


def test_served_topk_equals_offline_ranking(engine: Engine, gcn_path: Path, data) -> None:
    for user in range(0, data.num_users, 7):
        ids, probs = engine.recommend(user, 10, exclude_seen=True)
        np.testing.assert_array_equal(ids, offline_topk(gcn_path, user, 10, data))
        assert np.all(np.diff(probs) <= 0)


def test_exclude_seen_covers_held_out_interactions(engine: Engine, data) -> None:
    held = np.concatenate([data.val, data.test])
    for user in np.unique(held[:, 0])[:20]:
        everything = engine.recommend(int(user), data.num_items)[0]
        kept = engine.recommend(int(user), data.num_items, exclude_seen=True)[0]
        had = np.concatenate([data.train, held])
        had = np.unique(had[had[:, 0] == user, 1])
        assert not np.isin(kept, had).any()
        np.testing.assert_array_equal(np.sort(kept), np.setdiff1d(everything, had))


def test_bundle_without_recs_files_behaves_as_before(tmp_path: Path, gcn_path: Path, data
                                                     ) -> None:
    plain = Engine(load_bundle(rk.add_recs_files(gcn_path, tmp_path / "plain", data,
                                                 external_ids=False, seen=False)))
    ids, _ = plain.recommend(0, 5, exclude_seen=True)
    train_items = data.train[data.train[:, 0] == 0, 1]
    assert not np.isin(ids, train_items).any()
    assert plain.catalogue.seen is None and not plain.catalogue.has_external_ids


# -- cold-start users ---------------------------------------------------------------------------

def _cold_start_oracle(engine: Engine, items: np.ndarray) -> np.ndarray:
    """The new user's output by the k-hop route on the overlay (the whole neighbourhood)."""
    snapshot, user, _ = engine.new_user_view(items)
    return engine.forward(snapshot, np.asarray([user]))


@pytest.mark.parametrize(("kind", "kwargs"), [("gcn", {}), ("sage", {}), ("gin", {}),
                                              ("gat", {"heads": 2}),
                                              ("egc", {"heads": 2, "bases": 2})])
def test_cold_start_through_the_layer_cache_is_exact(tmp_path: Path, data, kind: str,
                                                     kwargs: dict) -> None:
    path = rk.recommender_bundle(tmp_path, kind, data, layer_kwargs=kwargs)
    engine = Engine(load_bundle(path))
    assert engine.layer_cache() is not None, engine.not_layerwise
    assert not engine.cache_pays()  # 2 layers: the k-hop route computes the same rows
    rng = np.random.default_rng(0)
    for size in (1, 5, 20):
        items = rng.choice(np.arange(data.num_users, data.num_users + data.num_items), size,
                           replace=False)
        snapshot, user, _ = engine.new_user_view(items)
        rows: dict[int, int] = {}
        cached = engine.layer_cache().outputs(snapshot, np.asarray([user]), rows.__setitem__)
        np.testing.assert_array_equal(cached, _cold_start_oracle(engine, items))
        assert rows[0] <= size + 1 and rows[1] == 1  # only the user and its items recompute


@pytest.mark.parametrize("kind", ["gcn", "sage"])
def test_three_layer_cold_start_recomputes_only_what_changed(tmp_path: Path, data,
                                                             kind: str) -> None:
    """Layer 0 needs the items' users too; only GCN (in-degrees) must recompute them."""
    engine = Engine(load_bundle(rk.recommender_bundle(tmp_path, kind, data, num_layers=3)))
    items = np.arange(data.num_users, data.num_users + 20, 3)
    snapshot, user, _ = engine.new_user_view(items)
    rows: dict[int, int] = {}
    cached = engine.layer_cache().outputs(snapshot, np.asarray([user]), rows.__setitem__)
    np.testing.assert_array_equal(cached, _cold_start_oracle(engine, items))
    assert rows[1] == items.size + 1 and rows[2] == 1
    ids, _ = engine.recommend_new_user(items, 5)
    assert ids.size == 5 and not np.isin(ids, items).any()
    if kind == "sage":
        assert rows[0] == items.size + 1
        assert engine.cache_pays()  # the k-hop route would recompute the users of the items
    else:
        assert not engine.cache_pays()  # GCN's in-degrees: the same rows either way
        users_of_items = np.unique(np.concatenate(
            [data.train[data.train[:, 1] == i, 0] for i in items]))
        assert rows[0] == items.size + 1 + users_of_items.size


def test_cold_start_recommendation(engine: Engine, data) -> None:
    items = np.arange(data.num_users, data.num_users + 20, 2)
    ids, _ = engine.recommend_new_user(items, 10)
    assert ids.size == 10 and (ids >= data.num_users).all() and not np.isin(ids, items).any()
    values, scales = quantize_rows(_cold_start_oracle(engine, items))
    b = engine.index
    all_items = np.setdiff1d(engine.items(engine.store.snapshot()), items)
    q, s = b.rows(all_items)
    scores = s.astype(np.float64) * float(scales[0]) * (q.astype(np.int64) @ values[0].astype(
        np.int64))
    np.testing.assert_array_equal(ids, all_items[np.lexsort((all_items, -scores))[:10]])
    assert engine.store.snapshot().num_nodes == data.num_users + data.num_items  # untouched


def test_cold_start_after_a_graph_update_stays_exact(tmp_path: Path, gcn_path: Path, data
                                                    ) -> None:
    engine = Engine(load_bundle(gcn_path))
    engine.layer_cache().tables()
    u0, item = 0, data.num_users + 7
    engine.update_graph(None, np.array([[u0, item], [item, u0]]))
    items = np.array([item, data.num_users + 1])
    snapshot, user, _ = engine.new_user_view(items)
    np.testing.assert_array_equal(engine.layer_cache().outputs(snapshot, np.asarray([user])),
                                  _cold_start_oracle(engine, items))


def test_capped_fanouts_fall_back_to_khop(gcn_path: Path, data) -> None:
    engine = Engine(load_bundle(gcn_path), EngineConfig(fanouts=(3, 3)))
    assert engine.layer_cache() is None
    ids, _ = engine.recommend_new_user([data.num_users, data.num_users + 1], 5)
    assert ids.size == 5


@pytest.mark.parametrize(("items", "message"), [
    ([], "non-empty list"),
    ([[60, 61]], "non-empty list"),
    ([60, 61, 60], r"new_user_item_ids\[2\].*appears twice"),
    ([3], r"new_user_item_ids\[0\].*is not an item"),
    ([60, 10**6], r"new_user_item_ids\[1\].*not a node of the graph"),
    ([-1], "negative id"),
    (["a"], "integer"),
])
def test_malformed_cold_start_lists_are_refused(engine: Engine, items, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        engine.recommend_new_user(items, 5)
