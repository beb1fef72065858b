"""The protocol-free data plane: what every servicer (qgnn.v1, KServe v2) calls.

:class:`DataPlane` validates requests against the model (ids in range, shapes, dtypes, limits;
errors name the field and value), routes them through the model's dynamic batcher, and checks
what the backend returns. Its neighbours, one job each: the backend boundary
(qgnn.runtime.backend), loader registry (backend_loaders), request and answer types (messages),
request checks (validation, request_checks), the batch runner (batch_runner) and the graph-update
logs (graph_logs); the model versions it answers from live in qgnn.runtime.repository.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import numpy as np
from qgnn.runtime import admission
from qgnn.runtime.backend import InductiveNodes
from qgnn.runtime.batch_runner import checked_output, checked_top
from qgnn.runtime.errors import (
    FailedPreconditionError,
    InvalidRequestError,
)
from qgnn.runtime.graph_logs import GraphLogs
from qgnn.runtime.messages import (
    Embeddings,
    GraphUpdate,
    InductiveSpec,
    Limits,
    LinkScores,
    ModelSelector,
    NodePredictions,
    Recommendations,
    RecommendUser,
    graph_summary,
    work_bytes,
)
from qgnn.runtime.request_checks import as_features, check_count, pack_inductive
from qgnn.runtime.stepwise import Steps, drive
from qgnn.runtime.validation import as_ids, check_ids

if TYPE_CHECKING:
    from qgnn.runtime.model_entry import ModelEntry
    from qgnn.runtime.repository import ModelRepository

log = logging.getLogger("qgnn.runtime.dataplane")


_UNSET = object()

TASK_OF = {"PredictNodes": ("node",), "PredictLinks": ("link",), "Recommend": ("link",),
           "Embed": ("node", "link")}


def _submit(batcher: Any, kind: str, rows: np.ndarray, inductive: InductiveNodes | None,
            deadline: float | None, compute: Callable[[], np.ndarray]) -> Any:
    """Queues ``rows`` for batching under ``kind``; a request with inductive nodes cannot
    merge with others, so it queues its own ``compute`` instead."""
    if inductive is None:
        return batcher.submit(kind, rows, len(rows), deadline, admission.arrival())
    return batcher.submit(None, compute, len(rows), deadline, admission.arrival())


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
        held = entry.memo.get("check_ids", _UNSET)  # a shard replica: ids it serves
        if held is _UNSET:  # looked up once per version (a missing attribute costs a raise)
            held = entry.memo["check_ids"] = getattr(entry.backend, "check_ids", None)
        if held is not None:
            held(ids, field)
        return ids

    # -- predictions -----------------------------------------------------------------------------

    def lease(self, model: ModelSelector) -> AbstractContextManager[ModelEntry]:
        """The version that answers ``model``, kept open until the block ends. A front end
        that answers one call with several data-plane calls (KServe's outputs) pins one version
        this way and calls the ``*_on`` methods with it."""
        return self.repository.lease(model)

    def predict_nodes(self, model: ModelSelector, ids: Any,
                      inductive: Sequence[InductiveSpec] = (), *,
                      deadline: float | None = None) -> NodePredictions:
        with self.repository.lease(model) as entry:
            return self.predict_nodes_on(entry, ids, inductive, deadline=deadline)

    def predict_nodes_on(self, entry: ModelEntry, ids: Any,
                         inductive: Sequence[InductiveSpec] = (), *,
                         deadline: float | None = None) -> NodePredictions:
        """:meth:`predict_nodes` on a version the caller holds a lease on (:meth:`lease`)."""
        return drive(self.predict_nodes_steps(entry, ids, inductive, deadline=deadline))

    def predict_nodes_steps(self, entry: ModelEntry, ids: Any,
                            inductive: Sequence[InductiveSpec] = (), *,
                            deadline: float | None = None) -> Steps:
        """:meth:`predict_nodes_on` as steps (runtime/stepwise.py): it yields its wait for the
        batcher (a precomputed lookup answers without one)."""
        self._require_task(entry, "PredictNodes")
        backend, batcher = entry.backend, entry.batcher
        if not inductive and getattr(backend, "precomputed", False):
            # precomputed rows: a gather on this thread, no queue (and not announced to the
            # batcher, whose worker would wake for nothing)
            started = time.monotonic()
            checked = self._ids(entry, ids, "node_ids", None)
            n, width = len(checked), backend.num_classes
            admission.charge(work_bytes(n, width))
            found = backend.lookup_nodes(checked)  # type: ignore[attr-defined]
            if found is not None:
                probs = checked_output(found, np.float32, (n, width), "probabilities")
                batcher.record_inline(started, time.monotonic())
                return NodePredictions(entry.key, probs,
                                       probs.argmax(axis=1).astype(np.int64, copy=False))
        with batcher.arriving():
            ind = self._inductive(entry, inductive)
            ids = self._ids(entry, ids, "node_ids", ind)
            admission.charge(work_bytes(len(ids), backend.num_classes))
            job = _submit(batcher, "nodes", ids, ind, deadline, lambda: checked_output(
                backend.predict_nodes(ids, ind), np.float32,
                (len(ids), backend.num_classes), "probabilities"))
        probs = yield batcher, job
        return NodePredictions(entry.key, probs, np.argmax(probs, axis=1).astype(np.int64))

    def predict_links(self, model: ModelSelector, src: Any, dst: Any,
                      inductive: Sequence[InductiveSpec] = (), *,
                      deadline: float | None = None,
                      fields: tuple[str, str] = ("src_ids", "dst_ids")) -> LinkScores:
        with self.repository.lease(model) as entry:
            return self.predict_links_on(entry, src, dst, inductive, deadline=deadline,
                                         fields=fields)

    def predict_links_on(self, entry: ModelEntry, src: Any, dst: Any,
                         inductive: Sequence[InductiveSpec] = (), *,
                         deadline: float | None = None,
                         fields: tuple[str, str] = ("src_ids", "dst_ids")) -> LinkScores:
        """:meth:`predict_links` on a version the caller holds a lease on (:meth:`lease`)."""
        return drive(self.predict_links_steps(entry, src, dst, inductive, deadline=deadline,
                                              fields=fields))

    def predict_links_steps(self, entry: ModelEntry, src: Any, dst: Any,
                            inductive: Sequence[InductiveSpec] = (), *,
                            deadline: float | None = None,
                            fields: tuple[str, str] = ("src_ids", "dst_ids")) -> Steps:
        """:meth:`predict_links_on` as steps (runtime/stepwise.py)."""
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
            job = _submit(batcher, "links", pairs, ind, deadline, lambda: checked_output(
                backend.predict_links(pairs, ind), np.float32, (len(pairs),), "scores"))
        scores = yield batcher, job
        return LinkScores(entry.key, scores)

    def embed(self, model: ModelSelector, ids: Any, inductive: Sequence[InductiveSpec] = (), *,
              deadline: float | None = None) -> Embeddings:
        with self.repository.lease(model) as entry:
            return self.embed_on(entry, ids, inductive, deadline=deadline)

    def embed_on(self, entry: ModelEntry, ids: Any, inductive: Sequence[InductiveSpec] = (), *,
                 deadline: float | None = None) -> Embeddings:
        """:meth:`embed` on a version the caller holds a lease on (:meth:`lease`)."""
        return drive(self.embed_steps(entry, ids, inductive, deadline=deadline))

    def embed_steps(self, entry: ModelEntry, ids: Any, inductive: Sequence[InductiveSpec] = (),
                    *, deadline: float | None = None) -> Steps:
        """:meth:`embed_on` as steps (runtime/stepwise.py)."""
        self._require_task(entry, "Embed")
        backend, batcher = entry.backend, entry.batcher
        with batcher.arriving():
            ind = self._inductive(entry, inductive)
            ids = self._ids(entry, ids, "node_ids", ind)
            admission.charge(work_bytes(len(ids), backend.embedding_dim))
            job = _submit(batcher, "embed", ids, ind, deadline, lambda: checked_output(
                backend.embed(ids, ind), np.float32, (len(ids), None), "embeddings"))
        embeddings = yield batcher, job
        return Embeddings(entry.key, embeddings)

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
                job = batcher.submit(None, run, 1, deadline, admission.arrival())
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
            return checked_top(backend.recommend(user_id, top, bool(exclude_seen), cand_arg,
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
            return checked_top(backend.recommend_new_user(items, top, bool(exclude_seen),
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
                    got = checked_output(got, np.int64, (len(feats),), "new node ids")
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

