"""Dynamic batching: merging, splitting back in order, limits, shedding, deadlines, closing."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from qgnn.runtime.batching import Batcher
from qgnn.runtime.errors import DeadlineExceededError, ModelUnavailableError, OverloadedError
from qgnn.runtime.metrics import ServingMetrics


class Recorder:
    """A batch runner that doubles id arrays and records every call; the first call can be held
    on a gate so that later jobs pile up in the queue."""

    def __init__(self, hold_first: bool = False) -> None:
        self.calls: list[tuple[Any, list[Any]]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        if not hold_first:
            self.gate.set()

    def __call__(self, key: Any, payloads: list[Any]) -> list[Any]:
        self.calls.append((key, [np.array(p, copy=True) if key else p for p in payloads]))
        self.entered.set()
        self.gate.wait(10)
        if key is None:
            return [p() for p in payloads]
        if any((p < 0).any() for p in payloads):
            raise ValueError("negative id")
        merged = np.concatenate(payloads)
        return np.split(merged * 2, np.cumsum([len(p) for p in payloads])[:-1])


def _batcher(run: Recorder, **kw: Any) -> Batcher:
    settings = {"max_batch_size": 64, "max_queue_delay_s": 0.05, "max_queue_size": 100, **kw}
    return Batcher("m", run, **settings)


def _submit_all(b: Batcher, payloads: list[np.ndarray], key: str = "nodes") -> list[Any]:
    return [b.submit(key, p, len(p)) for p in payloads]


def test_requests_queued_while_the_model_is_busy_merge_into_one_call_split_back_in_order():
    run = Recorder(hold_first=True)
    b = _batcher(run)
    try:
        first = b.submit("nodes", np.array([100]), 1)
        assert run.entered.wait(5)
        payloads = [np.arange(i, i + i % 3 + 1) for i in range(10)]
        jobs = _submit_all(b, payloads)
        run.gate.set()
        assert list(b.wait(first)) == [200]
        for job, p in zip(jobs, payloads, strict=True):
            np.testing.assert_array_equal(b.wait(job), p * 2)
        assert len(run.calls) == 2  # the held call, then all ten merged
        np.testing.assert_array_equal(run.calls[1][1][3], payloads[3])
        assert len(run.calls[1][1]) == 10
    finally:
        b.close()


def test_max_batch_size_counts_rows_and_a_large_request_is_not_overtaken():
    run = Recorder(hold_first=True)
    b = _batcher(run, max_batch_size=4)
    try:
        b.submit("nodes", np.array([0]), 1)
        assert run.entered.wait(5)
        jobs = _submit_all(b, [np.array([1, 2]), np.array([3, 4, 5]), np.array([6]),
                               np.array([7])])
        run.gate.set()
        for job in jobs:
            b.wait(job)
        rows = [[len(p) for p in payloads] for _, payloads in run.calls[1:]]
        # [2] then the 3-row request blocks the rest of that batch; [3, 1] fits 4; then [1]
        assert rows == [[2], [3, 1], [1]]
        assert all(sum(r) <= 4 for r in rows)
    finally:
        b.close()


def test_a_lone_request_is_not_delayed_by_the_queue_delay():
    run = Recorder()
    b = _batcher(run, max_queue_delay_s=1.0)
    try:
        started = time.monotonic()
        np.testing.assert_array_equal(b.call("nodes", np.array([3]), 1), [6])
        assert time.monotonic() - started < 0.5
    finally:
        b.close()


def test_the_worker_waits_up_to_the_delay_for_requests_already_arriving():
    run = Recorder()
    b = _batcher(run, max_queue_delay_s=2.0)
    try:
        with b.arriving():
            first = b.submit("nodes", np.array([1]), 1)
            time.sleep(0.1)  # the second request is still being validated
            second = b.submit("nodes", np.array([2]), 1)
        b.wait(first), b.wait(second)
        assert len(run.calls) == 1 and len(run.calls[0][1]) == 2
    finally:
        b.close()


def test_the_wait_for_arriving_requests_ends_at_the_max_queue_delay():
    run = Recorder()
    b = _batcher(run, max_queue_delay_s=0.05)
    try:
        with b.arriving():  # a request that never shows up
            started = time.monotonic()
            b.call("nodes", np.array([1]), 1)
            waited = time.monotonic() - started
        assert 0.04 <= waited < 1.0
    finally:
        b.close()


def test_different_keys_never_merge_and_keyless_jobs_run_alone():
    run = Recorder(hold_first=True)
    b = _batcher(run)
    try:
        b.submit("nodes", np.array([0]), 1)
        assert run.entered.wait(5)
        a = b.submit("nodes", np.array([1]), 1)
        e = b.submit("embed", np.array([2]), 1)
        alone = [b.submit(None, lambda i=i: f"job{i}", 1) for i in range(2)]
        c = b.submit("nodes", np.array([3]), 1)
        run.gate.set()
        assert [b.wait(j) for j in alone] == ["job0", "job1"]
        b.wait(a), b.wait(e), b.wait(c)
        keys = [(key, len(p)) for key, p in run.calls[1:]]
        assert keys == [("nodes", 2), ("embed", 1), (None, 1), (None, 1)]
    finally:
        b.close()


def test_one_failing_request_does_not_fail_the_others_in_its_batch():
    run = Recorder(hold_first=True)
    b = _batcher(run)
    try:
        b.submit("nodes", np.array([0]), 1)
        assert run.entered.wait(5)
        good1, bad, good2 = _submit_all(b, [np.array([1]), np.array([-1]), np.array([2])])
        run.gate.set()
        assert list(b.wait(good1)) == [2] and list(b.wait(good2)) == [4]
        with pytest.raises(ValueError, match="negative id"):
            b.wait(bad)
    finally:
        b.close()


def test_a_full_queue_sheds_with_overloaded_and_counts_it():
    metrics = ServingMetrics.create(CollectorRegistry())
    run = Recorder(hold_first=True)
    b = Batcher("m", run, max_batch_size=8, max_queue_delay_s=0.0, max_queue_size=3,
                metrics=metrics)
    try:
        b.submit("nodes", np.array([0]), 1)
        assert run.entered.wait(5)
        jobs = _submit_all(b, [np.array([i]) for i in range(3)])
        assert metrics.registry.get_sample_value("qgnn_queue_depth", {"model": "m"}) == 3
        with pytest.raises(OverloadedError, match="queue full"):
            b.submit("nodes", np.array([9]), 1)
        assert metrics.registry.get_sample_value("qgnn_shed_requests_total",
                                                 {"model": "m"}) == 1
        run.gate.set()
        for job in jobs:
            b.wait(job)
        assert metrics.registry.get_sample_value("qgnn_queue_depth", {"model": "m"}) == 0
        sizes = metrics.registry.get_sample_value("qgnn_batch_size_sum", {"model": "m"})
        assert sizes == 4  # 1 (held) + 3 merged
    finally:
        b.close()


def test_a_request_whose_deadline_passes_in_the_queue_is_dropped_not_computed():
    metrics = ServingMetrics.create(CollectorRegistry())
    run = Recorder(hold_first=True)
    b = _batcher(run, metrics=metrics)
    try:
        b.submit("nodes", np.array([0]), 1)
        assert run.entered.wait(5)
        late = b.submit("nodes", np.array([5]), 1, deadline=time.monotonic() + 0.05)
        ok = b.submit("nodes", np.array([6]), 1)
        time.sleep(0.1)
        run.gate.set()
        with pytest.raises(DeadlineExceededError, match="deadline"):
            b.wait(late)
        assert list(b.wait(ok)) == [12]
        computed = np.concatenate([p for _, payloads in run.calls for p in payloads])
        assert 5 not in computed
        # dropped uncomputed: a shed request, counted under its reason
        assert metrics.registry.get_sample_value("qgnn_requests_shed_total",
                                                 {"reason": "deadline"}) == 1
    finally:
        b.close()


def test_a_waiting_caller_gives_up_at_its_deadline():
    run = Recorder(hold_first=True)
    b = _batcher(run)
    try:
        job = b.submit("nodes", np.array([1]), 1, deadline=time.monotonic() + 0.05)
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            b.wait(job)
        assert time.monotonic() - started < 1.0
    finally:
        run.gate.set()
        b.close()


def test_close_with_drain_computes_queued_jobs_and_refuses_new_ones():
    run = Recorder(hold_first=True)
    b = _batcher(run)
    b.submit("nodes", np.array([0]), 1)
    assert run.entered.wait(5)
    queued = b.submit("nodes", np.array([4]), 1)
    closer = threading.Thread(target=b.close)
    closer.start()
    time.sleep(0.05)
    with pytest.raises(ModelUnavailableError):
        b.submit("nodes", np.array([1]), 1)
    run.gate.set()
    closer.join(5)
    assert list(b.wait(queued)) == [8]


def test_close_without_drain_fails_queued_jobs_with_unavailable():
    run = Recorder(hold_first=True)
    b = _batcher(run)
    b.submit("nodes", np.array([0]), 1)
    assert run.entered.wait(5)
    queued = b.submit("nodes", np.array([4]), 1)
    closer = threading.Thread(target=b.close, kwargs={"drain": False})
    closer.start()
    time.sleep(0.05)
    run.gate.set()
    closer.join(5)
    with pytest.raises(ModelUnavailableError, match="unloaded"):
        b.wait(queued)


def test_stats_count_requests_and_model_calls():
    run = Recorder(hold_first=True)
    b = _batcher(run)
    try:
        b.submit("nodes", np.array([0]), 1)
        assert run.entered.wait(5)
        jobs = _submit_all(b, [np.array([1]), np.array([-1]), np.array([2])])
        run.gate.set()
        for job in jobs:
            with contextlib.suppress(ValueError):
                b.wait(job)
        time.sleep(0.05)
        s = b.stats
        assert (s.inference_count, s.fail_count, s.execution_count) == (3, 1, 2)
        assert s.compute_ns > 0 and s.last_inference_ms > 0
    finally:
        b.close()


class Sleeper:
    """A batch runner that takes ``seconds`` per call (answers: the ids doubled)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def __call__(self, key: Any, payloads: list[Any]) -> list[Any]:
        self.calls += 1
        time.sleep(self.seconds)
        return [p * 2 for p in payloads]


