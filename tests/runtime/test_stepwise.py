"""runtime/stepwise.py: one handler, run blocking (drive) or suspended on an event loop
(drive_async), with the same answers, the same errors at the same place, and its ``with``
blocks unwound however it ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from qgnn.runtime.errors import DeadlineExceededError
from qgnn.runtime.stepwise import Steps, drive, drive_async, steps_of, stepwise


class FakeBatcher:
    """Answers a job with twice its value, or raises the error it was given."""

    def wait(self, job: Any) -> Any:
        if isinstance(job, Exception):
            raise job
        return 2 * job

    async def wait_async(self, job: Any) -> Any:
        await asyncio.sleep(0)
        return self.wait(job)


class Servicer:
    def __init__(self) -> None:
        self.open = 0  # leases held
        self.caught: list[str] = []

    @stepwise
    def Predict(self, request: Any, context: Any) -> Steps:
        self.open += 1
        try:
            total = 0
            for job in request:
                try:
                    total += yield FakeBatcher(), job
                except DeadlineExceededError as exc:
                    self.caught.append(str(exc))
                    raise
            return total
        finally:
            self.open -= 1


def test_blocking_and_event_loop_runs_give_the_same_answer() -> None:
    servicer = Servicer()
    assert servicer.Predict([1, 2, 3], None) == 12  # the blocking method gRPC calls
    steps = steps_of(servicer.Predict)
    assert steps is not None
    assert drive(steps([1, 2, 3], None)) == 12
    assert asyncio.run(drive_async(steps([1, 2, 3], None))) == 12
    assert drive(steps([], None)) == 0  # no wait at all
    assert servicer.open == 0
    assert steps_of(len) is None and steps_of(Servicer.Predict) is None


@pytest.mark.parametrize("run", ["blocking", "loop"])
def test_a_wait_error_is_raised_at_the_wait_and_unwinds_the_handler(run: str) -> None:
    servicer = Servicer()
    steps = steps_of(servicer.Predict)
    request = [1, DeadlineExceededError("late"), 3]
    with pytest.raises(DeadlineExceededError, match="late"):
        if run == "blocking":
            drive(steps(request, None))
        else:
            asyncio.run(drive_async(steps(request, None)))
    assert servicer.caught == ["late"] and servicer.open == 0


def test_a_handler_abandoned_on_the_loop_is_closed() -> None:
    servicer = Servicer()
    steps = steps_of(servicer.Predict)

    async def scenario() -> None:
        task = asyncio.ensure_future(drive_async(steps([1, 2, 3], None)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert servicer.open == 0
