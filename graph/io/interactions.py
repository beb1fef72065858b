"""User-item interaction logs (``user item rating [timestamp]``) as link-prediction data.

MovieLens-100K ``u.data`` is the model (tab separated, 4 columns); ``::`` (MovieLens-1M) or
comma separated files work the same way. The split is global and time-ordered: sort by timestamp
(ties, and files without a timestamp column, by line order), the latest ``test_fraction`` of
interactions are test, the ``val_fraction`` before them validation, the rest training. Only
training interactions become message-passing edges, so the encoder never sees a held-out pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qgnn.graph.container import Graph
from qgnn.graph.io.text_table import TextTable, is_number
from qgnn.graph.links import LinkData


def _remap(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Original ids (ints when every token is one, else strings) -> sorted uniques, codes."""
    try:
        values: np.ndarray = tokens.astype(np.int64)
    except ValueError:
        values = tokens
    return np.unique(values, return_inverse=True)


def _rating_is_text(tokens: list[str]) -> bool:
    """Header test that works with text ids: the rating column of a data row is a number."""
    return len(tokens) >= 3 and not is_number(tokens[2])


def _fractions(val_fraction: float, test_fraction: float) -> None:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"load_interactions: {name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"load_interactions: val_fraction + test_fraction = "
                         f"{val_fraction + test_fraction} leaves no training interactions")


def load_interactions(path: str | Path, *, sep: str | None = None, header: bool | None = None,
                      val_fraction: float = 0.1, test_fraction: float = 0.1,
                      min_rating: float | None = None, weighted: bool = False) -> LinkData:
    """Read a log into bipartite :class:`LinkData`: users ``0..U-1``, items ``U..U+I-1``.

    ``header=None`` skips a first row whose rating column is not a number. ``min_rating`` drops
    interactions rated below it before ids are assigned. A (user, item) pair logged more than
    once keeps its latest interaction. ``weighted`` stores the rating as float32 ``edge_weight``.
    ``meta`` holds ``user_ids``/``item_ids`` (original id of each contiguous id) and the ratings
    of the train/val/test pairs.
    """
    _fractions(val_fraction, test_fraction)
    path = Path(path)
    table = TextTable.open(path, sep=sep, header=header, looks_like_header=_rating_is_text)
    if table.num_cols not in (3, 4):
        raise ValueError(f"{path}: expected 3 or 4 columns (user item rating [timestamp]), got "
                         f"{table.num_cols}")
    cells = table.parse(str)
    line = np.arange(len(cells))
    rating = table.convert(cells[:, 2], 2, np.float64, "rating")
    time = (table.convert(cells[:, 3], 3, np.float64, "timestamp") if table.num_cols == 4
            else line.astype(np.float64))
    for what, values in (("rating", rating), ("timestamp", time)):
        if not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values))[0])
            raise ValueError(f"{path}, line {table.line_of_row(row)}: non-finite {what} "
                             f"{values[row]}")
    if min_rating is not None:
        keep = rating >= min_rating
        if not keep.any():
            raise ValueError(f"{path}: no interaction has rating >= {min_rating}")
        cells, rating, time, line = cells[keep], rating[keep], time[keep], line[keep]

    user_ids, user = _remap(cells[:, 0])
    item_ids, item = _remap(cells[:, 1])
    num_users, num_items = len(user_ids), len(item_ids)
    order = np.lexsort((line, time))  # time order, ties by line
    pair = (user * num_items + item)[order]
    _, last_rev = np.unique(pair[::-1], return_index=True)  # latest occurrence of each pair
    order = order[np.sort(len(pair) - 1 - last_rev)]
    user, item, rating = user[order], item[order] + num_users, rating[order]

    m = len(order)
    num_test, num_val = round(m * test_fraction), round(m * val_fraction)
    cut_val, cut_test = m - num_test - num_val, m - num_test
    if cut_val <= 0:
        raise ValueError(f"{path}: {m} interactions leave no training data at val_fraction="
                         f"{val_fraction}, test_fraction={test_fraction}")
    pairs = np.stack([user, item], axis=1)
    tr = slice(0, cut_val)
    weight = np.concatenate([rating[tr]] * 2).astype(np.float32) if weighted else None
    graph = Graph.from_edges(np.concatenate([user[tr], item[tr]]),
                             np.concatenate([item[tr], user[tr]]), num_users + num_items,
                             edge_weight=weight,
                             node_type=np.repeat(np.array([0, 1], np.int8),
                                                 [num_users, num_items]),
                             name=path.name, meta={"format": "interactions"})
    parts = {"train": tr, "val": slice(cut_val, cut_test), "test": slice(cut_test, m)}
    meta = {"format": "interactions", "source": str(path), "user_ids": user_ids,
            "item_ids": item_ids, "duplicates_dropped": len(cells) - m,
            "time_column": table.num_cols == 4,
            "ratings": {k: rating[s].astype(np.float32) for k, s in parts.items()}}
    return LinkData(graph, *(pairs[s] for s in parts.values()), num_users=num_users,
                    num_items=num_items, meta=meta)
