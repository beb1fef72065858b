"""The engine's buffer pool (runtime/engine/buffers.py, runtime/kernels/csrc/buffer_pool.c):
large blocks are reused across forwards, never while an array still uses them, within the cap,
per thread, and answers are the same with and without it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import engine_testkit as tk
import numpy as np
import pytest
from numpy._core.multiarray import get_handler_name
from qgnn.runtime import kernels
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.engine import Engine, EngineConfig, buffers
from qgnn.runtime.engine.buffers import HANDLER_NAME, BufferPool
from qgnn.runtime.kernels import _ext

pytestmark = pytest.mark.skipif(not kernels.available(), reason="needs the compiled kernels")

MIB = 1 << 20


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _run_in_threads(work: Callable[[int], None], count: int) -> None:
    """``work(k)`` for k in 0..count-1, each on its own thread, all started before any join."""
    threads = [threading.Thread(target=work, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_a_freed_block_is_reused_by_the_next_fitting_allocation() -> None:
    pool = BufferPool(16 * MIB)
    with pool.active():
        a = np.empty(2 * MIB, np.uint8)
        assert get_handler_name(a) == HANDLER_NAME
        where = _address(a)
        del a
        b = np.empty(2 * MIB - 1000, np.uint8)  # fits: the block is at most 25% larger
        assert _address(b) == where
    stats = pool.stats()
    assert (stats["hits"], stats["misses"]) == (1, 1)
    assert get_handler_name(np.empty(2 * MIB, np.uint8)) != HANDLER_NAME  # only while active


def test_a_live_array_is_never_handed_out_again() -> None:
    pool = BufferPool(64 * MIB)
    with pool.active():
        kept = [np.full(2 * MIB, i, np.uint8) for i in range(4)]
        more = [np.full(2 * MIB, 10 + i, np.uint8) for i in range(4)]
    addresses = {_address(a) for a in kept + more}
    assert len(addresses) == 8
    for i, a in enumerate(kept):
        assert (a == i).all()
    for i, a in enumerate(more):
        assert (a == 10 + i).all()


def test_zeros_from_a_reused_block_are_zero() -> None:
    pool = BufferPool(16 * MIB)
    with pool.active():
        a = np.full(MIB, 7, np.float32)
        del a
        z = np.zeros(MIB, np.float32)
    assert pool.stats()["hits"] == 1
    assert not z.any()


def test_resize_keeps_the_data() -> None:
    pool = BufferPool(16 * MIB)
    with pool.active():
        a = np.arange(MIB // 4, dtype=np.int32)
        a.resize(MIB, refcheck=False)
    np.testing.assert_array_equal(a[:MIB // 4], np.arange(MIB // 4, dtype=np.int32))
    assert not a[MIB // 4:].any()


def test_small_arrays_bypass_the_cache() -> None:
    pool = BufferPool(16 * MIB)
    with pool.active():
        for _ in range(10):
            np.ones(1000)
    stats = pool.stats()
    assert stats["hits"] == stats["misses"] == stats["cached_blocks"] == 0


def test_the_cap_is_respected_oldest_dropped_first() -> None:
    pool = BufferPool(5 * MIB)
    with pool.active():
        arrays = [np.empty(2 * MIB, np.uint8) for _ in range(4)]
        big = np.empty(8 * MIB, np.uint8)  # over the cap alone: never kept
    del big
    assert pool.stats()["cached_bytes"] == 0
    del arrays
    stats = pool.stats()
    assert stats["cached_bytes"] == 4 * MIB and stats["cached_blocks"] == 2
    assert stats["evictions"] == 2 and stats["peak_cached_bytes"] <= 5 * MIB
    with pool.active():
        np.empty(2 * MIB, np.uint8)
    assert pool.stats()["hits"] == 1


def test_clear_and_close_free_the_cache_and_arrays_outlive_the_pool() -> None:
    pool = BufferPool(16 * MIB)
    with pool.active():
        a, b, c = (np.full(MIB, i, np.uint8) for i in range(3))
    del a
    assert pool.clear() == MIB and pool.stats()["cached_bytes"] == 0
    del b
    assert pool.close() == MIB
    del c  # after close: freed, not kept
    stats = pool.stats()
    assert stats["closed"] and stats["cached_bytes"] == 0
    with pool.active():
        d = np.full(MIB, 5, np.uint8)
    del pool  # d keeps the allocator alive until it dies
    assert (d == 5).all()
    del d


def test_the_pool_is_installed_per_thread() -> None:
    pool = BufferPool(16 * MIB)
    seen: list[str] = []
    started, release = threading.Event(), threading.Event()

    def other() -> None:
        started.wait()
        seen.append(get_handler_name(np.empty(2 * MIB, np.uint8)))
        release.set()

    thread = threading.Thread(target=other)
    thread.start()
    with pool.active():
        started.set()
        release.wait()
        mine = get_handler_name(np.empty(2 * MIB, np.uint8))
    thread.join()
    assert seen == ["default_allocator"] and mine == HANDLER_NAME


def test_threads_sharing_one_pool_keep_their_data() -> None:
    pool = BufferPool(64 * MIB)
    errors: list[str] = []

    def work(k: int) -> None:
        for r in range(30):
            with pool.active():
                a = np.full(MIB + 4096 * k, k * 100 + r, np.int32)
                b = a + 1
            if not ((a == k * 100 + r).all() and (b == k * 100 + r + 1).all()):
                errors.append(f"thread {k} round {r}")

    _run_in_threads(work, 4)
    assert not errors
    stats = pool.stats()
    assert stats["hits"] + stats["misses"] == 4 * 30 * 2 and stats["hits"] > 0


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        BufferPool(-1)
    with pytest.raises(ValueError, match="min_block_bytes"):
        BufferPool(MIB, 0)
    with pytest.raises(ValueError, match="buffer_pool_bytes"):
        EngineConfig(buffer_pool_bytes=-5)
    with pytest.raises(ValueError, match="install"):
        _ext._baseline().BufferPool.restore(object())


@pytest.mark.parametrize("level", kernels.levels_supported())
def test_every_level_module_carries_the_pool(level: str) -> None:
    if level not in kernels.levels_built():
        pytest.skip(f"{level} was not built")
    module = _ext._load(level)
    pool = module.BufferPool(4 * MIB, MIB)
    previous = pool.install()
    try:
        a = np.ones(2 * MIB, np.uint8)
        del a
        b = np.zeros(2 * MIB, np.uint8)
    finally:
        module.BufferPool.restore(previous)
    assert pool.stats()["hits"] == 1 and not b.any()


# -- the engine ----------------------------------------------------------------------------------


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pool blocks from 64 bytes: the test graphs' arrays are far below 1 MiB."""
    monkeypatch.setattr(buffers, "MIN_BLOCK_BYTES", 64)


