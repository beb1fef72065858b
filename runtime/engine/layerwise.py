"""Layer-wise full-graph inference: every layer once over all nodes, in chunks of destinations.

k-hop chunking (``Engine.iter_outputs(method="khop")``) runs the whole model on each chunk's
L-hop neighbourhood, so neighbourhoods shared by chunks are recomputed in every chunk: on a
power-law graph the 2-hop neighbourhood of a few thousand seeds is much of the graph. Layer-wise
inference computes each layer's output for every node exactly once instead: for layer ``i`` and
each chunk ``C`` of destination ids it builds the one-hop block (``C`` first, then their
in-neighbours not in ``C``; every neighbour, no sampling), gathers the rows of the layer's input
``H_i`` (N x F, kept in memory) for the block's sources, runs layer ``i``'s sub-model and writes
``H_{i+1}[C]``. Peak memory is two layers' tables plus one block.

The sub-models come from the exporter's ``qgnn.layer_outputs`` metadata (exporter/emit/stack.py):
per layer, the tensors the next layer reads (rows = the layer's destinations) and their dtypes.
Sub-model ``i`` is every node the layer-``i`` boundary depends on, stopping at layer ``i - 1``'s
boundary tensors (its inputs) and at graph inputs; nodes computed from inputs every layer shares
(``in_degree``: GCN's inverse square-root degrees) are copied into each sub-model that needs
them and fed the block's rows. A model whose cut reads another layer's structure, or that has no
metadata (bundles exported before it), is not layer-wise: :class:`NotLayerwise` says why.

Only numpy and the engine's own ONNX schema: executors are made by the caller's factory.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from qgnn.runtime.engine import onnx_proto as op
from qgnn.runtime.engine.partition import node_reads
from qgnn.runtime.engine.store import Snapshot
from qgnn.runtime.engine.subgraph import Extractor

LAYERWISE = "qgnn.layerwise"
LAYER_OUTPUTS = "qgnn.layer_outputs"
SHARED_INPUTS = ("in_degree",)  # graph inputs whose rows are any layer's source list
FEATURES = "x"


class NotLayerwise(ValueError):
    """Why a model cannot run layer by layer (the engine then uses k-hop chunks)."""


class Runs(Protocol):
    """What a sub-model runs in (an engine Executor)."""

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
            ) -> dict[str, np.ndarray]: ...


Progress = Callable[[int, int, int], None]  # (layer, destinations done, total)


@dataclass(frozen=True)
class LayerModel:
    """One layer's sub-model and what it reads and writes."""

    index: int
    model: bytes  # serialized ModelProto
    graph_inputs: tuple[str, ...]  # of x, in_degree, indptr_<index>, src_<index>
    carried: tuple[str, ...]  # the previous layer's boundary tensors it reads
    outputs: tuple[str, ...]  # its boundary tensors (the model output for the last layer)
    dtypes: tuple[np.dtype, ...]


def _boundaries(meta: Mapping[str, str], num_layers: int) -> list[dict[str, list[str]]]:
    if meta.get(LAYERWISE) == "0":
        raise NotLayerwise("the exporter marked the model as not layer-wise (qgnn.layerwise: 0)")
    if LAYER_OUTPUTS not in meta:
        raise NotLayerwise(f"the model has no {LAYER_OUTPUTS} metadata (exported before "
                           f"layer-wise inference)")
    try:
        entries = json.loads(meta[LAYER_OUTPUTS])
        ok = isinstance(entries, list) and all(
            isinstance(e, dict) and isinstance(e.get("outputs"), list) and e["outputs"]
            and len(e.get("dtypes", [])) == len(e["outputs"]) for e in entries)
    except json.JSONDecodeError:
        ok = False
    if not ok:
        raise NotLayerwise(f"{LAYER_OUTPUTS} is not a list of {{outputs, dtypes, inputs}}")
    if len(entries) != num_layers:
        raise NotLayerwise(f"{LAYER_OUTPUTS} lists {len(entries)} layers, the model has "
                           f"{num_layers}")
    return entries


