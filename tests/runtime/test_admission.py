"""Admission control: a byte and request budget charged before work, every refusal counted."""

from __future__ import annotations

import threading

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