def _load(case) -> Callable[..., Engine]:
    return lambda **config: Engine(load_bundle(case.bundle),
                                   EngineConfig(fanouts=(-1, -1), **config))


def _check_same_answers(make: Callable[..., Engine], num_nodes: int) -> None:
    pooled, plain = make(), make(buffer_pool_bytes=0)
    assert pooled.buffers is not None and plain.buffers is None
    ids = np.arange(num_nodes)[::3]
    for _ in range(2):  # the second round runs on reused blocks
        for method in ("auto", "layerwise", "khop"):
            np.testing.assert_array_equal(pooled.infer_all(chunk_size=10_000, method=method),
                                          plain.infer_all(chunk_size=10_000, method=method))
        np.testing.assert_array_equal(pooled.infer_all(chunk_size=16),
                                      plain.infer_all(chunk_size=16))
        np.testing.assert_array_equal(pooled.predict_nodes(ids), plain.predict_nodes(ids))
    assert pooled.buffers.stats()["hits"] > 0


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("case_name", ["int8_case", "float_case"])
def test_answers_are_bit_identical_with_and_without_the_pool(case_name: str,
                                                             request: pytest.FixtureRequest
                                                             ) -> None:
    case = request.getfixturevalue(case_name)
    _check_same_answers(_load(case), case.num_nodes)


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("kind", ["gin", "sage"])
def test_exported_models_answer_the_same_with_the_pool(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from qgnn.graph.synth import powerlaw_communities

    graph = powerlaw_communities(300, avg_degree=6, num_communities=4, num_features=16, seed=1)
    bundle = tk.export_calibrated(tmp_path, graph, kind)
    _check_same_answers(lambda **config: Engine(load_bundle(bundle), EngineConfig(**config)),
                        300)


@pytest.mark.usefixtures("small_blocks")
def test_outputs_of_successive_forwards_stay_intact(int8_case) -> None:
    engine = _load(int8_case)()
    snapshot, n = engine.store.snapshot(), int8_case.num_nodes
    # the executor's own output arrays (onnxruntime's are views of its arena's buffers)
    first = engine._run(snapshot, np.arange(n))
    kept = first.copy()
    hits = engine.buffers.stats()["hits"]
    second = engine._run(snapshot, np.arange(0, n, 2))
    assert engine.buffers.stats()["hits"] > hits  # the first forward's intermediates
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)
    np.testing.assert_array_equal(second, kept[::2])
    del first
    third = engine._run(snapshot, np.arange(n))
    np.testing.assert_array_equal(third, kept)
    np.testing.assert_array_equal(second, kept[::2])