def cut(model: Any, num_layers: int) -> list[LayerModel]:
    """The per-layer sub-models of ``model`` (an onnx_proto ModelProto), or NotLayerwise."""
    entries = _boundaries(op.metadata(model), num_layers)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    inputs = {i.name: i for i in graph.input if i.name not in initializers}
    outputs = {o.name: o for o in graph.output}
    producer = {out: k for k, node in enumerate(graph.node) for out in node.output if out}
    last_outputs = entries[-1]["outputs"]
    if len(last_outputs) != 1 or last_outputs[0] not in outputs:
        raise NotLayerwise(f"the last layer's boundary {last_outputs} is not one model output")
    layers: list[LayerModel] = []
    previous: dict[str, np.dtype] = {}  # the previous layer's boundary tensors and dtypes
    for i, entry in enumerate(entries):
        allowed = {f"indptr_{i}", f"src_{i}", *SHARED_INPUTS} | ({FEATURES} if i == 0 else set())
        nodes, reads, carried, consts = _ancestors(entry["outputs"], set(previous), inputs,
                                                   initializers, producer, graph.node, i)
        stray = reads - allowed
        if stray:
            raise NotLayerwise(f"layer {i}'s sub-model reads {sorted(stray)}, outside its "
                               f"layer (a connection skips the layer boundary)")
        try:
            dtypes = tuple(np.dtype(d) for d in entry["dtypes"])
        except TypeError:
            raise NotLayerwise(f"layer {i}: unknown dtypes {entry['dtypes']}") from None
        if any(d not in op.ELEM_TYPE for d in dtypes):
            raise NotLayerwise(f"layer {i}: unsupported dtypes {entry['dtypes']}")
        graph_inputs = tuple(n for n in inputs if n in reads)
        carried_order = tuple(n for n in previous if n in carried)
        sub = _sub_model(
            model, i, [graph.node[k] for k in sorted(nodes)],
            [initializers[n] for n in initializers if n in consts],
            [inputs[n] for n in graph_inputs]
            + [op.value_info(n, op.ELEM_TYPE[previous[n]], 2) for n in carried_order],
            [outputs[n] if n in outputs else op.value_info(n, op.ELEM_TYPE[d], 2)
             for n, d in zip(entry["outputs"], dtypes, strict=True)])
        layers.append(LayerModel(i, sub, graph_inputs, carried_order, tuple(entry["outputs"]),
                                 dtypes))
        previous = dict(zip(entry["outputs"], dtypes, strict=True))
    return layers


def _ancestors(targets: Sequence[str], stop: set[str], inputs: Mapping[str, Any],
               initializers: Mapping[str, Any], producer: Mapping[str, int], nodes: Sequence[Any],
               layer: int) -> tuple[set[int], set[str], set[str], set[str]]:
    """(node indices, graph inputs read, ``stop`` tensors read, initializers read) of
    everything ``targets`` depend on, not looking behind ``stop``."""
    found: set[int] = set()
    reads: set[str] = set()
    carried: set[str] = set()
    consts: set[str] = set()
    seen: set[str] = set()
    pending = list(targets)
    while pending:
        name = pending.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        if name in stop:
            carried.add(name)
        elif name in inputs:
            reads.add(name)
        elif name in initializers:
            consts.add(name)
        elif name in producer:
            if producer[name] not in found:
                found.add(producer[name])
                pending.extend(node_reads(nodes[producer[name]]))
        else:
            raise NotLayerwise(f"layer {layer}: no node produces {name!r}")
    return found, reads, carried, consts


def _sub_model(model: Any, index: int, nodes: list[Any], initializers: list[Any],
               inputs: list[Any], outputs: list[Any]) -> bytes:
    """A serialized model of ``nodes`` (graph order) with every function of ``model``."""
    sub = op.ModelProto(ir_version=model.ir_version,
                        producer_name="qgnn.runtime.engine layerwise")
    for opset in model.opset_import:
        sub.opset_import.add().CopyFrom(opset)
    for function in model.functions:
        sub.functions.add().CopyFrom(function)
    graph = sub.graph
    graph.name = f"layer_{index}"
    for node in nodes:
        graph.node.add().CopyFrom(node)
    for tensor in initializers:
        graph.initializer.add().CopyFrom(tensor)
    for info in inputs:
        graph.input.add().CopyFrom(info)
    for info in outputs:
        graph.output.add().CopyFrom(info)
    return sub.SerializeToString()


