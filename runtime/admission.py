"""Admission control: a budget of bytes and requests in flight, charged before work starts.

Why bytes and not a request count: one 4 MB request holds as much memory as 20,000 one-id
requests, so a count bounds nothing (64 concurrent 3.9 MB requests took 1.1 GB). Every accepted
RPC holds a :class:`Ticket` from the moment the interceptor sees it until its answer is
serialised. The ticket is charged the request's payload bytes (twice: the wire bytes and the
parsed message), and the data plane adds the work it is about to do (the bytes of the arrays it
will build and return, estimated from ids x bytes per id) with :meth:`Admission.charge`. When a
charge would take the total past ``max_inflight_bytes`` the request is shed at once with
RESOURCE_EXHAUSTED; nothing queues for memory.

The request count (``max_inflight``, ``--max-inflight-requests``) sits below the RPC threads
and gRPC's own ``maximum_concurrent_rpcs``, so that qgnn, which counts and explains its
rejections, refuses first: gRPC's limit only remains as a backstop. The count and the wait
below are checked twice: as a call arrives, before its request is read
(:meth:`Admission.refusal_at_intake`, on gRPC's polling thread: runtime/grpc_intake.py), and
when the request is parsed (:meth:`Admission.enter`, which also charges its bytes).

Time: requests answered on their own thread (precomputed lookups) never enter a model queue,
so under overload they would queue for the GIL instead, invisibly, until their deadlines pass.
The budget therefore also bounds the wait that Little's law predicts: with ``N`` requests in
flight and the server completing ``X`` per second while saturated, a new one waits about
``N / X``; when that exceeds ``max_queue_s`` or the caller's remaining deadline, it is shed
(RESOURCE_EXHAUSTED, reason ``queue_time``). ``X`` is measured only over windows in which at
least :data:`SATURATED` requests were in flight throughout, so a quiet server never sheds a
burst on a stale rate. The batcher bounds its own queue the same way with its model-call costs
(runtime/batching.py).
"""

from __future__ import annotations

import contextvars
import threading
import time

from qgnn.runtime.errors import OverloadedError
from qgnn.runtime.metrics import ServingMetrics

# Reasons a request is shed (label values of qgnn_requests_shed_total).
REASONS = ("inflight_bytes", "inflight_requests", "queue_time", "queue_full", "deadline",
           "message_bytes", "shutdown")


class Ticket:
    """The bytes one accepted request holds, and the budget they count against (one per call:
    a plain class with slots, cheaper to build than a dataclass)."""

    __slots__ = ("arrived", "nbytes", "owner")

    def __init__(self, owner: Admission, nbytes: int = 0, arrived: float | None = None) -> None:
        self.owner = owner
        self.nbytes = nbytes
        # time.monotonic() when the call reached the server's RPC thread pool: every wait
        # inside the server (for a thread, in a model queue) counts from here
        self.arrived = time.monotonic() if arrived is None else arrived

    def __repr__(self) -> str:
        return f"Ticket(nbytes={self.nbytes})"


SATURATED = 8  # requests in flight throughout a window for its completion rate to count
_WINDOW_S = 0.25
_EWMA = 0.3

_CURRENT: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("qgnn_ticket",
                                                                         default=None)


def shed(metrics: ServingMetrics | None, reason: str) -> None:
    """Counts one shed request under ``reason`` (one of :data:`REASONS`)."""
    if metrics is not None:
        metrics.requests_shed.labels(reason).inc()


