"""OGB node-property folders written in tmp_path, plain and gzip."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from qgnn.graph.io.ogb import load_ogb_folder

EDGES = np.array([[0, 1], [1, 2], [2, 0], [3, 4], [1, 2]])  # directed, one duplicate
FEAT = np.array([[0.5, -1.0], [1.25, 0.0], [2.0, 3.0], [0.0, 0.0], [1.0, 1.0], [7.0, 8.0]])
LABEL = ["3", "0", "nan", "1", "2", "0"]
SPLIT = {"train": [0, 1, 3], "valid": [4], "test": [5, 2]}


def _put(path: Path, lines: list[str], gz: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if gz:
        Path(f"{path}.gz").write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


def _folder(root: Path, *, gz: bool, num_nodes: int | None = None, schemes=("time",)) -> Path:
    folder = root / "ogbn-toy"
    _put(folder / "raw" / "edge.csv", [f"{a},{b}" for a, b in EDGES], gz)
    _put(folder / "raw" / "node-feat.csv", [",".join(map(str, r)) for r in FEAT], gz)
    _put(folder / "raw" / "node-label.csv", LABEL, gz)
    if num_nodes is not None:
        _put(folder / "raw" / "num-node-list.csv", [str(num_nodes)], gz)
    for scheme in schemes:
        for part, ids in SPLIT.items():
            _put(folder / "split" / scheme / f"{part}.csv", [str(i) for i in ids], gz)
    return folder


@pytest.mark.parametrize("gz", [False, True], ids=["csv", "csv.gz"])
def test_reads_every_file(tmp_path, gz):
    g = load_ogb_folder(_folder(tmp_path, gz=gz, num_nodes=6))
    assert g.num_nodes == 6 and g.name == "ogbn-toy" and g.meta["split_scheme"] == "time"
    np.testing.assert_array_equal(g.x, FEAT.astype(np.float32))
    assert g.y.tolist() == [3, 0, -1, 1, 2, 0]  # nan -> unlabelled
    src, dst = g.edge_index()
    assert sorted(zip(src.tolist(), dst.tolist(), strict=True)) == sorted(map(tuple,
                                                                              EDGES.tolist()))
    assert np.flatnonzero(g.train_mask).tolist() == [0, 1, 3]
    assert np.flatnonzero(g.val_mask).tolist() == [4]
    assert np.flatnonzero(g.test_mask).tolist() == [2, 5]


def test_undirected_adds_reverse_edges_once(tmp_path):
    g = load_ogb_folder(_folder(tmp_path, gz=False), undirected=True)
    assert g.is_symmetric() and g.num_edges == 8  # 4 distinct pairs, both directions


def test_node_count_file_adds_isolated_nodes_and_must_match_features(tmp_path):
    folder = _folder(tmp_path, gz=False, num_nodes=7)
    with pytest.raises(ValueError, match=r"node-feat\.csv: 6 rows for 7 nodes"):
        load_ogb_folder(folder)


def test_without_features_labels_or_splits(tmp_path):
    folder = tmp_path / "bare"
    _put(folder / "raw" / "edge.csv", ["0,4", "4,2"], gz=False)
    g = load_ogb_folder(folder)
    assert g.num_nodes == 5 and g.x is None and g.y is None and g.train_mask is None


def test_several_schemes_need_a_choice(tmp_path):
    folder = _folder(tmp_path, gz=False, schemes=("time", "random"))
    with pytest.raises(ValueError, match=r"found split schemes \['random', 'time'\]"):
        load_ogb_folder(folder)
    assert load_ogb_folder(folder, scheme="random").meta["split_scheme"] == "random"
    with pytest.raises(ValueError, match="no split scheme 'species'"):
        load_ogb_folder(folder, scheme="species")


def test_multi_task_labels_keep_their_columns(tmp_path):
    folder = tmp_path / "proteins"
    _put(folder / "raw" / "edge.csv", ["0,1", "1,2"], gz=False)
    _put(folder / "raw" / "node-label.csv", ["1,0", "0,1", "1,1"], gz=False)
    assert load_ogb_folder(folder).y.tolist() == [[1, 0], [0, 1], [1, 1]]


@pytest.mark.parametrize("file, lines, message", [
    ("raw/edge.csv", ["0,1,2"], r"edge\.csv: expected 2 column\(s\) per line, got 3"),
    ("raw/edge.csv", ["0,1", "1;2"], r"edge\.csv, line 2: 1 columns, expected 2"),
    ("raw/edge.csv", ["0,1", "1,9"], r"edge\.csv: node id 9 out of range \[0, 6\)"),
    ("raw/edge.csv", ["0,1", "-1,2"], r"edge\.csv: node id -1 out of range"),
    ("raw/node-feat.csv", ["1,2"] * 5 + ["1,nan"],
     r"node-feat\.csv: non-finite feature nan at row 5, column 1"),
    ("raw/node-feat.csv", ["1,2"] * 5 + ["1,abc"],
     r"node-feat\.csv, line 6, column 2: 'abc' is not a number"),
    ("raw/node-label.csv", ["0", "1.5", "0", "0", "0", "0"],
     r"node-label\.csv: labels must be non-negative integers or nan, got 1\.5"),
    ("split/time/valid.csv", ["6"], r"valid\.csv: node id 6 out of range \[0, 6\)"),
    ("raw/num-node-list.csv", ["6", "3"], r"num-node-list\.csv: expected one non-negative"),
])
def test_bad_files_are_named(tmp_path, file, lines, message):
    folder = _folder(tmp_path, gz=False)
    _put(folder / file, lines, gz=False)
    with pytest.raises(ValueError, match=message):
        load_ogb_folder(folder)


def test_missing_edges_and_split_file(tmp_path):
    with pytest.raises(ValueError, match=r"missing raw/edge\.csv or raw/edge\.csv\.gz"):
        load_ogb_folder(tmp_path)
    folder = _folder(tmp_path, gz=False)
    (folder / "split" / "time" / "test.csv").unlink()
    with pytest.raises(ValueError, match=r"missing test\.csv or test\.csv\.gz"):
        load_ogb_folder(folder)


def test_truncated_gzip(tmp_path):
    folder = _folder(tmp_path, gz=True)
    path = folder / "raw" / "edge.csv.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"edge\.csv\.gz: truncated or corrupt gzip"):
        load_ogb_folder(folder)
