"""Precomputed node outputs (runtime/engine/precomputed.py): the lookup answers equal the
per-request subgraph answers bit for bit, for exact and capped neighbourhoods, INT8 and FP32
models, and stay equal after graph updates; inductive requests still compute."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.engine import Engine, EngineConfig, Inductive
from qgnn.runtime.engine.precomputed import AUTO_MAX_BYTES, wanted


def _pair(case, **config) -> tuple[Engine, Engine]:
    """(precomputed, per-request) engines of one bundle and config."""
    on = Engine(load_bundle(case.bundle), EngineConfig(precompute="on", **config))
    off = Engine(load_bundle(case.bundle), EngineConfig(precompute="off", **config))
    assert on.outputs is not None and off.outputs is None
    return on, off


def _all_equal(on: Engine, off: Engine) -> None:
    ids = np.arange(off.num_nodes)
    rng = np.random.default_rng(0)
    mixed = rng.integers(0, off.num_nodes, 40)
    for q in (ids, mixed, mixed[:1]):
        np.testing.assert_array_equal(on.predict_nodes(q), off.predict_nodes(q))
        np.testing.assert_array_equal(on.lookup_nodes(q), off.predict_nodes(q))
        np.testing.assert_array_equal(on.embed(q), off.embed(q))


@pytest.mark.parametrize("fanouts", [(-1, -1), (4, 3)])
def test_int8_lookup_equals_per_request_inference_bit_for_bit(int8_case, fanouts) -> None:
    on, off = _pair(int8_case, fanouts=fanouts)  # (4, 3): the hub's neighbours are capped
    _all_equal(on, off)


def test_float_lookup_equals_per_request_inference_bit_for_bit(float_case) -> None:
    on, off = _pair(float_case, fanouts=(5, 5))
    _all_equal(on, off)


@pytest.mark.parametrize("fanouts", [(-1, -1), (4, 3)])
def test_graph_updates_refresh_the_affected_rows(int8_case, fanouts) -> None:
    on, off = _pair(int8_case, fanouts=fanouts)
    before = on.outputs.values.copy()
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((2, int8_case.x.shape[1])).astype(np.float32)
    n = off.num_nodes
    edges = np.array([[n, 5], [7, n + 1], [n + 1, 0], [3, 9]], np.int64)
    for engine in (on, off):
        np.testing.assert_array_equal(engine.update_graph(feats, edges), [n, n + 1])
    assert on.outputs.num_rows == n + 2
    assert not np.array_equal(on.outputs.values[:n], before)  # rows were refreshed
    _all_equal(on, off)
    for engine in (on, off):  # an edges-only update too
        engine.update_graph(None, np.array([[1, 2], [2, 1]], np.int64))
    _all_equal(on, off)


def test_inductive_requests_still_run_per_request(int8_case) -> None:
    on, off = _pair(int8_case, fanouts=(-1, -1))
    n = off.num_nodes
    ind = Inductive(np.array([n], np.int64),
                    np.ones((1, int8_case.x.shape[1]), np.float32),
                    np.array([[n, 4], [2, n]], np.int64))
    ids = np.array([4, n, 2])
    np.testing.assert_array_equal(on.predict_nodes(ids, ind), off.predict_nodes(ids, ind))
    assert on.outputs.num_rows == n  # the table is not touched by a request


def test_auto_precomputes_node_models_up_to_the_size_limit() -> None:
    assert wanted("auto", "node", 1000, 10)
    assert not wanted("auto", "node", AUTO_MAX_BYTES, 2)
    assert wanted("on", "node", AUTO_MAX_BYTES, 2)
    assert not wanted("off", "node", 10, 2)
    assert not wanted("on", "link", 10, 2)  # link models serve their embedding table


def test_an_unknown_precompute_mode_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="'sometimes'"):
        EngineConfig(precompute="sometimes")
