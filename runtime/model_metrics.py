"""The per-model gauges (``qgnn_model_ready``, ``qgnn_model_info``) kept equal to the set of
entries present: labels of entries that went away are removed, not left at a stale value."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from qgnn.runtime.metrics import ServingMetrics
from qgnn.runtime.model_entry import ModelEntry, ModelState


def sync_model_metrics(metrics: ServingMetrics, entries: Iterable[ModelEntry],
                       previous: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    """Sets the gauges for ``entries`` and removes the ``previous`` labels no longer present;
    returns the labels now set (the next call's ``previous``)."""
    ready, info = {}, set()
    for e in entries:
        ready[(e.name, str(e.version))] = float(e.state is ModelState.READY)
        if e.state is ModelState.READY and e.manifest is not None:
            isa = str(getattr(e.backend, "isa", "") or "")
            info.add((e.name, str(e.version), e.manifest.model.task,
                      e.manifest.quantisation.label, isa))
    for labels in previous - set(ready) - info:
        gauge = metrics.model_info if len(labels) == 5 else metrics.model_ready
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
    for labels, value in ready.items():
        metrics.model_ready.labels(*labels).set(value)
    for labels in info:
        metrics.model_info.labels(*labels).set(1)
    return set(ready) | info
