"""Model outputs precomputed for every node of a static graph, answered by lookup.

On a transductive graph the answer for node v depends only on the graph, so the engine can run
full-graph inference once at load (``Engine.infer_all``: layer-wise with full neighbourhoods,
k-hop chunks with the engine's capped fanouts, which sample independently of the request) and
serve each request by reading rows. The numbers are the per-request ones bit for bit: the same
capped neighbourhoods, integer layers that do not depend on the batch, and softmax applied per
row after the lookup exactly as after a per-request forward.

Graph updates refresh the rows they can change (the engine's ``_downstream`` set, the same rule
as its link-embedding refresh) and append the new nodes' rows; the table is replaced, not
written in place, so a reader holding the old one is never torn. Inductive requests (nodes given
with one request) still run per request.

Trade-off (docs/serving.md): memory 2 x N x C x 4 bytes (logits and probabilities), load time
one full-graph pass, an update costs a forward pass over its affected rows; in return a request
costs a gather.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qgnn.runtime.validation import id_range

AUTO_MAX_BYTES = 256 * 2**20  # --precompute auto: the largest table materialised


def wanted(mode: str, task: str, num_nodes: int, width: int) -> bool:
    """Whether to precompute, from ``--precompute`` (auto, on, off): node models only (link
    models already serve a precomputed embedding table); auto while the table is at most
    :data:`AUTO_MAX_BYTES`."""
    if task != "node" or mode == "off":
        return False
    return mode == "on" or 2 * num_nodes * width * 4 <= AUTO_MAX_BYTES


class OutputTable:
    """Rows of model outputs (N, C) float32, one per node, and their row-wise ``activation``
    (the engine's softmax: applied per row, so a gathered row of it is bit for bit the
    activation of the gathered row), replaced whole on refresh."""

    def __init__(self, values: np.ndarray, activation: Callable[[np.ndarray], np.ndarray]
                 ) -> None:
        self._values = np.ascontiguousarray(values, np.float32)
        self._values.setflags(write=False)
        self._activation = activation
        self._activated = np.ascontiguousarray(activation(self._values), np.float32)
        self._activated.setflags(write=False)

    @property
    def values(self) -> np.ndarray:
        return self._values

    def activated_rows(self, ids: np.ndarray, below: int | None = None) -> np.ndarray | None:
        """Rows of the activated table (see :meth:`rows`); ``below``: a bound the caller already
        checked every id against (a table that long needs no second check)."""
        table = self._activated
        if (below is None or below > table.shape[0]) and ids.size and \
                id_range(ids)[1] >= table.shape[0]:
            return None
        return table.take(ids, axis=0)

    @property
    def num_rows(self) -> int:
        return int(self._values.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self._values.nbytes + self._activated.nbytes)

    def rows(self, ids: np.ndarray) -> np.ndarray | None:
        """Rows of ``ids`` (validated, >= 0), or None when an id is past the table (a node
        added by an update the table has not caught up with: the caller computes it)."""
        table = self._values  # one read: a concurrent refresh swaps the reference
        if ids.size and int(ids.max()) >= table.shape[0]:
            return None
        return table.take(ids, axis=0)

    def refreshed(self, num_rows: int, ids: np.ndarray, values: np.ndarray) -> OutputTable:
        """A new table of ``num_rows`` rows: this one's, grown, with ``ids`` set to
        ``values`` (every new row must be among ``ids``)."""
        old = self._values
        grown = np.empty((num_rows, old.shape[1]), np.float32)
        grown[:old.shape[0]] = old
        covered = np.zeros(num_rows, bool)
        covered[:old.shape[0]] = True
        covered[ids] = True
        if not covered.all():
            missing = int(np.argmin(covered))
            raise RuntimeError(f"precomputed outputs: row {missing} was added but not computed")
        grown[ids] = values
        return OutputTable(grown, self._activation)
