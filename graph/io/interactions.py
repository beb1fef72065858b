"""User-item interaction logs as bipartite link-prediction data, in the shapes users hold them.

One log file split by qgnn, or a train file plus a test file (and optionally a validation file)
split already. Each file is delimited text (tab, comma, ``::``, any separator), with or without a
header, its columns chosen by name or 0-based index (default: ``user item [rating [timestamp]]``,
MovieLens-100K ``u.data`` is the model). Splits of one file (``split=``):

- ``time``: global, by timestamp (ties, and files without one, by line): the latest
  ``test_fraction`` of all interactions are test, the ``val_fraction`` before them validation;
- ``user_time``: the same per user (each user's latest ``round(n_u * test_fraction)``);
- ``leave_last``: each user's last interaction is test (when ``test_fraction > 0``), the one
  before it validation (when ``val_fraction > 0``), for users with enough interactions to keep
  one in training;
- ``random``: a seeded uniform split of the interactions.

Users with no training interaction never reach validation or test: their held-out interactions
are dropped and counted in ``meta["summary"]`` (a model cannot rank for a user it has no edge
of). Only training interactions become message-passing edges, so the encoder never sees a
held-out pair. Users are nodes ``0..U-1``, items ``U..U+I-1``; ``meta["user_ids"]`` /
``meta["item_ids"]`` map them back to the file's ids.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.graph.container import Graph
from qgnn.graph.io.text_table import TextTable, is_number
from qgnn.graph.links import LinkData

LOG = logging.getLogger("qgnn.graph.interactions")
ROLES = ("user", "item", "rating", "timestamp")
SPLITS = ("time", "user_time", "leave_last", "random")
DUPLICATES = ("last", "error")
# separator names usable in dataset specs and on the command line
SEPARATORS = {"tab": "\t", "\\t": "\t", "comma": ",", "space": " ", "semicolon": ";",
              "pipe": "|", "colons": "::"}
_PART = {0: "train", 1: "val", 2: "test"}


def separator(value: str | None) -> str | None:
    """A separator given by name (``tab``, ``comma``, ``colons``...) or literally."""
    if value is None or value == "":
        return None
    return SEPARATORS.get(value.lower(), value)


def parse_columns(value: str | Mapping[str, int | str] | None) -> dict[str, int | str] | None:
    """``"user=userId,item=movieId,rating=2"`` (or a mapping) -> ``{role: name or index}``.

    Indices are 0-based; a value that is all digits is an index, anything else a header name.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        mapping: dict[str, int | str] = {}
        for part in value.split(","):
            role, eq, column = part.partition("=")
            role, column = role.strip(), column.strip()
            if not eq or not column:
                raise ValueError(f"columns {value!r}: expected role=column pairs such as "
                                 f"'user=0,item=1,rating=2' or 'user=userId,item=movieId'")
            if role in mapping:
                raise ValueError(f"columns {value!r}: role {role!r} given twice")
            mapping[role] = int(column) if column.isdigit() else column
    else:
        mapping = dict(value)
    unknown = sorted(set(mapping) - set(ROLES))
    if unknown:
        raise ValueError(f"columns: unknown roles {unknown}; known: {', '.join(ROLES)}")
    for role in ("user", "item"):
        if role not in mapping:
            raise ValueError(f"columns: the {role!r} column is required, got {mapping}")
    for role, column in mapping.items():
        if isinstance(column, bool) or not isinstance(column, int | str) or (
                isinstance(column, int) and column < 0):
            raise ValueError(f"columns: {role} must be a 0-based index or a header name, got "
                             f"{column!r}")
    return mapping


@dataclass(frozen=True, eq=False)
class _Log:
    """The rows of one file: id tokens, ratings, timestamps and each row's file line."""

    path: Path
    users: np.ndarray  # (M,) str
    items: np.ndarray  # (M,) str
    rating: np.ndarray | None  # (M,) float64
    time: np.ndarray | None  # (M,) float64
    line: np.ndarray  # (M,) int64, 1-based line in the file

    def take(self, keep: np.ndarray) -> _Log:
        return _Log(self.path, self.users[keep], self.items[keep],
                    None if self.rating is None else self.rating[keep],
                    None if self.time is None else self.time[keep], self.line[keep])


