"""Fixtures for the deployment checks: the qgnn_deploy package of deploy/ (not part of the
installed qgnn distribution, so its folder is put on sys.path here)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("yaml", reason="PyYAML is needed to read the deployment files; install the "
                                   "dev extra (pyyaml>=6)")

ROOT = Path(__file__).resolve().parents[2]


def load_validate() -> ModuleType:
    """deploy/qgnn_deploy, the checks behind deploy/validate.py."""
    deploy = str(ROOT / "deploy")
    if deploy not in sys.path:
        sys.path.insert(0, deploy)
    return importlib.import_module("qgnn_deploy")


@pytest.fixture(scope="session")
def validate() -> ModuleType:
    return load_validate()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
