"""Fixtures for end-to-end tests that run a real ``qgnn serve`` process."""

import os
import sys
from pathlib import Path

import pytest

KIT = Path(__file__).resolve().parents[1] / "runtime"


@pytest.fixture
def served_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small real bundle served by the test backend (a numpy model over a CSR graph)."""
    sys.path.insert(0, str(KIT))
    import serving_testkit as tk

    monkeypatch.setenv("QGNN_BACKEND_MODULES", "serving_testkit")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(KIT), os.environ.get("PYTHONPATH")])))
    return tk.write_test_bundle(tmp_path / "toy", tk.random_params(num_nodes=30), name="toy")
