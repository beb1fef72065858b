"""Partial-sum rows a requester keeps between steps (``--gns-estimator owner-sum``).

An owner's partial-sum row of destination ``v`` sums the (scaled) input features of ``v``'s
in-neighbours in the owner's part. Input features do not change during training, so the row
for ``v`` is the same number at every step; only its weight depends on the requester's cache.
A hub is a destination at almost every step, and before this memo its row crossed every time.

Both sides keep the same book without talking about it: per (owner, requester) pair, the first
``capacity`` distinct destinations whose row crossed in this cache period are remembered, the
owner keeping their ids (it sends no row for them again) and the requester their rows. Both see
the same destinations in the same order, so the books agree. ``capacity`` is the requester's
remote cache size split over its ``W - 1`` owners, so the memo holds at most as many rows as
the GNS cache; the memory ledger charges it. The memo is emptied at every cache refresh.
"""

from __future__ import annotations

import numpy as np
import torch


class RowMemo:
    """Per peer rank: remembered destination ids (and, on the requester side, their rows)."""

    def __init__(self, world: int) -> None:
        self.world = world
        self.capacity = [0] * world
        self.ids: list[np.ndarray] = [np.zeros(0, np.int64)] * world
        self.rows: list[torch.Tensor | None] = [None] * world

    def reset(self, capacity: list[int]) -> None:
        """Forget everything (a cache refresh) and take new per-peer capacities."""
        self.capacity = list(capacity)
        self.ids = [np.zeros(0, np.int64)] * self.world
        self.rows = [None] * self.world

    def known(self, peer: int, ids: np.ndarray) -> np.ndarray:
        """Whether each of ``ids`` is remembered for ``peer``."""
        return np.isin(ids, self.ids[peer])

    def admit(self, peer: int, ids: np.ndarray, rows: torch.Tensor | None = None) -> None:
        """Remember the first of ``ids`` (rows that just crossed, none already known) until
        ``peer``'s capacity is reached; the requester passes their ``rows`` too."""
        take = max(0, min(ids.size, self.capacity[peer] - self.ids[peer].size))
        if not take:
            return
        self.ids[peer] = np.concatenate([self.ids[peer], ids[:take]])
        if rows is not None:
            old = self.rows[peer]
            self.rows[peer] = rows[:take].clone() if old is None else torch.cat([old, rows[:take]])

    def lookup(self, peer: int, ids: np.ndarray) -> torch.Tensor:
        """The remembered rows of ``ids`` (all known) from ``peer``."""
        held, rows = self.ids[peer], self.rows[peer]
        if rows is None:
            raise ValueError("RowMemo.lookup: no rows remembered for this peer")
        order = np.argsort(held, kind="stable")
        slot = order[np.searchsorted(held[order], ids)]
        return rows.index_select(0, torch.from_numpy(slot))

    def nbytes(self) -> int:
        return sum(i.nbytes for i in self.ids) + sum(
            0 if r is None else r.numel() * r.element_size() for r in self.rows)