def _default_columns(num_cols: int, path: Path) -> dict[str, int | str]:
    if num_cols not in (2, 3, 4):
        raise ValueError(f"{path}: expected 2 to 4 columns (user item [rating [timestamp]]), "
                         f"got {num_cols}; choose them with columns= (--columns "
                         f"user=0,item=1,rating=2,timestamp=3)")
    return dict(zip(ROLES, range(num_cols), strict=False))


def _resolve(columns: dict[str, int | str], table: TextTable) -> dict[str, int]:
    names = table.header_tokens
    out: dict[str, int] = {}
    for role, column in columns.items():
        if isinstance(column, str):
            if names is None or column not in names:
                raise ValueError(f"{table.path}: no header column named {column!r} (for "
                                 f"{role}); header: {list(names) if names else 'none'}")
            out[role] = names.index(column)
        elif column >= table.num_cols:
            raise ValueError(f"{table.path}: {role} column index {column} is beyond the "
                             f"{table.num_cols} columns (indices are 0-based)")
        else:
            out[role] = column
    return out


def read_log(path: str | Path, *, sep: str | None = None, header: bool | None = None,
             columns: str | Mapping[str, int | str] | None = None) -> _Log:
    """One delimited file's interactions; every malformed row is reported by file and line."""
    path = Path(path)
    chosen = parse_columns(columns)
    by_name = chosen is not None and any(isinstance(c, str) for c in chosen.values())

    def looks_like_header(tokens: list[str]) -> bool:
        """A header holds text where the rating or timestamp column has numbers."""
        if chosen is not None:
            cols = chosen
        else:
            cols = _default_columns(len(tokens), path) if 2 <= len(tokens) <= 4 else {}
        return any(role in ("rating", "timestamp") and isinstance(c, int) and c < len(tokens)
                   and not is_number(tokens[c]) for role, c in cols.items())

    table = TextTable.open(path, sep=separator(sep), header=True if by_name else header,
                           looks_like_header=looks_like_header)
    cols = _resolve(chosen if chosen is not None else _default_columns(table.num_cols, path),
                    table)
    cells = table.parse(str)
    line = table.line_numbers(len(cells))
    numbers: dict[str, np.ndarray | None] = {}
    for role in ("rating", "timestamp"):
        if role not in cols:
            numbers[role] = None
            continue
        values = table.convert(cells[:, cols[role]], cols[role], np.float64, role)
        if not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values))[0])
            raise ValueError(f"{path}, line {line[row]}: non-finite {role} {values[row]}")
        numbers[role] = values
    for role in ("user", "item"):
        empty = cells[:, cols[role]] == ""
        if empty.any():
            raise ValueError(f"{path}, line {line[int(np.flatnonzero(empty)[0])]}: empty "
                             f"{role} id")
    return _Log(path, cells[:, cols["user"]], cells[:, cols["item"]], numbers["rating"],
                numbers["timestamp"], line)


def _order(log: _Log) -> np.ndarray:
    """Row order by (timestamp, line); line alone without a timestamp column."""
    return np.lexsort((log.line, log.time)) if log.time is not None else np.argsort(
        log.line, kind="stable")


