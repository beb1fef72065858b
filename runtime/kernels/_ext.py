"""Loads the compiled extension once and says why when it is missing.

The extension is built at install time and is optional: a host without a C compiler still installs
qgnn, and the serving engine then runs the portable ONNX function bodies instead.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

_module: ModuleType | None
try:
    _module = importlib.import_module("qgnn.runtime.kernels._qgnn_kernels")
except ImportError as exc:  # built without a compiler, or a broken build
    _module = None
    _reason = f"{type(exc).__name__}: {exc}"
else:
    _reason = ""


class KernelsUnavailableError(RuntimeError):
    """The compiled kernels were not built or cannot be loaded on this host."""


def available() -> bool:
    """Whether the compiled kernels can be called (else use the portable ONNX path)."""
    return _module is not None


def ext() -> ModuleType:
    """The extension module, or KernelsUnavailableError naming the cause and the fix."""
    if _module is None:
        raise KernelsUnavailableError(
            "qgnn's compiled kernels (qgnn.runtime.kernels._qgnn_kernels) are not available "
            f"({_reason}). Reinstall qgnn where a C compiler and numpy>=2 headers are present "
            "(pip install --force-reinstall --no-deps .), or serve with --portable.")
    return _module


def build_info() -> dict[str, Any]:
    """Compiler, ISA dispatch and threading of the loaded extension."""
    return dict(ext().build_info())