@pytest.mark.usefixtures("small_blocks")
def test_the_engine_pool_keeps_its_cap_and_empties_on_close(int8_case) -> None:
    engine = _load(int8_case)(buffer_pool_bytes=20_000)
    for _ in range(3):
        engine.infer_all(chunk_size=10_000)
    stats = engine.buffers.stats()
    assert stats["max_bytes"] == 20_000 and stats["peak_cached_bytes"] <= 20_000
    assert stats["cached_bytes"] > 0
    engine.close()
    stats = engine.buffers.stats()
    assert stats["closed"] and stats["cached_bytes"] == 0


@pytest.mark.usefixtures("small_blocks")
def test_concurrent_forwards_give_the_right_answers(int8_case) -> None:
    make = _load(int8_case)
    engine, reference = make(), make(buffer_pool_bytes=0)
    n = int8_case.num_nodes
    expected_all = reference.infer_all(chunk_size=10_000)
    id_sets = [np.arange(k, n, 4) for k in range(4)]
    expected = [reference.predict_nodes(ids) for ids in id_sets]
    errors: list[str] = []

    def work(k: int) -> None:
        for r in range(15):
            if k % 2 and not np.array_equal(engine.infer_all(chunk_size=10_000), expected_all):
                errors.append(f"thread {k} round {r}: infer_all")
            if not np.array_equal(engine.predict_nodes(id_sets[k]), expected[k]):
                errors.append(f"thread {k} round {r}: predict_nodes")

    _run_in_threads(work, 4)
    assert not errors
    assert engine.buffers.stats()["hits"] > 0


@pytest.mark.usefixtures("small_blocks")
def test_a_serving_engine_keeps_no_blocks_after_its_load_time_refresh(int8_case) -> None:
    """A server precomputes at load and then idles on small requests: the whole-graph
    forward's blocks must not stay cached in its RSS."""
    engine = _load(int8_case)(precompute="on")
    assert engine.precomputed
    stats = engine.buffers.stats()
    assert stats["peak_cached_bytes"] > 0 and stats["cached_bytes"] == 0
    np.testing.assert_array_equal(engine.infer_all(chunk_size=10_000),
                                  _load(int8_case)(buffer_pool_bytes=0).infer_all(
                                      chunk_size=10_000))
