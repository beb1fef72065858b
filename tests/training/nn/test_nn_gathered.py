"""Quantised aggregation over a table of distinct (source, weight) rows against the per-edge path
it replaces: the same outputs, gradients and learned ranges, Degree-Quant protection included."""

from __future__ import annotations

import copy

import pytest
import torch
from qgnn.training.nn import propagate as prop
from qgnn.training.nn import spmm
from qgnn.training.nn.block import Block
from qgnn.training.nn.layers.gcn import GCNConv
from qgnn.training.nn.layers.sage import SAGEConv
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.degree_quant import DegreeProtection
from qgnn.training.quant.ranges import sample_values
from qgnn.training.quant.sites import quantize_model


def graph(num_nodes: int = 60, edges: int = 900) -> Block:
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(0, num_nodes, (edges,), generator=gen)
    dst = torch.randint(0, num_nodes - 2, (edges,), generator=gen)  # 2 with no in-edge
    order = torch.argsort(dst, stable=True)
    return Block(src=src[order], dst=dst[order], num_src=num_nodes, num_dst=num_nodes)


def run(layer: torch.nn.Module, block: Block, x: torch.Tensor, train_steps: int,
        per_edge: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[torch.Tensor, torch.Tensor]:
    """``train_steps`` training passes then one more pass (training when protected, else eval),
    with torch's global stream reseeded before each, as range sampling draws from it."""
    if per_edge:
        monkeypatch.setattr(prop, "gathered_propagate", lambda *_: None)
    for step in range(train_steps + 1):
        torch.manual_seed(10 + step)
        layer.train(step < train_steps or block.protect is not None)
        xs = x.clone().requires_grad_(True)
        out = layer(xs, block)
        out.pow(2).sum().backward()
    monkeypatch.undo()
    assert xs.grad is not None
    return out.detach(), xs.grad


@pytest.mark.parametrize("layer_type", [GCNConv, SAGEConv])
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize(("range_kind", "max_samples"),  # sampled, whole-tensor, min/max
                         [("percentile", 64), ("percentile", 2**16), ("momentum", 2**16)])
@pytest.mark.parametrize("protected", ["none", "some", "all"])
def test_same_outputs_gradients_and_ranges_as_per_edge_messages(layer_type, bits, range_kind,
                                                                 max_samples, protected,
                                                                 monkeypatch):
    block = graph()
    if protected == "some":
        protection = DegreeProtection(block.dst_degree(), 0.1, 0.5)
        block = block.replace(protect=protection.draw(block, torch.Generator().manual_seed(3)))
    if protected == "all":
        block = block.replace(protect=torch.ones(block.num_src, dtype=torch.bool))
    monkeypatch.setattr(spmm, "TABLE_PART_BYTES", 7 * 8 * 8)  # ranges of 7 table rows
    torch.manual_seed(1)
    fast = quantize_model(torch.nn.Sequential(layer_type(16, 8).double()),
                          QuantConfig(bits=bits, range=range_kind,
                                      max_samples=max_samples))[0]
    slow = copy.deepcopy(fast)
    x = torch.randn(block.num_src, 16, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2))
    out, grad = run(fast, block, x, 2, False, monkeypatch)
    ref, ref_grad = run(slow, block, x, 2, True, monkeypatch)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)
    for (name, kept), (_, want) in zip(fast.named_buffers(), slow.named_buffers(), strict=True):
        torch.testing.assert_close(kept, want, rtol=1e-12, atol=1e-12, msg=name)


def test_gathered_route_never_builds_per_edge_messages(monkeypatch):
    block = graph()
    layer = quantize_model(torch.nn.Sequential(GCNConv(16, 8)), QuantConfig(bits=8))[0]
    monkeypatch.setattr(prop, "gather", lambda *_: pytest.fail("per-edge messages built"))
    layer(torch.randn(block.num_src, 16), block).sum().backward()


@pytest.mark.parametrize("rows", [None, "half"])
def test_sampling_a_gathered_tensor_draws_the_values_of_the_built_one(rows):
    table = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    index = torch.randint(0, 7, (400,), generator=torch.Generator().manual_seed(1))
    mask = None if rows is None else torch.arange(400) % 2 == 0
    for budget in (50, 10_000):
        got = sample_values(table, mask, budget, torch.Generator().manual_seed(2), index)
        want = sample_values(table[index], mask, budget, torch.Generator().manual_seed(2))
        assert torch.equal(got, want)


def test_a_watched_seam_sees_every_per_edge_message():
    """Forward hooks (export parity reads each site's integers) get the per-edge tensors."""
    block = graph()
    layer = quantize_model(torch.nn.Sequential(GCNConv(16, 8)), QuantConfig(bits=8))[0]
    seen: dict[str, torch.Size] = {}

    def record(mod, args, out):
        seen[args[0]] = out.shape

    layer.q.register_forward_hook(record)
    layer(torch.randn(block.num_src, 16), block)
    assert seen["msg"] == (block.with_self_loops().num_edges, 8)
