"""Link prediction and top-k recommendation from the INT8 embedding table: numpy references,
exclusions, candidates, node types, refresh after updates, inductive users, MLP decoders."""

from __future__ import annotations

import engine_testkit as tk
import numpy as np
import pytest
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.engine import Engine, EngineConfig, Inductive
from qgnn.runtime.engine.graph_data import NODE_TYPE
from qgnn.runtime.errors import FailedPreconditionError, InvalidRequestError


def _table(case) -> tuple[np.ndarray, np.ndarray]:
    bundle = load_bundle(case.bundle)
    return np.asarray(bundle.array("embeddings/values")), np.asarray(
        bundle.array("embeddings/scales"))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _recommend_reference(values, scales, user, k, excluded, items=None):
    z = values.astype(np.float64) * scales[:, None].astype(np.float64)
    logits = z @ z[user]
    ids = np.arange(values.shape[0]) if items is None else np.asarray(items)
    ids = ids[~np.isin(ids, [*excluded, user])]
    order = np.lexsort((ids, -logits[ids]))[:k]
    return ids[order], _sigmoid(logits[ids[order]])


def test_engine_embeddings_reproduce_the_bundle_table(link_case) -> None:
    engine = Engine(load_bundle(link_case.bundle), EngineConfig(fanouts=(-1, -1)))
    values, scales = _table(link_case)
    z = engine.forward(engine.store.snapshot(), np.arange(link_case.num_nodes))
    got_values, got_scales = tk.quantize_table(z)
    np.testing.assert_array_equal(got_values, values)
    np.testing.assert_array_equal(got_scales, scales)
    np.testing.assert_array_equal(engine.embed(np.array([3, 1])),
                                  values[[3, 1]].astype(np.float32) * scales[[3, 1], None])
    assert engine.embedding_dim == 8 and engine.num_classes == 0


def test_predict_links_matches_integer_dot_reference(link_case) -> None:
    engine = Engine(load_bundle(link_case.bundle))
    values, scales = _table(link_case)
    pairs = np.array([[0, 1], [5, 5], [69, 3], [12, 40]])
    dots = np.einsum("nd,nd->n", values[pairs[:, 0]].astype(np.int64),
                     values[pairs[:, 1]].astype(np.int64))
    expected = _sigmoid(scales[pairs[:, 0]].astype(np.float64)
                        * scales[pairs[:, 1]].astype(np.float64) * dots)
    np.testing.assert_allclose(engine.predict_links(pairs), expected, rtol=1e-6)
    with pytest.raises(InvalidRequestError, match=r"node_ids\[3\]"):
        engine.predict_links(np.array([[0, 1], [2, 70]]))
    with pytest.raises(FailedPreconditionError):
        engine.predict_nodes(np.array([0]))


def test_recommend_matches_float_reference(link_case) -> None:
    engine = Engine(load_bundle(link_case.bundle))
    values, scales = _table(link_case)
    user = 7
    seen = link_case.dst[link_case.src == user]
    ids, probs = engine.recommend(user, 10)
    ref_ids, ref_probs = _recommend_reference(values, scales, user, 10, [])
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-6)
    ids, _ = engine.recommend(user, 10, exclude_seen=True)
    np.testing.assert_array_equal(ids, _recommend_reference(values, scales, user, 10, seen)[0])
    assert not np.isin(ids, seen).any()
    cand = np.array([60, 2, 7, 33, 34, 35, 2])
    ids, _ = engine.recommend(user, 3, candidates=cand)
    np.testing.assert_array_equal(ids, _recommend_reference(values, scales, user, 3, [],
                                                            np.unique(cand))[0])
    with pytest.raises(InvalidRequestError, match="k"):
        engine.recommend(user, 0)


