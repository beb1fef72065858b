"""Planetoid loader: PyTorch Geometric's reader of the same raw files is the oracle."""

from __future__ import annotations

import collections
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from qgnn.graph.io.planetoid import load_planetoid

DATA = Path(__file__).resolve().parents[3] / "data"
PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


@pytest.fixture(scope="module", params=[("cora", 2708, 10556), ("citeseer", 3327, 9104)],
                ids=["cora", "citeseer"])
def both(request):
    name, nodes, edges = request.param
    pyg_io = pytest.importorskip("torch_geometric.io")
    ref = pyg_io.read_planetoid_data(str(DATA / name), name)
    return name, nodes, edges, load_planetoid(DATA / name, name), ref


def test_sizes_match_pyg_documented_statistics(both):
    _, nodes, edges, g, ref = both
    assert (g.num_nodes, g.num_edges) == (nodes, edges)
    assert ref.num_nodes == nodes and ref.edge_index.shape[1] == edges


def test_features_equal_pyg(both):
    _, _, _, g, ref = both
    assert g.x.dtype == np.float32
    np.testing.assert_array_equal(g.x, ref.x.numpy())


def test_labels_equal_pyg_on_labelled_nodes(both):
    name, _, _, g, ref = both
    labelled = g.y >= 0
    np.testing.assert_array_equal(g.y[labelled], ref.y.numpy()[labelled])
    # every node in a mask has a label; only CiteSeer's 15 missing test-range ids lack one
    assert labelled[g.train_mask | g.val_mask | g.test_mask].all()
    assert (~labelled).sum() == (15 if name == "citeseer" else 0)


def test_masks_equal_pyg(both):
    _, _, _, g, ref = both
    for key in ("train_mask", "val_mask", "test_mask"):
        np.testing.assert_array_equal(getattr(g, key), getattr(ref, key).numpy())


def test_edge_set_equals_pyg(both):
    _, _, _, g, ref = both
    src, dst = g.edge_index()
    ours = src * g.num_nodes + dst
    theirs = ref.edge_index[0].numpy() * g.num_nodes + ref.edge_index[1].numpy()
    np.testing.assert_array_equal(np.sort(ours), np.sort(theirs))
    assert np.unique(ours).size == ours.size  # no duplicates
    assert g.is_symmetric() and not (src == dst).any()


def test_standard_split_sizes(both):
    name, _, _, g, _ = both
    train = 140 if name == "cora" else 120
    assert [int(m.sum()) for m in (g.train_mask, g.val_mask, g.test_mask)] == [train, 500, 1000]
    assert np.flatnonzero(g.train_mask).tolist() == list(range(train))
    assert np.flatnonzero(g.val_mask).tolist() == list(range(train, train + 500))


def test_citeseer_isolated_test_ids_are_zero_unlabelled_and_unmasked():
    g = load_planetoid(DATA / "citeseer", "citeseer")
    missing = [2407, 2489, 2553, 2682, 2781, 2953, 3042, 3063, 3212, 3214, 3250, 3292, 3305,
               3306, 3309]  # listed in data/citeseer/SOURCE.md
    np.testing.assert_array_equal(g.meta["featureless_nodes"], missing)
    assert not g.x[missing].any()
    assert (g.y[missing] == -1).all()
    assert not (g.train_mask | g.val_mask | g.test_mask)[missing].any()


# --- small hand-built Planetoid sets -------------------------------------------------------


def _onehot(labels, classes=3):
    out = np.zeros((len(labels), classes), np.int32)
    for row, c in enumerate(labels):
        if c >= 0:
            out[row, c] = 1
    return out


def _write_small(folder: Path, *, graph=None, test_index="10\n8\n11\n") -> dict:
    """12 nodes: 0..7 in allx, tests 10, 8, 11 (in that file order), node 9 described nowhere."""
    sparse = pytest.importorskip("scipy.sparse")
    folder.mkdir(exist_ok=True)
    allx = np.arange(8 * 4, dtype=np.float32).reshape(8, 4) % 3
    tx = np.array([[9, 0, 0, 0], [0, 8, 0, 0], [0, 0, 0, 7]], np.float32)  # nodes 10, 8, 11
    ally = _onehot([0, 1, 2, 0, 1, 2, 0, 1])
    ty = _onehot([2, 1, 0])
    if graph is None:
        graph = collections.defaultdict(list, {0: [1, 1, 2], 1: [0], 2: [2, 3], 9: [8],
                                               11: [10]})
    parts = {"x": sparse.csr_matrix(allx[:2]), "y": ally[:2], "allx": sparse.csr_matrix(allx),
             "ally": ally, "tx": sparse.csr_matrix(tx), "ty": ty, "graph": graph}
    for part, obj in parts.items():
        (folder / f"ind.toy.{part}").write_bytes(pickle.dumps(obj, protocol=4))
    (folder / "ind.toy.test.index").write_text(test_index)
    return {"allx": allx, "tx": tx}


