"""Dynamic batching: concurrent requests for one model version merged into one model call.

Each model version has one :class:`Batcher`: a bounded queue and a worker thread that runs the
model. The worker takes the oldest job, then every queued job with the same merge key that still
fits in ``max_batch_size`` rows, and hands the batch to ``run``, which computes it in one model
call and splits the result back per job in order. Jobs without a merge key (requests with
inductive nodes, recommendations, graph updates) run one at a time, in queue order.

When to stop collecting: the worker waits up to ``max_queue_delay`` (measured from the oldest
job's arrival) for more jobs only while other requests for this model are already inside the
server (:meth:`Batcher.arriving`: being validated, about to be queued). A lone request is never
delayed; under load, requests queue while the worker computes and the next batch takes them all.

Per-request errors are kept: callers validate before queueing, and if a merged call still fails,
the worker reruns each job of the batch alone so only the bad one fails.

The queue is bounded by time, not only by count: :meth:`Batcher.submit` estimates how long a new
job would wait (the model calls needed for the rows queued ahead, plus the one running, each
costing the recent mean model-call time) and sheds it at once with RESOURCE_EXHAUSTED
(:class:`OverloadedError`) when that, plus the time the request already spent in the server
before the queue (``arrived``: waiting for an RPC thread, being validated), exceeds
``max_queue_s``, or when the answer could not come before the caller's deadline; a deadline
already past is DEADLINE_EXCEEDED. A job that is still in the server longer than ``max_queue_s``
when the worker reaches it (the estimate was low: a burst) is shed then, so an OK answer never
waited in the server longer than ``max_queue_s`` in all. A job whose deadline passed
while it was queued is dropped, not computed. ``max_queue_size`` remains as a count backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from qgnn.runtime.admission import shed
from qgnn.runtime.errors import DeadlineExceededError, ModelUnavailableError, OverloadedError
from qgnn.runtime.metrics import ServingMetrics

log = logging.getLogger("qgnn.runtime.batching")

_EWMA = 0.2  # weight of the newest model call in the mean call time

# One model call over the payloads of a batch (all with the same key, in queue order); returns one
# result per payload.
RunBatch = Callable[[Hashable | None, list[Any]], list[Any]]


@dataclass(eq=False)
class Job:
    """One queued request: ``size`` rows of work, merged with others of the same ``key``."""

    key: Hashable | None
    payload: Any
    size: int
    deadline: float | None  # time.monotonic() after which the caller no longer wants the answer
    enqueued: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)
    # when the request reached the server (its wait for an RPC thread and its validation came
    # before the queue): --max-queue-ms bounds the whole wait from here
    arrived: float | None = None

    @property
    def since(self) -> float:
        return self.enqueued if self.arrived is None else min(self.arrived, self.enqueued)


@dataclass
class BatchStats:
    """Cumulative counts and times (nanoseconds) of one batcher, for KServe ModelStatistics."""

    inference_count: int = 0  # requests answered successfully
    execution_count: int = 0  # model calls (batches)
    success_ns: int = 0  # queue + compute time of successful requests
    fail_count: int = 0
    fail_ns: int = 0
    queue_ns: int = 0
    compute_ns: int = 0
    last_inference_ms: int = 0  # wall-clock time of the last model call, ms since the epoch


class Batcher:
    """The queue and worker thread(s) of one model version."""

    def __init__(self, model: str, run: RunBatch, *, max_batch_size: int,
                 max_queue_delay_s: float, max_queue_size: int,
                 metrics: ServingMetrics | None = None, workers: int = 1,
                 max_queue_s: float | None = None) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or max_queue_delay_s < 0 or workers < 1 \
                or (max_queue_s is not None and max_queue_s <= 0):
            raise ValueError(f"batcher for {model!r}: max_batch_size, max_queue_size and workers "
                             f"must be >= 1, max_queue_delay_s >= 0 and max_queue_s > 0")
        self.model = model
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self.max_queue_s = max_queue_s
        self._metrics = metrics
        self._queued_rows = 0
        self._running = 0  # batches being computed
        self.call_s = 0.0  # recent mean seconds per model call (0 until the first one)
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._arriving = 0
        self._closed = False
        self._drain = True
        self.stats = BatchStats()
        self._stats_lock = threading.Lock()  # the stats only (every precomputed lookup takes it)
        self._threads = [threading.Thread(target=self._work, name=f"qgnn-batch-{model}-{i}",
                                          daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    # -- callers ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Marks a request as on its way to this queue (while it is validated), so the worker
        waits for it rather than dispatching a batch it could have joined."""
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1
                self._cond.notify_all()

    def submit(self, key: Hashable | None, payload: Any, size: int,
               deadline: float | None = None, arrived: float | None = None) -> Job:
        """Queues a job; raises OverloadedError when the queue is full and ModelUnavailableError
        once the batcher is closed. ``arrived``: when the request reached the server
        (time.monotonic(); None: now), from which ``max_queue_s`` bounds its whole wait."""
        job = Job(key, payload, max(int(size), 1), deadline, arrived=arrived)
        with self._cond:
            if self._closed:
                raise ModelUnavailableError(f"model {self.model} is unloading; retry")
            if len(self._queue) >= self.max_queue_size:
                self._count_shed("queue_full")
                raise OverloadedError(f"model {self.model}: queue full ({self.max_queue_size} "
                                      f"requests waiting); retry with backoff")
            self._admit_in_time(job)
            self._queue.append(job)
            self._queued_rows += job.size
            self._cond.notify_all()
        if self._metrics is not None:
            self._metrics.queue_depth.labels(self.model).inc()
        return job

    def estimated_wait_s(self, size: int = 1) -> float:
        """Seconds a new job of ``size`` rows would queue: the model calls for the rows ahead of
        it (and its own, when they do not fit one call), plus the call running now."""
        calls = -(-(self._queued_rows + size) // self.max_batch_size) - 1 + self._running
        return max(calls, 0) * self.call_s

    def _admit_in_time(self, job: Job) -> None:
        """Sheds ``job`` (caller holds the lock) when it cannot be answered within its deadline
        or ``max_queue_s``: DEADLINE_EXCEEDED when the deadline is already past,
        RESOURCE_EXHAUSTED otherwise."""
        now = job.enqueued
        if job.deadline is not None and now >= job.deadline:
            self._count_shed("deadline")
            raise DeadlineExceededError(f"model {self.model}: the deadline had passed when the "
                                        f"request reached the queue")
        wait = self.estimated_wait_s(job.size)
        waited = now - job.since  # in the server already, before this queue
        if self.max_queue_s is not None and waited + wait > self.max_queue_s:
            self._count_shed("queue_time")
            raise OverloadedError(f"model {self.model}: overloaded, about {wait * 1e3:.0f} ms "
                                  f"of work queued after {waited * 1e3:.0f} ms in the server "
                                  f"already (--max-queue-ms {self.max_queue_s * 1e3:g}); retry "
                                  f"with backoff")
        if job.deadline is not None and now + wait + self.call_s > job.deadline:
            self._count_shed("queue_time")
            raise OverloadedError(f"model {self.model}: overloaded, the answer would take about "
                                  f"{(wait + self.call_s) * 1e3:.0f} ms, past the request's "
                                  f"deadline ({(job.deadline - now) * 1e3:.0f} ms); retry "
                                  f"with backoff or a longer deadline")

    def record_inline(self, started: float, finished: float) -> None:
        """Counts a request answered on its caller's thread without queueing (a precomputed
        lookup) in the statistics, as one request and one model call."""
        took = int((finished - started) * 1e9)
        with self._stats_lock:
            s = self.stats
            s.inference_count += 1
            s.execution_count += 1
            s.success_ns += took
            s.compute_ns += took
            s.last_inference_ms = int(time.time() * 1e3)

    def _count_shed(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.shed_requests.labels(self.model).inc()
        shed(self._metrics, reason)

    def wait(self, job: Job) -> Any:
        """The job's result, raising its error; gives up with DeadlineExceededError at the job's
        deadline (a job still queued is then cancelled, never computed)."""
        timeout = None if job.deadline is None else max(job.deadline - time.monotonic(), 0.0)
        try:
            return job.future.result(timeout)
        except (FutureTimeout, CancelledError) as exc:
            self._give_up(job, timed_out=isinstance(exc, FutureTimeout))
            raise DeadlineExceededError(f"model {self.model}: the deadline passed before the "
                                        f"request was answered") from None

    def _give_up(self, job: Job, timed_out: bool) -> None:
        """Cancels a job whose caller stopped waiting; one still queued at its deadline is
        shed (never computed), counted like the worker's own deadline drop."""
        if job.future.cancel() and timed_out:
            self._count_shed("deadline")

    async def wait_async(self, job: Job) -> Any:
        """:meth:`wait` on an event loop: suspended, not blocking, until the worker has the
        result. A caller that goes away (its task cancelled) cancels a job still queued."""
        timeout = None if job.deadline is None else max(job.deadline - time.monotonic(), 0.0)
        waiting = asyncio.wrap_future(job.future)
        try:
            return await asyncio.wait_for(waiting, timeout)
        except TimeoutError:
            self._give_up(job, timed_out=True)
            raise DeadlineExceededError(f"model {self.model}: the deadline passed before the "
                                        f"request was answered") from None
        except asyncio.CancelledError:
            job.future.cancel()
            raise

    def call(self, key: Hashable | None, payload: Any, size: int,
             deadline: float | None = None) -> Any:
        """submit + wait."""
        return self.wait(self.submit(key, payload, size, deadline))

    @property
    def depth(self) -> int:
        """Jobs waiting in the queue."""
        return len(self._queue)

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Refuses new jobs; with ``drain`` the queued ones are still computed, otherwise they
        fail with ModelUnavailableError. Waits for the worker(s) to finish."""
        with self._cond:
            self._closed = True
            self._drain = drain
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    # -- worker ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._execute(batch)

    def _take(self, job: Job, now: float) -> bool:
        """Moves a job from queued to running; False (and the job is answered) when its caller
        has given up or its deadline has passed."""
        self._queued_rows -= job.size
        if self._metrics is not None:
            self._metrics.queue_depth.labels(self.model).dec()
        if not job.future.set_running_or_notify_cancel():
            return False
        if self.max_queue_s is not None and now - job.since > self.max_queue_s and \
                not self._closed:
            self._count_shed("queue_time")
            job.future.set_exception(OverloadedError(
                f"model {self.model}: overloaded, the request waited "
                f"{(now - job.since) * 1e3:.0f} ms in the server, "
                f"{(now - job.enqueued) * 1e3:.0f} ms of it in the queue (--max-queue-ms "
                f"{self.max_queue_s * 1e3:g}); it was not computed; retry with backoff"))
            return False
        if job.deadline is not None and now >= job.deadline:
            self._count_shed("deadline")
            job.future.set_exception(DeadlineExceededError(
                f"model {self.model}: the deadline passed while the request was queued "
                f"({(now - job.enqueued) * 1e3:.1f} ms); it was not computed"))
            return False
        return True

    def _take_matching(self, key: Hashable, room: int, now: float) -> tuple[list[Job], int]:
        """Removes (in queue order) jobs with ``key`` that fit in ``room`` rows; stops at the
        first one that does not fit, so a large request is not overtaken forever."""
        taken: list[Job] = []
        kept: deque[Job] = deque()
        rows = 0
        blocked = False
        while self._queue:
            job = self._queue.popleft()
            if blocked or job.key != key:
                kept.append(job)
            elif job.size > room - rows:
                blocked = True
                kept.append(job)
            elif self._take(job, now):
                taken.append(job)
                rows += job.size
        self._queue = kept
        return taken, rows

    def _next_batch(self) -> list[Job] | None:
        """The next batch to compute ([] when the head job was dropped), None to stop."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            if self._closed and not self._drain:
                failed = list(self._queue)
                self._queue.clear()
                for job in failed:
                    if self._take(job, time.monotonic()):
                        job.future.set_exception(ModelUnavailableError(
                            f"model {self.model} was unloaded before the request ran; retry"))
                return []
            first = self._queue.popleft()
            if not self._take(first, time.monotonic()):
                return []
            batch, rows = [first], first.size
            if first.key is None:
                self._running += 1
                return batch
            until = first.enqueued + self.max_queue_delay_s
            while rows < self.max_batch_size:
                taken, more = self._take_matching(first.key, self.max_batch_size - rows,
                                                  time.monotonic())
                batch += taken
                rows += more
                left = until - time.monotonic()
                if rows >= self.max_batch_size or self._arriving == 0 or left <= 0:
                    break
                if self._closed:
                    break
                self._cond.wait(left)
            self._running += 1
            return batch

    def _execute(self, batch: list[Job]) -> None:
        started = time.monotonic()
        rows = sum(job.size for job in batch)
        if self._metrics is not None:
            self._metrics.batch_size.labels(self.model).observe(rows)
            for job in batch:
                self._metrics.queue_duration.labels(self.model).observe(started - job.enqueued)
        try:
            results = self._run(batch[0].key, [job.payload for job in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch runner returned {len(results)} results for "
                                   f"{len(batch)} requests")
            outcomes: list[tuple[Any, BaseException | None]] = [(r, None) for r in results]
        except Exception as exc:
            if len(batch) == 1:
                outcomes = [(None, exc)]
            else:  # isolate: one bad request must not fail the others
                log.debug("batch of %d failed; rerunning its requests one by one", len(batch))
                outcomes = [self._run_alone(job) for job in batch]
        finished = time.monotonic()
        with self._cond:
            self._running -= 1
            took = finished - started
            self.call_s = took if self.call_s == 0 else self.call_s + _EWMA * (took - self.call_s)
        if self._metrics is not None:
            self._metrics.compute_duration.labels(self.model, "model").observe(finished - started)
        self._record(batch, outcomes, started, finished)
        for job, (result, error) in zip(batch, outcomes, strict=True):
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)

    def _run_alone(self, job: Job) -> tuple[Any, BaseException | None]:
        try:
            (result,) = self._run(job.key, [job.payload])
            return result, None
        except Exception as exc:
            return None, exc

    def _record(self, batch: list[Job], outcomes: list[tuple[Any, BaseException | None]],
                started: float, finished: float) -> None:
        compute_ns = int((finished - started) * 1e9)
        with self._stats_lock:
            s = self.stats
            s.execution_count += 1
            s.compute_ns += compute_ns
            s.last_inference_ms = int(time.time() * 1e3)
            for job, (_, error) in zip(batch, outcomes, strict=True):
                queue_ns = int((started - job.enqueued) * 1e9)
                s.queue_ns += queue_ns
                if error is None:
                    s.inference_count += 1
                    s.success_ns += queue_ns + compute_ns
                else:
                    s.fail_count += 1
                    s.fail_ns += queue_ns + compute_ns
