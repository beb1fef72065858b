"""The inference engine: one loaded bundle answering node, link, top-k and update requests.

A request runs on one graph snapshot: it extracts the seeds' L-hop neighbourhood (capped per
hop by the store's deterministic rule), gathers features and degrees, runs the model on that
subgraph only (partitioned executor: onnxruntime segments + compiled kernels), and post-processes
(softmax, or INT8 embedding scoring). Inductive nodes become a request-local overlay snapshot;
the store itself is never touched by a request. Updates build the next snapshot, recompute the
embeddings they affect (link models), then publish both. See docs/engine.md.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from qgnn.runtime import kernels
from qgnn.runtime.bundle.layout import EMBEDDING_SCALES, EMBEDDINGS
from qgnn.runtime.bundle.manifest import Manifest, NamedByManifest
from qgnn.runtime.bundle.reader import Bundle
from qgnn.runtime.catalogue import USER, Catalogue, load_catalogue
from qgnn.runtime.engine import onnx_proto
from qgnn.runtime.engine.buffers import BufferPool, make_pool
from qgnn.runtime.engine.embeddings import (
    EmbeddingIndex,
    best_k,
    dequantize,
    pair_logits,
    quantize_rows,
    sigmoid,
)
from qgnn.runtime.engine.executor import Executor, make_executor
from qgnn.runtime.engine.graph_data import load_graph
from qgnn.runtime.engine.layer_cache import LayerCache
from qgnn.runtime.engine.layerwise import LayerwiseRunner, NotLayerwise, cut
from qgnn.runtime.engine.partition import node_reads
from qgnn.runtime.engine.precomputed import OutputTable, wanted
from qgnn.runtime.engine.session import (
    SessionConfig,
    decoder_logits,
    decoder_session,
)
from qgnn.runtime.engine.signature import IN_DEGREE, ModelSignature
from qgnn.runtime.engine.store import GraphStore, Snapshot, check_edges
from qgnn.runtime.engine.subgraph import Extractor, Layer, Subgraph
from qgnn.runtime.errors import BundleError, FailedPreconditionError, InvalidRequestError
from qgnn.runtime.validation import id_range, is_int64_ids

log = logging.getLogger("qgnn.runtime.engine")

DEFAULT_FANOUT = 64
DEFAULT_CHUNK = 2048  # seeds per model call when a request or a refresh is larger
# what an engine's forwards keep of their large freed arrays for the next forward (buffers.py)
DEFAULT_BUFFER_POOL_BYTES = 1 << 30
METHODS = ("auto", "layerwise", "khop")  # full-graph inference (iter_outputs)


class Observer(Protocol):
    """Where the engine reports subgraph sizes and stage times (MetricsObserver fits)."""

    def subgraph(self, nodes: int, edges: int) -> None: ...
    def stage(self, stage: str, seconds: float) -> None: ...


class _NoObserver:
    def subgraph(self, nodes: int, edges: int) -> None:
        del nodes, edges

    def stage(self, stage: str, seconds: float) -> None:
        del stage, seconds


@dataclass(frozen=True)
class EngineConfig:
    """``fanouts``: per-hop caps, hop 1 (the seeds' own neighbours) first, -1 = none; None
    takes the manifest's ``serving.fanouts`` or ``DEFAULT_FANOUT`` per hop. ``seed`` fixes the
    capped samples. ``chunk_size`` bounds the seeds of one model call. ``isa`` picks the compiled
    kernels' ISA level (docs/kernels.md); None takes ``$QGNN_ISA`` or the best this host has.
    ``precompute`` (auto, on, off): node outputs materialised at load (precomputed.py).
    ``buffer_pool_bytes``: the most this engine keeps of its forwards' freed arrays of 1 MiB and
    more for the next forward to reuse (buffers.py; 0: none, every forward maps fresh pages)."""

    threads: int = 2
    portable: bool = False
    fanouts: tuple[int, ...] | None = None
    seed: int = 0
    optimization: str = "basic"
    chunk_size: int = DEFAULT_CHUNK
    isa: str | None = None
    precompute: str = "off"
    buffer_pool_bytes: int = DEFAULT_BUFFER_POOL_BYTES

    def __post_init__(self) -> None:
        if isinstance(self.buffer_pool_bytes, bool) or not isinstance(self.buffer_pool_bytes, int) \
                or self.buffer_pool_bytes < 0:
            raise ValueError(f"EngineConfig.buffer_pool_bytes: expected an int >= 0, got "
                             f"{self.buffer_pool_bytes!r}")
        if self.precompute not in ("auto", "on", "off"):
            raise ValueError(f"EngineConfig.precompute: expected auto, on or off, got "
                             f"{self.precompute!r}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) \
                or self.chunk_size < 1:
            raise ValueError(f"EngineConfig.chunk_size: expected an int >= 1, got "
                             f"{self.chunk_size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"EngineConfig.seed: expected an int >= 0, got {self.seed!r}")


@dataclass(frozen=True)
class Inductive:
    """Request-local nodes: ``ids`` int64 (m,) >= num_nodes, unique; ``features`` float32
    (m, F); ``edges`` int64 (e, 2) (src, dst) over existing and these ids. The data plane's
    ``InductiveNodes`` has the same fields."""

    ids: np.ndarray
    features: np.ndarray
    edges: np.ndarray


def _kernel_level(config: EngineConfig) -> str | None:
    """The ISA level this engine's kernels run at, None on a host without them. A level asked
    for explicitly must be usable: an engine never silently runs another one."""
    if config.isa is not None:
        return kernels.resolve_level(config.isa, "EngineConfig.isa")
    return kernels.default_level() if kernels.available() else None


def _fanouts(config: EngineConfig, manifest: Manifest, num_layers: int) -> tuple[int, ...]:
    given = config.fanouts
    if given is None:
        given = manifest.serving.get("fanouts")
    if given is None:
        return (DEFAULT_FANOUT,) * num_layers
    caps = tuple(given)
    if len(caps) != num_layers or any(isinstance(c, bool) or not isinstance(c, int | np.integer)
                                      or (c < 1 and c != -1) for c in caps):
        raise ValueError(f"fanouts: expected {num_layers} ints (>= 1, or -1 for all "
                         f"neighbours), got {list(caps)}")
    return tuple(int(c) for c in caps)


def _progress_log(every: float = 10.0) -> Callable[[int, int, int], None]:
    """Layer-wise progress as a log line at most every ``every`` seconds, at INFO on a terminal
    and DEBUG otherwise (quiet in services and tests)."""
    level = logging.INFO if sys.stderr.isatty() else logging.DEBUG
    last = [time.perf_counter()]

    def report(layer: int, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= every or done == total:
            last[0] = now
            log.log(level, "layer-wise inference: layer %d, %d of %d nodes", layer, done, total)
    return report


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, returned as float32 (rows sum to 1 within 1e-6)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32)


def check_ids(ids: Any, field: str, num_nodes: int) -> np.ndarray:
    """``ids`` as int64 (n,), each in [0, num_nodes), or InvalidRequestError naming the first
    bad one."""
    if is_int64_ids(ids):  # what the data plane passes: only the range to check
        lo, hi = id_range(ids) if len(ids) else (0, -1)
        if lo >= 0 and hi < num_nodes:
            return ids
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        if arr.size == 0 and arr.ndim == 1:
            return np.zeros(0, np.int64)
        raise InvalidRequestError(field, f"{arr.dtype} {list(arr.shape)}",
                                  "node ids must be a 1-D integer array")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise InvalidRequestError(field, int(arr.max()), "id does not fit in int64")
    arr = arr.astype(np.int64, copy=False)
    if arr.size:
        lo, hi = id_range(arr)
        if lo >= 0 and hi < num_nodes:  # the common case, without building a mask
            return arr
    bad = (arr < 0) | (arr >= num_nodes)
    if bad.any():
        i = int(np.argmax(bad))
        what = "negative id" if arr[i] < 0 else f"not a node of the graph (0..{num_nodes - 1})"
        raise InvalidRequestError(f"{field}[{i}]", int(arr[i]), what)
    return arr


class Engine(NamedByManifest):
    """One served model version (a loaded bundle). Thread-safe: requests read immutable
    snapshots; updates serialise on a lock."""

    def __init__(self, bundle: Bundle, config: EngineConfig | None = None,
                 observer: Observer | None = None) -> None:
        self.config = config or EngineConfig()
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.observer: Observer = observer or _NoObserver()
        self.task = self.manifest.model.task
        # parsed once: the executor stores its weights as uint8 in place, and the metadata,
        # the layer cut and the degree check below read the same proto (docs/engine.md)
        proto = onnx_proto.load_model(bundle.model_path().read_bytes())
        session = SessionConfig(threads=self.config.threads,
                                optimization=self.config.optimization)
        self.kernel_isa = _kernel_level(self.config)
        # one pool for every executor and thread of this engine; freed at close()
        self.buffers: BufferPool | None = make_pool(self.config.buffer_pool_bytes)

        def build(model: Any) -> Executor:  # the whole model's and each layer's executor
            return make_executor(model, session, portable=self.config.portable,
                                 isa=self.kernel_isa, buffers=self.buffers)

        self.executor: Executor = build(proto)
        try:
            self.signature = ModelSignature.of(self.executor.input_dtypes,
                                               self.executor.output_names, self.task)
        except ValueError as exc:
            raise BundleError(bundle.manifest.model.file, str(exc)) from None
        self.fanouts = _fanouts(self.config, self.manifest, self.signature.num_layers)
        meta = onnx_proto.metadata(proto)
        self.layerwise: LayerwiseRunner | None = None
        self.not_layerwise = ""  # why full-graph inference cannot go layer by layer
        try:
            self.layerwise = LayerwiseRunner(cut(proto, self.signature.num_layers), build)
        except NotLayerwise as exc:
            self.not_layerwise = str(exc)
        self.uses_degree = self.signature.has_degree and any(
            IN_DEGREE in node_reads(node) for node in proto.graph.node)
        declared = self.manifest.model.input
        scale = declared.get("scale", meta.get("qgnn.input_scale"))
        zero_point = declared.get("zero_point", meta.get("qgnn.input_zero_point"))
        graph = load_graph(bundle, self.signature.feature_dtype,
                           input_scale=None if scale is None else float(scale),
                           input_zero_point=None if zero_point is None else int(zero_point))
        self.store = GraphStore(graph.in_indptr, graph.in_indices, graph.out_indptr,
                                graph.out_indices, graph.features, graph.codec,
                                caps=self.fanouts, seed=self.config.seed)
        self.node_type = graph.node_type
        self.catalogue: Catalogue = load_catalogue(bundle, self.store.snapshot().num_nodes)
        self.extractor = Extractor()
        self._update_lock = threading.Lock()
        self._base = self.store.snapshot()  # the bundle's graph, what the layer cache holds
        self._layer_cache: LayerCache | None = None
        self._cache_lock = threading.Lock()
        self.output_dim = self._probe_output_dim()
        self.index: EmbeddingIndex | None = None
        self.decoder: ort.InferenceSession | None = None
        if self.task == "link":
            self.index = self._load_embeddings()
            self.decoder = decoder_session(bundle, session)
            if self.node_type is not None and self.cache_pays():
                self.layer_cache().tables()  # cold-start users must not pay the build
        self.outputs: OutputTable | None = None
        if wanted(self.config.precompute, self.task, self.num_nodes, self.output_dim):
            started = time.perf_counter()
            self.outputs = OutputTable(self.infer_all(), softmax)
            log.info("model %s v%d: %d node outputs precomputed in %.2f s (%d bytes)",
                     self.name, self.version, self.outputs.num_rows,
                     time.perf_counter() - started, self.outputs.nbytes)
        if self.buffers is not None:  # a server idles after load: give the refresh's blocks back
            self.buffers.clear()

    # -- properties ------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """'partitioned' (compiled kernels) or 'portable' (stock onnxruntime)."""
        return self.executor.mode

    @property
    def isa(self) -> str:
        """The ISA level the model's kernels run at, or 'portable' (stock onnxruntime)."""
        return self.kernel_isa if self.mode == "partitioned" and self.kernel_isa else "portable"

    @property
    def num_nodes(self) -> int:
        return self.store.snapshot().num_nodes

    @property
    def num_edges(self) -> int:
        return self.store.snapshot().num_edges

    @property
    def num_features(self) -> int:
        return self.store.snapshot().num_features

    @property
    def num_classes(self) -> int:
        return self.output_dim if self.task == "node" else 0

    @property
    def embedding_dim(self) -> int:
        return self.output_dim

    @property
    def revision(self) -> int:
        return self.store.snapshot().revision

    # -- model runs ------------------------------------------------------------------------------

    def _probe_output_dim(self) -> int:
        """Output width, from one warm-up run (it also allocates onnxruntime's buffers)."""
        snapshot = self.store.snapshot()
        if snapshot.num_nodes == 0:
            raise BundleError("manifest.json", "the bundle's graph has no nodes")
        return int(self._run(snapshot, np.zeros(1, np.int64)).shape[1])

    def _run(self, snapshot: Snapshot, seeds: np.ndarray,
             fanouts: Sequence[int] | None = None) -> np.ndarray:
        """Model output (n, C) float32 for distinct ``seeds`` (one model call)."""
        start = time.perf_counter()
        sub = self.extractor.extract(snapshot, seeds, fanouts or self.fanouts)
        features = np.asarray(snapshot.features(sub.node_ids))
        degree = snapshot.in_degree(sub.node_ids) if self.signature.has_degree else None
        feeds = self.signature.feeds(sub, features, degree)
        mid = time.perf_counter()
        out = self.executor.run(feeds, [self.signature.output])[self.signature.output]
        end = time.perf_counter()
        self.observer.subgraph(int(sub.node_ids.size), sub.num_edges)
        self.observer.stage("subgraph", mid - start)
        self.observer.stage("onnx", end - mid)
        return out

    def forward(self, snapshot: Snapshot, ids: np.ndarray,
                fanouts: Sequence[int] | None = None) -> np.ndarray:
        """Model output rows (n, C) float32 for ``ids`` (validated, repeats allowed), in chunks
        of ``config.chunk_size`` distinct seeds."""
        if ids.size == 0:
            return np.zeros((0, self.output_dim), np.float32)
        seeds, inverse = np.unique(ids, return_inverse=True)
        step = self.config.chunk_size
        if seeds.size <= step:
            return self._run(snapshot, seeds, fanouts)[inverse]
        parts = [self._run(snapshot, seeds[i:i + step], fanouts)
                 for i in range(0, seeds.size, step)]
        return np.concatenate(parts)[inverse]

    def iter_outputs(self, chunk_size: int | None = None, fanouts: Sequence[int] | None = None,
                     method: str = "auto") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Full-graph batch inference on the current snapshot: ``(ids, outputs)`` per chunk of
        destination nodes, in id order. ``method``: "khop" runs the whole model on each
        chunk's L-hop neighbourhood (memory bounded by one chunk's subgraph); "layerwise" runs
        each layer once over all nodes (layerwise.py; memory O(N F) plus one block; the same
        numbers, as full neighbourhoods are the same computation); "auto" is layer-wise when
        the model allows it and ``fanouts`` (default: the engine's) are all -1, except that
        one chunk of every node of an unmodified graph runs the whole model once on the
        stored graph (the fastest route when N x F fits in memory)."""
        snapshot = self.store.snapshot()
        step = chunk_size or self.config.chunk_size
        if method == "auto" and step >= snapshot.num_nodes and self._whole_graph(snapshot,
                                                                                fanouts):
            ids = np.arange(snapshot.num_nodes, dtype=np.int64)
            return iter([(ids, self._run_whole_graph(snapshot))])
        if self._layerwise(method, fanouts):
            assert self.layerwise is not None
            return self.layerwise.iter_outputs(snapshot, self.extractor, step, _progress_log())
        return self._khop_outputs(snapshot, step, fanouts)

    def _whole_graph(self, snapshot: Snapshot, fanouts: Sequence[int] | None) -> bool:
        """Whether one chunk of every node can run the whole model on the stored graph as it
        is: full neighbourhoods, and no nodes or edges added since the base graph."""
        caps = tuple(fanouts or self.fanouts)
        return (snapshot.num_nodes > 0 and all(c == -1 for c in caps)
                and snapshot.num_base == snapshot.num_nodes and not snapshot.dirty_ids.size)

    def _run_whole_graph(self, snapshot: Snapshot) -> np.ndarray:
        """The model once over the stored in-CSR (every layer's structure, every node a seed):
        the exporter's own full-graph feeds, with nothing extracted or copied."""
        start = time.perf_counter()
        n = snapshot.num_nodes
        layer = Layer(n, n, np.asarray(snapshot.base_indptr, np.int64),
                      np.asarray(snapshot.base_indices, np.int64))
        sub = Subgraph(np.arange(n, dtype=np.int64), (layer,) * self.signature.num_layers)
        degree = snapshot.base_degree if self.signature.has_degree else None
        # the stored arrays as they are (memory-mapped bundle files): the same steps and the
        # same time as in-memory copies (docs/engine.md, "Whole-graph runs")
        feeds = self.signature.feeds(sub, snapshot.base_features, degree)
        mid = time.perf_counter()
        out = self.executor.run(feeds, [self.signature.output])[self.signature.output]
        self.observer.subgraph(n, snapshot.num_edges)
        self.observer.stage("subgraph", mid - start)
        self.observer.stage("onnx", time.perf_counter() - mid)
        return out

    def _layerwise(self, method: str, fanouts: Sequence[int] | None) -> bool:
        """Whether full-graph inference goes layer by layer (see :meth:`iter_outputs`)."""
        if method not in METHODS:
            raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}")
        if method == "khop":
            return False
        caps = tuple(fanouts or self.fanouts)
        if any(c != -1 for c in caps):
            if method == "layerwise":
                raise ValueError(f"method='layerwise' needs full neighbourhoods (fanouts all "
                                 f"-1), got {list(caps)}: sampled layers are another "
                                 f"computation; use 'khop'")
            return False
        if self.layerwise is None:
            log.log(logging.WARNING if method == "layerwise" else logging.INFO,
                    "full-graph inference of %s v%d in k-hop chunks, not layer by layer: %s",
                    self.name, self.version, self.not_layerwise)
            return False
        return True

    def _khop_outputs(self, snapshot: Snapshot, step: int, fanouts: Sequence[int] | None
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, snapshot.num_nodes, step):
            ids = np.arange(start, min(start + step, snapshot.num_nodes), dtype=np.int64)
            yield ids, self._run(snapshot, ids, fanouts)

    def infer_all(self, chunk_size: int | None = None, fanouts: Sequence[int] | None = None,
                  method: str = "auto") -> np.ndarray:
        """(N, C) float32 model outputs of every node (see :meth:`iter_outputs`)."""
        parts = [out for _, out in self.iter_outputs(chunk_size, fanouts, method)]
        return np.concatenate(parts) if parts else np.zeros((0, self.output_dim), np.float32)

    # -- inductive overlays ----------------------------------------------------------------------

    def _overlay(self, snapshot: Snapshot, inductive: Any | None, *id_arrays: np.ndarray
                 ) -> tuple[Snapshot, np.ndarray, list[np.ndarray]]:
        """(overlay snapshot, the new nodes' ids in it, ``id_arrays`` remapped). Inductive ids
        map to ``num_nodes + rank`` in ascending order, exactly the ids adding them with
        :meth:`update_graph` in that order would give."""
        n = snapshot.num_nodes
        if inductive is None or len(inductive.ids) == 0:
            return snapshot, np.zeros(0, np.int64), [check_ids(a, "node_ids", n)
                                                     for a in id_arrays]
        ids = np.asarray(inductive.ids, np.int64)
        if ids.ndim != 1 or (ids < n).any():
            bad = int(ids[ids < n][0]) if ids.ndim == 1 else ids.tolist()
            raise InvalidRequestError("inductive_nodes.id", bad,
                                      f"inductive ids must be >= num_nodes ({n})")
        order = np.argsort(ids, kind="stable")
        ranked = ids[order]
        if (np.diff(ranked) == 0).any():
            raise InvalidRequestError("inductive_nodes.id", int(ranked[np.diff(ranked) == 0][0]),
                                      "inductive ids must be unique")

        def remap(values: Any, field: str) -> np.ndarray:
            """Ids of the graph or of this request, with inductive ids renumbered."""
            arr = check_ids(values, field, np.iinfo(np.int64).max)
            big = arr >= n
            pos = np.minimum(np.searchsorted(ranked, arr[big]), ranked.size - 1)
            unknown = ranked[pos] != arr[big]
            if unknown.any():
                i = int(np.flatnonzero(big)[np.argmax(unknown)])
                raise InvalidRequestError(f"{field}[{i}]", int(arr[i]),
                                          f"not a node of the graph (0..{n - 1}) nor an "
                                          f"inductive node of this request")
            out = arr.copy()
            out[big] = n + pos
            return out

        raw_edges = np.asarray(inductive.edges)
        if raw_edges.size == 0:
            raw_edges = np.zeros((0, 2), np.int64)
        if raw_edges.ndim != 2 or raw_edges.shape[1] != 2:
            raise InvalidRequestError("inductive.edges", list(raw_edges.shape),
                                      "edges must be (e, 2) rows of (src, dst)")
        edges = remap(raw_edges.reshape(-1), "inductive.edges").reshape(-1, 2)
        features = np.asarray(inductive.features)
        if features.ndim != 2 or features.shape[0] != ids.size:
            raise InvalidRequestError("inductive_nodes.features", list(features.shape),
                                      f"expected ({ids.size}, {snapshot.num_features})")
        overlay = self.store.overlay(snapshot, features[order], check_edges(
            edges, n + ids.size, "inductive.edges"))
        new_ids = np.arange(n, n + ids.size, dtype=np.int64)
        return overlay, new_ids, [remap(a, "node_ids") for a in id_arrays]

    # -- node task -------------------------------------------------------------------------------

    def predict_nodes(self, ids: Any, inductive: Any | None = None) -> np.ndarray:
        """Class probabilities float32 (n, C) in ``ids`` order (softmax of the logits)."""
        self._require("node", "predict_nodes")
        if inductive is None or len(inductive.ids) == 0:
            found = self.lookup_nodes(ids)
            if found is not None:
                return found
        snapshot, _, (ids,) = self._overlay(self.store.snapshot(), inductive, ids)
        return softmax(self.forward(snapshot, ids))

    def _precomputed(self, ids: Any) -> np.ndarray | None:
        """Precomputed logits of graph nodes ``ids``, or None (no table, or an id it lacks)."""
        table = self.outputs
        if table is None:
            return None
        return table.rows(check_ids(ids, "node_ids", self.store.snapshot().num_nodes))

    @property
    def precomputed(self) -> bool:
        """Whether node outputs are precomputed (:meth:`lookup_nodes` answers)."""
        return self.outputs is not None

    def lookup_nodes(self, ids: Any) -> np.ndarray | None:
        """Class probabilities of graph nodes from the precomputed table (the same numbers as
        :meth:`predict_nodes` computes), or None when there is no table: a gather, cheap enough
        for the data plane to call on the request's own thread instead of the batcher's."""
        table = self.outputs
        if table is None:
            return None
        num_nodes = self.store.snapshot().num_nodes
        return table.activated_rows(check_ids(ids, "node_ids", num_nodes), below=num_nodes)

    def _require(self, task: str, method: str) -> None:
        if self.task != task:
            raise FailedPreconditionError(f"{method} needs a {task} model; model {self.name} "
                                          f"v{self.version} is a {self.task} model")

    # -- link task -------------------------------------------------------------------------------

    def _load_embeddings(self) -> EmbeddingIndex:
        if EMBEDDINGS in self.bundle.files:
            values = self.bundle.array(EMBEDDINGS)
            scales = np.asarray(self.bundle.array(EMBEDDING_SCALES), np.float32)
            if values.shape != (self.num_nodes, self.output_dim):
                raise BundleError(EMBEDDINGS, f"must be ({self.num_nodes}, {self.output_dim}), "
                                              f"got {values.shape}")
            try:
                return EmbeddingIndex(np.asarray(values), scales, threads=self.config.threads,
                                      isa=self.kernel_isa)
            except ValueError as exc:
                raise BundleError(EMBEDDINGS, str(exc)) from None
        log.info("bundle %s has no %s: computing the embedding table at load", self.name,
                 EMBEDDINGS)
        values, scales = quantize_rows(self.infer_all())
        return EmbeddingIndex(values, scales, threads=self.config.threads, isa=self.kernel_isa)

    def _decode(self, h_src: np.ndarray, h_dst: np.ndarray) -> np.ndarray:
        """Decoder logits (n,) float64 of aligned float32 embeddings (MLP decoder)."""
        assert self.decoder is not None
        return decoder_logits(self.decoder, h_src, h_dst)

    def _rows(self, snapshot: Snapshot, ids: np.ndarray, local: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """INT8 rows of ``ids``: the table's, except ids in ``local`` (sorted), which are
        computed on ``snapshot`` and quantised like the table."""
        assert self.index is not None
        values = np.zeros((ids.size, self.output_dim), np.int8)
        scales = np.ones(ids.size, np.float32)
        own = np.isin(ids, local)
        if (~own).any():
            values[~own], scales[~own] = self.index.rows(ids[~own])
        if own.any():
            values[own], scales[own] = quantize_rows(self.forward(snapshot, ids[own]))
        return values, scales

    def _local_view(self, inductive: Any | None, *id_arrays: np.ndarray
                    ) -> tuple[Snapshot, np.ndarray, list[np.ndarray]]:
        """(snapshot, ids to compute request-locally, remapped id arrays)."""
        base = self.store.snapshot()
        snapshot, new_ids, arrays = self._overlay(base, inductive, *id_arrays)
        if snapshot is base:
            return snapshot, np.zeros(0, np.int64), arrays
        overlay_edges = snapshot.new_edges[base.new_edges.shape[0]:]
        starts = np.union1d(overlay_edges[:, 1], new_ids)
        return snapshot, self._downstream(snapshot, starts), arrays

    def _downstream(self, snapshot: Snapshot, starts: np.ndarray) -> np.ndarray:
        """Nodes whose model output can change when ``starts`` gain in-edges (or appear):
        within L - 1 out-hops of them, or L when the model reads ``in_degree`` (a changed
        degree reweights the node's out-edges already in the first layer)."""
        hops = self.signature.num_layers - (0 if self.uses_degree else 1)
        reached = frontier = np.unique(starts)
        for _ in range(hops):
            if not frontier.size:
                break
            _, dsts = snapshot.out_neighbours(frontier)
            frontier = np.setdiff1d(dsts, reached)
            reached = np.union1d(reached, frontier)
        return reached

    def embed(self, ids: Any, inductive: Any | None = None) -> np.ndarray:
        """Final node representations float32 (n, D): the dequantised INT8 embeddings (link
        models) or the logits (node models)."""
        if self.task == "node":
            if inductive is None or len(inductive.ids) == 0:
                found = self._precomputed(ids)
                if found is not None:
                    return found
            snapshot, _, (ids,) = self._overlay(self.store.snapshot(), inductive, ids)
            return self.forward(snapshot, ids)
        snapshot, local, (ids,) = self._local_view(inductive, ids)
        return dequantize(*self._rows(snapshot, ids, local))

    def predict_links(self, pairs: Any, inductive: Any | None = None) -> np.ndarray:
        """Edge probabilities float32 (n,): sigmoid of ``s_u s_v (q_u . q_v)``."""
        self._require("link", "predict_links")
        arr = np.asarray(pairs)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InvalidRequestError("pairs", list(arr.shape), "pairs must be (n, 2)")
        snapshot, local, (flat,) = self._local_view(inductive, arr.reshape(-1))
        uniq, inverse = np.unique(flat, return_inverse=True)
        values, scales = self._rows(snapshot, uniq, local)
        if self.decoder is not None:
            h = dequantize(values, scales)[inverse].reshape(-1, 2, self.output_dim)
            return sigmoid(self._decode(h[:, 0], h[:, 1]))
        return sigmoid(pair_logits(values[inverse].reshape(-1, 2, self.output_dim),
                                   scales[inverse].reshape(-1, 2)))

    def items(self, snapshot: Snapshot) -> np.ndarray | None:
        """Sorted candidate item ids, or None when the graph has no node types (every node is
        an item). With types: the bundle's items, plus nodes added at run time that have an
        edge to or from a bundle user (in a bipartite graph only items do); a node added
        with no such edge has no known type and is never recommended."""
        if self.node_type is None:
            return None
        base = self.catalogue.item_ids()
        added = self._added_items(snapshot)
        return np.union1d(base, added) if added.size else base

    def _added_items(self, snapshot: Snapshot) -> np.ndarray:
        """Nodes added after the bundle (updates, request-local nodes) linked to a bundle user."""
        if snapshot.num_nodes == snapshot.num_base or not snapshot.new_edges.shape[0]:
            return np.zeros(0, np.int64)
        src, dst = snapshot.new_edges[:, 0], snapshot.new_edges[:, 1]
        nb = snapshot.num_base
        src_user = self.catalogue.types(src) == USER
        dst_user = self.catalogue.types(dst) == USER
        hits = np.concatenate([dst[(dst >= nb) & src_user], src[(src >= nb) & dst_user]])
        return np.unique(hits)

    def check_user(self, snapshot: Snapshot, user: int, field: str = "user_id",
                   shown: Any = None) -> None:
        """InvalidRequestError unless ``user`` can be a user (see :meth:`items`)."""
        if self.node_type is None:
            return
        self.catalogue.check_user(user, field, shown)
        if user >= snapshot.num_base and np.isin(user, self._added_items(snapshot)):
            raise InvalidRequestError(field, user if shown is None else shown,
                                      f"node {user} (added while serving) is linked to users: "
                                      f"it is an item, not a user")

    def seen(self, snapshot: Snapshot, user: int) -> np.ndarray:
        """Everything the user has: its out-neighbours in the served graph (message-passing
        edges, updates, request-local edges) and its serving-only seen items."""
        _, linked = snapshot.out_neighbours(np.asarray([user], np.int64))
        return np.union1d(linked, self.catalogue.seen_items(user))

    def recommend(self, user: int, k: int, exclude_seen: bool = False,
                  candidates: Any | None = None, inductive: Any | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` items for ``user``: (ids int64, probabilities float32), best first,
        ties by ascending id; never the user itself, never a non-item when the graph has node
        types (a non-user ``user`` or a user among ``candidates`` is an InvalidRequestError),
        nor (``exclude_seen``) anything the user has (:meth:`seen`)."""
        self._require("link", "recommend")
        assert self.index is not None
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidRequestError("k", k, "must be an integer >= 1")
        cand_in = None if candidates is None else np.asarray(candidates)
        arrays = [np.asarray([user])] + ([] if cand_in is None else [cand_in])
        snapshot, local, mapped = self._local_view(inductive, *arrays)
        user_id = int(mapped[0][0])
        self.check_user(snapshot, user_id, shown=int(np.asarray(user).reshape(-1)[0]))
        cand = None if cand_in is None else np.unique(mapped[1])
        if cand is not None and self.node_type is not None:
            self.catalogue.check_items(mapped[1], "candidate_ids")
        allowed = self.items(snapshot) if cand is None else cand
        exclude = np.asarray([user_id], np.int64)
        if exclude_seen:
            exclude = np.union1d(exclude, self.seen(snapshot, user_id))
        query_values, query_scales = self._rows(snapshot, np.asarray([user_id]), local)
        return self._topk(snapshot, query_values[0], float(query_scales[0]), int(k), exclude,
                          allowed, local)

    def _topk(self, snapshot: Snapshot, query: np.ndarray, query_scale: float, k: int,
              exclude: np.ndarray, allowed: np.ndarray | None, local: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of ``allowed`` (None: every node) but ``exclude`` for an INT8 query
        row; rows of ``local`` nodes are computed on ``snapshot``, the table's otherwise."""
        assert self.index is not None
        start = time.perf_counter()
        extra_ids = local if allowed is None else np.intersect1d(local, allowed)
        extra_ids = np.setdiff1d(extra_ids, exclude)
        extra = None
        if extra_ids.size:
            extra = (extra_ids, *self._rows(snapshot, extra_ids, local))
        if self.decoder is not None:
            ids, logits = self._decoder_topk(snapshot, query * query_scale, k, exclude, allowed,
                                             extra)
        else:
            ids, scaled = self.index.topk(query, k, exclude=exclude, candidates=allowed,
                                          extra=extra)
            logits = scaled * query_scale
        self.observer.stage("topk", time.perf_counter() - start)
        return ids, sigmoid(logits)

    # -- cold-start users ------------------------------------------------------------------------

    def layer_cache(self) -> LayerCache | None:
        """The per-layer output cache (layer_cache.py), built on first use; None when the model
        is not layer-wise or serves capped neighbourhoods (then the cache's full-neighbourhood
        rows would be another computation)."""
        if self.layerwise is None or any(c != -1 for c in self.fanouts):
            return None
        with self._cache_lock:
            if self._layer_cache is None:
                self._layer_cache = LayerCache(self.layerwise, self._base, self.extractor,
                                               self.uses_degree, self.config.chunk_size)
            return self._layer_cache

    def new_user_view(self, items: Any, features: Any | None = None,
                      field: str = "new_user_item_ids") -> tuple[Snapshot, int, np.ndarray]:
        """(overlay snapshot, the new user's id, its sorted items): the current graph plus a
        user linked both ways to ``items``. Without ``features`` the user's input row is all
        zeros (no side information: what a model with learned embeddings or without features
        has for a node it never saw). Items must be distinct existing items."""
        snapshot = self.store.snapshot()
        arr = np.asarray(items)
        if arr.ndim != 1 or arr.size == 0:
            raise InvalidRequestError(field, list(arr.shape),
                                      "a new user needs a non-empty list of item ids")
        ids = check_ids(arr, field, snapshot.num_nodes)
        order = np.argsort(ids, kind="stable")
        repeat = np.flatnonzero(np.diff(ids[order]) == 0)
        if repeat.size:
            i = int(order[repeat[0] + 1])
            raise InvalidRequestError(f"{field}[{i}]", int(ids[i]),
                                      "appears twice in the new user's interactions")
        if self.node_type is not None:
            allowed = self.items(snapshot)
            bad = ~np.isin(ids, allowed)
            if bad.any():
                i = int(np.argmax(bad))
                raise InvalidRequestError(f"{field}[{i}]", int(ids[i]),
                                          f"node {int(ids[i])} is not an item")
        f = snapshot.num_features
        row = np.zeros((1, f), np.float32)
        if features is not None:
            row = np.asarray(features, np.float32).reshape(1, -1)
            if row.shape != (1, f):
                raise InvalidRequestError("features", list(np.shape(features)),
                                          f"expected {f} floats")
        user = snapshot.num_nodes
        sorted_items = ids[order]
        edges = np.concatenate([np.stack([np.full(ids.size, user), sorted_items], 1),
                                np.stack([sorted_items, np.full(ids.size, user)], 1)])
        return self.store.overlay(snapshot, row, edges), user, sorted_items

    def cache_pays(self) -> bool:
        """Whether a new node's output is cheaper through the layer cache than by the k-hop
        route. The k-hop route recomputes, at layer l, every node within L-1-l hops of the
        new node; for 2 layers that is the node and its neighbours, the rows the cache
        recomputes too (with more bookkeeping). From 3 layers on the cache recomputes only
        what changed, except that a model reading in-degrees (GCN, EGC's symmetric
        normalisation, LightGCN) also changes the neighbours' neighbours at layer 0: the k-hop
        set again at 3 layers, fewer from 4. With the same rows, the k-hop route's one model
        call costs less than the cache's call per layer (bench/bench_recommend_serving.py)."""
        depth = self.signature.num_layers - (1 if self.uses_degree else 0)
        return depth >= 3 and self.layer_cache() is not None

    def new_user_output(self, snapshot: Snapshot, user: int) -> np.ndarray:
        """Model output (1, C) of a request-local node: through the layer cache where that
        pays (:meth:`cache_pays`; only the rows its arrival changes), else the k-hop route
        (its L-hop neighbourhood only: the items it reaches are not recomputed)."""
        cache = self.layer_cache() if self.cache_pays() else None
        if cache is None:
            return self.forward(snapshot, np.asarray([user], np.int64))
        start = time.perf_counter()
        out = cache.outputs(snapshot, np.asarray([user], np.int64))
        self.observer.stage("onnx", time.perf_counter() - start)
        return out

    def recommend_new_user(self, items: Any, k: int, exclude_seen: bool = True,
                           candidates: Any | None = None, features: Any | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` items for a cold-start user given by the items it interacted with
        (node ids, distinct), best first. The user's embedding is exact (what adding it with
        :meth:`update_graph` would give it); items are scored with their served embeddings,
        which one request-local user does not change."""
        self._require("link", "recommend")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidRequestError("k", k, "must be an integer >= 1")
        snapshot, user, seen = self.new_user_view(items, features)
        allowed = self.items(snapshot)
        if candidates is not None:
            allowed = np.unique(check_ids(candidates, "candidate_ids", self.num_nodes))
            if self.node_type is not None:
                self.catalogue.check_items(np.asarray(candidates, np.int64), "candidate_ids")
        exclude = np.union1d([user], seen) if exclude_seen else np.asarray([user], np.int64)
        values, scales = quantize_rows(self.new_user_output(snapshot, user))
        return self._topk(snapshot, values[0], float(scales[0]), int(k), exclude, allowed,
                          np.zeros(0, np.int64))

    def _decoder_topk(self, snapshot: Snapshot, h_user: np.ndarray, k: int,
                      exclude: np.ndarray, allowed: np.ndarray | None,
                      extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by the MLP decoder: every eligible item scored, in chunks."""
        assert self.index is not None
        items = (np.arange(snapshot.num_nodes, dtype=np.int64) if allowed is None
                 else allowed)
        items = np.setdiff1d(items, exclude)
        best_ids, best_logits = np.zeros(0, np.int64), np.zeros(0)
        step = 1 << 16
        for start in range(0, items.size, step):
            chunk = items[start:start + step]
            h = self.index.dequantized(np.minimum(chunk, self.index.num_rows - 1))
            if extra is not None:
                at = np.searchsorted(extra[0], chunk)
                hit = (at < extra[0].size) & (extra[0][np.minimum(at, extra[0].size - 1)]
                                               == chunk)
                h[hit] = dequantize(extra[1][at[hit]], extra[2][at[hit]])
            logits = self._decode(np.broadcast_to(h_user, h.shape), h)
            best_ids, best_logits = best_k(np.concatenate([best_ids, chunk]),
                                           np.concatenate([best_logits, logits]), k)
        return best_ids, best_logits

    # -- updates ---------------------------------------------------------------------------------

    def update_graph(self, features: np.ndarray | None, edges: np.ndarray | None) -> np.ndarray:
        """Adds nodes (float32 features (m, F)) and directed edges ((e, 2), may use the new ids);
        returns the new ids. Link models recompute, before publishing, the embeddings of every
        node the update can change (refresh policy, docs/engine.md). All or nothing."""
        with self._update_lock:
            old = self.store.snapshot()
            new = self.store.overlay(old, features, edges)
            new_ids = np.arange(old.num_nodes, new.num_nodes, dtype=np.int64)
            refresh = None
            if self.index is not None or self.outputs is not None:
                added = new.new_edges[old.new_edges.shape[0]:]
                changed = self._downstream(new, np.union1d(added[:, 1], new_ids))
                if self.index is not None and changed.size:
                    refresh = (changed, *quantize_rows(self.forward(new, changed)))
                if self.outputs is not None:  # before publishing: rows exist for every new id
                    self.outputs = self.outputs.refreshed(new.num_nodes, changed,
                                                          self.forward(new, changed))
            self.store.publish(new, old)
            if refresh is not None:
                assert self.index is not None
                self.index.update(*refresh)
            return new_ids

    def close(self) -> None:
        """Drops the sessions, the bundle's mapped arrays and the buffer pool's cache."""
        self.executor = None  # type: ignore[assignment]
        if self.buffers is not None:
            self.buffers.close()
        self.bundle.close()
