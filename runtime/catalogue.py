"""Who is a user and who is an item in a served recommender: node types, external ids, seen items.

Bipartite link bundles number users ``0..U-1`` and items ``U..U+I-1`` and may carry
(docs/serving.md, "Recommending"): ``graph/node_type.npy`` (0 user, 1 item), the
dataset's own ids (``graph/external_ids_user.npy`` / ``graph/external_ids_item.npy``, numpy
unicode arrays), and a serving-only CSR of each user's held-out interactions
(``graph/seen_indptr.npy`` / ``graph/seen_indices.npy``) that exclude-seen must honour although
the model never saw them. A :class:`Catalogue` answers every question the serving layers ask
about them, and turns each misuse (an item given as a user, an unknown external id) into an
InvalidRequestError naming the value, so the gRPC services, the engine and the client all give
the same message. numpy only: the data plane uses it without knowing the backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qgnn.runtime.errors import BundleError, InvalidRequestError

NODE_TYPE = "graph/node_type.npy"
EXTERNAL_IDS_USER = "graph/external_ids_user.npy"
EXTERNAL_IDS_ITEM = "graph/external_ids_item.npy"
SEEN_INDPTR = "graph/seen_indptr.npy"
SEEN_INDICES = "graph/seen_indices.npy"
USER, ITEM = 0, 1
TYPE_NAMES = {USER: "user", ITEM: "item"}


def type_name(code: int) -> str:
    return TYPE_NAMES.get(int(code), f"type {int(code)}")


@dataclass(frozen=True)
class _IdMap:
    """External id strings of one node type and their node ids, searchable."""

    names: np.ndarray  # (n,) unicode, position i = node offset + i
    order: np.ndarray  # argsort of names
    offset: int

    @classmethod
    def of(cls, names: np.ndarray, offset: int, file: str) -> _IdMap:
        order = np.argsort(names, kind="stable")
        ranked = names[order]
        if ranked.size > 1 and (ranked[1:] == ranked[:-1]).any():
            dup = ranked[1:][ranked[1:] == ranked[:-1]][0]
            raise BundleError(file, f"external id {str(dup)!r} appears twice")
        return cls(names, order, offset)

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Node id of each string, -1 where unknown."""
        if not self.names.size or not values.size:
            return np.full(values.size, -1, np.int64)
        ranked = self.names[self.order]
        pos = np.minimum(np.searchsorted(ranked, values), ranked.size - 1)
        hit = ranked[pos] == values
        return np.where(hit, self.order[pos].astype(np.int64) + self.offset, -1)


class Catalogue:
    """Node types, external ids and serving-only seen items of one served graph (any of them may
    be absent: a graph without types treats every node as an item, as before)."""

    def __init__(self, node_type: np.ndarray | None, users: np.ndarray | None = None,
                 items: np.ndarray | None = None, seen: tuple[np.ndarray, np.ndarray] | None
                 = None) -> None:
        self.node_type = None if node_type is None else np.asarray(node_type, np.int8)
        n = 0 if self.node_type is None else self.node_type.size
        self.num_users = 0 if self.node_type is None else int((self.node_type == USER).sum())
        self.num_items = n - self.num_users
        self.contiguous = self.node_type is None or not (
            self.node_type[:self.num_users] != USER).any()
        if (users is not None or seen is not None) and not self.contiguous:
            raise BundleError(NODE_TYPE, "external ids and seen items need users as nodes "
                                         "0..U-1 and items as U..U+I-1")
        self._users = None if users is None else _IdMap.of(users, 0, EXTERNAL_IDS_USER)
        self._items = None if items is None else _IdMap.of(items, self.num_users,
                                                            EXTERNAL_IDS_ITEM)
        if users is not None and users.size != self.num_users:
            raise BundleError(EXTERNAL_IDS_USER, f"has {users.size} ids for {self.num_users} "
                                                 f"users")
        if items is not None and items.size != self.num_items:
            raise BundleError(EXTERNAL_IDS_ITEM, f"has {items.size} ids for {self.num_items} "
                                                 f"items")
        self.seen = seen
        self._item_ids: np.ndarray | None = None

    # -- types -----------------------------------------------------------------------------------

    @property
    def typed(self) -> bool:
        return self.node_type is not None

    @property
    def has_external_ids(self) -> bool:
        return self._users is not None and self._items is not None

    def types(self, ids: np.ndarray) -> np.ndarray:
        """Type code of each node id; -1 for nodes beyond the bundle's (added while serving)."""
        assert self.node_type is not None
        out = np.full(ids.size, -1, np.int8)
        known = ids < self.node_type.size
        out[known] = self.node_type[ids[known]]
        return out

    def check_user(self, user: int, field: str = "user_id", shown: Any = None) -> None:
        """InvalidRequestError unless ``user`` is a user node (or the graph has no types, or
        the node was added while serving)."""
        if self.node_type is None or user >= self.node_type.size:
            return
        code = int(self.node_type[user])
        if code != USER:
            where = f" (users are nodes 0..{self.num_users - 1})" if self.contiguous else ""
            raise InvalidRequestError(field, user if shown is None else shown,
                                      f"node {user} is an {type_name(code)}, not a user{where}")

    def check_items(self, ids: np.ndarray, field: str) -> None:
        """InvalidRequestError naming the first id of ``ids`` that is a (bundle) user."""
        if self.node_type is None or not ids.size:
            return
        bad = self.types(ids) == USER
        if bad.any():
            i = int(np.argmax(bad))
            last = self.num_users + self.num_items - 1
            where = f" (items are nodes {self.num_users}..{last})" if self.contiguous else ""
            raise InvalidRequestError(f"{field}[{i}]", int(ids[i]),
                                      f"node {int(ids[i])} is a user, not an item{where}")

    def item_ids(self) -> np.ndarray:
        """Sorted node ids of the bundle's items (computed once: read on every request)."""
        assert self.node_type is not None
        if self._item_ids is None:
            ids = np.flatnonzero(self.node_type == ITEM).astype(np.int64)
            ids.flags.writeable = False
            self._item_ids = ids
        return self._item_ids

    # -- seen items ------------------------------------------------------------------------------

    def seen_items(self, user: int) -> np.ndarray:
        """The user's serving-only interactions (item node ids), empty when none are recorded."""
        if self.seen is None or user >= self.seen[0].size - 1:
            return np.zeros(0, np.int64)
        indptr, indices = self.seen
        return np.asarray(indices[indptr[user]:indptr[user + 1]], np.int64)

    # -- external ids ----------------------------------------------------------------------------

    def _require_external(self, field: str) -> tuple[_IdMap, _IdMap]:
        if self._users is None or self._items is None:
            raise InvalidRequestError(field, "", "this model's bundle has no external ids "
                                                 "(graph/external_ids_*.npy); use node ids")
        return self._users, self._items

    def user_node(self, external: str, field: str = "user") -> int:
        """The node id of a user given by its dataset id; names an item id given instead."""
        users, items = self._require_external(field)
        value = np.asarray([str(external)])
        node = int(users.lookup(value)[0])
        if node >= 0:
            return node
        if int(items.lookup(value)[0]) >= 0:
            raise InvalidRequestError(field, str(external),
                                      "the dataset id of an item, not of a user")
        raise InvalidRequestError(field, str(external), f"no user has this dataset id "
                                                        f"({EXTERNAL_IDS_USER})")

    def item_nodes(self, external: Sequence[str], field: str) -> np.ndarray:
        """Node ids of items given by dataset ids, in order; names the first unknown one."""
        users, items = self._require_external(field)
        values = np.asarray([str(v) for v in external], dtype=str)
        nodes = items.lookup(values)
        if (nodes < 0).any():
            i = int(np.argmax(nodes < 0))
            what = ("the dataset id of a user, not of an item"
                    if users.lookup(values[i:i + 1])[0] >= 0
                    else f"no item has this dataset id ({EXTERNAL_IDS_ITEM})")
            raise InvalidRequestError(f"{field}[{i}]", str(values[i]), what)
        return nodes

    def external(self, ids: np.ndarray) -> list[str]:
        """Dataset ids of nodes (items or users); a node added while serving, which has none,
        is given as its node id in decimal."""
        users, items = self._require_external("external ids")
        out = []
        for node in np.asarray(ids, np.int64).tolist():
            if node < self.num_users:
                out.append(str(users.names[node]))
            elif node < self.num_users + self.num_items:
                out.append(str(items.names[node - self.num_users]))
            else:
                out.append(str(node))
        return out


