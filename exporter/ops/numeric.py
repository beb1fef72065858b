"""Numpy pieces the reference implementations share: input checks, segment ids, requantisation.

The references are the executable form of the spec: they validate their inputs (a clear
ValueError naming the field) and compute the contract's integers with plain integer arithmetic,
independently of how the ONNX function bodies get there.
"""

from __future__ import annotations

import numpy as np

INT32_MAX = int(np.iinfo(np.int32).max)
REDUCES = ("sum", "mean", "max")


def check_reduce(op: str, reduce: str) -> str:
    if reduce not in REDUCES:
        raise ValueError(f"{op}: attribute reduce must be one of {REDUCES}, got {reduce!r}")
    return reduce


def check_bits(op: str, bits: int, field: str = "bits") -> int:
    if not 1 <= int(bits) <= 8:
        raise ValueError(f"{op}: attribute {field} must be in [1, 8], got {bits!r}")
    return int(bits)


def check_array(op: str, field: str, value: object, dtype: type, ndim: int) -> np.ndarray:
    """``value`` as an ndarray of exactly ``dtype`` and rank ``ndim`` (no silent conversion)."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{op}: {field} must be a numpy array, got {type(value).__name__}")
    if value.dtype != np.dtype(dtype):
        raise ValueError(f"{op}: {field} must be {np.dtype(dtype)}, got {value.dtype}")
    if value.ndim != ndim:
        raise ValueError(f"{op}: {field} must have rank {ndim}, got shape {value.shape}")
    return value


def check_scale(op: str, field: str, value: object) -> np.float32:
    """A float32 scalar scale > 0 (rank 0, or shape (1,) as ONNX quantisation ops allow)."""
    arr = np.asarray(value)
    if arr.dtype != np.float32 or arr.size != 1 or arr.ndim > 1:
        raise ValueError(f"{op}: {field} must be a float32 scalar, got {arr.dtype} {arr.shape}")
    scale = arr.reshape(())[()]
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"{op}: {field} must be finite and > 0, got {scale!r}")
    return scale


def check_zero_point(op: str, field: str, value: object) -> int:
    arr = np.asarray(value)
    if arr.dtype != np.uint8 or arr.size != 1 or arr.ndim > 1:
        raise ValueError(f"{op}: {field} must be a uint8 scalar, got {arr.dtype} {arr.shape}")
    return int(arr.reshape(())[()])


def check_indptr(op: str, indptr: object, num_edges: int | None = None,
                 edges_field: str = "len(src)") -> np.ndarray:
    """Validated CSR pointer (D + 1,): starts at 0, never decreases, ends at ``num_edges``."""
    indptr = check_array(op, "indptr", indptr, np.int64, 1)
    if indptr.size == 0:
        raise ValueError(f"{op}: indptr must hold at least one entry (D + 1 >= 1)")
    if indptr[0] != 0:
        raise ValueError(f"{op}: indptr must start with 0, got {int(indptr[0])}")
    steps = np.diff(indptr)
    if np.any(steps < 0):
        bad = int(np.flatnonzero(steps < 0)[0])
        raise ValueError(f"{op}: indptr must be non-decreasing, but indptr[{bad + 1}] = "
                         f"{indptr[bad + 1]} < indptr[{bad}] = {indptr[bad]}")
    if num_edges is not None and indptr[-1] != num_edges:
        raise ValueError(f"{op}: indptr[-1] = {indptr[-1]} must equal {edges_field} = "
                         f"{num_edges}")
    return indptr


def check_csr(op: str, indptr: object, src: object, num_src: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated (indptr (D + 1,), src (E,) with entries in [0, num_src))."""
    src = check_array(op, "src", src, np.int64, 1)
    indptr = check_indptr(op, indptr, src.size)
    check_index(op, "src", src, num_src)
    return indptr, src


def check_index(op: str, field: str, index: np.ndarray, num_src: int, pad: bool = False) -> None:
    """Indices in [0, num_src) (or -1 = padding when ``pad``)."""
    low = -1 if pad else 0
    bad = (index < low) | (index >= num_src)
    if np.any(bad):
        value = int(index[bad][0])
        raise ValueError(f"{op}: {field} holds {value}, outside [{low}, {num_src}) "
                         f"(the source rows)")


def edge_dst(indptr: np.ndarray) -> np.ndarray:
    """(E,) int64 destination of each edge of a CSR-over-destinations structure."""
    return np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))


def check_accumulator(op: str, acc: np.ndarray) -> None:
    """The contract accumulates in int32: refuse inputs whose exact sum does not fit."""
    worst = int(np.abs(acc).max(initial=0))
    if worst > INT32_MAX:
        raise ValueError(f"{op}: an int32 accumulator overflows (|acc| = {worst} > {INT32_MAX}); "
                         f"the destination's in-degree is too large for int32 accumulation")
