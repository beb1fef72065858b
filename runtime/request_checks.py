"""Request checks beyond ids (qgnn.runtime.validation): counts against the per-request
limit, feature vectors, and inductive nodes packed for the backend. Vectorised; errors name the
field, the index and the value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from qgnn.runtime.backend import InductiveNodes
from qgnn.runtime.errors import (
    InvalidRequestError,
    LimitExceededError,
)
from qgnn.runtime.messages import InductiveSpec, Limits
from qgnn.runtime.validation import as_ids


def check_count(n: int, field: str, limits: Limits, *, allow_empty: bool = True) -> None:
    if n > limits.max_ids_per_request:
        raise LimitExceededError(field, n, limits.max_ids_per_request)
    if n == 0 and not allow_empty:
        raise InvalidRequestError(field, [], "at least one entry is required")


def as_features(rows: Sequence[Any], field: str, num_features: int) -> np.ndarray:
    """Feature vectors (each length F, finite) as float32 (m, F)."""
    lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
    wrong = lengths != num_features
    if wrong.any():
        i = int(np.argmax(wrong))
        raise InvalidRequestError(f"{field}[{i}].features", int(lengths[i]),
                                  f"feature vectors must have length {num_features}")
    if not rows:
        return np.zeros((0, num_features), np.float32)
    try:
        feats = np.asarray([np.asarray(r, dtype=np.float32) for r in rows], np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(field, "features", f"not numbers: {exc}") from None
    feats = feats.reshape(len(rows), num_features)
    finite = np.isfinite(feats).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise InvalidRequestError(f"{field}[{i}].features", "NaN or infinity",
                                  "features must be finite numbers")
    return feats


def pack_inductive(specs: Sequence[InductiveSpec], num_nodes: int, num_features: int,
                   model: str, limits: Limits) -> InductiveNodes | None:
    """Validates a request's inductive nodes and packs them (see :class:`InductiveNodes`)."""
    if not specs:
        return None
    check_count(len(specs), "inductive_nodes", limits)
    ids = np.fromiter((s.id for s in specs), np.int64, len(specs))
    clash = ids < num_nodes
    if clash.any():
        i = int(np.argmax(clash))
        raise InvalidRequestError(f"inductive_nodes[{i}].id", int(ids[i]),
                                  f"inductive ids must be >= num_nodes ({num_nodes}) of model "
                                  f"{model}, so they cannot clash with existing nodes")
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        i = int(np.flatnonzero(ids == dup)[1])
        raise InvalidRequestError(f"inductive_nodes[{i}].id", int(dup),
                                  "inductive ids must be unique within the request")
    del first
    feats = as_features([s.features for s in specs], "inductive_nodes", num_features)
    edges = []
    for name in ("neighbors", "in_neighbors"):
        parts = [as_ids(getattr(s, name), f"inductive_nodes[{i}].{name}")
                 for i, s in enumerate(specs)]
        counts_i = np.fromiter((len(p) for p in parts), np.int64, len(parts))
        nbrs = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        check_count(len(nbrs), f"inductive_nodes.{name}", limits)
        owner = np.repeat(ids, counts_i)
        bad = ((nbrs < 0) | (nbrs >= num_nodes)) & ~np.isin(nbrs, ids)
        if bad.any():
            j = int(np.argmax(bad))
            node = int(np.searchsorted(np.cumsum(counts_i), j, side="right"))
            raise InvalidRequestError(f"inductive_nodes[{node}].{name}", int(nbrs[j]),
                                      f"not a node of model {model} (ids 0..{num_nodes - 1}) "
                                      f"nor an inductive node of this request")
        into = np.stack([nbrs, owner], axis=1)
        edges.append(into)
        if name == "neighbors":
            edges.append(np.stack([owner, nbrs], axis=1))
    return InductiveNodes(ids, feats, np.concatenate(edges).astype(np.int64, copy=False))

