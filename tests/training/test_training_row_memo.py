"""The owner-sum row memo: both sides remember the same first rows up to a capacity, and the
requester gets back exactly the rows it stored."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qgnn.training.distributed.row_memo import RowMemo


def test_owner_and_requester_books_agree_up_to_the_capacity() -> None:
    owner, requester = RowMemo(2), RowMemo(2)
    owner.reset([0, 3])
    requester.reset([3, 0])
    rows = torch.arange(8, dtype=torch.float32).reshape(4, 2)
    ids = np.array([40, 10, 30, 20])
    owner.admit(1, ids)
    requester.admit(0, ids, rows)
    assert owner.known(1, np.array([10, 20, 30, 40])).tolist() == [True, False, True, True]
    assert requester.known(0, np.array([10, 20, 30, 40])).tolist() == [True, False, True, True]
    assert torch.equal(requester.lookup(0, np.array([30, 40, 10])), rows[[2, 0, 1]])
    owner.admit(1, np.array([20]))  # full: nothing more is remembered
    assert not owner.known(1, np.array([20]))[0]
    assert requester.nbytes() == 3 * 8 + 3 * 2 * 4


def test_reset_forgets_and_lookup_of_nothing_is_an_error() -> None:
    memo = RowMemo(2)
    memo.reset([2, 2])
    memo.admit(1, np.array([5]), torch.ones((1, 3)))
    memo.reset([2, 2])
    assert not memo.known(1, np.array([5]))[0]
    with pytest.raises(ValueError, match="no rows remembered"):
        memo.lookup(1, np.array([5]))
