"""The layer cache (runtime/engine/layer_cache.py) for cold-start users, every layer type at 2 and
3 layers: the new user's output through the cache, and through the route the engine serves,
equals bit for bit the exported model run by stock onnxruntime on the whole graph with the user
added (no engine code in the oracle); and the cache recomputes only the frontier, the rows
whose inputs changed: the user and its items, plus (models reading in-degrees, whose items'
degrees change) the items' other users at layer 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

import recs_testkit as rk  # noqa: E402
from qgnn.runtime.bundle.reader import load_bundle  # noqa: E402
from qgnn.runtime.engine import Engine  # noqa: E402

KINDS = [("gcn", {}), ("sage", {}), ("gin", {}), ("gat", {"heads": 2}),
         ("egc", {"heads": 2, "bases": 2}), ("lightgcn", {})]
READS_DEGREE = {"gcn", "egc", "lightgcn"}  # EGC's symmetric normalisation, LightGCN's too


@pytest.fixture(scope="module")
def data():
    return rk.recommender_data()


def full_graph_with_user(bundle_path: Path, user_row: np.ndarray, items: np.ndarray,
                         extra: np.ndarray | None = None) -> np.ndarray:
    """The new user's output (1, C): the bundle's model on its whole graph plus ``extra``
    (src, dst) edges plus a node linked both ways to ``items`` (input row ``user_row``, the
    store's encoding of no features), straight through onnxruntime."""
    bundle = load_bundle(bundle_path)
    indptr = np.asarray(bundle.array("graph/indptr"), np.int64)
    n = indptr.size - 1
    src = np.asarray(bundle.array("graph/indices"), np.int64)
    dst = np.repeat(np.arange(n), np.diff(indptr))
    if extra is not None:
        src, dst = np.concatenate([src, extra[:, 0]]), np.concatenate([dst, extra[:, 1]])
    src = np.concatenate([src, np.full(items.size, n), items])
    dst = np.concatenate([dst, items, np.full(items.size, n)])
    order = np.argsort(dst, kind="stable")
    in_degree = np.bincount(dst, minlength=n + 1).astype(np.int64)
    full_indptr = np.concatenate([[0], np.cumsum(in_degree)]).astype(np.int64)
    feeds = {"x": np.concatenate([np.asarray(bundle.array("graph/features")), user_row]),
             "in_degree": in_degree}
    for i in range(bundle.manifest.model.num_layers):
        feeds[f"indptr_{i}"], feeds[f"src_{i}"] = full_indptr, src[order]
    session = ort.InferenceSession(str(bundle.model_path()), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0][n:n + 1]


@pytest.mark.parametrize("layers", [2, 3])
@pytest.mark.parametrize(("kind", "kwargs"), KINDS, ids=[k for k, _ in KINDS])
def test_cold_start_equals_a_full_recompute_with_the_user_added(
        tmp_path: Path, data, kind: str, kwargs: dict, layers: int) -> None:
    path = rk.recommender_bundle(tmp_path, kind, data, layer_kwargs=kwargs, num_layers=layers)
    engine = Engine(load_bundle(path))
    cache = engine.layer_cache()
    assert cache is not None, engine.not_layerwise
    assert engine.uses_degree == (kind in READS_DEGREE)
    item_ids = np.arange(data.num_users, data.num_users + data.num_items)
    rng = np.random.default_rng(layers)
    for size in (1, 5, 20):
        items = np.sort(rng.choice(item_ids, size, replace=False))
        snapshot, user, _ = engine.new_user_view(items)
        row = snapshot.features(np.asarray([user]))
        expected = full_graph_with_user(path, row, items)
        rows: dict[int, int] = {}
        np.testing.assert_array_equal(cache.outputs(snapshot, np.asarray([user]),
                                                    rows.__setitem__), expected)
        np.testing.assert_array_equal(engine.new_user_output(snapshot, user), expected)
        frontier = [size + 1] * (layers - 1) + [1]
        if kind in READS_DEGREE and layers > 2:
            others = np.unique(data.train[np.isin(data.train[:, 1], items), 0])
            frontier[0] += others.size
        assert [rows[i] for i in range(layers)] == frontier


@pytest.mark.parametrize(("kind", "kwargs"), [KINDS[0], KINDS[3]], ids=["gcn", "gat"])
def test_cold_start_after_graph_updates_equals_a_full_recompute(tmp_path: Path, data, kind: str,
                                                                kwargs: dict) -> None:
    """Updates published after the cache was built count as changed nodes: the cached rows
    they make stale are recomputed, never read."""
    path = rk.recommender_bundle(tmp_path, kind, data, layer_kwargs=kwargs, num_layers=3)
    engine = Engine(load_bundle(path))
    engine.layer_cache().tables()
    user0, item0 = 0, data.num_users + 7
    update = np.array([[user0, item0], [item0, user0]])
    engine.update_graph(None, update)
    items = np.array([item0, data.num_users + 1])
    snapshot, user, _ = engine.new_user_view(items)
    got = engine.layer_cache().outputs(snapshot, np.asarray([user]))
    row = snapshot.features(np.asarray([user]))
    np.testing.assert_array_equal(got, full_graph_with_user(path, row, items, update))