def _strings(bundle: Any, name: str) -> np.ndarray | None:
    if name not in bundle.files:
        return None
    arr = np.asarray(bundle.array(name))
    if arr.ndim != 1 or arr.dtype.kind != "U":
        raise BundleError(name, f"must be a 1-D numpy unicode array, got {arr.dtype} "
                                f"{list(arr.shape)}")
    return arr


def load_catalogue(bundle: Any, num_nodes: int) -> Catalogue:
    """The bundle's recommender files, checked against each other and the graph's size."""
    node_type = None
    if NODE_TYPE in bundle.files:
        node_type = np.asarray(bundle.array(NODE_TYPE))
        if node_type.shape != (num_nodes,) or node_type.dtype.kind not in "iu":
            raise BundleError(NODE_TYPE, f"must be ({num_nodes},) integers, got "
                                         f"{node_type.dtype} {node_type.shape}")
    users, items = _strings(bundle, EXTERNAL_IDS_USER), _strings(bundle, EXTERNAL_IDS_ITEM)
    if (users is None) != (items is None):
        raise BundleError(EXTERNAL_IDS_USER, "external ids need both the user and the item file")
    if users is not None and node_type is None:
        raise BundleError(EXTERNAL_IDS_USER, f"external ids need {NODE_TYPE}")
    seen = None
    if SEEN_INDPTR in bundle.files or SEEN_INDICES in bundle.files:
        if node_type is None or SEEN_INDPTR not in bundle.files \
                or SEEN_INDICES not in bundle.files:
            raise BundleError(SEEN_INDPTR, f"seen items need {SEEN_INDPTR}, {SEEN_INDICES} "
                                           f"and {NODE_TYPE}")
        indptr = np.asarray(bundle.array(SEEN_INDPTR))
        indices = np.asarray(bundle.array(SEEN_INDICES))
        u = int((node_type == USER).sum())
        if indptr.dtype != np.int64 or indptr.shape != (u + 1,) or int(indptr[0]) != 0 \
                or int(indptr[-1]) != indices.size or (np.diff(indptr) < 0).any():
            raise BundleError(SEEN_INDPTR, f"must be an int64 CSR pointer of {u + 1} entries "
                                           f"over {SEEN_INDICES}")
        if indices.dtype != np.int64 or indices.ndim != 1 or (
                indices.size and (int(indices.min()) < u or int(indices.max()) >= num_nodes)):
            raise BundleError(SEEN_INDICES, f"must be int64 item node ids in [{u}, {num_nodes})")
        seen = (indptr, indices)
    return Catalogue(node_type, users, items, seen)
