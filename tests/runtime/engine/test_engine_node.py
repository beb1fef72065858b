"""Node prediction on real bundles: subgraph answers against the full-graph numpy reference,
fanout caps, determinism, updates, inductive nodes and input validation."""

from __future__ import annotations

import engine_testkit as tk
import numpy as np
import pytest
from qgnn.runtime import kernels
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.engine import Engine, EngineConfig, Inductive, softmax
from qgnn.runtime.errors import FailedPreconditionError, InvalidRequestError

EXACT = (-1, -1)


def _engine(case, **config) -> Engine:
    return Engine(load_bundle(case.bundle), EngineConfig(**config))


def _reference(case, src=None, dst=None, x=None) -> np.ndarray:
    src = case.src if src is None else src
    dst = case.dst if dst is None else dst
    x = case.model_x() if x is None else x
    return tk.reference_outputs(case.model, x, src, dst, case.num_layers)


@pytest.mark.parametrize("portable", [False, True])
def test_subgraph_predictions_equal_full_graph_reference(int8_case, portable: bool) -> None:
    engine = _engine(int8_case, fanouts=EXACT, portable=portable)
    assert engine.mode == ("portable" if portable or not kernels.available() else "partitioned")
    full = _reference(int8_case)
    ids = np.array([0, 17, 59, 17, 3])  # a hub, repeats, any order
    probs = engine.predict_nodes(ids)
    assert probs.dtype == np.float32 and probs.shape == (5, 5)
    np.testing.assert_allclose(probs, softmax(full[ids]), rtol=0, atol=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(engine.infer_all(chunk_size=7), full)
    np.testing.assert_array_equal(engine.embed(ids), full[ids])


def test_float_model_predictions(float_case) -> None:
    engine = _engine(float_case, fanouts=(50, 50))  # caps above every degree: exact
    full = _reference(float_case)
    ids = np.arange(float_case.num_nodes)
    np.testing.assert_allclose(engine.forward(engine.store.snapshot(), ids), full, rtol=1e-5,
                               atol=1e-6)


def test_caps_are_deterministic_and_batch_invariant(int8_case) -> None:
    """Node 0 has ~130 in-edges: capped at 8, its answer depends on the seed only, not on
    the batch it came in, the chunking, or the engine instance."""
    engine = _engine(int8_case, fanouts=(8, 8), seed=3)
    alone = engine.predict_nodes(np.array([0]))
    batch = engine.predict_nodes(np.array([5, 0, 40, 41]))
    np.testing.assert_array_equal(batch[1], alone[0])
    full = engine.infer_all(chunk_size=9)
    np.testing.assert_array_equal(softmax(full[[5, 0, 40, 41]]), batch)
    again = _engine(int8_case, fanouts=(8, 8), seed=3).predict_nodes(np.array([0]))
    np.testing.assert_array_equal(again, alone)
    others = [_engine(int8_case, fanouts=(8, 8), seed=s).predict_nodes(np.array([0]))
              for s in (4, 5, 6)]
    assert any(not np.array_equal(o, alone) for o in others)
    exact = softmax(_reference(int8_case)[[0]])
    assert not np.array_equal(alone, exact)  # the cap is really in effect


def test_manifest_fanouts_are_the_default(tmp_path, int8_case) -> None:
    path = tk.write_test_bundle(tmp_path / "b", int8_case.model, int8_case.src, int8_case.dst,
                                int8_case.x, manifest_extra={"serving": {"fanouts": [-1, 7]}})
    engine = Engine(load_bundle(path))
    assert engine.fanouts == (-1, 7)
    with pytest.raises(ValueError, match="expected 2 ints"):
        Engine(load_bundle(path), EngineConfig(fanouts=(3,)))


def test_updates_are_visible_to_later_predictions(int8_case) -> None:
    engine = _engine(int8_case, fanouts=EXACT)
    n = int8_case.num_nodes
    new_x = np.random.default_rng(1).standard_normal((2, int8_case.x.shape[1])).astype(
        np.float32)
    edges = np.array([[n, 3], [3, n + 1], [n + 1, n], [9, 3]])
    ids = engine.update_graph(new_x, edges)
    np.testing.assert_array_equal(ids, [n, n + 1])
    assert (engine.num_nodes, engine.num_edges, engine.revision) == (
        n + 2, int8_case.src.size + 4, 1)
    src = np.concatenate([int8_case.src, edges[:, 0]])
    dst = np.concatenate([int8_case.dst, edges[:, 1]])
    x = np.concatenate([int8_case.model_x(), tk.quantize_features(new_x, 0.05, 10)])
    full = _reference(int8_case, src, dst, x)
    check = np.array([3, n, n + 1, 9, 0])
    np.testing.assert_array_equal(engine.forward(engine.store.snapshot(), check), full[check])


def test_inductive_node_equals_adding_it(int8_case) -> None:
    n = int8_case.num_nodes
    features = np.random.default_rng(2).standard_normal((2, 12)).astype(np.float32)
    ind_ids = np.array([n + 50, n + 7])  # any ids >= n; sorted they become n, n + 1
    edges = np.array([[4, n + 50], [n + 50, 4], [n + 7, n + 50], [0, n + 7], [n + 7, 11]])
    engine = _engine(int8_case, fanouts=(6, 6))
    before = engine.store.snapshot()
    got = engine.predict_nodes(np.array([n + 50, 11, n + 7, 4]),
                               Inductive(ind_ids, features, edges))
    assert engine.store.snapshot() is before and engine.num_nodes == n  # store untouched
    added = _engine(int8_case, fanouts=(6, 6))
    added.update_graph(features[[1, 0]], np.array([[4, n + 1], [n + 1, 4], [n, n + 1],
                                                   [0, n], [n, 11]]))
    np.testing.assert_array_equal(got, added.predict_nodes(np.array([n + 1, 11, n, 4])))


@pytest.mark.parametrize(("ids", "field", "value"), [
    (np.array([3, 60]), "node_ids[1]", 60),
    (np.array([-2]), "node_ids[0]", -2),
])
def test_bad_ids_name_the_field_and_value(int8_case, ids, field, value) -> None:
    engine = _engine(int8_case)
    with pytest.raises(InvalidRequestError) as err:
        engine.predict_nodes(ids)
    assert (err.value.field, err.value.value) == (field, value)
    assert str(value) in str(err.value)


def test_bad_dtypes_and_shapes_are_refused(int8_case) -> None:
    engine = _engine(int8_case)
    with pytest.raises(InvalidRequestError, match="integer"):
        engine.predict_nodes(np.array([1.0, 2.0]))
    with pytest.raises(InvalidRequestError, match="1-D"):
        engine.predict_nodes(np.array([[1, 2]]))
    with pytest.raises(InvalidRequestError, match="inductive ids must be >= num_nodes"):
        engine.predict_nodes(np.array([1]), Inductive(np.array([5]), np.zeros((1, 12),
                                                                              np.float32),
                                                      np.zeros((0, 2), np.int64)))
    with pytest.raises(InvalidRequestError, match="inductive node"):
        engine.predict_nodes(np.array([1]), Inductive(np.array([60]), np.zeros((1, 12),
                                                                               np.float32),
                                                      np.array([[61, 60]])))
    with pytest.raises(FailedPreconditionError, match="link model"):
        engine.predict_links(np.array([[0, 1]]))
    assert engine.predict_nodes(np.zeros(0, np.int64)).shape == (0, 5)
