"""qgnn.training.quant: Degree-Quant and plain quantisation-aware training via QuantSites.

Names are resolved lazily so that ``qgnn.training.quant.cli_args`` (parser registration) stays
torch-free.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "QuantConfig": "config", "DegreeProtection": "degree_quant", "make_hooks": "hooks",
    "QuantizedSites": "sites", "quantize_model": "sites", "load_quant_state": "state",
    "quant_extra": "state", "quant_state": "state", "restore_quantized": "state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'qgnn.training.quant' has no attribute {name!r}")
    return getattr(import_module(f"qgnn.training.quant.{_EXPORTS[name]}"), name)