class Admission:
    """The server-wide budget. Thread-safe; cheap enough to sit in front of every RPC."""

    def __init__(self, max_inflight_bytes: int, max_inflight: int,
                 metrics: ServingMetrics | None = None, max_queue_s: float | None = None
                 ) -> None:
        if max_inflight_bytes < 1 or max_inflight < 1:
            raise ValueError(f"admission: max_inflight_bytes and max_inflight must be >= 1, got "
                             f"{max_inflight_bytes} and {max_inflight}")
        self.max_inflight_bytes = int(max_inflight_bytes)
        self.max_inflight = int(max_inflight)
        self._metrics = metrics
        self._lock = threading.Lock()
        self._bytes = 0
        self._count = 0
        self.max_queue_s = max_queue_s
        self.capacity = 0.0  # completions per second while saturated (0: not measured yet)
        self._window_start = time.monotonic()
        self._window_done = 0
        self._window_min = 0
        if metrics is not None:  # read at scrape time: nothing to update per call
            metrics.inflight_bytes.set_function(lambda: self._bytes)

    @property
    def inflight_bytes(self) -> int:
        return self._bytes

    @property
    def inflight(self) -> int:
        return self._count

    def _refuse(self, reason: str, message: str) -> OverloadedError:
        shed(self._metrics, reason)
        return OverloadedError(message)

    def estimated_wait_s(self) -> float:
        """Little's law: requests in flight over the saturated completion rate (0 while the
        server is not saturated or the rate is unknown)."""
        return self._wait_s(self._count)

    def _wait_s(self, ahead: int) -> float:
        if ahead < SATURATED or self.capacity <= 0:
            return 0.0
        return ahead / self.capacity

    def _over_budget(self, ahead: int, deadline_left_s: float | None) -> tuple[str, str] | None:
        """(reason, message) when a request with ``ahead`` requests in flight must be shed for
        time or count, else None (caller holds the lock): what :meth:`enter` and
        :meth:`refusal_at_intake` both test."""
        wait = self._wait_s(ahead)
        limit = float("inf") if self.max_queue_s is None else self.max_queue_s
        if deadline_left_s is not None and deadline_left_s < limit:
            limit = deadline_left_s
        if wait > limit:
            bound = "the deadline left" if limit == deadline_left_s else "--max-queue-ms"
            return "queue_time", (f"server overloaded: about {wait * 1e3:.0f} ms of requests "
                                  f"ahead ({ahead} in flight), more than {bound} "
                                  f"({limit * 1e3:.0f} ms); retry with backoff")
        if ahead >= self.max_inflight:
            return "inflight_requests", (f"server busy: {ahead} requests in flight (limit "
                                         f"{self.max_inflight}); retry with backoff")
        return None

    def refusal_at_intake(self, handed: int, deadline_left_s: float | None
                          ) -> tuple[str, str] | None:
        """(reason, message) to refuse a call as it arrives, before its request is read, or
        None: the same in-flight and Little's-law tests as :meth:`enter`, counting ``handed``
        (the calls handed to RPC threads and not finished, admitted or about to be) instead
        of the admitted ones. Counts nothing; the caller sheds."""
        if handed < SATURATED and self._count < SATURATED and handed < self.max_inflight:
            return None  # the usual call on a server that is not busy: no lock, no estimate
        now = time.monotonic()
        with self._lock:
            if now - self._window_start >= _WINDOW_S:
                self._tick(now)
            return self._over_budget(max(handed, self._count), deadline_left_s)

    def enter(self, nbytes: int, deadline_left_s: float | None = None,
              arrived: float | None = None) -> Ticket:
        """Admits a request of ``nbytes`` payload bytes or raises OverloadedError; the ticket
        becomes the current one of this thread's call (:meth:`charge`). ``arrived``: when the
        call reached the server (time.monotonic(); default now)."""
        now = time.monotonic()
        with self._lock:
            if now - self._window_start >= _WINDOW_S:
                self._tick(now)
            over = self._over_budget(self._count, deadline_left_s)
            if over is not None:
                raise self._refuse(*over)
            if self._bytes + nbytes > self.max_inflight_bytes:
                raise self._refuse("inflight_bytes", self._bytes_message(nbytes))
            self._count += 1
            self._bytes += nbytes
        ticket = Ticket(self, nbytes, now if arrived is None else arrived)
        _CURRENT.set(ticket)
        return ticket

    def leave(self, ticket: Ticket, served: bool = True) -> None:
        """Returns a ticket's bytes and slot (once; the interceptor calls it in ``finally``).
        ``served``: the request was answered (OK); only those count towards the completion
        rate, since a request shed after admission (by its model queue) finishes fast and
        would make the rate, and so the wait ahead, look better than it is."""
        with self._lock:
            self._count -= 1
            self._bytes -= ticket.nbytes
            ticket.nbytes = 0
            self._window_done += served
            if self._count < self._window_min:
                self._window_min = self._count
        _CURRENT.set(None)

    def charge(self, ticket: Ticket, nbytes: int) -> None:
        """Adds ``nbytes`` of work to ``ticket``, or raises OverloadedError."""
        if nbytes <= 0:
            return
        with self._lock:
            if self._bytes + nbytes > self.max_inflight_bytes:
                raise self._refuse("inflight_bytes", self._bytes_message(nbytes))
            self._bytes += nbytes
            ticket.nbytes += nbytes

    def _tick(self, now: float) -> None:
        """Closes the rate window when it is over (caller holds the lock)."""
        elapsed = now - self._window_start
        if elapsed < _WINDOW_S:
            return
        if self._window_min >= SATURATED and self._window_done:
            rate = self._window_done / elapsed
            self.capacity = rate if self.capacity == 0 else (
                self.capacity + _EWMA * (rate - self.capacity))
        self._window_start, self._window_done, self._window_min = now, 0, self._count

    def _bytes_message(self, nbytes: int) -> str:
        return (f"server busy: {self._bytes} bytes in flight, this request needs {nbytes} more "
                f"(--max-inflight-bytes {self.max_inflight_bytes}); retry with backoff, or "
                f"split the request")


def bind(ticket: Ticket) -> None:
    """Makes ``ticket`` the current call's (for :func:`charge`) on this thread: the ticket may
    have been taken on another one (gRPC parses requests off the handler's thread)."""
    _CURRENT.set(ticket)


def arrival() -> float | None:
    """When the current call reached the server (time.monotonic()), None outside an admitted
    call: a model queue bounds a request's whole wait in the server by this, not only its own
    part."""
    ticket = _CURRENT.get()
    return None if ticket is None else ticket.arrived


def charge(nbytes: int) -> None:
    """Charges ``nbytes`` of work to the current call's ticket (what the data plane calls before
    it builds arrays); outside an admitted call (in-process callers, tests) it does nothing."""
    ticket = _CURRENT.get()
    if ticket is not None:
        ticket.owner.charge(ticket, nbytes)
