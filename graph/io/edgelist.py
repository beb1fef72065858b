"""Plain edge lists (``src dst [weight]`` per line) with optional feature and label files.

Ids are 0-based integers used as given (no remapping, so row ``i`` of the features is node
``i``). Lines starting with ``#`` or ``%`` (SNAP, KONECT) and blank lines are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qgnn.graph.container import Graph
from qgnn.graph.io.checks import ids_in_range, require_finite
from qgnn.graph.io.text_table import TextTable


def _npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path}: expected a single .npy array, got an archive")
    return arr


def _edges(table: TextTable) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if table.num_cols not in (2, 3):
        raise ValueError(f"{table.path}: expected 2 columns (src dst) or 3 (src dst weight), "
                         f"got {table.num_cols}")
    if table.num_cols == 2:
        ids, weight = table.parse(np.int64), None
    else:
        cells = table.parse(str)
        ids = np.stack([table.convert(cells[:, c], c, np.int64, "node id") for c in (0, 1)],
                       axis=1)
        weight = table.convert(cells[:, 2], 2, np.float32, "edge weight")
        if not np.isfinite(weight).all():
            row = int(np.flatnonzero(~np.isfinite(weight))[0])
            raise ValueError(f"{table.path}, line {table.line_of_row(row)}: non-finite edge "
                             f"weight {weight[row]}")
    if (ids < 0).any():
        row = int(np.flatnonzero((ids < 0).any(axis=1))[0])
        raise ValueError(f"{table.path}, line {table.line_of_row(row)}: negative node id "
                         f"{int(ids[row].min())}")
    return ids[:, 0], ids[:, 1], weight


def _labels(path: Path, n: int | None) -> np.ndarray:
    """``.npy`` (N,) or text: one label per line (node order) or ``node label`` pairs."""
    if path.suffix == ".npy":
        y = _npy(path)
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: expected 1-D integer labels, got {y.shape} {y.dtype}")
        return y.astype(np.int64)
    table = TextTable.open(path)
    if table.num_cols not in (1, 2):
        raise ValueError(f"{path}: expected one label per line or 'node label' pairs, got "
                         f"{table.num_cols} columns")
    rows = table.parse(np.int64)
    if table.num_cols == 1:
        return rows[:, 0]
    if n is None:
        n = int(rows[:, 0].max()) + 1
    ids_in_range(path, rows[:, 0], n)
    y = np.full(n, -1, np.int64)
    y[rows[:, 0]] = rows[:, 1]
    return y


def load_edge_list(path: str | Path, *, features: str | Path | None = None,
                   labels: str | Path | None = None, directed: bool = False,
                   sep: str | None = None, header: bool | None = None) -> Graph:
    """Read an edge list; ``directed=False`` stores both directions without duplicates.

    ``sep=None`` detects comma, else whitespace (tabs included); ``header=None`` skips a first row
    with non-numeric tokens. ``features``: ``.npy`` (N, F); the node count is then N and every
    id must be below it. ``labels``: ``.npy`` (N,), or text with one label per line in node
    order or ``node label`` pairs (nodes not listed get ``-1`` = unlabelled).
    """
    path = Path(path)
    src, dst, weight = _edges(TextTable.open(path, sep=sep, header=header))
    top = int(max(src.max(), dst.max()))
    x = None
    n = top + 1
    if features is not None:
        features = Path(features)
        x = _npy(features)
        if x.ndim != 2 or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise ValueError(f"{features}: expected numeric (N, F) features, got {x.shape} "
                             f"{x.dtype}")
        x = x.astype(np.float32, copy=False)
        require_finite(features, x)
        if x.shape[0] <= top:
            raise ValueError(f"{features}: {x.shape[0]} feature rows but {path} uses node id "
                             f"{top}")
        n = x.shape[0]
    y = None
    if labels is not None:
        labels = Path(labels)
        y = _labels(labels, n if features is not None else None)
        if features is not None and y.shape[0] != n:
            raise ValueError(f"{labels}: {y.shape[0]} labels for {n} nodes (feature rows)")
        if y.shape[0] < n:
            raise ValueError(f"{labels}: {y.shape[0]} labels but {path} uses node id {top}")
        n = y.shape[0]
        if y.size and y.min() < -1:
            raise ValueError(f"{labels}: labels must be >= 0 (or -1 for none), got {y.min()}")
    try:
        graph = Graph.from_edges(src, dst, n, edge_weight=weight, x=x, y=y, name=path.stem,
                                 meta={"format": "edge_list", "source": str(path)})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return graph if directed else graph.to_undirected()
