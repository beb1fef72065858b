"""Sum and mean aggregation as a sparse matrix product, for full-precision passes.

``propagate`` gathers one message row per edge and adds them into destinations: on a dense graph
(ogbl-ddi: 2.1M directed edges over 4,267 nodes) that writes and reads an ``(E, D)`` tensor per
layer and direction, gigabytes at width 256. When no quantisation site sits on the edges the same
sum is ``A @ x`` with ``A[v, u] = w_uv`` (``w_uv / deg(v)`` for the mean), which never holds the
messages. The CSR structure of ``A`` and of ``A^T`` (for the gradient) is built once per block and
kept on it; only the values are recomputed, since normalisation weights may change per pass.

A block dense enough (:func:`dense_ok`) takes a dense ``A`` instead: ogbl-ddi's looped adjacency
fills 11.7% of its 4,267 x 4,267 entries, and a dense GEMM over it is 1.5x faster than the CSR
product (``bench/bench_link_step.py --aggregation`` measures both). Both routes compute the same
sums up to float summation order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from qgnn.training.nn.block import Block


@dataclass(frozen=True, eq=False)
class CsrPlan:
    """Edge order and CSR index arrays of ``A`` (rows = destinations) and ``A^T``."""

    order: torch.Tensor  # edges sorted by destination
    crow: torch.Tensor
    col: torch.Tensor
    order_t: torch.Tensor  # edges sorted by source
    crow_t: torch.Tensor
    col_t: torch.Tensor
    count: torch.Tensor  # (num_dst,) edges entering each destination
    flat: torch.Tensor  # (E,) dst * num_src + src: each edge's cell of a dense A, block order
    dense: list[torch.Tensor] = field(default_factory=list)  # [values, A] of the last dense A


def _csr(rows: torch.Tensor, cols: torch.Tensor, num_rows: int
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    order = torch.argsort(rows, stable=True)
    crow = torch.zeros(num_rows + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=num_rows), 0)
    return order, crow, cols[order].contiguous()


def csr_plan(block: Block) -> CsrPlan:
    """The block's plan, built on first use and cached on the (immutable) block."""
    cache = block.cache()
    plan = cache.get("csr_plan")
    if plan is None:
        order, crow, col = _csr(block.dst, block.src, block.num_dst)
        order_t, crow_t, col_t = _csr(block.src, block.dst, block.num_src)
        plan = CsrPlan(order, crow, col, order_t, crow_t, col_t,
                       torch.bincount(block.dst, minlength=block.num_dst),
                       block.dst * block.num_src + block.src)
        cache["csr_plan"] = plan
    assert isinstance(plan, CsrPlan)
    return plan


def _csr_tensor(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor,
                size: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # torch marks sparse CSR "beta"; the product is all we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size)


# The dense route: ``A`` must fit in this many bytes and have at least this share of its
# entries as edges. Measured on ogbl-ddi (4,267 nodes, 11.7% dense with self-loops), width 256,
# one thread of the shared 2-core AMD EPYC host, AVX2 (`bench_link_step --aggregation`): fwd + bwd
# 0.28 CPU-s dense (the same at any density) against 0.44 CSR, whose cost grows with the edge
# count, so the two meet near 7.5%. Building ``A`` adds about 0.13 s, saved while the values
# stay those of the previous pass (full precision); a quantised pass rebuilds it.
DENSE_MAX_BYTES = 256 * 2**20
DENSE_MIN_DENSITY = 0.08


def dense_ok(block: Block, itemsize: int = 4) -> bool:
    """Whether ``block``'s aggregation takes the dense ``A`` (see the module docstring)."""
    cells = block.num_dst * block.num_src
    return (0 < cells * itemsize <= DENSE_MAX_BYTES
            and block.num_edges >= DENSE_MIN_DENSITY * cells)


def dense_matrix(plan: CsrPlan, values: torch.Tensor, num_dst: int,
                 num_src: int) -> torch.Tensor:
    """``A`` as a dense ``(num_dst, num_src)`` matrix, duplicate edges added up; the last one
    built is kept on the plan and reused while the values are the same."""
    if plan.dense:
        kept, a = plan.dense
        if (kept.dtype == values.dtype and kept.device == values.device
                and a.shape == (num_dst, num_src) and torch.equal(kept, values)):
            return a
    a = values.new_zeros(num_dst * num_src).index_add_(0, plan.flat, values)
    a = a.view(num_dst, num_src)
    plan.dense[:] = [values.clone(), a]
    return a


class _DenseMM(torch.autograd.Function):
    """``out = A @ x`` with a dense ``A`` (:func:`dense_matrix`); gradient ``A^T @ grad``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, plan: CsrPlan, values: torch.Tensor,
                num_dst: int) -> torch.Tensor:
        a = dense_matrix(plan, values, num_dst, x.shape[0])
        ctx.save_for_backward(a)
        return a @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (a,) = ctx.saved_tensors
        return a.t() @ grad, None, None, None


class _SpMM(torch.autograd.Function):
    """``out = A @ x`` with constant edge values; gradient ``A^T @ grad``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, plan: CsrPlan, values: torch.Tensor,
                num_dst: int) -> torch.Tensor:
        ctx.plan, ctx.values, ctx.num_src = plan, values, x.shape[0]
        a = _csr_tensor(plan.crow, plan.col, values[plan.order], (num_dst, x.shape[0]))
        return a @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        plan = ctx.plan
        at = _csr_tensor(plan.crow_t, plan.col_t, ctx.values[plan.order_t],
                         (ctx.num_src, grad.shape[0]))
        return at @ grad.contiguous(), None, None, None


