"""Request handling written once, run blocking on a thread or suspended on an event loop.

A handler that waits for a model's batcher is a generator: it yields each wait as a
``(batcher, job)`` pair and receives the job's result back (``result = yield batcher, job``),
and its return value is the answer. :func:`drive` runs it on the caller's thread, blocking in
``batcher.wait``; :func:`drive_async` runs it on an event loop, suspended in
``batcher.wait_async`` while the batcher's worker computes. So the thread-pool server and the
asyncio one (runtime/aio_front.py) share every line of validation, batching and answer
building, and the event loop needs no thread per waiting request.

A wait's error is thrown into the generator at its ``yield``, so its ``with`` blocks (leases,
admission tickets) unwind as they would around a blocking call; a generator abandoned half way
(the caller went away) is closed, which unwinds them too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from typing import Any

# (batcher, job) pairs yielded, results sent back, the answer returned
Steps = Generator[tuple[Any, Any], Any, Any]


def drive(steps: Steps) -> Any:
    """Runs ``steps`` to its answer on this thread, blocking in each ``batcher.wait(job)``."""
    try:
        batcher, job = next(steps)
        while True:
            try:
                result = batcher.wait(job)
            except BaseException as exc:
                batcher, job = steps.throw(exc)
            else:
                batcher, job = steps.send(result)
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()


async def drive_async(steps: Steps) -> Any:
    """Runs ``steps`` to its answer on the running event loop, suspended in each
    ``await batcher.wait_async(job)``."""
    try:
        batcher, job = next(steps)
        while True:
            try:
                result = await batcher.wait_async(job)
            except BaseException as exc:
                batcher, job = steps.throw(exc)
            else:
                batcher, job = steps.send(result)
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()


def stepwise(method: Callable[..., Steps]) -> Callable[..., Any]:
    """Makes a generator method (``self, request, context``) an ordinary blocking one, as gRPC
    servicers need, and keeps the generator as its ``steps`` attribute for :func:`steps_of`."""
    @functools.wraps(method)
    def blocking(self: Any, request: Any, context: Any) -> Any:
        return drive(method(self, request, context))

    blocking.steps = method  # type: ignore[attr-defined]
    return blocking


def steps_of(behaviour: Callable[..., Any]) -> Callable[[Any, Any], Steps] | None:
    """The generator form of a servicer's bound method made with :func:`stepwise` (None for any
    other callable): ``steps_of(m)(request, context)``."""
    method = getattr(behaviour, "steps", None)
    owner = getattr(behaviour, "__self__", None)
    if method is None or owner is None:
        return None
    return functools.partial(method, owner)
