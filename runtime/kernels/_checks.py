"""Argument conversion shared by the kernel wrappers: refuse what would change meaning, convert
what only changes layout.

Quantised and float tensors must already have the kernel's dtype (casting them silently would
change values); non-contiguous arrays are copied to C order; integer id arrays of any width become
int64 (lossless). Every refusal is a ValueError naming the kernel, the argument and the value.
"""

from __future__ import annotations

import math
import operator
import struct
from typing import Any

import numpy as np

REDUCE_CODES = {"sum": 0, "mean": 1, "max": 2}
MAX_THREADS = 256


def tensor(fn: str, name: str, value: Any, dtype: type, ndim: int | None) -> np.ndarray:
    """``value`` as a C-contiguous array of exactly ``dtype`` with ``ndim`` dimensions."""
    arr = np.asarray(value)
    if arr.dtype != np.dtype(dtype):
        raise ValueError(f"{fn}: {name} must have dtype {np.dtype(dtype)}, got {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{fn}: {name} must have {ndim} dimension(s), got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def optional_tensor(fn: str, name: str, value: Any, dtype: type, ndim: int) -> np.ndarray | None:
    return None if value is None else tensor(fn, name, value, dtype, ndim)


def ids(fn: str, name: str, value: Any) -> np.ndarray:
    """A 1-D integer id array as C-contiguous int64."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        if arr.size == 0 and arr.dtype == np.float64:  # np.asarray([]) of an empty list
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{fn}: {name} must hold integer ids, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{fn}: {name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{fn}: {name} has id {int(arr.max())} beyond int64")
    if arr.dtype == np.int64 and arr.flags.c_contiguous:
        return arr
    return np.ascontiguousarray(arr, dtype=np.int64)


def integer(fn: str, name: str, value: Any, low: int, high: int) -> int:
    """A Python int in [low, high] (bools and floats are refused, numpy integers accepted)."""
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{fn}: {name} must be an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{fn}: {name} must be an integer, got {value!r}") from None
    if not low <= v <= high:
        raise ValueError(f"{fn}: {name} must be in [{low}, {high}], got {v}")
    return v


def zero_point(fn: str, name: str, value: Any) -> int:
    return integer(fn, name, value, 0, 255)


def bits(fn: str, value: Any) -> int:
    """Activation bit width: outputs live in [0, 2^bits - 1] (INT4 is stored in uint8)."""
    return integer(fn, "bits", value, 1, 8)


def threads(fn: str, value: Any) -> int:
    return integer(fn, "num_threads", value, 1, MAX_THREADS)


def positive_f32(fn: str, name: str, value: Any) -> float:
    """A real scalar rounded to float32 (the contract's multiplier/scale type), finite and > 0."""
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{fn}: {name} must be a real scalar, got {value!r}")
    if isinstance(value, float | int | np.floating | np.integer):
        v = float(value)
    else:
        arr = np.asarray(value)
        if arr.ndim != 0 or arr.dtype.kind not in "fiu":
            raise ValueError(f"{fn}: {name} must be a real scalar, got {value!r}")
        v = float(arr)
    try:
        v = struct.unpack("f", struct.pack("f", v))[0]  # round to float32
    except OverflowError:
        v = math.inf
    if not (math.isfinite(v) and v > 0.0):
        raise ValueError(f"{fn}: {name} must be a finite float32 > 0, got {value!r}")
    return v


def reduce_code(fn: str, reduce: Any) -> int:
    if not isinstance(reduce, str) or reduce not in REDUCE_CODES:
        raise ValueError(f"{fn}: reduce must be one of {tuple(REDUCE_CODES)}, got {reduce!r}")
    return REDUCE_CODES[reduce]
