"""Request validation shared by every front end (qgnn.v1, KServe v2) and the data plane.

Every check here runs on the values as the client sent them, *before* any cast: a cast to a
narrower type wraps silently (300 as UINT8 is 44, node 44's answer), a cast of a huge shape
raises from numpy (INTERNAL), and ``int()`` of a Unicode digit accepts "١" as 1 and fails on
"²". So versions are ASCII digits only, shapes are bounded per dimension and in rank before
their product is taken, typed contents are range-checked in the proto field's own wide type
against the declared datatype, and ids are checked against int64 and the graph. Every refusal
is an :class:`InvalidRequestError` (INVALID_ARGUMENT) or :class:`LimitExceededError`
(RESOURCE_EXHAUSTED) naming the field and the value, clipped so that a hostile value never
makes an error message (gRPC trailing metadata) too large.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qgnn.runtime.bundle.manifest import MODEL_NAME_PATTERN
from qgnn.runtime.errors import InvalidRequestError, LimitExceededError

_INT64_MAX = int(np.iinfo(np.int64).max)
MAX_NAME_CHARS = 128  # the longest name MODEL_NAME_PATTERN admits: nothing longer can be loaded
MAX_VERSION_DIGITS = 18  # < 2**63 - 1, so a version always fits the int64 of qgnn.v1
MAX_RANK = 8  # inputs are rank 1 or 2; anything past this is refused before numpy sees it
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux
_SHOWN_CHARS = 48


def clip(text: str, limit: int = _SHOWN_CHARS) -> str:
    """``text`` as it may appear in an error message: whole when short, else its start and its
    length (a 16 KB name echoed whole would exceed gRPC's metadata limit)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


# ---------------------------------------------------------------------------------------------
# Names and versions


def model_name(name: str, field: str = "model.name", *, required: bool = True) -> str:
    """A model name a request may address: non-empty (when ``required``), no longer than a
    loadable name, and of the characters bundles allow."""
    if not name:
        if required:
            raise InvalidRequestError(field, "", "a model name is required")
        return name
    if len(name) > MAX_NAME_CHARS:
        raise InvalidRequestError(field, clip(name), f"model names have at most "
                                                     f"{MAX_NAME_CHARS} characters")
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise InvalidRequestError(field, clip(name), f"not a model name (names match "
                                                     f"{MODEL_NAME_PATTERN.pattern})")
    return name


def version_text(text: str, field: str = "model_version") -> int | None:
    """A KServe version string: '' is the newest (None), otherwise ASCII decimal digits of a
    version >= 1. ``str.isdigit`` and ``int`` accept other scripts' digits and superscripts, so
    neither is used on the raw text."""
    if text == "":
        return None
    if len(text) > MAX_VERSION_DIGITS or not text.isascii() or not text.isdigit():
        raise InvalidRequestError(field, clip(text), "must be a decimal version number of ASCII "
                                                     "digits, or empty for the newest")
    version = int(text)
    if version < 1:
        raise InvalidRequestError(field, clip(text), "versions are >= 1 (leave it empty for the "
                                                     "newest)")
    return version


def version_number(version: int | None, field: str = "model.version") -> int | None:
    """A qgnn.v1 version (int64 in the proto): None (unset) is the newest, else >= 1."""
    if version is not None and version < 1:
        raise InvalidRequestError(field, int(version), "versions are >= 1 (leave it unset for "
                                                       "the newest)")
    return version


def bundle_path(path: str, field: str = "path") -> str:
    """A LoadModel path: given, and no longer than the OS allows (so it is never echoed
    whole)."""
    if not path:
        raise InvalidRequestError(field, "", "the bundle path on the server is required")
    if len(path) > MAX_PATH_CHARS or "\x00" in path:
        raise InvalidRequestError(field, clip(path), f"not a path (at most {MAX_PATH_CHARS} "
                                                     f"characters, no NUL)")
    return path


# ---------------------------------------------------------------------------------------------
# Tensors (KServe datatypes)


@dataclass(frozen=True)
class Datatype:
    """One KServe datatype: its little-endian numpy dtype, the typed-contents field that
    carries it and that field's own numpy type (what the proto already guarantees)."""

    name: str
    dtype: np.dtype
    contents_field: str
    field_dtype: np.dtype

    @property
    def is_integer(self) -> bool:
        return self.dtype.kind in "iu"


def _dt(name: str, dtype: str, field: str, field_dtype: str) -> tuple[str, Datatype]:
    return name, Datatype(name, np.dtype(dtype), field, np.dtype(field_dtype))


DATATYPES: dict[str, Datatype] = dict([
    _dt("BOOL", "|b1", "bool_contents", "|b1"), _dt("INT8", "|i1", "int_contents", "<i4"),
    _dt("INT16", "<i2", "int_contents", "<i4"), _dt("INT32", "<i4", "int_contents", "<i4"),
    _dt("INT64", "<i8", "int64_contents", "<i8"), _dt("UINT8", "|u1", "uint_contents", "<u4"),
    _dt("UINT16", "<u2", "uint_contents", "<u4"), _dt("UINT32", "<u4", "uint_contents", "<u4"),
    _dt("UINT64", "<u8", "uint64_contents", "<u8"), _dt("FP32", "<f4", "fp32_contents", "<f4"),
    _dt("FP64", "<f8", "fp64_contents", "<f8"),
])
ID_DATATYPES = tuple(name for name, d in DATATYPES.items() if d.is_integer)
CONTENTS_FIELDS = ("bool_contents", "int_contents", "int64_contents", "uint_contents",
                   "uint64_contents", "fp32_contents", "fp64_contents", "bytes_contents")


def datatype(name: str, field: str) -> Datatype:
    if name not in DATATYPES:
        raise InvalidRequestError(field, clip(name), f"unsupported; use one of "
                                                     f"{', '.join(DATATYPES)}")
    return DATATYPES[name]


def vector_length(shape: Sequence[int], max_elements: int) -> int | None:
    """The length of a rank-1 shape within ``max_elements``, the common case, decided at once;
    None for any other shape (:func:`tensor_shape` checks those in full)."""
    if len(shape) == 1:
        size = shape[0]
        if 0 <= size <= max_elements:
            return int(size)
    return None


def tensor_shape(shape: Sequence[int], field: str, max_elements: int) -> tuple[tuple[int, ...],
                                                                              int]:
    """A declared shape and its element count. Rank and every dimension are bounded before the
    product is taken, so no shape reaches numpy that numpy cannot build (``[1] * 65``,
    ``[0, 2**63 - 1]``) and a product never overflows."""
    size = vector_length(shape, max_elements)
    if size is not None:
        return (size,), size
    if len(shape) > MAX_RANK:
        raise InvalidRequestError(field, f"rank {len(shape)}", f"at most {MAX_RANK} dimensions")
    dims = tuple(int(s) for s in shape)
    for axis, size in enumerate(dims):
        if size < 0:
            raise InvalidRequestError(f"{field}[{axis}]", size, "dimensions must be >= 0")
    count = math.prod(dims)  # Python integers: at most 8 factors, never overflows
    if count > max_elements:
        raise LimitExceededError(field, count, max_elements)
    for axis, size in enumerate(dims):  # only an empty tensor gets here with a huge dimension
        if size > max_elements:
            raise InvalidRequestError(f"{field}[{axis}]", size,
                                      f"a dimension over {max_elements} (the most elements a "
                                      f"request may have), in a shape of {count} elements")
    return dims, count


def typed_contents(values: Sequence[Any], dt: Datatype, field: str) -> np.ndarray:
    """Typed contents as ``dt``'s numpy type, refusing any value outside the datatype's range
    (the proto field is wider: int_contents is int32 for INT8 and INT16, uint_contents uint32
    for UINT8 and UINT16), so no value is ever wrapped."""
    wide = np.fromiter(values, dt.field_dtype.newbyteorder("="), len(values))
    if dt.is_integer and dt.dtype.itemsize < dt.field_dtype.itemsize:
        info = np.iinfo(dt.dtype)
        bad = (wide < info.min) | (wide > info.max)
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidRequestError(f"{field}[{i}]", int(wide[i]),
                                      f"out of range for {dt.name} ({info.min}..{info.max})")
    return wide.astype(dt.dtype.newbyteorder("="), copy=False)


def raw_contents(data: bytes, dt: Datatype, count: int, shape: tuple[int, ...], field: str
                 ) -> np.ndarray:
    """Raw little-endian bytes of ``count`` elements (every bit pattern is in range)."""
    need = count * dt.dtype.itemsize
    if len(data) != need:
        raise InvalidRequestError(field, f"{len(data)} bytes", f"shape {list(shape)} of "
                                                               f"{dt.name} needs {need} bytes")
    return np.frombuffer(data, dtype=dt.dtype)


# ---------------------------------------------------------------------------------------------
# Ids


def as_ids(values: Any, field: str) -> np.ndarray:
    """Any integer sequence as int64 (n,); refuses floats, bools, non-1-D input and unsigned
    values past int64 (never wrapped negative)."""
    if is_int64_ids(values):
        return values
    arr = np.asarray(values)
    if arr.dtype == object or arr.dtype.kind not in "iu":
        if arr.size == 0:
            return np.zeros(0, np.int64)
        raise InvalidRequestError(field, str(arr.dtype), "ids must be integers")
    if arr.ndim != 1:
        raise InvalidRequestError(field, list(arr.shape), "ids must be a 1-D list")
    if arr.dtype.kind == "u" and arr.size and arr.max() > _INT64_MAX:
        i = int(np.argmax(arr > _INT64_MAX))
        raise InvalidRequestError(f"{field}[{i}]", int(arr[i]), "id does not fit in int64")
    return arr.astype(np.int64, copy=False)


_INT64 = np.dtype(np.int64)


def is_int64_ids(values: Any) -> bool:
    """Whether ``values`` is already what :func:`as_ids` returns (a 1-D int64 array): the ids
    both front ends decode, recognised without a conversion."""
    return type(values) is np.ndarray and values.dtype is _INT64 and values.ndim == 1


# Up to this many ids, Python's min/max over a list beat numpy's reductions, whose fixed cost
# (a few microseconds each) dominates a one-id request.
_SMALL = 64


def id_range(ids: np.ndarray) -> tuple[int, int]:
    """(smallest, largest) of a non-empty integer array, cheaply for the small arrays most
    requests carry."""
    if len(ids) <= _SMALL:
        values = ids.tolist()
        return min(values), max(values)
    return int(ids.min()), int(ids.max())


def check_ids(ids: np.ndarray, field: str, num_nodes: int, model: str,
              extra: np.ndarray | None = None) -> None:
    """Every id in [0, num_nodes) or in ``extra`` (inductive ids); else names the first bad
    one."""
    if not len(ids):
        return
    lo, hi = id_range(ids)
    if lo >= 0 and hi < num_nodes:  # the common case, decided without building a mask
        return
    bad = (ids < 0) | (ids >= num_nodes)
    if extra is not None and len(extra):
        bad &= ~np.isin(ids, extra)
    if bad.any():
        i = int(np.argmax(bad))
        what = "negative" if ids[i] < 0 else "not a node of the graph"
        raise InvalidRequestError(f"{field}[{i}]", int(ids[i]),
                                  f"{what}; model {model} has node ids 0..{num_nodes - 1}"
                                  + (" and this request's inductive node ids"
                                     if extra is not None and len(extra) else ""))
