"""Feature transforms against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.graph.container import Graph
from qgnn.graph.transforms import row_normalize, standardize


def _graph(x, **kw):
    return Graph.from_edges(np.array([0]), np.array([1]), len(x), x=np.asarray(x, np.float32),
                            **kw)


def test_row_normalize_rows_sum_to_one_and_zero_rows_stay_zero():
    g = row_normalize(_graph([[1, 3, 0], [0, 0, 0], [2, 2, 4]]))
    np.testing.assert_allclose(g.x, [[0.25, 0.75, 0], [0, 0, 0], [0.25, 0.25, 0.5]])
    assert g.x.dtype == np.float32 and g.num_edges == 1


def test_row_normalize_refuses_negative_rows_and_missing_features():
    with pytest.raises(ValueError, match="row 1 of x has negative values"):
        row_normalize(_graph([[1, 0], [1, -1]]))
    with pytest.raises(ValueError, match="no node features"):
        row_normalize(Graph.from_edges(np.array([0]), np.array([1]), 2))


def test_standardize_uses_only_training_rows():
    x = [[1, 5], [3, 5], [100, -7]]  # node 2 is not training: must not shift the statistics
    g = standardize(_graph(x, train_mask=np.array([True, True, False])))
    # train mean (2, 5), std (1, 0 -> 1)
    np.testing.assert_allclose(g.x, [[-1, 0], [1, 0], [98, -12]])


def test_standardize_explicit_mask_and_errors():
    g = _graph([[0.0], [2.0], [4.0]], train_mask=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="with_split"):
        standardize(g)
    out = standardize(g, np.array([False, True, True]))
    np.testing.assert_allclose(out.x[:, 0], [-3, -1, 1])
    with pytest.raises(ValueError, match="selects no nodes"):
        standardize(g, np.zeros(3, bool))
    full = standardize(_graph([[0.0], [2.0], [4.0]]))  # no masks: every node
    np.testing.assert_allclose(full.x[:, 0], np.array([-1, 0, 1]) * np.sqrt(1.5))