def _shed(metrics: ServingMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("qgnn_requests_shed_total", {"reason": reason}) or 0


def test_a_job_that_cannot_be_answered_within_max_queue_time_is_shed_at_submit():
    metrics = ServingMetrics.create(CollectorRegistry())
    run = Sleeper(0.05)
    b = Batcher("m", run, max_batch_size=1, max_queue_delay_s=0.0, max_queue_size=100,
                metrics=metrics, max_queue_s=0.12)
    try:
        b.call("nodes", np.array([1]), 1)  # teaches the batcher a call costs ~50 ms
        assert b.call_s >= 0.04
        jobs = [b.submit("nodes", np.array([i]), 1) for i in range(3)]  # ~3 calls ahead
        with pytest.raises(OverloadedError, match="max-queue-ms"):
            b.submit("nodes", np.array([7]), 1)
        assert _shed(metrics, "queue_time") == 1
        assert [int(b.wait(j)[0]) for j in jobs] == [0, 2, 4]
    finally:
        b.close()


def test_a_job_whose_answer_would_come_after_its_deadline_is_shed_not_queued():
    metrics = ServingMetrics.create(CollectorRegistry())
    b = Batcher("m", Sleeper(0.05), max_batch_size=1, max_queue_delay_s=0.0, max_queue_size=100,
                metrics=metrics, max_queue_s=10.0)
    try:
        b.call("nodes", np.array([1]), 1)
        held = b.submit("nodes", np.array([2]), 1)
        with pytest.raises(OverloadedError, match="deadline"):
            b.submit("nodes", np.array([3]), 1, deadline=time.monotonic() + 0.01)
        with pytest.raises(DeadlineExceededError, match="had passed"):
            b.submit("nodes", np.array([3]), 1, deadline=time.monotonic() - 1)
        assert _shed(metrics, "queue_time") == 1 and _shed(metrics, "deadline") == 1
        assert int(b.wait(held)[0]) == 4
    finally:
        b.close()


def test_a_job_that_waited_past_max_queue_time_is_shed_when_reached_never_computed():
    metrics = ServingMetrics.create(CollectorRegistry())
    run = Recorder(hold_first=True)
    b = Batcher("m", run, max_batch_size=1, max_queue_delay_s=0.0, max_queue_size=100,
                metrics=metrics, max_queue_s=0.05)
    try:
        first = b.submit("nodes", np.array([0]), 1)
        assert run.entered.wait(5)
        late = b.submit("nodes", np.array([5]), 1)  # no estimate yet: admitted
        time.sleep(0.1)
        run.gate.set()
        assert int(b.wait(first)[0]) == 0
        with pytest.raises(OverloadedError, match="waited"):
            b.wait(late)
        assert len(run.calls) == 1 and _shed(metrics, "queue_time") == 1
    finally:
        b.close()


def test_max_queue_time_bounds_the_whole_wait_in_the_server_not_only_the_queue():
    # a request that already waited in the server (for an RPC thread) before reaching the queue
    # has that wait counted: --max-queue-ms bounds its whole wait, not each queue's share
    metrics = ServingMetrics.create(CollectorRegistry())
    b = Batcher("m", Sleeper(0.05), max_batch_size=1, max_queue_delay_s=0.0, max_queue_size=100,
                metrics=metrics, max_queue_s=0.5)
    try:
        b.call("nodes", np.array([1]), 1)  # teaches the batcher a call costs ~50 ms
        ahead = [b.submit("nodes", np.array([i]), 1) for i in range(2)]
        with pytest.raises(OverloadedError, match="in the server already"):
            b.submit("nodes", np.array([7]), 1, arrived=time.monotonic() - 0.45)
        fresh = b.submit("nodes", np.array([8]), 1, arrived=time.monotonic())
        assert _shed(metrics, "queue_time") == 1
        assert [int(b.wait(j)[0]) for j in (*ahead, fresh)] == [0, 2, 16]
    finally:
        b.close()
    run = Recorder(hold_first=True)
    b = Batcher("m", run, max_batch_size=1, max_queue_delay_s=0.0, max_queue_size=100,
                metrics=metrics, max_queue_s=0.5)
    try:
        first = b.submit("nodes", np.array([0]), 1)
        assert run.entered.wait(5)
        # no estimate yet: admitted, but it reached the server 0.45 s ago
        late = b.submit("nodes", np.array([5]), 1, arrived=time.monotonic() - 0.45)
        time.sleep(0.1)
        run.gate.set()
        assert int(b.wait(first)[0]) == 0
        with pytest.raises(OverloadedError, match="in the server"):
            b.wait(late)
        assert len(run.calls) == 1 and _shed(metrics, "queue_time") == 2
    finally:
        b.close()


def test_an_event_loop_caller_gets_the_result_or_gives_up_at_its_deadline_uncomputed():
    """wait_async: the event loop's wait (--grpc-server aio) answers like wait, and a job still
    queued when its caller gives up (deadline, or the caller's task cancelled) is never
    computed."""
    run = Recorder(hold_first=True)
    b = _batcher(run)

    async def scenario() -> None:
        first = b.submit("nodes", np.array([1]), 1)
        assert run.entered.wait(5)
        late = b.submit("nodes", np.array([5]), 1, deadline=time.monotonic() + 0.05)
        with pytest.raises(DeadlineExceededError, match="deadline"):
            await b.wait_async(late)
        gone = b.submit("nodes", np.array([7]), 1)
        waiter = asyncio.ensure_future(b.wait_async(gone))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        run.gate.set()
        assert list(await b.wait_async(first)) == [2]
        assert list(await b.wait_async(b.submit("nodes", np.array([3]), 1))) == [6]

    try:
        asyncio.run(scenario())
        computed = np.concatenate([p for _, payloads in run.calls for p in payloads])
        assert 5 not in computed and 7 not in computed
    finally:
        run.gate.set()
        b.close()
