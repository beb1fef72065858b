"""OGB link-property datasets stored as one npz (``train_pos``, ``valid_pos``, ``valid_neg``,
``test_pos``, ``test_neg``, ``num_nodes``; data/ogbl-ddi/SOURCE.md) as :class:`LinkData`.

OGB fixes the evaluation negatives, so they travel with the data (``val_neg``/``test_neg``) and
training scores Hits@k against them instead of drawing its own. The message-passing graph holds
the training edges in both directions; validation edges are not added (OGB's protocol).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qgnn.graph.container import Graph
from qgnn.graph.links import LinkData

KEYS = ("train_pos", "valid_pos", "valid_neg", "test_pos", "test_neg", "num_nodes")


def is_ogbl_npz(path: str | Path) -> bool:
    with np.load(path, allow_pickle=False) as z:
        return "train_pos" in z.files


def load_ogbl_npz(path: str | Path) -> LinkData:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in KEYS if k not in z.files]
            if missing:
                raise ValueError(f"{path}: OGB link npz lacks {missing}")
            arrays = {k: np.asarray(z[k]).astype(np.int64) for k in KEYS}
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read npz ({exc})") from None
    n = int(arrays["num_nodes"])
    train = arrays["train_pos"]
    graph = Graph.from_edges(np.concatenate([train[:, 0], train[:, 1]]),
                             np.concatenate([train[:, 1], train[:, 0]]), n,
                             name=path.stem, meta={"format": "ogbl"})
    return LinkData(graph, train, arrays["valid_pos"], arrays["test_pos"],
                    meta={"format": "ogbl", "source": str(path), "split": "ogb"},
                    val_neg=arrays["valid_neg"], test_neg=arrays["test_neg"])
