"""Graph updates shared by every version of a model name: recorded once applied, replayed
onto versions loaded later, so all versions of a name serve the same graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from qgnn.runtime.backend import ModelBackend

log = logging.getLogger("qgnn.runtime.dataplane")  # the name these logs had before the split


@dataclass
class _GraphLog:
    """Updates applied to a model name, replayed onto versions loaded later."""

    base_num_nodes: int
    updates: list[tuple[np.ndarray | None, np.ndarray | None]] = field(default_factory=list)


class GraphLogs:
    """Per model name: the graph updates applied so far (UpdateGraph), so that every version of
    the name, including ones loaded or reloaded later, serves the same graph. Callers hold the
    repository's per-name lock (ModelRepository.name_lock) around both methods."""

    def __init__(self) -> None:
        self._logs: dict[str, _GraphLog] = {}

    def record(self, name: str, base_num_nodes: int, features: np.ndarray | None,
               edges: np.ndarray | None) -> None:
        """Appends an applied update; ``base_num_nodes`` (the node count before it) is kept
        only for a name's first update: the graph every later one builds on."""
        self._logs.setdefault(name, _GraphLog(base_num_nodes)).updates.append((features, edges))

    def replay(self, name: str, backend: ModelBackend) -> None:
        """Applies the recorded updates to a freshly loaded backend whose graph is the one they
        were made on (same node count); a backend with another graph is left as it is."""
        log_ = self._logs.get(name)
        if log_ is None or not log_.updates:
            return
        if backend.num_nodes != log_.base_num_nodes:
            log.warning("model %s v%s ships a graph of %d nodes, not the %d that %d graph "
                        "update(s) were made on; serving its graph without them", name,
                        backend.version, backend.num_nodes, log_.base_num_nodes,
                        len(log_.updates))
            return
        for features, edges in log_.updates:
            backend.update_graph(features, edges)

