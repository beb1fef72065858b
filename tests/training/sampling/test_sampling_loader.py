"""The prefetch pipeline: ordered results, a bounded window, errors surfacing at their item."""

from __future__ import annotations

import threading
import time

import pytest
from qgnn.training.sampling.loader import prefetch


def test_results_come_back_in_order_whatever_the_thread_timing():
    def produce(i: int) -> int:
        time.sleep(0.002 * ((7 * i) % 5))  # later items often finish first
        return i * i

    assert list(prefetch(range(30), produce, workers=4, depth=6)) == [i * i for i in range(30)]


@pytest.mark.parametrize("depth", [1, 3])
def test_at_most_depth_results_wait_unconsumed(depth):
    lock = threading.Lock()
    waiting = [0]
    peak = [0]

    def produce(i: int) -> int:
        with lock:
            waiting[0] += 1
            peak[0] = max(peak[0], waiting[0])
        return i

    for _ in prefetch(range(20), produce, workers=4, depth=depth):
        time.sleep(0.003)  # a slow trainer: producers would run far ahead if unbounded
        with lock:
            waiting[0] -= 1
    assert peak[0] <= depth + 1  # depth ahead plus the one being handed over


def test_a_worker_error_is_raised_at_its_item():
    def produce(i: int) -> int:
        if i == 3:
            raise KeyError("bad batch 3")
        return i

    got = []
    with pytest.raises(KeyError, match="bad batch 3"):
        for item in prefetch(range(10), produce, workers=2, depth=2):
            got.append(item)
    assert got == [0, 1, 2]


def test_closing_early_stops_producing():
    started = []

    def produce(i: int) -> int:
        started.append(i)
        return i

    gen = prefetch(range(1000), produce, workers=2, depth=2)
    assert next(gen) == 0
    gen.close()
    assert len(started) <= 4


@pytest.mark.parametrize(("workers", "depth"), [(0, 1), (1, 0), (True, 1)])
def test_bad_sizes_are_refused(workers, depth):
    with pytest.raises(ValueError, match="prefetch"):
        list(prefetch(range(3), lambda i: i, workers=workers, depth=depth))
