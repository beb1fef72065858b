import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.training.data import as_tensor, node_data


def small_graph(**changes):
    n = 5
    src = np.array([0, 1, 1, 2, 3, 4])
    dst = np.array([1, 0, 2, 1, 4, 3])
    fields = dict(x=np.arange(n * 3, dtype=np.float32).reshape(n, 3),
                  y=np.array([0, 1, 1, 0, -1]),
                  train_mask=np.array([1, 1, 0, 0, 0], bool),
                  val_mask=np.array([0, 0, 1, 0, 0], bool),
                  test_mask=np.array([0, 0, 0, 1, 0], bool), name="five")
    fields.update(changes)
    return Graph.from_edges(src, dst, n, **fields)


def test_node_data_shares_memory_with_float32_features():
    g = small_graph()
    d = node_data(g)
    assert d.x.data_ptr() == g.x.ctypes.data  # zero-copy
    assert d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert d.num_classes == 2 and d.num_features == 3
    assert d.train_mask.tolist() == [True, True, False, False, False]


def test_node_data_converts_float64_features():
    g = small_graph(x=np.ones((5, 2), np.float64))
    d = node_data(g)
    assert d.x.dtype == torch.float32 and d.x.shape == (5, 2)


def test_node_data_block_holds_every_edge_by_destination():
    d = node_data(small_graph())
    pairs = sorted(zip(d.block.src.tolist(), d.block.dst.tolist(), strict=True))
    assert pairs == [(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)]
    assert d.block.num_src == d.block.num_dst == 5


def test_node_data_selects_one_of_several_splits():
    g = small_graph()
    masks = {k: np.stack([getattr(g, k), np.roll(getattr(g, k), 1)])
             for k in ("train_mask", "val_mask", "test_mask")}
    two = g.replace(y=np.array([0, 1, 1, 0, 1]), **masks)
    assert node_data(two, split=1).train_mask.tolist() == [False, True, True, False, False]
    with pytest.raises(ValueError, match=r"split: graph 'five' has 2 split\(s\), got 2"):
        node_data(two, split=2)


def test_node_data_refuses_missing_or_unlabelled_masks():
    with pytest.raises(ValueError, match=r"Graph.val_mask is missing"):
        node_data(small_graph(val_mask=None))
    with pytest.raises(ValueError, match=r"test_mask of split 0 holds unlabelled"):
        node_data(small_graph(test_mask=np.array([0, 0, 0, 0, 1], bool)))
    with pytest.raises(ValueError, match=r"needs features"):
        node_data(small_graph(x=None))
    with pytest.raises(ValueError, match=r"integer labels"):
        node_data(small_graph(y=np.zeros(5, np.float32)))


def test_as_tensor_copies_read_only_arrays():
    arr = np.arange(4, dtype=np.int64)
    arr.setflags(write=False)
    t = as_tensor(arr, np.int64)
    t[0] = 7  # must not write through into the read-only source
    assert arr[0] == 0