def test_node_types_restrict_recommendations_to_items(tmp_path, link_case) -> None:
    values, scales = _table(link_case)
    node_type = (np.arange(70) % 3 == 0).astype(np.int8)  # every third node is an item
    path = tk.write_test_bundle(tmp_path / "typed", link_case.model, link_case.src,
                                link_case.dst, link_case.x, task="link", name="typed",
                                extra={**tk.embedding_files(values, scales),
                                       NODE_TYPE: node_type})
    engine = Engine(load_bundle(path))
    ids, _ = engine.recommend(4, 6)
    items = np.flatnonzero(node_type == 1)
    np.testing.assert_array_equal(ids, _recommend_reference(values, scales, 4, 6, [],
                                                            items)[0])


def test_updates_refresh_the_affected_embeddings(link_case) -> None:
    engine = Engine(load_bundle(link_case.bundle), EngineConfig(fanouts=(-1, -1)))
    n = link_case.num_nodes
    new_x = np.random.default_rng(4).standard_normal((1, 12)).astype(np.float32)
    edges = np.array([[n, 2], [2, n], [5, 9]])
    engine.update_graph(new_x, edges)
    src = np.concatenate([link_case.src, edges[:, 0]])
    dst = np.concatenate([link_case.dst, edges[:, 1]])
    x = np.concatenate([link_case.model_x(), tk.quantize_features(new_x, 0.05, 10)])
    fresh_values, fresh_scales = tk.quantize_table(
        tk.reference_outputs(link_case.model, x, src, dst, 2))
    got = engine.embed(np.arange(n + 1))
    np.testing.assert_array_equal(got, fresh_values.astype(np.float32)
                                  * fresh_scales[:, None])
    ids, _ = engine.recommend(n, 5)
    np.testing.assert_array_equal(ids, _recommend_reference(fresh_values, fresh_scales, n, 5,
                                                            [])[0])


def test_inductive_user_equals_adding_it(link_case) -> None:
    n = link_case.num_nodes
    features = np.random.default_rng(6).standard_normal((1, 12)).astype(np.float32)
    inductive = Inductive(np.array([n + 3]), features,
                          np.array([[n + 3, 10], [10, n + 3], [n + 3, 20], [20, n + 3]]))
    engine = Engine(load_bundle(link_case.bundle))
    ids, probs = engine.recommend(n + 3, 8, exclude_seen=True, inductive=inductive)
    links = engine.predict_links(np.array([[n + 3, 1], [10, 11]]), inductive)
    assert engine.num_nodes == n and engine.index.num_rows == n  # nothing stored
    added = Engine(load_bundle(link_case.bundle))
    added.update_graph(features, np.array([[n, 10], [10, n], [n, 20], [20, n]]))
    ids_added, probs_added = added.recommend(n, 8, exclude_seen=True)
    np.testing.assert_array_equal(ids, ids_added)
    np.testing.assert_array_equal(probs, probs_added)
    assert not np.isin(ids, [10, 20]).any()
    np.testing.assert_array_equal(links, added.predict_links(np.array([[n, 1], [10, 11]])))


def test_mlp_decoder(tmp_path, link_case) -> None:
    values, scales = _table(link_case)
    decoder, weights = tk.mlp_decoder(8, 6)
    path = tk.write_test_bundle(
        tmp_path / "mlp", link_case.model, link_case.src, link_case.dst, link_case.x,
        task="link", name="mlp",
        extra={**tk.embedding_files(values, scales), "decoder.onnx":
               decoder.SerializeToString()},
        manifest_extra={"link": {"decoder": "mlp", "decoder_file": "decoder.onnx"}})
    engine = Engine(load_bundle(path))
    z = values.astype(np.float32) * scales[:, None]
    pairs = np.array([[0, 1], [4, 9]])
    np.testing.assert_allclose(engine.predict_links(pairs),
                               _sigmoid(tk.mlp_scores(weights, z[[0, 4]], z[[1, 9]])),
                               rtol=1e-5)
    ids, _ = engine.recommend(3, 5, exclude_seen=True)
    logits = tk.mlp_scores(weights, np.repeat(z[[3]], 70, axis=0), z).astype(np.float64)
    seen = link_case.dst[link_case.src == 3]
    keep = np.setdiff1d(np.arange(70), np.concatenate([seen, [3]]))
    np.testing.assert_array_equal(ids, keep[np.lexsort((keep, -logits[keep]))][:5])