def sparse_aggregate(x: torch.Tensor, block: Block, reduce: str,
                     edge_weight: torch.Tensor | None, *, dense: bool | None = None
                     ) -> torch.Tensor:
    """``sum`` / ``mean`` over in-edges of ``x[src] * w`` as one matrix product; ``x`` is 2-D
    and ``edge_weight`` (per edge, in block order) carries no gradient. ``dense``: force the
    dense or the CSR route (``None``: :func:`dense_ok` decides)."""
    plan = csr_plan(block)
    values = (torch.ones(block.num_edges, dtype=x.dtype, device=x.device) if edge_weight is None
              else edge_weight.detach().to(x.dtype))
    if reduce == "mean":
        values = values / plan.count.clamp(min=1).to(x.dtype)[block.dst]
    if dense is None:
        dense = dense_ok(block, x.element_size())
    product = _DenseMM if dense else _SpMM
    return product.apply(x.contiguous(), plan, values, block.num_dst)


# A table of messages (training/nn/gathered.py: one row per distinct (source, quantised weight)
# pair, 111k x 256 on ogbl-ddi, 114 MB) is summed in row ranges of at most this many bytes,
# one CSR product each: a range stays in cache while every destination reads its rows. One
# product over the whole table reads rows at random from memory. A DQ INT8 GCN step on
# ogbl-ddi (one thread of the shared 2-core AMD EPYC host, AVX2; `bench_link_step --models gcn
# --paths dq8 --table-part-bytes B`): 6.22 CPU-s with the whole table in one product, 4.35 in
# 16 MB ranges.
TABLE_PART_BYTES = 16 * 2**20


@dataclass(frozen=True, eq=False)
class TablePlan:
    """The 0/1 matrix ``A`` (destinations x table rows) that adds table row ``row[e]`` into
    destination ``dst[e]`` for every edge ``e``: CSR arrays of ``A`` per range of table rows,
    for the sum, and of ``A^T``, for its gradient."""

    num_dst: int
    parts: list[tuple[int, int, torch.Tensor, torch.Tensor]]  # (first row, end row, crow, col)
    crow_t: torch.Tensor
    col_t: torch.Tensor


def table_plan(row: torch.Tensor, dst: torch.Tensor, num_rows: int, num_dst: int,
               row_bytes: int, by_row: torch.Tensor | None = None) -> TablePlan:
    """The plan of :func:`table_sum` for edges ``(row[e], dst[e])`` given in ascending ``dst``
    order; ``by_row``: the edges in ascending ``row`` order when the caller has them (else they
    are sorted here)."""
    if by_row is None:
        by_row = torch.argsort(row, stable=True)
    crow_t = torch.zeros(num_rows + 1, dtype=torch.int64, device=row.device)
    crow_t[1:] = torch.cumsum(torch.bincount(row, minlength=num_rows), 0)
    span = max(1, TABLE_PART_BYTES // max(1, row_bytes))
    # each range costs a row pointer as long as the destinations: no more ranges than edges
    # per destination
    span = max(span, -(-num_rows * num_dst // max(1, row.numel())))
    by_part = torch.argsort(row // span, stable=True)  # each range's edges, still by dst
    parts = []
    for lo in range(0, num_rows, span):
        edges = by_part[int(crow_t[lo]):int(crow_t[min(lo + span, num_rows)])]
        crow = torch.zeros(num_dst + 1, dtype=torch.int64, device=row.device)
        crow[1:] = torch.cumsum(torch.bincount(dst[edges], minlength=num_dst), 0)
        parts.append((lo, min(lo + span, num_rows), crow, row[edges] - lo))
    return TablePlan(num_dst, parts, crow_t, dst[by_row])


class _TableSum(torch.autograd.Function):
    """``out = A @ table`` range by range (:data:`TABLE_PART_BYTES`); gradient ``A^T @ grad``."""

    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, plan: TablePlan) -> torch.Tensor:
        ctx.plan, ctx.num_rows = plan, table.shape[0]
        out = table.new_zeros(plan.num_dst, table.shape[1])
        for lo, hi, crow, col in plan.parts:
            ones = torch.ones(col.numel(), dtype=table.dtype, device=table.device)
            out += _csr_tensor(crow, col, ones, (plan.num_dst, hi - lo)) @ table[lo:hi]
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        plan = ctx.plan
        ones = torch.ones(plan.col_t.numel(), dtype=grad.dtype, device=grad.device)
        at = _csr_tensor(plan.crow_t, plan.col_t, ones, (ctx.num_rows, plan.num_dst))
        return at @ grad.contiguous(), None


def table_sum(table: torch.Tensor, plan: TablePlan) -> torch.Tensor:
    """``out[v] = sum of table[row[e]]`` over the plan's edges ``e`` into ``v`` (2-D table)."""
    return _TableSum.apply(table.contiguous(), plan)
