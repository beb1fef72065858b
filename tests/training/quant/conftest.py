"""Quantisation tests run many tiny training steps: one intra-op thread is faster for tensors this
small and immune to oversubscription when the test run shares its cores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