def test_small_set_by_hand(tmp_path):
    arrays = _write_small(tmp_path / "toy")
    g = load_planetoid(tmp_path / "toy", "toy", num_val=3)
    assert g.num_nodes == 12
    expected_x = np.zeros((12, 4), np.float32)
    expected_x[:8] = arrays["allx"]
    expected_x[[10, 8, 11]] = arrays["tx"]  # tx row j belongs to node test.index[j]
    np.testing.assert_array_equal(g.x, expected_x)
    assert g.y.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 1, -1, 2, 0]
    assert np.flatnonzero(g.train_mask).tolist() == [0, 1]
    assert np.flatnonzero(g.val_mask).tolist() == [2, 3, 4]
    assert np.flatnonzero(g.test_mask).tolist() == [8, 10, 11]
    src, dst = g.edge_index()
    # {0:[1,1,2], 1:[0], 2:[2,3], 9:[8], 11:[10]}: symmetrised, duplicate 0-1 and loop 2-2 gone
    assert sorted(zip(src.tolist(), dst.tolist(), strict=True)) == [
        (0, 1), (0, 2), (1, 0), (2, 0), (2, 3), (3, 2), (8, 9), (9, 8), (10, 11), (11, 10)]
    assert g.meta["featureless_nodes"].tolist() == [9]


def test_missing_part_names_the_file(tmp_path):
    _write_small(tmp_path / "toy")
    (tmp_path / "toy" / "ind.toy.ty").unlink()
    with pytest.raises(ValueError, match=r"ind\.toy\.ty: file not found"):
        load_planetoid(tmp_path / "toy", "toy", num_val=3)


def test_truncated_pickle_names_the_file(tmp_path):
    _write_small(tmp_path / "toy")
    path = tmp_path / "toy" / "ind.toy.allx"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"ind\.toy\.allx: not a valid Planetoid pickle"):
        load_planetoid(tmp_path / "toy", "toy", num_val=3)


def test_bad_test_index_line_is_reported(tmp_path):
    _write_small(tmp_path / "toy", test_index="10\n8x\n11\n")
    with pytest.raises(ValueError, match=r"ind\.toy\.test\.index, line 2, column 1: '8x' is "
                                         r"not an integer"):
        load_planetoid(tmp_path / "toy", "toy", num_val=3)


def test_test_index_count_must_match_tx(tmp_path):
    _write_small(tmp_path / "toy", test_index="10\n8\n")
    with pytest.raises(ValueError, match=r"tx has 3 rows and ty 3, but test\.index lists 2"):
        load_planetoid(tmp_path / "toy", "toy", num_val=3)


@pytest.mark.parametrize("index, message", [("10\n5\n11\n", "test id 5 overlaps the allx rows"),
                                            ("10\n-8\n11\n", "negative test id -8")])
def test_test_ids_outside_the_test_range_are_refused(tmp_path, index, message):
    _write_small(tmp_path / "toy", test_index=index)
    with pytest.raises(ValueError, match=message):
        load_planetoid(tmp_path / "toy", "toy", num_val=3)


def test_adjacency_with_non_integer_ids_is_refused(tmp_path):
    _write_small(tmp_path / "toy", graph={0: [1.5]})
    with pytest.raises(ValueError, match=r"ind\.toy\.graph: neighbour ids must be integers"):
        load_planetoid(tmp_path / "toy", "toy", num_val=3)


@pytest.mark.parametrize("graph, message", [
    ({0: [12]}, "node id 12 is beyond the 12 nodes that allx and test.index describe"),
    ({0: [-1]}, "negative node id -1"),
    ([[0, 1]], "expected a dict of adjacency lists, got list"),
])
def test_adjacency_ids_must_be_described_nodes(tmp_path, graph, message):
    _write_small(tmp_path / "toy", graph=graph)
    with pytest.raises(ValueError, match=message):
        load_planetoid(tmp_path / "toy", "toy", num_val=3)


def test_split_larger_than_allx_is_refused(tmp_path):
    _write_small(tmp_path / "toy")
    with pytest.raises(ValueError, match="2 training \\+ 500 validation nodes exceed"):
        load_planetoid(tmp_path / "toy", "toy")


def test_folder_copy_loads_identically(tmp_path):
    shutil.copytree(DATA / "cora", tmp_path / "cora")
    a, b = load_planetoid(tmp_path / "cora", "cora"), load_planetoid(DATA / "cora", "Cora")
    np.testing.assert_array_equal(a.indices, b.indices)
    assert b.name == "cora"
