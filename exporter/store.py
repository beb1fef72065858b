"""The serving graph store of a bundle and the ONNX feeds built from it.

The store holds the full graph as an in-neighbour CSR (``indptr`` (N + 1,), ``indices`` (E,):
the sources of node ``v``'s in-edges are ``indices[indptr[v]:indptr[v + 1]]``), every node's
full-graph in-degree, and the node features the model's ``x`` input takes: uint8 quantised at
the first layer's input site for INT8 models that read features only there, else float32.
:meth:`GraphStore.full_graph_feeds` and :meth:`GraphStore.block_feeds` turn it into the
model inputs (docs/export.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from qgnn.contract.signature import FEATURES, IN_DEGREE, indptr_name, src_name
from qgnn.exporter.quant_params import Site
from qgnn.graph.container import Graph
from qgnn.graph.neighbourhood import SampledBlock
from qgnn.runtime.bundle.layout import (
    EMBEDDING_SCALES,
    EMBEDDINGS,
    GRAPH_FEATURE_SCALE,
    GRAPH_FEATURE_ZERO_POINT,
    GRAPH_FEATURES,
    GRAPH_IN_DEGREE,
    GRAPH_INDICES,
    GRAPH_INDPTR,
    GRAPH_LABELS,
    GRAPH_MASK,
)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class GraphStore:
    indptr: np.ndarray  # (N + 1,) int64, in-neighbour CSR by destination
    indices: np.ndarray  # (E,) int64, source of each in-edge
    in_degree: np.ndarray  # (N,) int64
    features: np.ndarray  # (N, F) uint8 or float32, what the model's ``x`` takes
    feature_scale: np.ndarray | None = None  # float32 (), uint8 features only
    feature_zero_point: np.ndarray | None = None  # uint8 ()
    labels: np.ndarray | None = None  # (N,) int64
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (N,) bool

    @property
    def num_nodes(self) -> int:
        return int(self.indptr.size - 1)

    @property
    def num_edges(self) -> int:
        return int(self.indices.size)

    def full_graph_feeds(self, num_layers: int) -> dict[str, np.ndarray]:
        """Inputs running the model on the whole graph: the same CSR for every layer."""
        feeds = {FEATURES: self.features, IN_DEGREE: self.in_degree}
        for i in range(num_layers):
            feeds[indptr_name(i)], feeds[src_name(i)] = self.indptr, self.indices
        return feeds

    def block_feeds(self, blocks: Sequence[SampledBlock]) -> dict[str, np.ndarray]:
        """Inputs for sampled blocks (input layer first, as ``khop_blocks`` returns them);
        the output rows are ``blocks[-1].node_ids[:blocks[-1].num_dst]``."""
        ids = blocks[0].node_ids
        feeds = {FEATURES: self.features[ids], IN_DEGREE: self.in_degree[ids]}
        for i, block in enumerate(blocks):
            feeds.update(csr_feeds(i, block.src, block.dst, block.num_dst))
        return feeds

    def arrays(self) -> dict[str, np.ndarray]:
        """The bundle files of the store, by bundle path."""
        files = {GRAPH_INDPTR: self.indptr, GRAPH_INDICES: self.indices,
                 GRAPH_IN_DEGREE: self.in_degree, GRAPH_FEATURES: self.features}
        if self.feature_scale is not None:
            files[GRAPH_FEATURE_SCALE] = self.feature_scale
            files[GRAPH_FEATURE_ZERO_POINT] = self.feature_zero_point  # type: ignore[assignment]
        if self.labels is not None:
            files[GRAPH_LABELS] = self.labels
        for split, mask in self.masks.items():
            files[GRAPH_MASK.format(split=split)] = mask
        return files


def csr_feeds(layer: int, src: np.ndarray, dst: np.ndarray, num_dst: int) -> dict[str, np.ndarray]:
    """``indptr_<layer>``/``src_<layer>`` of edges already grouped by ascending destination."""
    dst = np.asarray(dst, np.int64)
    if dst.size and np.any(dst[1:] < dst[:-1]):
        raise ValueError(f"layer {layer}: edges must be sorted by destination")
    if dst.size and (dst[0] < 0 or dst[-1] >= num_dst):
        raise ValueError(f"layer {layer}: destination ids must lie in [0, {num_dst})")
    counts = np.bincount(dst, minlength=num_dst)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return {indptr_name(layer): indptr, src_name(layer): np.ascontiguousarray(src, np.int64)}


def build_store(graph: Graph, features: np.ndarray, input_site: Site | None, *,
                labels: np.ndarray | None = None,
                masks: dict[str, np.ndarray] | None = None) -> GraphStore:
    """The store of ``graph`` with float32 ``features`` (N, F) (already transformed as in
    training), quantised at ``input_site`` when the model takes uint8 features."""
    features = np.ascontiguousarray(features, np.float32)
    if features.ndim != 2 or features.shape[0] != graph.num_nodes:
        raise ValueError(f"features: expected ({graph.num_nodes}, F), got {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError("features: must be finite")
    if graph.edge_weight is not None:
        raise ValueError(f"graph {graph.name!r} has edge weights; the exporter does not "
                         f"support edge-weighted graphs yet")
    csc = graph.csc
    scale = zero_point = None
    if input_site is not None:
        scale, zero_point = input_site.activation_params()
        features = input_site.quantize(features).astype(np.uint8)
    masks = dict(masks or {})
    for split, mask in masks.items():
        if split not in SPLITS or mask.shape != (graph.num_nodes,) or mask.dtype != np.bool_:
            raise ValueError(f"masks[{split!r}]: expected one of {SPLITS} with a bool "
                             f"({graph.num_nodes},) mask")
    return GraphStore(indptr=csc.indptr.astype(np.int64), indices=csc.indices.astype(np.int64),
                      in_degree=np.diff(csc.indptr).astype(np.int64), features=features,
                      feature_scale=scale, feature_zero_point=zero_point,
                      labels=None if labels is None else np.asarray(labels, np.int64),
                      masks=masks)


def embeddings_int8(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-node symmetric int8 embeddings: ``(values int8 (N, D), scales float32 (N,))`` with
    ``z ~= scales[:, None] * values``; ``scale = max|z_n| / 127`` (1 for an all-zero row)."""
    z = np.asarray(z, np.float32)
    if z.ndim != 2 or not np.isfinite(z).all():
        raise ValueError(f"embeddings: expected a finite (N, D) array, got shape {z.shape}")
    top = np.abs(z).max(axis=1, initial=0.0)
    scales = np.where(top > 0, top / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    values = np.clip(np.rint(z / scales[:, None]), -127, 127).astype(np.int8)
    return values, scales


def embedding_arrays(z: np.ndarray) -> dict[str, np.ndarray]:
    values, scales = embeddings_int8(z)
    return {EMBEDDINGS: values, EMBEDDING_SCALES: scales}
