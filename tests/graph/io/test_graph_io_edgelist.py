"""Edge-list loader on small generated files: separators, headers, features, labels, errors."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from qgnn.graph.io.edgelist import load_edge_list


def _pairs(g):
    src, dst = g.edge_index()
    return list(zip(src.tolist(), dst.tolist(), strict=True))


@pytest.mark.parametrize("text", [
    "0,1\n1,2\n",
    "0\t1\n1\t2\n",
    "0 1\n  1   2  \n",
    "src,dst\n0,1\n1,2\n",
    "# SNAP style comment\n% KONECT comment\n\n0 1 # trailing\n1 2\n",
    "0,1\r\n1,2\r\n",
])
def test_separator_header_and_comments_are_detected(tmp_path, text):
    path = tmp_path / "g.txt"
    path.write_text(text)
    g = load_edge_list(path)
    assert g.num_nodes == 3 and _pairs(g) == [(0, 1), (1, 0), (1, 2), (2, 1)]


def test_directed_keeps_duplicates_and_direction(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("2,0\n0,1\n2,0\n")
    assert _pairs(load_edge_list(path, directed=True)) == [(0, 1), (2, 0), (2, 0)]
    assert _pairs(load_edge_list(path)) == [(0, 1), (0, 2), (1, 0), (2, 0)]


def test_weight_column(tmp_path):
    path = tmp_path / "g.tsv"
    path.write_text("0\t1\t0.5\n2\t1\t3\n")
    g = load_edge_list(path, directed=True)
    assert _pairs(g) == [(0, 1), (2, 1)] and g.edge_weight.tolist() == [0.5, 3.0]


def test_explicit_separator_and_header(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("1;0\n2;1\n")
    assert load_edge_list(path, sep=";", header=False, directed=True).num_edges == 2
    path.write_text("9 9\n0 1\n")  # a numeric first row is data unless header=True
    assert load_edge_list(path, header=True).num_nodes == 2


def test_gzip_edge_list(tmp_path):
    path = tmp_path / "g.csv.gz"
    path.write_bytes(gzip.compress(b"0,3\n"))
    assert load_edge_list(path).num_nodes == 4


def test_features_and_labels_fix_the_node_count(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("0,1\n")
    x = np.arange(8, dtype=np.float64).reshape(4, 2)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array([1, 0, 1, 1]))
    g = load_edge_list(path, features=tmp_path / "x.npy", labels=tmp_path / "y.npy")
    assert g.num_nodes == 4 and g.x.dtype == np.float32
    np.testing.assert_array_equal(g.x, x)
    assert g.y.tolist() == [1, 0, 1, 1]


def test_label_files_in_text(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("0,1\n1,2\n")
    (tmp_path / "labels.txt").write_text("2\n0\n1\n")
    assert load_edge_list(path, labels=tmp_path / "labels.txt").y.tolist() == [2, 0, 1]
    (tmp_path / "pairs.csv").write_text("node,label\n2,5\n0,1\n")
    assert load_edge_list(path, labels=tmp_path / "pairs.csv").y.tolist() == [1, -1, 5]


@pytest.mark.parametrize("text, message", [
    ("0,1\n1,x\n", r"g\.txt, line 2, column 2: 'x' is not an integer"),
    ("0 1\n1 2.5\n", r"g\.txt, line 2, column 2: '2\.5' is not an integer"),
    ("# c\n0,1\n\n3,-4\n", r"g\.txt, line 4: negative node id -4"),
    ("0,1\n1,2,3,4\n", r"g\.txt, line 2: 4 columns, expected 2"),
    ("0,1,2,3\n", r"g\.txt: expected 2 columns \(src dst\) or 3"),
    ("0,1,0.5\n1,2,heavy\n", r"g\.txt, line 2, column 3: edge weight 'heavy' is not a number"),
    ("0,1,0.5\n1,2,nan\n", r"g\.txt, line 2: non-finite edge weight nan"),
    ("# only comments\n", r"g\.txt: no data rows"),
    ("src,dst\n", r"g\.txt: no data rows after the header on line 1"),
])
def test_bad_edge_lists_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "g.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_edge_list(path)


def test_feature_and_label_mismatches(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("0,1\n1,5\n")
    np.save(tmp_path / "x.npy", np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"x\.npy: 4 feature rows but .*g\.csv uses node id 5"):
        load_edge_list(path, features=tmp_path / "x.npy")
    np.save(tmp_path / "x.npy", np.ones((6, 2)))
    np.save(tmp_path / "y.npy", np.ones(5, np.int64))
    with pytest.raises(ValueError, match=r"y\.npy: 5 labels for 6 nodes"):
        load_edge_list(path, features=tmp_path / "x.npy", labels=tmp_path / "y.npy")
    np.save(tmp_path / "x.npy", np.array([[1.0, np.inf]] * 6))
    with pytest.raises(ValueError, match=r"x\.npy: non-finite feature inf at row 0, column 1"):
        load_edge_list(path, features=tmp_path / "x.npy")
    np.save(tmp_path / "y.npy", np.array(["a"] * 6))
    with pytest.raises(ValueError, match=r"y\.npy: expected 1-D integer labels"):
        load_edge_list(path, labels=tmp_path / "y.npy")


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.csv: file not found"):
        load_edge_list(tmp_path / "nope.csv")
    path = tmp_path / "bin.csv"
    path.write_bytes(b"0,1\n\xff\xfe,2\n")
    with pytest.raises(ValueError, match=r"bin\.csv: not UTF-8 text"):
        load_edge_list(path)
