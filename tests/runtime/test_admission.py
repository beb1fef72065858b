"""Admission control: a byte and request budget charged before work, every refusal counted."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry
from qgnn.runtime import admission
from qgnn.runtime.admission import Admission
from qgnn.runtime.errors import OverloadedError
from qgnn.runtime.metrics import ServingMetrics


def _shed(metrics: ServingMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("qgnn_requests_shed_total", {"reason": reason}) or 0


def test_bytes_in_flight_are_bounded_and_released_and_refusals_counted():
    metrics = ServingMetrics.create(CollectorRegistry())
    budget = Admission(1000, 10, metrics)
    a = budget.enter(600)
    with pytest.raises(OverloadedError, match="600 bytes in flight, this request needs 500"):
        budget.enter(500)
    assert _shed(metrics, "inflight_bytes") == 1
    b = budget.enter(400)
    assert budget.inflight_bytes == 1000 and budget.inflight == 2
    assert metrics.registry.get_sample_value("qgnn_inflight_bytes") == 1000
    budget.leave(a)
    budget.leave(b)
    assert budget.inflight_bytes == 0 and budget.inflight == 0
    budget.leave(budget.enter(1000))  # the whole budget is usable again


def test_work_charged_during_a_call_counts_against_the_budget():
    budget = Admission(1000, 10)
    ticket = budget.enter(100)
    admission.charge(800)  # the current call's ticket
    assert ticket.nbytes == 900 and budget.inflight_bytes == 900
    with pytest.raises(OverloadedError):
        admission.charge(200)
    assert budget.inflight_bytes == 900  # a refused charge takes nothing
    budget.leave(ticket)
    assert budget.inflight_bytes == 0
    admission.charge(10**9)  # outside an admitted call: no budget applies


def test_the_request_count_is_bounded_too():
    metrics = ServingMetrics.create(CollectorRegistry())
    budget = Admission(10**6, 2, metrics)
    tickets = [budget.enter(1), budget.enter(1)]
    with pytest.raises(OverloadedError, match="2 requests in flight"):
        budget.enter(1)
    assert _shed(metrics, "inflight_requests") == 1
    for t in tickets:
        budget.leave(t)


def test_tickets_are_per_thread():
    budget = Admission(1000, 10)
    seen: list[int] = []

    def other() -> None:
        t = budget.enter(10)
        admission.charge(5)
        seen.append(t.nbytes)
        budget.leave(t)

    mine = budget.enter(100)
    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [15] and mine.nbytes == 100
    budget.leave(mine)


def test_bad_budgets_are_refused_naming_them():
    with pytest.raises(ValueError, match="max_inflight_bytes"):
        Admission(0, 1)


def test_a_saturated_server_sheds_what_it_cannot_answer_in_time_by_littles_law(monkeypatch):
    metrics = ServingMetrics.create(CollectorRegistry())
    clock = [100.0]
    monkeypatch.setattr(admission.time, "monotonic", lambda: clock[0])
    budget = Admission(10**9, 10**4, metrics, max_queue_s=1.0)
    held = [budget.enter(1) for _ in range(admission.SATURATED + 92)]  # 100 in flight
    for _ in range(2):  # two windows, saturated throughout, 50 completions each: 200/s
        clock[0] += admission._WINDOW_S
        for _ in range(50):
            budget.leave(held.pop())
            held.append(budget.enter(1))
    clock[0] += admission._WINDOW_S
    held.append(budget.enter(1, None))  # closes the window; ~0.5 s ahead < 1 s: admitted
    assert budget.capacity == pytest.approx(200, rel=0.01)
    with pytest.raises(OverloadedError, match="deadline left"):
        budget.enter(1, 0.2)
    while budget.estimated_wait_s() <= 1.0:
        held.append(budget.enter(1))
    with pytest.raises(OverloadedError, match="max-queue-ms"):
        budget.enter(1)
    assert _shed(metrics, "queue_time") == 2


def _saturate_at_200_per_s(budget: Admission, clock: list[float], served: bool = True
                           ) -> list:
    """100 requests in flight for two windows, 50 completions in each (200/s if served)."""
    held = [budget.enter(1) for _ in range(admission.SATURATED + 92)]
    for _ in range(2):
        clock[0] += admission._WINDOW_S
        for _ in range(50):
            budget.leave(held.pop(), served=served)
            held.append(budget.enter(1))
    clock[0] += admission._WINDOW_S
    return held


def test_a_call_is_refused_at_intake_by_the_same_tests_counting_the_calls_handed_over(
        monkeypatch):
    metrics = ServingMetrics.create(CollectorRegistry())
    clock = [100.0]
    monkeypatch.setattr(admission.time, "monotonic", lambda: clock[0])
    budget = Admission(10**9, 300, metrics, max_queue_s=1.0)
    held = _saturate_at_200_per_s(budget, clock)
    assert budget.refusal_at_intake(0, None) is None  # 100 admitted: ~0.5 s ahead < 1 s
    assert budget.capacity == pytest.approx(200, rel=0.01)
    # calls handed to threads but not yet admitted count too: 250 ahead is 1.25 s
    reason, message = budget.refusal_at_intake(250, None)
    assert reason == "queue_time" and "250 in flight" in message and "max-queue-ms" in message
    assert budget.refusal_at_intake(100, 0.3)[0] == "queue_time"  # the deadline left is less
    budget.max_queue_s = 10.0
    reason, message = budget.refusal_at_intake(300, None)
    assert reason == "inflight_requests" and "limit 300" in message
    assert _shed(metrics, "queue_time") == 0  # deciding counts nothing: the caller sheds
    for t in held:
        budget.leave(t)


def test_requests_shed_after_admission_do_not_count_towards_the_completion_rate(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(admission.time, "monotonic", lambda: clock[0])
    budget = Admission(10**9, 10**4, max_queue_s=1.0)
    held = _saturate_at_200_per_s(budget, clock, served=False)
    budget.enter(1)  # closes the window
    assert budget.capacity == 0  # nothing answered: no rate to predict a wait from
    for t in held:
        budget.leave(t)


def test_a_quiet_server_never_sheds_a_burst_on_time():
    budget = Admission(10**9, 10**4, max_queue_s=0.001)
    tickets = [budget.enter(1, 0.0001) for _ in range(500)]  # no saturated window yet
    assert budget.capacity == 0 and len(tickets) == 500


def test_a_ticket_bound_on_another_thread_is_the_one_charged():
    budget = Admission(1000, 10)
    taken: list = []
    t = threading.Thread(target=lambda: taken.append(budget.enter(10)))  # parsed elsewhere
    t.start()
    t.join()
    admission.bind(taken[0])  # the handler's thread
    admission.charge(90)
    assert taken[0].nbytes == 100 and budget.inflight_bytes == 100
    budget.leave(taken[0])
    assert budget.inflight_bytes == 0


def test_a_ticket_knows_when_its_call_reached_the_server():
    # model queues bound a request's whole wait in the server from this time
    budget = Admission(1000, 4)
    before = time.monotonic()
    ticket = budget.enter(10)
    assert before <= admission.arrival() == ticket.arrived <= time.monotonic()
    budget.leave(ticket)
    assert admission.arrival() is None
    ticket = budget.enter(10, arrived=before - 1.0)  # e.g. it waited a second for a thread
    assert admission.arrival() == before - 1.0
    budget.leave(ticket)
