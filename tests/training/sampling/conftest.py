"""One intra-op torch thread for these tests: the ops are tiny, and on a small shared machine
two spinning OpenMP threads make each one up to 100x slower (the sampling threads need the
other core)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
