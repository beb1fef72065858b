"""The Graph container: validation names the field and value; CSR/CSC views agree."""

import numpy as np
import pytest
from qgnn.graph.container import Graph


def small() -> Graph:
    # 0->1, 0->2, 1->2, 2->0, 3->2 (node 3 has no in-edges)
    return Graph.from_edges([2, 0, 1, 0, 3], [0, 2, 2, 1, 2], 4,
                            edge_weight=np.array([5, 2, 3, 1, 4], np.float32))


def test_csr_sorted_by_source_then_destination_with_weights_following():
    g = small()
    assert g.indptr.tolist() == [0, 2, 3, 4, 5]
    assert g.indices.tolist() == [1, 2, 2, 0, 2]
    assert g.edge_weight.tolist() == [1, 2, 3, 5, 4]


def test_csc_lists_in_neighbours_and_maps_back_to_csr_edges():
    g = small()
    csc = g.csc
    assert csc.indptr.tolist() == [0, 1, 2, 2 + 3, 5]
    assert csc.indices.tolist() == [2, 0, 0, 1, 3]
    src, dst = g.edge_index()
    assert (src[csc.edge_ids] == csc.indices).all()
    assert (dst[csc.edge_ids] == np.repeat(np.arange(4), np.diff(csc.indptr))).all()
    assert g.in_degree().tolist() == [1, 1, 3, 0]


def test_to_undirected_adds_reverse_edges_once():
    g = small().to_undirected()
    assert g.is_symmetric()
    assert g.num_edges == 8  # 0-1, 0-2 (present both ways), 1-2, 2-3 -> 4 pairs


@pytest.mark.parametrize("kwargs, message", [
    ({"indices": np.array([0, 7])}, "node id 7"),
    ({"indices": np.array([0.0, 1.0])}, "expected integer ids"),
    ({"indptr": np.array([0, 2, 1, 2])}, "decreases at row 1"),
    ({"x": np.array([[0.0], [np.nan], [1.0]], np.float32)}, "non-finite value nan at index (1, 0)"),
    ({"x": np.zeros((2, 1), np.float32)}, "Graph.x: expected shape (3, F)"),
    ({"y": np.array([0, -2, 1])}, "Graph.y: labels must be >= 0"),
    ({"train_mask": np.array([1, 0, 1])}, "Graph.train_mask: expected a bool mask"),
])
def test_validation_names_field_and_value(kwargs, message):
    base = {"num_nodes": 3, "indptr": np.array([0, 1, 2, 2]), "indices": np.array([1, 2])}
    base.update(kwargs)
    with pytest.raises(ValueError) as err:
        Graph(**base)
    assert message in str(err.value)


def test_with_split_selects_one_of_several_masks():
    masks = np.zeros((3, 4), bool)
    masks[1, 2] = True
    g = small().replace(train_mask=masks, val_mask=masks, test_mask=masks)
    assert g.num_splits == 3
    assert g.with_split(1).train_mask.tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="split 3"):
        g.with_split(3)
