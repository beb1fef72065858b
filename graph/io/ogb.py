"""OGB node-property folders (the layout ``ogbn-*`` archives unpack to), read without ``ogb``.

Layout (Hu et al., NeurIPS 2020, Open Graph Benchmark), every file plain ``.csv`` or ``.csv.gz``
without a header::

    raw/edge.csv          src,dst per line (required)
    raw/node-feat.csv     F floats per line, row i = node i (optional)
    raw/node-label.csv    one label per line; several columns for multi-task sets; nan = none
    raw/num-node-list.csv one line: the number of nodes (optional)
    split/<scheme>/{train,valid,test}.csv   one node id per line (optional)

Edges are kept as stored (ogbn-arxiv is a directed citation graph); ``undirected=True`` adds
reverse edges and drops duplicates, as OGB does for sets whose metadata says add_inverse_edge.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qgnn.graph.container import Graph
from qgnn.graph.io.checks import ids_in_range, require_finite
from qgnn.graph.io.text_table import TextTable

SPLIT_FILES = {"train_mask": "train", "val_mask": "valid", "test_mask": "test"}


def find_csv(folder: Path, stem: str) -> Path | None:
    """``folder/stem.csv`` or ``folder/stem.csv.gz``, whichever exists."""
    return next((p for p in (folder / f"{stem}.csv", folder / f"{stem}.csv.gz") if p.is_file()),
                None)


def _table(path: Path, dtype: type, cols: int | None = None) -> np.ndarray:
    table = TextTable.open(path)
    if cols is not None and table.num_cols != cols:
        raise ValueError(f"{path}: expected {cols} column(s) per line, got {table.num_cols}")
    return table.parse(dtype)


def _labels(path: Path) -> np.ndarray:
    """Float labels with nan -> int64 with -1; a single column becomes ``(N,)``."""
    raw = _table(path, np.float64)
    known = ~np.isnan(raw)
    if (raw[known] != np.round(raw[known])).any() or (raw[known] < 0).any():
        bad = raw[known][(raw[known] != np.round(raw[known])) | (raw[known] < 0)][0]
        raise ValueError(f"{path}: labels must be non-negative integers or nan, got {bad}")
    y = np.where(known, raw, -1).astype(np.int64)
    return y[:, 0] if y.shape[1] == 1 else y


def _split_folder(folder: Path, scheme: str | None) -> Path | None:
    root = folder / "split"
    if not root.is_dir():
        if scheme is not None:
            raise ValueError(f"{folder}: split scheme {scheme!r} requested but there is no "
                             f"split/ folder")
        return None
    schemes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if scheme is None:
        if len(schemes) != 1:
            raise ValueError(f"{root}: found split schemes {schemes}; pass scheme= to pick one")
        scheme = schemes[0]
    if scheme not in schemes:
        raise ValueError(f"{root}: no split scheme {scheme!r}; found {schemes}")
    return root / scheme


def load_ogb_folder(folder: str | Path, *, scheme: str | None = None,
                    undirected: bool = False) -> Graph:
    """Read an OGB node-property folder into a Graph with ``(N,)`` masks from ``split/<scheme>``."""
    folder = Path(folder)
    raw = folder / "raw"
    edge_path = find_csv(raw, "edge")
    if edge_path is None:
        raise ValueError(f"{folder}: missing raw/edge.csv or raw/edge.csv.gz")
    edges = _table(edge_path, np.int64, cols=2)
    feat_path, label_path = find_csv(raw, "node-feat"), find_csv(raw, "node-label")
    x = None if feat_path is None else _table(feat_path, np.float32)
    if x is not None:
        require_finite(feat_path, x)
    y = None if label_path is None else _labels(label_path)

    count_path = find_csv(raw, "num-node-list")
    if count_path is not None:
        counts = _table(count_path, np.int64, cols=1)
        if counts.shape != (1, 1) or counts[0, 0] < 0:
            raise ValueError(f"{count_path}: expected one non-negative node count (a "
                             f"node-property folder holds one graph), got {counts.ravel()[:5]}")
        n = int(counts[0, 0])
    elif x is not None:
        n = x.shape[0]
    elif y is not None:
        n = y.shape[0]
    else:
        n = int(edges.max()) + 1
    for path, arr in ((feat_path, x), (label_path, y)):
        if arr is not None and arr.shape[0] != n:
            raise ValueError(f"{path}: {arr.shape[0]} rows for {n} nodes")
    ids_in_range(edge_path, edges, n, "node id")

    masks = {}
    split = _split_folder(folder, scheme)
    if split is not None:
        for name, stem in SPLIT_FILES.items():
            path = find_csv(split, stem)
            if path is None:
                raise ValueError(f"{split}: missing {stem}.csv or {stem}.csv.gz")
            ids = _table(path, np.int64, cols=1)[:, 0]
            ids_in_range(path, ids, n, "node id")
            masks[name] = np.zeros(n, bool)
            masks[name][ids] = True
    meta = {"format": "ogb", "source": str(folder),
            "split_scheme": None if split is None else split.name}
    try:
        graph = Graph.from_edges(edges[:, 0], edges[:, 1], n, x=x, y=y, name=folder.name,
                                 meta=meta, **masks)
    except ValueError as exc:
        raise ValueError(f"{folder}: {exc}") from None
    return graph.to_undirected() if undirected else graph
