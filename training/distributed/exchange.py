"""Variable-size all-to-all between ranks, with every byte that crosses a rank boundary counted.

Partitioned training asks owners for neighbour lists, feature rows and labels. Each request
round is one collective: every rank passes one tensor per destination rank (possibly empty) and
gets one tensor from every source rank. Sizes travel first (one ``all_to_all_single`` of W
int64), then the payload (one ``all_to_all_single`` split by rows), so no rank needs to know in
advance what it will receive and no per-pair point-to-point ordering can deadlock. Gloo
implements ``all_to_all_single`` on CPU tensors; NCCL on GPU tensors (that path has not run).

The rank's own slot never leaves the process and is not counted. Bytes are counted on the
receiving side, by ``kind`` (``structure``: ids, counts, neighbour lists; ``features``: rows
for a batch; ``cache``: rows filling a GNS cache; ``assignment``; ``eval``; ``stats``), and
within a kind by ``part`` (what the round carried, e.g. ``hop-requests`` or ``partial-sums``),
so a figure can say where its bytes went.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from qgnn.training.distributed.context import DistContext


class ByteCounter:
    """Bytes received from other ranks, by kind, and by ``kind:part``."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.parts: dict[str, int] = {}

    def add(self, kind: str, num_bytes: int, part: str | None = None) -> None:
        self.totals[kind] = self.totals.get(kind, 0) + int(num_bytes)
        key = f"{kind}:{part or kind}"
        self.parts[key] = self.parts.get(key, 0) + int(num_bytes)

    def snapshot(self) -> dict[str, int]:
        return dict(self.totals)

    def parts_snapshot(self) -> dict[str, int]:
        return dict(self.parts)

    @staticmethod
    def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
        return {k: v - before.get(k, 0) for k, v in after.items()}


class Exchanger:
    """All-to-all rounds for one process group (or a single process: a pass-through)."""

    def __init__(self, ctx: DistContext, counter: ByteCounter) -> None:
        self.ctx = ctx
        self.counter = counter
        self.rounds = 0

    @property
    def world(self) -> int:
        return self.ctx.world_size

    def exchange(self, send: Sequence[torch.Tensor], kind: str, part: str | None = None
                 ) -> list[torch.Tensor]:
        """``send[r]`` goes to rank ``r``; returns ``recv[r]``, what rank ``r`` sent here
        (counted under ``kind`` and ``kind:part``).

        All tensors of one round share dtype and trailing shape (rows are split on dim 0).
        """
        w, rank = self.world, self.ctx.rank
        if len(send) != w:
            raise ValueError(f"Exchanger.exchange: expected {w} tensors, got {len(send)}")
        self.rounds += 1
        if w == 1:
            return [send[0]]
        tail = tuple(send[0].shape[1:])
        dtype = send[0].dtype
        for r, t in enumerate(send):
            if tuple(t.shape[1:]) != tail or t.dtype != dtype:
                raise ValueError(f"Exchanger.exchange: send[{r}] is {t.dtype} {tuple(t.shape)}, "
                                 f"send[0] {dtype} {tuple(send[0].shape)}")
        out_rows = torch.tensor([t.shape[0] for t in send], dtype=torch.int64)
        in_rows = torch.empty(w, dtype=torch.int64)
        dist.all_to_all_single(in_rows, out_rows)
        flat = torch.cat([t.contiguous() for t in send]) if send else torch.empty(0)
        recv = torch.empty((int(in_rows.sum()), *tail), dtype=dtype)
        dist.all_to_all_single(recv, flat, output_split_sizes=in_rows.tolist(),
                               input_split_sizes=out_rows.tolist())
        parts = list(torch.split(recv, in_rows.tolist()))
        row_bytes = recv.element_size() * (int(torch.tensor(tail).prod()) if tail else 1)
        foreign = int(in_rows.sum()) - int(in_rows[rank])
        self.counter.add(kind, foreign * row_bytes, part)
        return parts

    def all_gather_rows(self, t: torch.Tensor, kind: str, part: str | None = None
                        ) -> list[torch.Tensor]:
        """Every rank's ``t`` (rows may differ per rank), as one all-to-all with ``t`` sent to
        everyone."""
        return self.exchange([t] * self.world, kind, part)