def _pair_keys(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    return np.char.add(np.char.add(users.astype(str), "\x1f"), items.astype(str))


def _deduplicate(log: _Log, duplicates: str) -> tuple[_Log, int]:
    """Keep each (user, item) once: its latest interaction, or refuse repeats."""
    order = _order(log)
    keys = _pair_keys(log.users, log.items)[order]
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    if (counts == 1).all():
        return log.take(order), 0
    if duplicates == "error":
        rep = int(np.flatnonzero(counts > 1)[0])
        rows = order[np.flatnonzero(keys == keys[first[rep]])]
        lines = sorted(int(x) for x in log.line[rows])
        raise ValueError(f"{log.path}, lines {lines[0]} and {lines[1]}: user "
                         f"{str(log.users[rows[0]])!r} and item {str(log.items[rows[0]])!r} "
                         f"appear more "
                         f"than once; pass duplicates='last' (--duplicates last) to keep the "
                         f"latest")
    _, last_rev = np.unique(keys[::-1], return_index=True)
    keep = order[np.sort(len(keys) - 1 - last_rev)]
    return log.take(keep), len(keys) - len(keep)


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0.0 <= f < 1.0:
            raise ValueError(f"load_interactions: {name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"load_interactions: val_fraction + test_fraction = "
                         f"{val_fraction + test_fraction} leaves no training interactions")


def _per_user_tail(users: np.ndarray, num_test: np.ndarray, num_val: np.ndarray) -> np.ndarray:
    """Rows already in (user-grouped, time) order -> part labels: each user's last
    ``num_test[u]`` rows test, the ``num_val[u]`` before them validation."""
    _, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    group = np.argsort(inverse, kind="stable")  # rows grouped by user, time order inside
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(users), np.int64)
    rank[group] = np.arange(len(users)) - np.repeat(start, counts)
    from_end = counts[inverse] - 1 - rank
    t, v = num_test[inverse], num_val[inverse]
    return np.where(from_end < t, 2, np.where(from_end < t + v, 1, 0)).astype(np.int8)


def split_log(log: _Log, split: str, val_fraction: float, test_fraction: float,
              seed: int) -> np.ndarray:
    """Part labels (0 train, 1 val, 2 test) of a time-ordered, deduplicated log."""
    m = len(log.line)
    if split == "time":
        num_test, num_val = round(m * test_fraction), round(m * val_fraction)
        if m - num_test - num_val <= 0:
            raise ValueError(f"{log.path}: {m} interactions leave no training data at "
                             f"val_fraction={val_fraction}, test_fraction={test_fraction}")
        part = np.zeros(m, np.int8)
        part[m - num_test - num_val:m - num_test] = 1
        part[m - num_test:] = 2
        return part
    if split == "random":
        num_test, num_val = round(m * test_fraction), round(m * val_fraction)
        if m - num_test - num_val <= 0:
            raise ValueError(f"{log.path}: {m} interactions leave no training data at "
                             f"val_fraction={val_fraction}, test_fraction={test_fraction}")
        perm = np.random.default_rng(seed).permutation(m)
        part = np.zeros(m, np.int8)
        part[perm[:num_test]] = 2
        part[perm[num_test:num_test + num_val]] = 1
        return part
    counts = np.unique(log.users, return_counts=True)[1]
    if split == "user_time":
        t = np.rint(counts * test_fraction).astype(np.int64)
        v = np.rint(counts * val_fraction).astype(np.int64)
    elif split == "leave_last":
        t = np.full_like(counts, 1 if test_fraction > 0 else 0)
        v = np.full_like(counts, 1 if val_fraction > 0 else 0)
    else:
        raise ValueError(f"load_interactions: split must be one of {SPLITS}, got {split!r}")
    # keep at least one training interaction per user: give up validation first, then test
    over = np.maximum(t + v - (counts - 1), 0)
    v_cut = np.minimum(v, over)
    v, t = v - v_cut, t - np.maximum(over - v_cut, 0)
    return _per_user_tail(log.users, t, v)


