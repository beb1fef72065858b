"""Single-file graphs stored as numpy ``.npz`` archives (never unpickled).

Recognised layouts, first match wins:

- heterophilous-graphs (Platonov et al., ICLR 2023, e.g. ``tolokers.npz``): ``node_features``
  (N, F), ``node_labels`` (N,), ``edges`` (E, 2) stored once per undirected pair,
  ``train_masks``/``val_masks``/``test_masks`` (S, N);
- PyG-like names: ``x``, ``y``, ``edge_index`` (2, E), ``train_mask``... (N,) or (S, N);
- gnn-benchmark CSR (Shchur et al., 2018): ``adj_data/adj_indices/adj_indptr/adj_shape``,
  ``attr_data/attr_indices/attr_indptr/attr_shape`` or ``attr_matrix``, ``labels``.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.graph.container import SPLITS, Graph

FEATURE_KEYS = ("node_features", "x", "features", "attr_matrix")
LABEL_KEYS = ("node_labels", "y", "labels")
EDGE_KEYS = {"edges": "rows", "edge_index": "columns"}  # how a (2, 2) array is read
MASK_KEYS = {"train_mask": ("train_masks", "train_mask"), "val_mask": ("val_masks", "val_mask"),
             "test_mask": ("test_masks", "test_mask")}
_CSR_PARTS = ("data", "indices", "indptr", "shape")
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


class _Archive:
    """An open ``.npz`` whose every read failure names the file and the key."""

    def __init__(self, path: Path, files: Any) -> None:
        self.path, self.files = path, files

    def has(self, key: str) -> bool:
        return key in self.files.files

    def first(self, keys: tuple[str, ...]) -> str | None:
        return next((k for k in keys if self.has(k)), None)

    def get(self, key: str) -> np.ndarray:
        try:
            return self.files[key]
        except _READ_ERRORS as exc:
            raise ValueError(f"{self.path}: key {key!r} cannot be read ({exc})") from None

    def fail(self, key: str, problem: str) -> ValueError:
        return ValueError(f"{self.path}: key {key!r}: {problem}")

    def csr(self, prefix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """``<prefix>_{data,indices,indptr,shape}`` as checked CSR arrays."""
        data, indices, indptr, shape = (self.get(f"{prefix}_{p}") for p in _CSR_PARTS)
        key = f"{prefix}_shape"
        if shape.shape != (2,) or not np.issubdtype(shape.dtype, np.integer):
            raise self.fail(key, f"expected two integers, got {shape.shape} {shape.dtype}")
        rows, cols = int(shape[0]), int(shape[1])
        for part, arr in (("indices", indices), ("indptr", indptr)):
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
                raise self.fail(f"{prefix}_{part}", f"expected 1-D integers, got {arr.shape} "
                                f"{arr.dtype}")
        if (indptr.size != rows + 1 or indptr[0] != 0 or indptr[-1] != indices.size
                or (np.diff(indptr) < 0).any()):
            raise self.fail(f"{prefix}_indptr", f"not a CSR row pointer for {rows} rows and "
                            f"{indices.size} entries")
        if data.shape != indices.shape:
            raise self.fail(f"{prefix}_data", f"{data.size} values for {indices.size} entries")
        if indices.size and (indices.min() < 0 or indices.max() >= cols):
            raise self.fail(f"{prefix}_indices", f"column index out of range [0, {cols})")
        return data, indices.astype(np.int64), indptr.astype(np.int64), (rows, cols)


def _features(z: _Archive) -> np.ndarray | None:
    key = z.first(FEATURE_KEYS)
    if key is not None:
        x = z.get(key)
        if x.ndim != 2 or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise z.fail(key, f"expected numeric (N, F) features, got {x.shape} {x.dtype}")
        return x.astype(np.float32, copy=False)
    if z.has("attr_data"):
        data, indices, indptr, shape = z.csr("attr")
        x = np.zeros(shape, np.float32)
        rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
        np.add.at(x, (rows, indices), data.astype(np.float32))
        return x
    return None


def _labels(z: _Archive) -> np.ndarray | None:
    key = z.first(LABEL_KEYS)
    if key is None:
        return None
    y = z.get(key)
    if y.ndim not in (1, 2) or not np.issubdtype(y.dtype, np.number):
        raise z.fail(key, f"expected numeric (N,) labels, got {y.shape} {y.dtype}")
    return y


def _edges(z: _Archive) -> tuple[str, np.ndarray, np.ndarray, np.ndarray | None, int]:
    """``(key, src, dst, weight or None, node count implied by the storage)``."""
    key = z.first(tuple(EDGE_KEYS))
    if key is not None:
        e = z.get(key)
        if e.ndim != 2 or 2 not in e.shape or not np.issubdtype(e.dtype, np.integer):
            raise z.fail(key, f"expected integer (E, 2) or (2, E) node pairs, got {e.shape} "
                         f"{e.dtype}")
        if e.shape[1] != 2 or (e.shape == (2, 2) and EDGE_KEYS[key] == "columns"):
            e = e.T
        return key, e[:, 0].astype(np.int64), e[:, 1].astype(np.int64), None, 0
    if z.has("adj_data"):
        data, indices, indptr, shape = z.csr("adj")
        src = np.repeat(np.arange(shape[0], dtype=np.int64), np.diff(indptr))
        weight = None if np.all(data == 1) else data.astype(np.float32)
        return "adj_indices", src, indices, weight, max(shape)
    raise ValueError(f"{z.path}: no edges: expected one of the keys {', '.join(EDGE_KEYS)} or "
                     f"the adj_* CSR arrays; the archive holds {', '.join(z.files.files)}")


def _mask(z: _Archive, key: str, n: int) -> np.ndarray:
    m = z.get(key)
    if m.ndim == 2 and m.shape[-1] != n and m.shape[0] == n:
        m = m.T  # (N, S) -> (S, N)
    if m.ndim not in (1, 2) or m.shape[-1] != n:
        raise z.fail(key, f"expected a mask of shape ({n},) or (S, {n}), got {m.shape}")
    if m.dtype != np.bool_:
        if not np.issubdtype(m.dtype, np.integer) or not np.isin(m, (0, 1)).all():
            raise z.fail(key, f"expected a boolean or 0/1 mask, got {m.dtype}")
        m = m.astype(bool)
    return m


def load_npz(path: str | Path, *, undirected: bool = True) -> Graph:
    """Read one ``.npz`` graph. ``undirected`` adds every reverse edge and drops duplicates
    (Tolokers stores each pair once: 519,000 pairs -> 1,038,000 directed edges)."""
    path = Path(path)
    try:
        files = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except _READ_ERRORS as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({exc})") from None
    if not isinstance(files, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: expected an .npz archive of named arrays, got a single "
                         f"{type(files).__name__}")
    with files:
        z = _Archive(path, files)
        x, y = _features(z), _labels(z)
        edge_key, src, dst, weight, implied = _edges(z)
        top = int(max(src.max(), dst.max())) if src.size else -1
        n = next((len(a) for a in (x, y) if a is not None), max(implied, top + 1))
        if src.size and (top >= n or min(src.min(), dst.min()) < 0):
            bad = top if top >= n else int(min(src.min(), dst.min()))
            raise z.fail(edge_key, f"node id {bad} out of range [0, {n})")
        if y is not None and len(y) != n:
            raise z.fail(z.first(LABEL_KEYS), f"{len(y)} labels for {n} nodes (feature rows)")
        masks = {name: _mask(z, key, n) for name in SPLITS
                 if (key := z.first(MASK_KEYS[name])) is not None}
    try:
        graph = Graph.from_edges(src, dst, n, edge_weight=weight, x=x, y=y, name=path.stem,
                                 meta={"format": "npz", "source": str(path)}, **masks)
        return graph.to_undirected() if undirected else graph
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