class LayerwiseRunner:
    """Runs the sub-models of :func:`cut` over a snapshot. Their executors are made by
    ``make`` on first use (a serving engine that never runs full-graph inference pays
    nothing), once."""

    def __init__(self, layers: Sequence[LayerModel], make: Callable[[bytes], Runs]) -> None:
        self.layers = tuple(layers)
        self._make = make
        self._executors: list[Runs] | None = None
        self._lock = threading.Lock()

    def executors(self) -> list[Runs]:
        with self._lock:
            if self._executors is None:
                self._executors = [self._make(layer.model) for layer in self.layers]
            return self._executors

    def iter_outputs(self, snapshot: Snapshot, extractor: Extractor, chunk_size: int,
                     progress: Progress | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, outputs)`` of the last layer per chunk of destinations, in id order, after
        every earlier layer ran over all nodes."""
        carried: dict[str, np.ndarray] = {}
        for layer in self.layers[:-1]:
            carried = self._table(layer, snapshot, extractor, chunk_size, carried, progress)
        last, executor = self.layers[-1], self.executors()[-1]
        n = snapshot.num_nodes
        for start in range(0, n, chunk_size):
            ids = np.arange(start, min(start + chunk_size, n), dtype=np.int64)
            out = executor.run(self._feeds(last, snapshot, extractor, ids, carried),
                               list(last.outputs))
            if progress is not None:
                progress(last.index, int(ids[-1]) + 1, n)
            yield ids, out[last.outputs[0]]

    def tables(self, snapshot: Snapshot, extractor: Extractor, chunk_size: int
               ) -> list[dict[str, np.ndarray]]:
        """Every layer's boundary tensors over all nodes, but the last layer's (the model
        output): what a later layer reads, kept so a changed graph recomputes only the rows
        the change reaches (layer_cache.py)."""
        out: list[dict[str, np.ndarray]] = []
        carried: dict[str, np.ndarray] = {}
        for layer in self.layers[:-1]:
            carried = self._table(layer, snapshot, extractor, chunk_size, carried, None)
            out.append(carried)
        return out

    def _table(self, layer: LayerModel, snapshot: Snapshot, extractor: Extractor,
               chunk_size: int, carried: Mapping[str, np.ndarray], progress: Progress | None
               ) -> dict[str, np.ndarray]:
        """One (not last) layer over all nodes: its boundary tensors, (N, F) each."""
        n = snapshot.num_nodes
        executor = self.executors()[layer.index]
        produced: dict[str, np.ndarray] = {}
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            ids = np.arange(start, stop, dtype=np.int64)
            out = executor.run(self._feeds(layer, snapshot, extractor, ids, carried),
                               list(layer.outputs))
            if progress is not None:
                progress(layer.index, stop, n)
            for name, value in self.checked(layer, out, ids.size).items():
                if name not in produced:
                    produced[name] = np.empty((n, value.shape[1]), value.dtype)
                produced[name][start:stop] = value
        return produced

    @staticmethod
    def checked(layer: LayerModel, out: Mapping[str, np.ndarray], rows: int
                ) -> dict[str, np.ndarray]:
        """The layer's boundary tensors from a run of its sub-model, checked against the
        exporter's metadata (a mismatch would silently corrupt every later layer)."""
        result = {}
        for name, dtype in zip(layer.outputs, layer.dtypes, strict=True):
            value = out[name]
            if value.dtype != dtype or value.ndim != 2 or value.shape[0] != rows:
                raise RuntimeError(f"layer {layer.index}: {name!r} is {value.dtype} "
                                   f"{value.shape}, the metadata says {dtype} ({rows}, F)")
            result[name] = value
        return result

    @staticmethod
    def _feeds(layer: LayerModel, snapshot: Snapshot, extractor: Extractor, ids: np.ndarray,
               carried: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The one-hop block of ``ids`` (all in-neighbours) and its sources' rows."""
        if ids.size == snapshot.num_nodes == snapshot.num_base and not snapshot.dirty_ids.size:
            return LayerwiseRunner._whole_graph_feeds(layer, snapshot, carried)
        block = extractor.extract(snapshot, ids, (-1,))
        hop, sources = block.layers[0], block.node_ids
        feeds = {f"indptr_{layer.index}": hop.indptr, f"src_{layer.index}": hop.src}
        if FEATURES in layer.graph_inputs:
            feeds[FEATURES] = np.ascontiguousarray(snapshot.features(sources))
        if "in_degree" in layer.graph_inputs:
            feeds["in_degree"] = np.ascontiguousarray(snapshot.in_degree(sources), np.int64)
        for name in layer.carried:
            feeds[name] = carried[name].take(sources, axis=0)
        return feeds

    @staticmethod
    def _whole_graph_feeds(layer: LayerModel, snapshot: Snapshot,
                           carried: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One chunk of every node of a graph without a delta: the block is the stored in-CSR
        itself and its sources are the node ids in order, so nothing is extracted or copied."""
        feeds = {f"indptr_{layer.index}": np.asarray(snapshot.base_indptr, np.int64),
                 f"src_{layer.index}": np.asarray(snapshot.base_indices, np.int64)}
        if FEATURES in layer.graph_inputs:
            feeds[FEATURES] = np.ascontiguousarray(snapshot.base_features)
        if "in_degree" in layer.graph_inputs:
            feeds["in_degree"] = np.asarray(snapshot.base_degree, np.int64)
        for name in layer.carried:
            feeds[name] = carried[name]
        return feeds