def _remap(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids (numeric order when every token is an integer, else text order) -> sorted uniques
    as strings of the file's spelling, and codes."""
    try:
        values: np.ndarray = tokens.astype(np.int64)
    except (ValueError, OverflowError):
        uniq, codes = np.unique(tokens, return_inverse=True)
        return uniq, codes.reshape(-1)
    uniq, codes = np.unique(values, return_inverse=True)
    return uniq, codes.reshape(-1)


def read_features(path: str | Path, ids: np.ndarray, what: str, *,
                  sep: str | None = None) -> np.ndarray:
    """A side-feature file (``id f1 f2 ...``, optional header) -> float32 rows for ``ids``
    (the dataset's ids in node order); an id without a row is an error naming it."""
    table = TextTable.open(path, sep=separator(sep),
                           looks_like_header=lambda t: not all(is_number(x) for x in t[1:]))
    if table.num_cols < 2:
        raise ValueError(f"{path}: a {what} feature file needs an id column and at least one "
                         f"feature column, got {table.num_cols} column")
    cells = table.parse(str)
    values = np.stack([table.convert(cells[:, c], c, np.float64, "feature")
                       for c in range(1, table.num_cols)], axis=1)
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise ValueError(f"{path}, line {table.line_of_row(row)}: non-finite feature")
    keys = cells[:, 0]
    if np.issubdtype(ids.dtype, np.integer):
        with contextlib.suppress(ValueError):
            keys = keys.astype(np.int64)
    uniq, first, counts = np.unique(keys, return_index=True, return_counts=True)
    if (counts > 1).any():
        bad = uniq[int(np.flatnonzero(counts > 1)[0])]
        raise ValueError(f"{path}: {what} {str(bad)!r} has more than one feature row")
    pos = np.searchsorted(uniq, ids)
    pos = np.minimum(pos, len(uniq) - 1)
    missing = uniq[pos] != ids
    if missing.any():
        raise ValueError(f"{path}: no feature row for {what} {str(ids[missing][0])!r} "
                         f"({int(missing.sum())} {what}s missing)")
    return values[first[pos]].astype(np.float32)


def load_interactions(path: str | Path, *, test: str | Path | None = None,
                      val: str | Path | None = None, split: str = "time",
                      val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                      sep: str | None = None, header: bool | None = None,
                      columns: str | Mapping[str, int | str] | None = None,
                      min_rating: float | None = None, weighted: bool = False,
                      duplicates: str = "last", user_features: str | Path | None = None,
                      item_features: str | Path | None = None) -> LinkData:
    """Read interactions into bipartite :class:`LinkData` (see the module docstring).

    ``test`` (and ``val``) name files already split from ``path`` (the training file); without
    ``test`` the one file is split by ``split``. With a test file but no validation file, the
    validation set is split off the training file by ``split`` and ``val_fraction``.
    ``min_rating`` keeps interactions rated at least that (implicit feedback) before ids are
    given. ``duplicates``: a (user, item) pair logged more than once in a file keeps its latest
    interaction (``"last"``) or is an error (``"error"``); a pair in two different files is
    always an error. ``weighted`` keeps the rating as float32 ``edge_weight``. The user and
    item feature files give node features (users' columns, then items', zero elsewhere).
    """
    _check_fractions(val_fraction, test_fraction)
    if split not in SPLITS:
        raise ValueError(f"load_interactions: split must be one of {SPLITS}, got {split!r}")
    if duplicates not in DUPLICATES:
        raise ValueError(f"load_interactions: duplicates must be one of {DUPLICATES}, got "
                         f"{duplicates!r}")
    if val is not None and test is None:
        raise ValueError("load_interactions: a validation file needs a test file too")
    files = [Path(path)] + [Path(p) for p in (val, test) if p is not None]
    logs = [read_log(p, sep=sep, header=header, columns=columns) for p in files]
    if weighted and any(log.rating is None for log in logs):
        bad = next(log.path for log in logs if log.rating is None)
        raise ValueError(f"{bad}: weighted=True needs a rating column")
    if min_rating is not None:
        for i, log in enumerate(logs):
            if log.rating is None:
                raise ValueError(f"{log.path}: min_rating needs a rating column")
            logs[i] = log.take(log.rating >= min_rating)
        if len(logs[0].line) == 0:
            raise ValueError(f"{logs[0].path}: no interaction has rating >= {min_rating}")
    dropped = 0
    for i, log in enumerate(logs):
        logs[i], n = _deduplicate(log, duplicates)
        dropped += n
    if test is None:
        part = split_log(logs[0], split, val_fraction, test_fraction, seed)
        parts = [logs[0].take(part == k) for k in range(3)]
    else:
        _check_across_files(logs)
        if val is None:
            part = split_log(logs[0], split, val_fraction, 0.0, seed)
            parts = [logs[0].take(part == 0), logs[0].take(part == 1), logs[1]]
        else:
            parts = logs
    return _link_data(parts, files, weighted, dropped, split if test is None else "files",
                      user_features, item_features, sep)


def _check_across_files(logs: list[_Log]) -> None:
    for a in range(len(logs)):
        for b in range(a + 1, len(logs)):
            ka = _pair_keys(logs[a].users, logs[a].items)
            kb = _pair_keys(logs[b].users, logs[b].items)
            common = np.intersect1d(ka, kb)
            if common.size:
                ra = int(np.flatnonzero(ka == common[0])[0])
                rb = int(np.flatnonzero(kb == common[0])[0])
                raise ValueError(
                    f"{logs[b].path}, line {logs[b].line[rb]}: user {str(logs[b].users[rb])!r} "
                    f"and item {str(logs[b].items[rb])!r} are also in {logs[a].path}, line "
                    f"{logs[a].line[ra]} ({common.size} pairs in both files); a pair belongs "
                    f"to one split")


def _link_data(parts: list[_Log], files: list[Path], weighted: bool, duplicates_dropped: int,
               split: str, user_features: str | Path | None, item_features: str | Path | None,
               sep: str | None) -> LinkData:
    train = parts[0]
    if len(train.line) == 0:
        raise ValueError(f"{files[0]}: no training interactions")
    # held-out interactions of users without a training interaction are dropped
    summary: dict[str, Any] = {"split": split}
    for k in (1, 2):
        known = np.isin(parts[k].users, train.users)
        summary[f"{_PART[k]}_cold_user_interactions_dropped"] = int((~known).sum())
        summary[f"{_PART[k]}_cold_users_dropped"] = int(np.unique(parts[k].users[~known]).size)
        parts[k] = parts[k].take(known)
    sizes = [len(p.line) for p in parts]
    user_ids, user = _remap(np.concatenate([p.users for p in parts]))
    item_ids, item = _remap(np.concatenate([p.items for p in parts]))
    num_users, num_items = len(user_ids), len(item_ids)
    bounds = np.cumsum([0, *sizes])
    pairs = np.stack([user, item + num_users], axis=1)
    split_pairs = [pairs[bounds[k]:bounds[k + 1]] for k in range(3)]
    has_rating = all(p.rating is not None for p in parts)
    ratings = {_PART[k]: (parts[k].rating.astype(np.float32) if has_rating  # type: ignore[union-attr]
                          else np.ones(sizes[k], np.float32)) for k in range(3)}
    tr = split_pairs[0]
    weight = np.concatenate([ratings["train"]] * 2) if weighted else None
    x = _features(user_ids, item_ids, user_features, item_features, sep)
    graph = Graph.from_edges(np.concatenate([tr[:, 0], tr[:, 1]]),
                             np.concatenate([tr[:, 1], tr[:, 0]]), num_users + num_items,
                             edge_weight=weight, x=x,
                             node_type=np.repeat(np.array([0, 1], np.int8),
                                                 [num_users, num_items]),
                             name=files[0].name, meta={"format": "interactions"})
    summary.update({"users": num_users, "items": num_items,
                    **{f"{_PART[k]}_interactions": sizes[k] for k in range(3)},
                    "duplicates_dropped": duplicates_dropped})
    LOG.info("interactions %s: %s", files[0], summary)
    meta = {"format": "interactions", "source": str(files[0]),
            "files": [str(f) for f in files], "user_ids": user_ids, "item_ids": item_ids,
            "duplicates_dropped": duplicates_dropped, "time_column": train.time is not None,
            "weighted": weighted, "ratings": ratings, "summary": summary}
    return LinkData(graph, *split_pairs, num_users=num_users, num_items=num_items, meta=meta)


def _features(user_ids: np.ndarray, item_ids: np.ndarray, user_features: str | Path | None,
              item_features: str | Path | None, sep: str | None) -> np.ndarray | None:
    if user_features is None and item_features is None:
        return None
    blocks = [None if f is None else read_features(f, ids, what, sep=sep)
              for f, ids, what in ((user_features, user_ids, "user"),
                                   (item_features, item_ids, "item"))]
    widths = [0 if b is None else b.shape[1] for b in blocks]
    x = np.zeros((len(user_ids) + len(item_ids), sum(widths)), np.float32)
    if blocks[0] is not None:
        x[:len(user_ids), :widths[0]] = blocks[0]
    if blocks[1] is not None:
        x[len(user_ids):, widths[0]:] = blocks[1]
    return x
