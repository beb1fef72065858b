"""Reference helpers for the padded fixed-fanout layout: ``nbr`` (D, K) int64, -1 = padding."""

from __future__ import annotations

import numpy as np
from qgnn.exporter.ops.numeric import check_array, check_index


def check_fanout(op: str, nbr: object, num_src: int) -> np.ndarray:
    nbr = check_array(op, "nbr", nbr, np.int64, 2)
    check_index(op, "nbr", nbr, num_src, pad=True)
    return nbr


def fanout_to_csr(nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr (D + 1,), src (E,), slots (E,)) of the non-padding entries, row-major; ``slots``
    are their flat positions in ``nbr``, to pick the aligned edge weights.
    """
    valid = nbr >= 0
    indptr = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int64)
    slots = np.flatnonzero(valid.reshape(-1))
    return indptr, nbr.reshape(-1)[slots], slots
