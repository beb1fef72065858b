"""Planetoid citation graphs (Cora, CiteSeer) from the original ``ind.<name>.*`` files.

File roles (Yang et al., ICML 2016, github.com/kimiyoung/planetoid): ``allx``/``ally`` hold the
features and one-hot labels of nodes ``0..len(allx)-1``; ``tx``/``ty`` those of the test nodes,
row ``j`` belonging to node ``test.index[j]``; ``y`` only fixes the training-set size (its rows are
``ally[:len(y)]``, as is ``x`` of ``allx``, so ``x`` is not read); ``graph`` maps node -> neighbour
list. The standard split: train = the first ``len(y)`` nodes, val = the next 500, test =
``test.index``. CiteSeer has ids inside the test range that are absent from ``test.index``; those
nodes get zero features, label ``-1`` and no mask (PyTorch Geometric also gives them zero rows).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.graph.container import Graph
from qgnn.graph.io.safe_pickle import CsrState, load_pickle
from qgnn.graph.io.text_table import TextTable

NUM_VAL = 500


def _matrix(path: Path, obj: Any) -> np.ndarray:
    """A pickled csr_matrix or 2-D numeric array as a dense float32 array."""
    if isinstance(obj, CsrState):
        return obj.to_dense(np.float32)
    if isinstance(obj, np.ndarray) and obj.ndim == 2 and (
            np.issubdtype(obj.dtype, np.number) or obj.dtype == np.bool_):
        return obj
    shape = getattr(obj, "shape", "")
    raise ValueError(f"{path}: expected a sparse matrix or 2-D numeric array, got "
                     f"{type(obj).__name__} {shape}")


def _labels(path: Path, onehot: np.ndarray) -> np.ndarray:
    """One-hot rows -> class ids; an all-zero row means unlabelled (-1)."""
    positive = onehot > 0
    count = positive.sum(axis=1)
    if (count > 1).any():
        row = int(np.flatnonzero(count > 1)[0])
        raise ValueError(f"{path}: row {row} has {int(count[row])} labels; Planetoid labels "
                         f"are one-hot")
    return np.where(count == 1, positive.argmax(axis=1), -1).astype(np.int64)


def _adjacency_lists(path: Path, obj: Any) -> tuple[np.ndarray, np.ndarray]:
    """``{node: [neighbours]}`` -> COO ``(src, dst)``, without a Python loop per edge."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict of adjacency lists, got {type(obj).__name__}")
    lists = list(obj.values())
    if not all(isinstance(v, list | tuple) for v in lists):
        raise ValueError(f"{path}: every adjacency entry must be a list of node ids")
    keys = np.array(list(obj.keys()))
    dst = np.array(list(itertools.chain.from_iterable(lists)))
    for what, arr in (("node ids (keys)", keys), ("neighbour ids", dst)):
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{path}: {what} must be integers, got {arr.dtype}")
    keys, dst = keys.astype(np.int64), dst.astype(np.int64)
    src = np.repeat(keys, np.fromiter(map(len, lists), np.int64, count=len(lists)))
    if src.size and min(int(src.min()), int(dst.min())) < 0:
        raise ValueError(f"{path}: negative node id {min(int(src.min()), int(dst.min()))}")
    return src, dst


def _symmetric_simple(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Both directions of every edge, self-loops and duplicates dropped (as PyG does)."""
    both_src, both_dst = np.concatenate([src, dst]), np.concatenate([dst, src])
    keep = both_src != both_dst
    key = np.unique(both_src[keep] * n + both_dst[keep])
    return key // n, key % n


def load_planetoid(folder: str | Path, name: str, *, num_val: int = NUM_VAL) -> Graph:
    """Read ``folder/ind.<name>.{y,tx,ty,allx,ally,graph,test.index}`` into one Graph.

    ``x`` float32 ``(N, F)``; ``y`` int64 with ``-1`` for nodes without a label row; single
    ``(N,)`` train/val/test masks; edges symmetric without self-loops or duplicates.
    """
    folder, name = Path(folder), name.lower()

    def file(part: str) -> Path:
        return folder / f"ind.{name}.{part}"

    allx = _matrix(file("allx"), load_pickle(file("allx")))
    tx = _matrix(file("tx"), load_pickle(file("tx")))
    ally = _labels(file("ally"), _matrix(file("ally"), load_pickle(file("ally"))))
    ty = _labels(file("ty"), _matrix(file("ty"), load_pickle(file("ty"))))
    num_train = _matrix(file("y"), load_pickle(file("y"))).shape[0]
    src, dst = _adjacency_lists(file("graph"), load_pickle(file("graph")))
    test_table = TextTable.open(file("test.index"), header=False)
    if test_table.num_cols != 1:
        raise ValueError(f"{file('test.index')}: expected one node id per line, got "
                         f"{test_table.num_cols} columns")
    test = test_table.parse(np.int64)[:, 0]

    num_known = allx.shape[0]
    if ally.shape[0] != num_known:
        raise ValueError(f"{file('ally')}: {ally.shape[0]} label rows but allx has {num_known}")
    if tx.shape[0] != test.size or ty.shape[0] != test.size:
        raise ValueError(f"{file('tx')}: tx has {tx.shape[0]} rows and ty {ty.shape[0]}, but "
                         f"test.index lists {test.size} nodes")
    if tx.shape[1] != allx.shape[1]:
        raise ValueError(f"{file('tx')}: {tx.shape[1]} features but allx has {allx.shape[1]}")
    if num_train + num_val > num_known:
        raise ValueError(f"{file('y')}: {num_train} training + {num_val} validation nodes exceed "
                         f"the {num_known} rows of allx")
    if test.size and int(test.min()) < 0:
        raise ValueError(f"{file('test.index')}: negative test id {int(test.min())}")
    if test.size and int(test.min()) < num_known:
        raise ValueError(f"{file('test.index')}: test id {int(test.min())} overlaps the allx "
                         f"rows [0, {num_known})")
    if np.unique(test).size != test.size:
        raise ValueError(f"{file('test.index')}: repeated test ids")

    n = max(num_known, int(test.max()) + 1 if test.size else 0)
    if src.size and int(max(src.max(), dst.max())) >= n:
        raise ValueError(f"{file('graph')}: node id {int(max(src.max(), dst.max()))} is beyond "
                         f"the {n} nodes that allx and test.index describe")
    x = np.zeros((n, allx.shape[1]), np.float32)
    x[:num_known], x[test] = allx, tx
    y = np.full(n, -1, np.int64)
    y[:num_known], y[test] = ally, ty
    described = np.zeros(n, bool)
    described[:num_known] = described[test] = True
    masks = {k: np.zeros(n, bool) for k in ("train_mask", "val_mask", "test_mask")}
    masks["train_mask"][:num_train] = True
    masks["val_mask"][num_train:num_train + num_val] = True
    masks["test_mask"][test] = True
    src, dst = _symmetric_simple(src, dst, n)
    meta = {"format": "planetoid", "source": str(folder),
            "featureless_nodes": np.flatnonzero(~described)}
    try:
        return Graph.from_edges(src, dst, n, x=x, y=y, name=name, meta=meta, **masks)
    except ValueError as exc:
        raise ValueError(f"{folder} ({name}): {exc}") from None
