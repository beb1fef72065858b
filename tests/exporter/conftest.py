"""Makes the exporter test kit importable (``import export_testkit``) and runs torch on one
thread in these tests: the models are tiny, and a second thread only spins on a shared box."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from export_testkit import one_torch_thread


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with one_torch_thread():
        yield
