"""The message-passing core: edge_softmax against per-destination torch.softmax, and the input
check every layer uses."""

from __future__ import annotations

import math

import pytest
import torch
from qgnn.training.nn.block import Block
from qgnn.training.nn.propagate import aggregate, check_src_rows, edge_softmax


def per_destination_softmax(logits: torch.Tensor, dst: torch.Tensor, num_dst: int) -> torch.Tensor:
    """Oracle: plain torch.softmax over each destination's edges, one destination at a time."""
    out = torch.empty_like(logits)
    for v in range(num_dst):
        rows = dst == v
        if rows.any():
            out[rows] = torch.softmax(logits[rows].double(), dim=0).to(logits.dtype)
    return out


def test_hand_computed_case():
    logits = torch.tensor([1.0, 2.0, 3.0])
    dst = torch.tensor([0, 0, 1])
    e1, e2 = math.exp(1.0), math.exp(2.0)
    expected = torch.tensor([e1 / (e1 + e2), e2 / (e1 + e2), 1.0])
    torch.testing.assert_close(edge_softmax(logits, dst, 2), expected)


def test_multi_head_matches_softmax_and_sums_to_one_per_destination():
    gen = torch.Generator().manual_seed(0)
    dst = torch.randint(0, 40, (500,), generator=gen)
    logits = torch.randn(500, 3, generator=gen) * 5
    out = edge_softmax(logits, dst, 50)  # destinations 40..49 have no edges
    torch.testing.assert_close(out, per_destination_softmax(logits, dst, 50))
    sums = torch.zeros(50, 3).index_add_(0, dst, out)
    has_edges = torch.bincount(dst, minlength=50) > 0
    torch.testing.assert_close(sums[has_edges], torch.ones(int(has_edges.sum()), 3))
    assert (sums[~has_edges] == 0).all()


def test_huge_logits_stay_finite():
    """exp(1e4) overflows float32; subtracting each destination's maximum keeps it exact."""
    logits = torch.tensor([1e4, 1e4 - 1.0, -1e4, 3e38, -3e38])
    dst = torch.tensor([0, 0, 0, 1, 1])
    out = edge_softmax(logits, dst, 2)
    assert torch.isfinite(out).all()
    p = 1 / (1 + math.exp(-1.0))
    torch.testing.assert_close(out, torch.tensor([p, 1 - p, 0.0, 1.0, 0.0]))


def test_no_edges_and_all_masked_destinations():
    assert edge_softmax(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 4).shape == (0, 2)
    logits = torch.tensor([float("-inf"), float("-inf"), 0.5])
    out = edge_softmax(logits, torch.tensor([0, 0, 1]), 2)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, 1.0]))


def test_gradient_matches_finite_differences():
    dst = torch.tensor([0, 0, 1, 1, 1, 2])
    logits = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: edge_softmax(t, dst, 4), (logits,))


def test_misaligned_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="3 rows but dst has 2"):
        edge_softmax(torch.zeros(3), torch.zeros(2, dtype=torch.long), 1)
    block = Block(src=torch.tensor([1]), dst=torch.tensor([0]), num_src=2, num_dst=1)
    with pytest.raises(ValueError, match=r"num_src=2.*\(3, 4\)"):
        check_src_rows("Layer", torch.zeros(3, 4), block)
    check_src_rows("Layer", torch.zeros(2, 4), block)


def test_max_gradient_of_tied_zero_maxima_sums_to_the_output_gradient():
    # quantised messages often tie at exactly 0: the k tied messages share the whole gradient
    msg = torch.tensor([[0.0], [0.0], [-1.0], [2.0]], requires_grad=True)
    dst = torch.tensor([0, 0, 0, 1])
    aggregate(msg, dst, 3, "max").sum().backward()
    torch.testing.assert_close(msg.grad, torch.tensor([[0.5], [0.5], [0.0], [1.0]]))
