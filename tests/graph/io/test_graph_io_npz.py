"""npz loader: Tolokers against a numpy oracle; other layouts and failures on small files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qgnn.graph.io.npz import load_npz

TOLOKERS = Path(__file__).resolve().parents[3] / "data" / "tolokers" / "tolokers.npz"


@pytest.fixture(scope="module")
def tolokers():
    with np.load(TOLOKERS) as z:
        raw = {k: z[k] for k in z.files}
    return load_npz(TOLOKERS), raw


def test_tolokers_sizes(tolokers):
    g, _ = tolokers
    assert (g.num_nodes, g.num_edges, g.num_features, g.num_classes) == (11758, 1_038_000, 10, 2)
    assert g.train_mask.shape == g.val_mask.shape == g.test_mask.shape == (10, 11758)
    assert g.name == "tolokers"


def test_tolokers_edges_are_the_stored_pairs_in_both_directions(tolokers):
    g, raw = tolokers
    e = raw["edges"]
    n = g.num_nodes
    expected = np.unique(np.concatenate([e[:, 0] * n + e[:, 1], e[:, 1] * n + e[:, 0]]))
    src, dst = g.edge_index()
    np.testing.assert_array_equal(src * n + dst, expected)  # CSR order is sorted by (src, dst)


def test_tolokers_node_data_is_unchanged(tolokers):
    g, raw = tolokers
    np.testing.assert_array_equal(g.x, raw["node_features"])
    np.testing.assert_array_equal(g.y, raw["node_labels"])
    for key in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(g, f"{key}_mask"), raw[f"{key}_masks"])
    split3 = g.with_split(3)
    np.testing.assert_array_equal(split3.train_mask, raw["train_masks"][3])


def test_directed_keeps_pairs_as_stored(tmp_path):
    path = tmp_path / "g.npz"
    np.savez(path, x=np.ones((4, 2), np.float32), edge_index=np.array([[0, 1, 1], [1, 2, 2]]))
    g = load_npz(path, undirected=False)
    assert list(zip(*(a.tolist() for a in g.edge_index()), strict=True)) == [(0, 1), (1, 2),
                                                                             (1, 2)]
    g = load_npz(path)
    assert list(zip(*(a.tolist() for a in g.edge_index()), strict=True)) == [(0, 1), (1, 0),
                                                                             (1, 2), (2, 1)]


def test_two_by_two_edge_arrays_follow_the_key_convention(tmp_path):
    np.savez(tmp_path / "a.npz", edges=np.array([[0, 1], [0, 2]]), x=np.ones((3, 1)))
    np.savez(tmp_path / "b.npz", edge_index=np.array([[0, 1], [0, 2]]), x=np.ones((3, 1)))
    as_rows = load_npz(tmp_path / "a.npz", undirected=False).edge_index()  # pairs (0,1),(0,2)
    as_cols = load_npz(tmp_path / "b.npz", undirected=False).edge_index()  # pairs (0,0),(1,2)
    assert [a.tolist() for a in as_rows] == [[0, 0], [1, 2]]
    assert [a.tolist() for a in as_cols] == [[0, 1], [0, 2]]


def test_pyg_style_names_and_integer_masks(tmp_path):
    path = tmp_path / "g.npz"
    np.savez(path, x=np.eye(3, dtype=np.float64), y=np.array([2, 0, 1]),
             edge_index=np.array([[0, 1], [1, 2]]), train_mask=np.array([1, 0, 0]),
             val_mask=np.array([0, 1, 0]), test_mask=np.array([0, 0, 1]))
    g = load_npz(path)
    assert g.x.dtype == np.float32 and g.y.tolist() == [2, 0, 1]
    assert g.train_mask.tolist() == [True, False, False] and g.test_mask.dtype == bool


def test_node_by_split_masks_are_transposed(tmp_path):
    path = tmp_path / "g.npz"
    masks = np.zeros((5, 2), bool)
    masks[0, 0] = masks[3, 1] = True
    np.savez(path, x=np.ones((5, 1)), edges=np.array([[0, 1]]), train_masks=masks)
    g = load_npz(path)
    assert g.train_mask.shape == (2, 5)
    assert np.flatnonzero(g.train_mask[1]).tolist() == [3]


def test_gnn_benchmark_csr_layout(tmp_path):
    path = tmp_path / "amazon_like.npz"
    adj = np.array([[0, 1, 0], [1, 0, 2], [0, 2, 0]], np.float32)  # weighted, symmetric
    attr = np.array([[0, 3, 0, 1], [0, 0, 0, 0], [5, 0, 0, 0]], np.float32)

    def csr(m, prefix):
        rows, cols = np.nonzero(m)
        return {f"{prefix}_data": m[rows, cols], f"{prefix}_indices": cols,
                f"{prefix}_indptr": np.concatenate([[0], np.cumsum((m != 0).sum(1))]),
                f"{prefix}_shape": np.array(m.shape)}

    np.savez(path, **csr(adj, "adj"), **csr(attr, "attr"), labels=np.array([1, 0, 1]))
    g = load_npz(path)
    np.testing.assert_array_equal(g.x, attr)
    src, dst = g.edge_index()
    np.testing.assert_array_equal(g.edge_weight, adj[src, dst])
    assert g.num_edges == 4 and g.y.tolist() == [1, 0, 1]


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.ones((3, 2))}, r"no edges: expected one of the keys edges, edge_index"),
    ({"x": np.ones((3, 2)), "edges": np.array([0, 1, 2])},
     r"key 'edges': expected integer \(E, 2\) or \(2, E\)"),
    ({"x": np.ones((3, 2)), "edges": np.array([[0.0, 1.0]])}, r"key 'edges': expected integer"),
    ({"x": np.ones((3, 2)), "edges": np.array([[0, 3]])},
     r"key 'edges': node id 3 out of range \[0, 3\)"),
    ({"x": np.ones((3, 2)), "edges": np.array([[0, -1]])}, r"key 'edges': node id -1 out of"),
    ({"x": np.array([[1.0, np.nan], [0, 0], [0, 0]]), "edges": np.array([[0, 1]])},
     r"Graph\.x: non-finite value nan at index \(0, 1\)"),
    ({"x": np.ones(3), "edges": np.array([[0, 1]])}, r"key 'x': expected numeric \(N, F\)"),
    ({"x": np.ones((3, 2)), "y": np.ones(4, np.int64), "edges": np.array([[0, 1]])},
     r"key 'y': 4 labels for 3 nodes"),
    ({"x": np.ones((3, 2)), "edges": np.array([[0, 1]]), "train_masks": np.ones((2, 4), bool)},
     r"key 'train_masks': expected a mask of shape \(3,\) or \(S, 3\), got \(2, 4\)"),
    ({"x": np.ones((3, 2)), "edges": np.array([[0, 1]]), "val_mask": np.array([0, 2, 1])},
     r"key 'val_mask': expected a boolean or 0/1 mask"),
])
def test_ill_formed_archives_name_file_and_key(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message) as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_truncated_archive(tmp_path):
    path = tmp_path / "cut.npz"
    path.write_bytes(TOLOKERS.read_bytes()[:500_000])
    with pytest.raises(ValueError, match=r"cut\.npz: not a readable \.npz archive"):
        load_npz(path)


def test_corrupt_member_names_the_key(tmp_path):
    path = tmp_path / "flip.npz"
    np.savez(path, x=np.ones((3, 2)), edges=np.array([[0, 1]]))
    raw = bytearray(path.read_bytes())
    start = raw.index(b"\x93NUMPY", raw.index(b"edges.npy"))  # header of the 'edges' member
    raw[start + 1:start + 6] = b"XXXXX"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"flip\.npz: key 'edges' cannot be read"):
        load_npz(path)


def test_pickled_object_arrays_are_not_loaded(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.ones((2, 1)), edges=np.array([[0, 1], [1, 0]], dtype=object))
    with pytest.raises(ValueError, match=r"key 'edges' cannot be read .*allow_pickle"):
        load_npz(path)


def test_missing_file_and_plain_npy(tmp_path):
    with pytest.raises(ValueError, match="file not found"):
        load_npz(tmp_path / "absent.npz")
    np.save(tmp_path / "single.npy", np.ones(3))
    with pytest.raises(ValueError, match=r"expected an \.npz archive"):
        load_npz(tmp_path / "single.npy")
