"""The matrix-product aggregation (CSR and dense routes) against the per-edge gather/index_add
path it replaces in full precision: same sums and means, same gradients, and the quantised path
left per-edge."""

from __future__ import annotations

import pytest
import torch
from qgnn.training.nn import propagate as prop
from qgnn.training.nn import spmm
from qgnn.training.nn.block import Block
from qgnn.training.nn.quant_sites import QuantSites
from qgnn.training.nn.spmm import DENSE_MIN_DENSITY, csr_plan, dense_ok, sparse_aggregate


def random_block(seed: int = 0, num_src: int = 30, num_dst: int = 20, edges: int = 200) -> Block:
    gen = torch.Generator().manual_seed(seed)
    return Block(src=torch.randint(0, num_src, (edges,), generator=gen),
                 dst=torch.randint(0, num_dst - 3, (edges,), generator=gen),  # 3 with no edge
                 num_src=num_src, num_dst=num_dst)


def per_edge(x: torch.Tensor, block: Block, reduce: str, weight: torch.Tensor | None):
    """Oracle: one message row per edge, summed with index_add (the quantised path)."""
    msg = x[block.src] if weight is None else x[block.src] * weight[:, None]
    out = torch.zeros(block.num_dst, x.shape[1], dtype=x.dtype).index_add_(0, block.dst, msg)
    if reduce == "mean":
        out = out / torch.bincount(block.dst, minlength=block.num_dst).clamp(min=1)[:, None]
    return out


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
def test_values_and_gradients_match_the_per_edge_sum(reduce, weighted, dense):
    block = random_block()
    gen = torch.Generator().manual_seed(1)
    weight = torch.rand(block.num_edges, generator=gen, dtype=torch.float64) if weighted else None
    x = torch.randn(block.num_src, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out = sparse_aggregate(x, block, reduce, weight, dense=dense)
    ref = per_edge(x_ref, block, reduce, weight)
    torch.testing.assert_close(out, ref)
    upstream = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    assert torch.autograd.gradcheck(
        lambda t: sparse_aggregate(t, block, reduce, weight, dense=dense),
        (x.detach().requires_grad_(True),))


def test_dense_and_csr_routes_agree_in_float32_on_a_dense_graph():
    """ogbl-ddi-like: duplicate edges and self-loops, float32, relative 1e-5 values and grads."""
    block = random_block(seed=3, num_src=300, num_dst=300, edges=20_000).with_self_loops()
    gen = torch.Generator().manual_seed(4)
    weight = torch.rand(block.num_edges, generator=gen)
    grads, outs = [], []
    for dense in (False, True):
        x = torch.randn(300, 64, generator=torch.Generator().manual_seed(5), requires_grad=True)
        out = sparse_aggregate(x, block, "sum", weight, dense=dense)
        out.pow(2).sum().backward()
        outs.append(out.detach())
        grads.append(x.grad)
    for dense, csr in ((outs[1], outs[0]), (grads[1], grads[0])):  # summation order only:
        scale = float(csr.abs().max())  # relative 1e-5 of the tensor's magnitude
        torch.testing.assert_close(dense, csr, rtol=1e-5, atol=1e-5 * scale)


def test_dense_route_is_chosen_by_density_and_size_and_reuses_its_matrix():
    sparse = random_block(num_src=1000, num_dst=1000, edges=100)
    assert not dense_ok(sparse)
    full = random_block(num_src=100, num_dst=100, edges=int(DENSE_MIN_DENSITY * 10_000) + 1)
    assert dense_ok(full)
    assert not dense_ok(Block(src=torch.zeros(10**8, dtype=torch.int64),
                              dst=torch.zeros(10**8, dtype=torch.int64),
                              num_src=100_000, num_dst=100_000))  # 40 GB: over the cap
    x = torch.randn(100, 3, dtype=torch.float64)
    first = sparse_aggregate(x, full, "sum", None)
    kept = csr_plan(full).dense[1]
    sparse_aggregate(x, full, "sum", None)
    assert csr_plan(full).dense[1] is kept  # same values: the matrix is reused
    weight = torch.full((full.num_edges,), 2.0, dtype=torch.float64)
    torch.testing.assert_close(sparse_aggregate(x, full, "sum", weight), 2 * first)
    assert csr_plan(full).dense[1] is not kept  # new values: rebuilt


def test_plan_is_built_once_per_block_and_looped_blocks_are_reused():
    block = random_block()
    assert csr_plan(block) is csr_plan(block)
    assert block.with_self_loops() is block.with_self_loops()
    assert block.with_self_loops(2.0) is not block.with_self_loops()
    assert "csr_plan" not in block.replace(num_dst=20).cache()


def test_a_new_protection_mask_reuses_the_plan_and_the_loops():
    """Degree-Quant draws a mask per pass: the edges, so the plan and the loops, are the same."""
    block = random_block()
    looped = block.with_self_loops()
    mask = torch.arange(block.num_src) % 3 == 0
    protected = block.replace(protect=mask)
    assert csr_plan(protected) is csr_plan(block)
    assert csr_plan(protected.with_self_loops()) is csr_plan(looped)
    assert torch.equal(protected.with_self_loops().protect, mask)
    assert looped.protect is None and torch.equal(protected.with_self_loops().src, looped.src)


class Doubling(QuantSites):
    """A stand-in quantiser: any subclass of QuantSites must see every per-edge message."""

    def forward(self, name, tensor, block=None):
        return tensor * 2 if name == "msg" else tensor


def test_propagate_takes_the_sparse_path_only_in_full_precision(monkeypatch):
    block = random_block()
    x = torch.randn(block.num_src, 4, dtype=torch.float64)
    sites = {"edge_weight": "edge", "msg": "edge", "agg": "dst"}
    plain = QuantSites(sites)
    fast = prop.propagate(x, block, reduce="mean", q=plain)
    monkeypatch.setattr(prop, "_sparse_ok", lambda *a: False)
    torch.testing.assert_close(fast, prop.propagate(x, block, reduce="mean", q=plain))
    monkeypatch.undo()
    doubled = prop.propagate(x, block, reduce="sum", q=Doubling(sites))
    torch.testing.assert_close(doubled, 2 * per_edge(x, block, "sum", None))


@pytest.mark.parametrize("part_bytes", [1, 3 * 5 * 8, 2**30])  # a row per range, 3, all
def test_table_sum_in_row_ranges_matches_the_per_edge_sum(part_bytes, monkeypatch):
    """Summing a table range by range (kept in cache) gives the per-edge sums and gradients."""
    monkeypatch.setattr(spmm, "TABLE_PART_BYTES", part_bytes)
    gen = torch.Generator().manual_seed(4)
    row = torch.randint(0, 11, (300,), generator=gen)
    dst = torch.randint(0, 9, (300,), generator=gen).sort().values  # 9 gets nothing
    table = torch.randn(11, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    ref_table = table.detach().clone().requires_grad_(True)
    plan = spmm.table_plan(row, dst, 11, 10, 5 * 8)
    assert len(plan.parts) == {1: 11, 120: 4, 2**30: 1}[part_bytes]
    out = spmm.table_sum(table, plan)
    ref = torch.zeros(10, 5, dtype=torch.float64).index_add(0, dst, ref_table[row])
    torch.testing.assert_close(out, ref)
    grad = torch.randn(10, 5, generator=gen, dtype=torch.float64)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(table.grad, ref_table.grad)
