"""``qgnn evaluate-recs``: Recall@K / NDCG@K / HitRate@K of a bundle or a running server.

Each user of the test file asks for its top K items the way a client would (the in-process
engine for a bundle, ``Recommend`` for a server), the items it has in training removed: the
protocol of the issue's figures (all items ranked, training interactions excluded; the
bundle's serving-only seen items are the held-out data itself and are not excluded). The
training items are the served graph's edges of the user (bundle), or the ``--train`` file.
Test users the model does not know are counted and skipped; test items it does not know stay
in the denominators (misses) and are counted (bundle mode).
Metrics are qgnn.graph.ranking's (one definition). Torch-free.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.graph.ranking import PAD, ranking_metrics
from qgnn.runtime.errors import InvalidRequestError

_SPLIT = re.compile(r"::|[\t,;]| +")


@dataclass(frozen=True)
class Interactions:
    """(user, item) id pairs as strings, in file order."""

    users: np.ndarray
    items: np.ndarray

    def by_user(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for u, i in zip(self.users.tolist(), self.items.tolist(), strict=True):
            out.setdefault(u, []).append(i)
        return out


def read_interactions(path: str | Path, *, sep: str | None = None, user_col: int = 0,
                      item_col: int = 1, skip_header: bool = False) -> Interactions:
    """A CSV/TSV/``::``/space separated interaction file (MovieLens ``u.data``, ``ratings.dat``
    and CSV exports alike): the user and item columns, other columns ignored. A malformed
    line is a ValueError naming the file and line."""
    path = Path(path)
    users: list[str] = []
    items: list[str] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if (skip_header and number == 1) or not line.strip():
                continue
            fields = line.rstrip("\r\n").split(sep) if sep else _SPLIT.split(line.strip())
            if max(user_col, item_col) >= len(fields):
                raise ValueError(f"{path}:{number}: expected at least "
                                 f"{max(user_col, item_col) + 1} columns, got "
                                 f"{len(fields)}: {line.strip()[:80]!r}")
            user, item = fields[user_col].strip(), fields[item_col].strip()
            if not user or not item:
                raise ValueError(f"{path}:{number}: empty user or item id")
            users.append(user)
            items.append(item)
    if not users:
        raise ValueError(f"{path}: no interactions")
    return Interactions(np.asarray(users), np.asarray(items))


# A ranker answers (user key, how many) with item keys, best first; keys are node ids in
# decimal or the dataset's ids, matching the test file.
Ranker = Callable[[str, int], list[str]]


def evaluate(rank: Ranker, test: Interactions, ks: Sequence[int],
             train: dict[str, set[str]] | Callable[[str], set[str]],
             known_user: Callable[[str], bool], known_item: Callable[[str], bool]
             ) -> dict[str, Any]:
    """Metrics over the test file's users (see the module docstring)."""
    k_max = max(ks)
    held = test.by_user()
    kept_users = [u for u in held if known_user(u)]
    if not kept_users:
        raise ValueError("no user of the test file is a user of the model")
    codes: dict[str, int] = {}
    ranked = np.full((len(kept_users), k_max), PAD, np.int64)
    relevant: list[tuple[int, int]] = []
    unknown_items = 0
    for row, user in enumerate(kept_users):
        had = train(user) if callable(train) else train.get(user, set())
        top = [i for i in rank(user, k_max + len(had)) if i not in had][:k_max]
        ranked[row, :len(top)] = [codes.setdefault(i, len(codes)) for i in top]
        for item in held[user]:
            unknown_items += not known_item(item)  # a miss: the model cannot rank it
            relevant.append((row, codes.setdefault(item, len(codes))))
    metrics = ranking_metrics(ranked, np.asarray(relevant, np.int64).reshape(-1, 2), ks)
    return {"metrics": metrics, "users": len(kept_users),
            "skipped_users": len(held) - len(kept_users),
            "test_interactions": len(relevant), "unknown_items": unknown_items}


def bundle_ranker(engine: Any, ids: str) -> tuple[Ranker, Callable[[str], set[str]],
                                                 Callable[[str], bool], Callable[[str], bool]]:
    """(ranker, training items of a user, known user?, known item?) of an in-process engine."""
    cat = engine.catalogue
    if ids == "external" and not cat.has_external_ids:
        raise ValueError("the bundle has no external ids (graph/external_ids_*.npy); use "
                         "--ids node")

    def node(user: str) -> int:
        return cat.user_node(user) if ids == "external" else int(user)

    def key(nodes: np.ndarray) -> list[str]:
        return cat.external(nodes) if ids == "external" else [str(int(n)) for n in nodes]

    def rank(user: str, k: int) -> list[str]:
        return key(engine.recommend(node(user), k)[0])

    def train(user: str) -> set[str]:
        _, linked = engine.store.snapshot().out_neighbours(np.asarray([node(user)], np.int64))
        return set(key(linked))

    def known(value: str, want_user: bool) -> bool:
        try:
            if ids == "external":
                if want_user:
                    cat.user_node(value)
                else:
                    cat.item_nodes([value], "item")
                return True
            n = int(value)
        except (InvalidRequestError, ValueError):
            return False
        if not 0 <= n < engine.num_nodes:
            return False
        if not cat.typed:
            return True
        return bool((cat.types(np.asarray([n])) == (0 if want_user else 1))[0])

    return rank, train, lambda u: known(u, True), lambda i: known(i, False)


def server_ranker(client: Any, model: str, ids: str, version: int | None = None
                  ) -> tuple[Ranker, Callable[[str], bool]]:
    """(ranker, known user?) over a running server's Recommend (asked without exclude_seen:
    the training items are removed by :func:`evaluate`). A user the server answers with
    INVALID_ARGUMENT is unknown."""
    import grpc

    def known_user(user: str) -> bool:
        try:
            rank(user, 1)
        except ValueError as exc:
            if "INVALID_ARGUMENT" in str(exc):
                return False
            raise
        return True

    def rank(user: str, k: int) -> list[str]:
        try:
            if ids == "external":
                r = client.recommend(model, k=k, user_external_id=user, version=version)
                if not r.item_external_ids and len(r.item_ids):
                    raise ValueError(f"model {model} answers without external ids; use "
                                     f"--ids node")
                return list(r.item_external_ids)
            if not user.isdigit():
                raise ValueError(f"INVALID_ARGUMENT: user {user!r} is not a node id")
            r = client.recommend(model, int(user), k, version=version)
        except grpc.RpcError as exc:
            raise ValueError(f"Recommend for user {user!r}: {exc.code().name}: "
                             f"{exc.details()}") from None
        return [str(int(i)) for i in r.item_ids]
    return rank, known_user
