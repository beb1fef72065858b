"""The prefetch pipeline: sampling threads run ahead of the trainer through a bounded window.

``prefetch(items, produce, workers=W, depth=D)`` yields ``produce(item)`` for every item, in
order, computed by ``W`` threads with at most ``D`` results produced but not yet consumed (the
bounded queue: memory stays at ``D`` staged batches however slow the trainer is). numpy's
sorting, gathering and arithmetic release the GIL, so threads sample in parallel without copying
the graph into worker processes. Results come back in item order whatever the thread timing, so
a run is reproducible when ``produce`` seeds its randomness from the item. An exception raised
by ``produce`` is re-raised to the consumer at that item; closing the generator early cancels
the work not yet started.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch(items: Iterable[T], produce: Callable[[T], R], *, workers: int,
             depth: int) -> Iterator[R]:
    for name, value in (("workers", workers), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"prefetch.{name}: expected an int >= 1, got {value!r}")
    source = iter(items)
    pending: deque[Future[R]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qgnn-sampler")

    def submit_next() -> None:
        for item in source:
            pending.append(pool.submit(produce, item))
            return

    try:
        for _ in range(depth):
            submit_next()
        while pending:
            result = pending.popleft().result()
            submit_next()
            yield result
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
