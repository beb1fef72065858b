"""The protocol-free data plane: what every servicer (qgnn.v1, KServe v2) calls.

It is the boundary between the gRPC front ends and the inference engine:

* :class:`ModelBackend` is what one loaded model version must provide (the engine in
  ``qgnn.runtime.engine`` implements it; tests use a small numpy backend). Backends never see
  protobuf, and servicers never see backends.
* :func:`register_backend_loader` maps a bundle's ``model.format`` / ``model.task`` to a loader
  ``(bundle, options) -> ModelBackend``.
* :class:`DataPlane` validates requests against the model (ids in range, shapes, dtypes, limits;
  errors name the field and value), routes them through the model's dynamic batcher, and checks
  what the backend returns.

Shapes: ids are int64 (n,); pairs int64 (n, 2); probabilities float32 (n, C); scores float32 (n,);
embeddings float32 (n, D); new node features float32 (m, F).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from qgnn.runtime import admission
from qgnn.runtime.bundle import Bundle
from qgnn.runtime.errors import (
    BackendUnavailableError,
    FailedPreconditionError,
    InvalidRequestError,
    LimitExceededError,
)
from qgnn.runtime.metrics import MetricsObserver
from qgnn.runtime.validation import as_ids, check_ids  # the one id validation (re-exported)

if TYPE_CHECKING:
    from qgnn.runtime.repository import ModelEntry, ModelRepository

log = logging.getLogger("qgnn.runtime.dataplane")

ENGINE_MODULE = "qgnn.runtime.engine"  # imported on first use; it registers its loader(s)
BACKEND_MODULES_ENV = "QGNN_BACKEND_MODULES"  # more modules that register loaders


# ---------------------------------------------------------------------------------------------
# The backend boundary


@dataclass(frozen=True)
class InductiveNodes:
    """Nodes given with one request only, packed: ``ids`` int64 (m,) (all >= num_nodes, unique),
    ``features`` float32 (m, F), ``edges`` int64 (e, 2) directed (src, dst) rows: a ``neighbors``
    entry u of node v gives (u, v) and (v, u), an ``in_neighbors`` entry gives (u, v)."""

    ids: np.ndarray
    features: np.ndarray
    edges: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class InductiveSpec:
    """One inductive node as a request carries it, before validation."""

    id: int
    features: np.ndarray
    neighbors: np.ndarray
    in_neighbors: np.ndarray


@dataclass(frozen=True)
class BackendOptions:
    """What the server tells a backend loader: intra-op ``threads``, ``portable`` (stock
    onnxruntime function bodies instead of compiled kernels), the kernels' ``isa`` level (None:
    the host's default) and an ``observer`` to report subgraph sizes and stage timings to the
    metrics."""

    threads: int = 2
    portable: bool = False
    observer: MetricsObserver = field(default_factory=lambda: MetricsObserver(None, ""))
    isa: str | None = None
    precompute: str = "off"  # node outputs materialised at load: auto, on, off


@runtime_checkable
class ModelBackend(Protocol):
    """One loaded model version. Methods are called from the model's batcher thread, one at a
    time, with ids already validated (in range, or ids of ``inductive``); they return fresh
    arrays. The size properties are also read from request threads (for validation), so they
    must stay cheap and safe to read while a method runs; the graph only ever grows."""

    manifest: dict

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def task(self) -> str:
        """'node' or 'link'."""
    @property
    def num_nodes(self) -> int:
        """Nodes in the served graph now (grows with update_graph)."""
    @property
    def num_edges(self) -> int: ...
    @property
    def num_features(self) -> int: ...
    @property
    def num_classes(self) -> int:
        """C for node classification, 0 for link prediction."""
    @property
    def embedding_dim(self) -> int: ...
    @property
    def revision(self) -> int:
        """Number of graph updates applied since the bundle's graph."""

    def predict_nodes(self, ids: np.ndarray, inductive: InductiveNodes | None = None
                      ) -> np.ndarray:
        """Class probabilities float32 (n, C), rows summing to 1, in ``ids`` order."""
    def predict_links(self, pairs: np.ndarray, inductive: InductiveNodes | None = None
                      ) -> np.ndarray:
        """Edge probabilities float32 (n,) for (src, dst) rows of ``pairs`` (n, 2)."""
    def recommend(self, user: int, k: int, exclude_seen: bool, candidates: np.ndarray | None,
                  inductive: InductiveNodes | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The best <= k items for ``user``: (ids int64, scores float32), best first, ties by
        ascending id; ``candidates`` None means every item."""
    def embed(self, ids: np.ndarray, inductive: InductiveNodes | None = None) -> np.ndarray:
        """Final node representations float32 (n, D)."""
    def update_graph(self, features: np.ndarray | None, edges: np.ndarray | None) -> np.ndarray:
        """Appends nodes (features (m, F)) and directed edges ((e, 2), may use the new ids);
        returns the new ids, num_nodes .. num_nodes + m - 1. All or nothing."""
    def close(self) -> None: ...


BackendLoader = Callable[[Bundle, BackendOptions], ModelBackend]
_LOADERS: dict[tuple[str | None, str | None], BackendLoader] = {}
_LOADERS_LOCK = threading.Lock()
_ENGINE_PROBLEM: str | None = None  # None: not tried yet


def register_backend_loader(loader: BackendLoader, *, format: str | None = None,
                            task: str | None = None) -> BackendLoader:
    """Registers ``loader`` for bundles whose manifest has ``model.format == format`` and
    ``model.task == task`` (None: any). The most specific registration wins: (format, task),
    then (format, any), (any, task), (any, any). Registering the same key again replaces it.
    Returns the loader, so it works as a decorator through functools.partial."""
    with _LOADERS_LOCK:
        _LOADERS[(format, task)] = loader
    return loader


def unregister_backend_loader(*, format: str | None = None, task: str | None = None) -> None:
    """Removes a registration (tests)."""
    with _LOADERS_LOCK:
        _LOADERS.pop((format, task), None)


def import_backends(env: dict[str, str] | None = None) -> str:
    """Imports, once, the modules whose import registers backend loaders: those named in
    ``$QGNN_BACKEND_MODULES`` (comma-separated, from PYTHONPATH; one that fails to import raises
    ValueError, so the server refuses to start) and the inference engine if installed. A broken
    engine only logs: other backends still serve. Returns why the engine is unavailable ('' if
    it is), for the error of a bundle that nothing serves."""
    global _ENGINE_PROBLEM
    spec = (os.environ if env is None else env).get(BACKEND_MODULES_ENV, "")
    for name in filter(None, (part.strip() for part in spec.split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"{BACKEND_MODULES_ENV}: cannot import {name!r} ({exc}); is it on "
                             f"PYTHONPATH?") from None
    if _ENGINE_PROBLEM is None:
        _ENGINE_PROBLEM = ""
        try:
            if importlib.util.find_spec(ENGINE_MODULE) is None:
                _ENGINE_PROBLEM = f"{ENGINE_MODULE} is not installed"
            else:
                importlib.import_module(ENGINE_MODULE)
        except Exception as exc:
            _ENGINE_PROBLEM = f"importing {ENGINE_MODULE} failed: {type(exc).__name__}: {exc}"
            log.exception("importing the inference engine failed")
    return _ENGINE_PROBLEM


def resolve_loader(manifest: dict) -> BackendLoader:
    """The loader for a manifest, by ``model.format`` and ``model.task``."""
    problem = import_backends()
    model = manifest.get("model", {})
    fmt, task = model.get("format"), model.get("task")
    with _LOADERS_LOCK:
        for key in ((fmt, task), (fmt, None), (None, task), (None, None)):
            if key in _LOADERS:
                return _LOADERS[key]
    why = problem or f"{ENGINE_MODULE} registers no loader for it"
    raise BackendUnavailableError(
        f"no backend can serve model.format={fmt!r} model.task={task!r} ({why}; other "
        f"backends can be added with ${BACKEND_MODULES_ENV})")


# ---------------------------------------------------------------------------------------------
# Requests and answers


@dataclass(frozen=True)
class ModelSelector:
    """Which model a call addresses: a name and an explicit version, or None for the newest."""

    name: str
    version: int | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name} v{self.version}"


@dataclass(frozen=True)
class ModelKey:
    """The model version that answered."""

    name: str
    version: int


@dataclass(frozen=True)
class GraphSummary:
    num_nodes: int
    num_edges: int
    num_features: int
    num_classes: int
    revision: int


@dataclass(frozen=True)
class NodePredictions:
    model: ModelKey
    probabilities: np.ndarray  # float32 (n, C)
    predicted_class: np.ndarray  # int64 (n,), argmax, lowest index on ties


@dataclass(frozen=True)
class LinkScores:
    model: ModelKey
    scores: np.ndarray  # float32 (n,)


@dataclass(frozen=True)
class Recommendations:
    model: ModelKey
    item_ids: np.ndarray  # int64 (<= k,)
    scores: np.ndarray  # float32 (<= k,)
    item_external_ids: list[str] | None = None  # the dataset's ids, when the bundle has them


@dataclass(frozen=True)
class RecommendUser:
    """Who a Recommend call is for, beyond a node id: the dataset's own user id, or a
    cold-start user given by its items (node ids and/or dataset ids), plus candidates by
    dataset id. Resolved against the backend's ``catalogue`` (qgnn.runtime.catalogue)."""

    external_id: str | None = None
    candidate_external_ids: Sequence[str] = ()
    new_user_item_ids: Any = ()
    new_user_item_external_ids: Sequence[str] = ()

    @property
    def cold_start(self) -> bool:
        return bool(len(self.new_user_item_ids) or len(self.new_user_item_external_ids))


@dataclass(frozen=True)
class Embeddings:
    model: ModelKey
    embeddings: np.ndarray  # float32 (n, D)


@dataclass(frozen=True)
class GraphUpdate:
    model: ModelKey
    node_ids: np.ndarray  # int64 (m,)
    graph: GraphSummary


@dataclass(frozen=True)
class Limits:
    """Per-request limits (``--max-ids-per-request``)."""

    max_ids_per_request: int = 4096


def work_bytes(rows: int, width: int) -> int:
    """Bytes a request of ``rows`` ids holds while it is answered, for admission control: the
    ids, the float32 result (rows x width) as an array, as raw response bytes and inside the
    serialised response, and the int64 argmax."""
    return int(rows) * (8 + 3 * 4 * max(int(width), 1) + 8)


def graph_summary(backend: ModelBackend) -> GraphSummary:
    return GraphSummary(int(backend.num_nodes), int(backend.num_edges),
                        int(backend.num_features), int(backend.num_classes),
                        int(backend.revision))


# ---------------------------------------------------------------------------------------------
# Validation (vectorised; errors name the field, the index and the value). Ids are checked by
# qgnn.runtime.validation, shared with the protocol front ends.


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


def _checked(out: Any, dtype: type, shape: tuple[int | None, ...], what: str) -> np.ndarray:
    """A backend's output as ``dtype``, refusing a wrong shape (a backend bug: INTERNAL)."""
    arr = np.asarray(out)
    if arr.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, arr.shape,
                                                                            strict=True)):
        raise RuntimeError(f"backend returned {what} of shape {arr.shape}, expected {shape}")
    return arr.astype(dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# Batch runner: how merged requests become one backend call


def _checked_top(answer: Any, top: int) -> tuple[np.ndarray, np.ndarray]:
    """A backend's (item ids, scores) checked: at most ``top``, aligned, right dtypes."""
    ids, scores = answer
    ids = _checked(ids, np.int64, (None,), "item ids")
    scores = _checked(scores, np.float32, (len(ids),), "scores")
    if len(ids) > top:
        raise RuntimeError(f"backend returned {len(ids)} items for k={top}")
    return ids, scores


def make_batch_runner(backend: ModelBackend) -> Callable[[Hashable | None, list[Any]], list[Any]]:
    """The batcher's ``run`` for one backend. Mergeable keys are 'nodes', 'links' and 'embed',
    whose payloads are id arrays (pairs for links), concatenated into one call and split back;
    key None payloads are zero-argument callables run alone."""

    def run(key: Hashable | None, payloads: list[Any]) -> list[Any]:
        if key is None:
            return [payload() for payload in payloads]
        merged = payloads[0] if len(payloads) == 1 else np.concatenate(payloads)
        n = len(merged)
        if key == "nodes":
            out = _checked(backend.predict_nodes(merged), np.float32,
                           (n, backend.num_classes), "probabilities")
        elif key == "links":
            out = _checked(backend.predict_links(merged), np.float32, (n,), "scores")
        elif key == "embed":
            out = _checked(backend.embed(merged), np.float32, (n, None), "embeddings")
        else:
            raise RuntimeError(f"unknown batch key {key!r}")
        if len(payloads) == 1:
            return [out]
        return np.split(out, np.cumsum([len(p) for p in payloads])[:-1])

    return run


# ---------------------------------------------------------------------------------------------
# Graph updates shared by every version of a model


@dataclass
class _GraphLog:
    """Updates applied to a model name, replayed onto versions loaded later."""

    base_num_nodes: int
    updates: list[tuple[np.ndarray | None, np.ndarray | None]] = field(default_factory=list)


class GraphLogs:
    """Per model name: the graph updates applied so far (UpdateGraph), so that every version of
    the name, including ones loaded or reloaded later, serves the same graph. Callers hold the
    repository's per-name lock (ModelRepository.name_lock) around both methods."""

    def __init__(self) -> None:
        self._logs: dict[str, _GraphLog] = {}

    def record(self, name: str, base_num_nodes: int, features: np.ndarray | None,
               edges: np.ndarray | None) -> None:
        """Appends an applied update; ``base_num_nodes`` (the node count before it) is kept
        only for a name's first update: the graph every later one builds on."""
        self._logs.setdefault(name, _GraphLog(base_num_nodes)).updates.append((features, edges))

    def replay(self, name: str, backend: ModelBackend) -> None:
        """Applies the recorded updates to a freshly loaded backend whose graph is the one they
        were made on (same node count); a backend with another graph is left as it is."""
        log_ = self._logs.get(name)
        if log_ is None or not log_.updates:
            return
        if backend.num_nodes != log_.base_num_nodes:
            log.warning("model %s v%s ships a graph of %d nodes, not the %d that %d graph "
                        "update(s) were made on; serving its graph without them", name,
                        backend.version, backend.num_nodes, log_.base_num_nodes,
                        len(log_.updates))
            return
        for features, edges in log_.updates:
            backend.update_graph(features, edges)


# ---------------------------------------------------------------------------------------------
# The data plane


TASK_OF = {"PredictNodes": ("node",), "PredictLinks": ("link",), "Recommend": ("link",),
           "Embed": ("node", "link")}


class DataPlane:
    """Validates, batches and answers requests against the models of a repository."""

    def __init__(self, repository: ModelRepository, limits: Limits | None = None) -> None:
        self.repository = repository
        self.limits = limits or Limits()
        self.graph_logs = GraphLogs()
        repository.add_prepare_hook(self.graph_logs.replay)
        self.update_refusal = ""  # why UpdateGraph is refused on this server ('' : allowed)

    # -- helpers ---------------------------------------------------------------------------------

    def _require_task(self, entry: ModelEntry, method: str) -> None:
        tasks = TASK_OF[method]
        if entry.backend.task not in tasks:
            raise FailedPreconditionError(
                f"{method} needs a {' or '.join(tasks)} model; model {entry.name} "
                f"v{entry.version} is a {entry.backend.task} model")

    def _inductive(self, entry: ModelEntry, specs: Sequence[InductiveSpec]
                   ) -> InductiveNodes | None:
        b = entry.backend
        return pack_inductive(specs, b.num_nodes, b.num_features, entry.label, self.limits)

    def _ids(self, entry: ModelEntry, values: Any, field: str, inductive: InductiveNodes | None,
             *, allow_empty: bool = False) -> np.ndarray:
        ids = as_ids(values, field)
        check_count(len(ids), field, self.limits, allow_empty=allow_empty)
        check_ids(ids, field, entry.backend.num_nodes, entry.label,
                  None if inductive is None else inductive.ids)
        held = getattr(entry.backend, "check_ids", None)  # a shard replica: ids it serves
        if held is not None:
            held(ids, field)
        return ids

    # -- predictions -----------------------------------------------------------------------------

    def predict_nodes(self, model: ModelSelector, ids: Any,
                      inductive: Sequence[InductiveSpec] = (), *,
                      deadline: float | None = None) -> NodePredictions:
        with self.repository.lease(model) as entry:
            self._require_task(entry, "PredictNodes")
            backend, batcher = entry.backend, entry.batcher
            if not inductive and getattr(backend, "precomputed", False):
                # precomputed rows: a gather on this thread, no queue (and not announced to
                # the batcher, whose worker would wake for nothing)
                started = time.monotonic()
                checked = self._ids(entry, ids, "node_ids", None)
                admission.charge(work_bytes(len(checked), backend.num_classes))
                found = backend.lookup_nodes(checked)  # type: ignore[attr-defined]
                if found is not None:
                    probs = _checked(found, np.float32, (len(checked), backend.num_classes),
                                     "probabilities")
                    batcher.record_inline(started, time.monotonic())
                    return NodePredictions(entry.key, probs,
                                           np.argmax(probs, axis=1).astype(np.int64))
            with batcher.arriving():
                ind = self._inductive(entry, inductive)
                ids = self._ids(entry, ids, "node_ids", ind)
                admission.charge(work_bytes(len(ids), backend.num_classes))
                if ind is None:
                    job = batcher.submit("nodes", ids, len(ids), deadline)
                else:
                    job = batcher.submit(None, lambda: _checked(
                        backend.predict_nodes(ids, ind), np.float32,
                        (len(ids), backend.num_classes), "probabilities"), len(ids), deadline)
            probs = batcher.wait(job)
            return NodePredictions(entry.key, probs, np.argmax(probs, axis=1).astype(np.int64))

    def predict_links(self, model: ModelSelector, src: Any, dst: Any,
                      inductive: Sequence[InductiveSpec] = (), *,
                      deadline: float | None = None,
                      fields: tuple[str, str] = ("src_ids", "dst_ids")) -> LinkScores:
        with self.repository.lease(model) as entry:
            self._require_task(entry, "PredictLinks")
            backend, batcher = entry.backend, entry.batcher
            with batcher.arriving():
                ind = self._inductive(entry, inductive)
                s = self._ids(entry, src, fields[0], ind)
                d = self._ids(entry, dst, fields[1], ind)
                if len(s) != len(d):
                    raise InvalidRequestError(fields[1], len(d), f"must have as many entries as "
                                                                 f"{fields[0]} ({len(s)})")
                pairs = np.stack([s, d], axis=1)
                admission.charge(work_bytes(len(pairs), 2 * backend.embedding_dim))
                if ind is None:
                    job = batcher.submit("links", pairs, len(pairs), deadline)
                else:
                    job = batcher.submit(None, lambda: _checked(
                        backend.predict_links(pairs, ind), np.float32, (len(pairs),), "scores"),
                        len(pairs), deadline)
            return LinkScores(entry.key, batcher.wait(job))

    def embed(self, model: ModelSelector, ids: Any, inductive: Sequence[InductiveSpec] = (), *,
              deadline: float | None = None) -> Embeddings:
        with self.repository.lease(model) as entry:
            self._require_task(entry, "Embed")
            backend, batcher = entry.backend, entry.batcher
            with batcher.arriving():
                ind = self._inductive(entry, inductive)
                ids = self._ids(entry, ids, "node_ids", ind)
                admission.charge(work_bytes(len(ids), backend.embedding_dim))
                if ind is None:
                    job = batcher.submit("embed", ids, len(ids), deadline)
                else:
                    job = batcher.submit(None, lambda: _checked(
                        backend.embed(ids, ind), np.float32, (len(ids), None), "embeddings"),
                        len(ids), deadline)
            return Embeddings(entry.key, batcher.wait(job))

    def recommend(self, model: ModelSelector, user: int, k: int, exclude_seen: bool = False,
                  candidates: Any = (), inductive: Sequence[InductiveSpec] = (), *,
                  deadline: float | None = None, who: RecommendUser | None = None
                  ) -> Recommendations:
        who = who or RecommendUser()
        with self.repository.lease(model) as entry:
            self._require_task(entry, "Recommend")
            backend, batcher = entry.backend, entry.batcher
            catalogue = getattr(backend, "catalogue", None)
            with batcher.arriving():
                if k < 1:
                    raise InvalidRequestError("k", int(k), "must be >= 1")
                candidates = self._external_candidates(catalogue, candidates, who)
                if who.cold_start:
                    run = self._cold_start(entry, user, k, exclude_seen, candidates, inductive,
                                           who)
                else:
                    run = self._known_user(entry, user, k, exclude_seen, candidates, inductive,
                                           who)
                job = batcher.submit(None, run, 1, deadline)
            ids, scores = batcher.wait(job)
            external = None
            if catalogue is not None and catalogue.has_external_ids:
                external = catalogue.external(ids)
            return Recommendations(entry.key, ids, scores, external)

    @staticmethod
    def _external_candidates(catalogue: Any, candidates: Any, who: RecommendUser) -> Any:
        if not len(who.candidate_external_ids):
            return candidates
        if catalogue is None:
            raise InvalidRequestError("candidate_external_ids", "", "this model has no "
                                                                    "external ids")
        ext = catalogue.item_nodes(list(who.candidate_external_ids), "candidate_external_ids")
        return np.concatenate([as_ids(candidates, "candidate_ids"), ext])

    def _known_user(self, entry: ModelEntry, user: int, k: int, exclude_seen: bool,
                    candidates: Any, inductive: Sequence[InductiveSpec], who: RecommendUser
                    ) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        backend = entry.backend
        catalogue = getattr(backend, "catalogue", None)
        shown: Any = user
        if who.external_id is not None:
            if catalogue is None:
                raise InvalidRequestError("user_external_id", who.external_id,
                                          "this model has no external ids; use user_id")
            if user:
                raise InvalidRequestError("user_id", int(user), "give user_id or "
                                                                "user_external_id, not both")
            user = catalogue.user_node(who.external_id, "user_external_id")
            shown = who.external_id
        ind = self._inductive(entry, inductive)
        user_arr = self._ids(entry, [user], "user_id", ind)
        if catalogue is not None and catalogue.typed:
            catalogue.check_user(int(user_arr[0]), "user_id", shown)
        cand = self._ids(entry, candidates, "candidate_ids", ind, allow_empty=True)
        n_items = len(cand) if len(cand) else backend.num_nodes
        top = int(min(k, n_items + (0 if ind is None else len(ind))))
        cand_arg = cand if len(cand) else None
        user_id = int(user_arr[0])

        def run() -> tuple[np.ndarray, np.ndarray]:
            return _checked_top(backend.recommend(user_id, top, bool(exclude_seen), cand_arg,
                                                  ind), top)
        return run

    def _cold_start(self, entry: ModelEntry, user: int, k: int, exclude_seen: bool,
                    candidates: Any, inductive: Sequence[InductiveSpec], who: RecommendUser
                    ) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """A new user given by its items: the backend's ``recommend_new_user``."""
        backend = entry.backend
        if not hasattr(backend, "recommend_new_user"):
            raise FailedPreconditionError(f"model {entry.label} cannot serve cold-start users "
                                          f"(its backend has no recommend_new_user)")
        if user or who.external_id is not None or len(inductive):
            raise InvalidRequestError("new_user_item_ids", "", "a cold-start user is given by "
                                      "its items only: leave user_id, user_external_id and "
                                      "inductive_nodes unset")
        items = as_ids(who.new_user_item_ids, "new_user_item_ids")
        if len(who.new_user_item_external_ids):
            catalogue = getattr(backend, "catalogue", None)
            if catalogue is None:
                raise InvalidRequestError("new_user_item_external_ids", "",
                                          "this model has no external ids")
            items = np.concatenate([items, catalogue.item_nodes(
                list(who.new_user_item_external_ids), "new_user_item_external_ids")])
        check_count(len(items), "new_user_item_ids", self.limits)
        cand = self._ids(entry, candidates, "candidate_ids", None, allow_empty=True)
        top = int(min(k, len(cand) if len(cand) else backend.num_nodes))
        cand_arg = cand if len(cand) else None

        def run() -> tuple[np.ndarray, np.ndarray]:
            return _checked_top(backend.recommend_new_user(items, top, bool(exclude_seen),
                                                           cand_arg), top)
        return run

    # -- graph updates ---------------------------------------------------------------------------

    def update_graph(self, model: ModelSelector, features: Sequence[Any], src: Any, dst: Any,
                     undirected: bool = False, expected_num_nodes: int | None = None
                     ) -> GraphUpdate:
        """Adds nodes and edges to the graph of every loaded version of the model's name, all or
        nothing; versions loaded later replay the update. Once validated, an update is applied
        to every version regardless of the caller's deadline (it must not stop half-way)."""
        self.repository.resolve(model)  # NOT_FOUND / UNAVAILABLE before taking the lock
        if self.update_refusal:
            raise FailedPreconditionError(self.update_refusal)
        with self.repository.name_lock(model.name), \
                self.repository.lease_all(model.name) as entries:
            head = next((e for e in entries if model.version in (None, e.version)), None)
            if head is None:
                self.repository.resolve(model)  # raises the precise error
                raise FailedPreconditionError(f"model {model} is not serving")
            sizes = {e.backend.num_nodes for e in entries}
            if len(sizes) > 1:
                raise FailedPreconditionError(
                    f"the loaded versions of model {model.name} serve different graphs "
                    f"({sorted(sizes)} nodes); unload all but one before UpdateGraph")
            b = head.backend
            n0 = b.num_nodes
            if expected_num_nodes is not None and expected_num_nodes != n0:
                raise FailedPreconditionError(
                    f"expected_num_nodes is {expected_num_nodes} but model {model.name}'s graph "
                    f"has {n0} nodes (another update came first); recompute the new ids")
            check_count(len(features), "add_nodes", self.limits)
            feats = as_features(list(features), "add_nodes", b.num_features)
            s, d = as_ids(src, "edge_src"), as_ids(dst, "edge_dst")
            check_count(len(s), "edge_src", self.limits)
            if len(s) != len(d):
                raise InvalidRequestError("edge_dst", len(d),
                                          f"must have as many entries as edge_src ({len(s)})")
            total = n0 + len(feats)
            check_ids(s, "edge_src", total, head.label)
            check_ids(d, "edge_dst", total, head.label)
            if len(feats) == 0 and len(s) == 0:
                raise InvalidRequestError("add_nodes", 0, "an update needs nodes or edges")
            edges = np.stack([s, d], axis=1)
            if undirected:
                edges = np.concatenate([edges, edges[:, ::-1]])
            f_arg = feats if len(feats) else None
            e_arg = edges if len(edges) else None
            new_ids = None
            for i, entry in enumerate(entries):
                try:
                    got = entry.batcher.call(
                        None, lambda b=entry.backend: b.update_graph(f_arg, e_arg), 1)
                    got = _checked(got, np.int64, (len(feats),), "new node ids")
                    if not np.array_equal(got, np.arange(n0, total)):
                        raise RuntimeError(f"backend of {entry.label} gave new ids {got[:5]}..., "
                                           f"expected {n0}..{total - 1}")
                except Exception:
                    if i:
                        log.error("graph update applied to %s but not to %s: the versions of "
                                  "model %s now serve different graphs; reload them",
                                  [e.label for e in entries[:i]], entry.label, model.name)
                    raise
                new_ids = got if new_ids is None else new_ids
            self.graph_logs.record(model.name, n0, f_arg, e_arg)
            return GraphUpdate(head.key, new_ids, graph_summary(b))

    # -- models ----------------------------------------------------------------------------------

    def model_entry(self, model: ModelSelector) -> ModelEntry:
        """The entry that would answer (NOT_FOUND / UNAVAILABLE otherwise), without a lease."""
        return self.repository.resolve(model)

    def list_models(self, name: str = "") -> list[ModelEntry]:
        return self.repository.entries(name or None)

    def is_ready(self, model: ModelSelector | None = None) -> bool:
        """A model (or, with None, the server: any model) is ready to answer."""
        return self.repository.is_serving(None if model is None else model.name,
                                          None if model is None else model.version)


_NO_DEADLINE_S = 10**6  # gRPC reports a call without a deadline as a huge time remaining


def deadline_from(seconds_left: float | None) -> float | None:
    """A caller's remaining time as a monotonic deadline (None: no deadline)."""
    if seconds_left is None or seconds_left > _NO_DEADLINE_S:
        return None
    return time.monotonic() + max(seconds_left, 0.0)


def inductive_specs(nodes: Iterable[Any]) -> list[InductiveSpec]:
    """InductiveSpec rows from objects with ``id``, ``features``, ``neighbors``, ``in_neighbors``
    (the qgnn.v1 InductiveNode message, or any look-alike)."""
    return [InductiveSpec(int(n.id), np.asarray(n.features, np.float32),
                          np.asarray(n.neighbors, np.int64), np.asarray(n.in_neighbors, np.int64))
            for n in nodes]
