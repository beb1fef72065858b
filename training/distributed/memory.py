"""A per-rank memory budget for graph data, simulated: every array a rank keeps is charged.

Partitioned training charges its shard (structure, features, labels), the global partition book
and degrees, the GNS cache (its rows and every rank's cached ids) and each step's fetched
rows. Going over the budget raises :class:`MemoryBudgetError` naming what did not fit, so a run
never holds more graph data than ``--memory-budget``; a cache that does not fit is shrunk before
it is drawn (:meth:`MemoryLedger.room`). Model parameters and autograd activations are not
charged: the budget is about the graph, the part that grows with the dataset.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


class MemoryBudgetError(MemoryError):
    """A rank would hold more graph data than its budget."""


def parse_bytes(text: str | int | None) -> int | None:
    """``"64MiB"``, ``"1.5GB"``, ``"500000"`` -> bytes; ``None``/``"none"`` -> no budget."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "none")):
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(f"--memory-budget: expected bytes such as 64MiB, 1.5GB or 500000, "
                             f"got {text!r}")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ValueError(f"--memory-budget: expected a positive size, got {text!r}")
    return value


class MemoryLedger:
    """Named charges against an optional budget; ``peak`` is the most ever held at once."""

    def __init__(self, budget: int | None, rank: int = 0) -> None:
        self.budget = budget
        self.rank = rank
        self.held: dict[str, int] = {}
        self.peak = 0

    @property
    def total(self) -> int:
        return sum(self.held.values())

    def room(self) -> int | None:
        """Bytes still free, or ``None`` without a budget."""
        return None if self.budget is None else self.budget - self.total

    def charge(self, name: str, nbytes: int) -> None:
        """Hold ``nbytes`` under ``name`` (replacing what ``name`` held before)."""
        before = self.held.get(name, 0)
        after = self.total - before + int(nbytes)
        if self.budget is not None and after > self.budget:
            raise MemoryBudgetError(
                f"rank {self.rank}: holding {name} ({nbytes / 2**20:.2f} MiB) would bring graph "
                f"data to {after / 2**20:.2f} MiB, over --memory-budget "
                f"{self.budget / 2**20:.2f} MiB (held: "
                + ", ".join(f"{k} {v / 2**20:.2f}" for k, v in self.held.items() if v)
                + "); use more ranks (parts) or a larger budget")
        self.held[name] = int(nbytes)
        self.peak = max(self.peak, after)

    def release(self, name: str) -> None:
        self.held.pop(name, None)
