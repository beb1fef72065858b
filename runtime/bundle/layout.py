"""What a bundle looks like on disk: conventional file names (shared by the exporter, which
writes them, and the server, which reads them), the file kinds allowed, and the checks on one
file: its path, its ``.npy`` header, its JSON, its hash. Nothing here needs unpickling."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from qgnn.runtime.errors import BundleError

MANIFEST = "manifest.json"
ARCHIVE_SUFFIX = ".qgnn"

# Conventional names inside a bundle, shared by the exporter (writer) and the server (reader).
MODEL_FILE = "model.onnx"
MODEL_FORMAT = "qgnn-onnx"  # manifest model.format of bundles `qgnn export` writes
GRAPH_INDPTR = "graph/indptr.npy"  # int64 (N + 1,), CSR row pointers (manifest graph.adjacency)
GRAPH_INDICES = "graph/indices.npy"  # int64 or int32 (E,), the other endpoint of each edge
GRAPH_IN_DEGREE = "graph/in_degree.npy"  # int64 (N,), full-graph in-degree
GRAPH_LABELS = "graph/labels.npy"  # int64 (N,), -1 = unlabelled (node task)
GRAPH_MASK = "graph/{split}_mask.npy"  # bool (N,), the training run's split (node task)
GRAPH_FEATURES = "graph/features.npy"  # float32 (N, F), or uint8 (N, F) for INT8 models
GRAPH_FEATURE_SCALE = "graph/feature_scale.npy"  # float32 () or (F,), uint8 features only
GRAPH_FEATURE_ZERO_POINT = "graph/feature_zero_point.npy"  # uint8 () or (F,), likewise
EMBEDDINGS = "embeddings/values.npy"  # int8 (N, D), precomputed final node embeddings
EMBEDDING_SCALES = "embeddings/scales.npy"  # float32 (N,), per-node dequantisation scale

KIND_BY_SUFFIX = {".onnx": "onnx", ".npy": "array", ".json": "json"}
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib", ".npz"})
_PART_RE = re.compile(r"[A-Za-z0-9._-]{1,255}")
COPY_CHUNK = 2**20  # bytes per read when copying a file


def check_relative_path(rel: object) -> str:
    """A listed file name, refused unless it is a plain relative POSIX path inside the bundle."""
    if not isinstance(rel, str) or not rel:
        raise BundleError(repr(rel), "file names must be non-empty strings")
    if rel.startswith("/") or "\\" in rel or ".." in PurePosixPath(rel).parts:
        raise BundleError(rel, "path escapes the bundle directory")
    if PurePosixPath(rel).as_posix() != rel or any(p == "." for p in rel.split("/")):
        raise BundleError(rel, "path is not in normal form (no '.', '//' or trailing '/')")
    if not all(_PART_RE.fullmatch(p) for p in rel.split("/")):
        raise BundleError(rel, "path has characters outside A-Z a-z 0-9 . _ - /")
    if rel == MANIFEST:
        raise BundleError(rel, "the manifest cannot list itself")
    suffix = PurePosixPath(rel).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise BundleError(rel, f"{suffix} files need unpickling and are never allowed in a bundle")
    if suffix not in KIND_BY_SUFFIX:
        raise BundleError(rel, f"unsupported file type {suffix or '(none)'!r}; a bundle holds "
                               f"{', '.join(KIND_BY_SUFFIX)} files")
    return rel


def check_npy_header(path: Path, rel: str) -> tuple[np.dtype, tuple[int, ...]]:
    """Reads a .npy header without unpickling anything; refuses object dtypes and sizes that do
    not match the header. Returns (dtype, shape)."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            major, _ = np.lib.format.read_magic(f)
            if major == 1:
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif major in (2, 3):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {major}")
            offset = f.tell()
    except (ValueError, SyntaxError, EOFError, OSError) as exc:
        raise BundleError(rel, f"malformed .npy header: {exc}") from None
    del fortran
    if dtype.hasobject:
        raise BundleError(rel, f"array of dtype {dtype} holds Python objects, which need "
                               f"unpickling; bundles never allow them")
    data = math.prod(shape) * dtype.itemsize
    if size - offset != data:
        raise BundleError(rel, f"array data is {size - offset} bytes but its header promises "
                               f"{data} ({dtype}, shape {shape}); truncated or corrupt")
    return dtype, tuple(shape)


def sha256_file(path: Path) -> str:
    """Streamed SHA-256 of a file (hex)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers, for json.dumps (which refuses them)."""
    if isinstance(value, np.bool_ | np.integer | np.floating):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def json_bytes(obj: Any, rel: str) -> bytes:
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=_plain)
        return (text + "\n").encode()
    except (TypeError, ValueError) as exc:
        raise BundleError(rel, f"not serialisable as strict JSON: {exc}") from None


def parse_json_file(path: Path, rel: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(rel, f"invalid JSON: {exc}") from None

