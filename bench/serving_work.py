"""The per-request work of the serving anchors, written the way a user would: numpy + onnxruntime.

Imports nothing from qgnn, so the same file runs inside KServe's and MLServer's virtual
environments (bench/serving_anchors.py puts this folder on their path). Given a bundle that
``qgnn export`` wrote (model.onnx and the in-neighbour CSR under graph/), :class:`SubgraphModel`
answers node ids the way a hand-written server does: extract the seeds' full L-hop
neighbourhood with numpy, gather the stored (already quantised) features, run the exported
model on onnxruntime, softmax. :class:`LookupModel` runs the model once on the whole graph at
start and answers by gathering rows: the "precomputed" anchor.

The layout fed to the model is the exporter's (docs/export.md): node list seeds first, then each
hop's new nodes; per layer, input layer first, ``indptr_l``/``src_l`` CSR over that layer's
destinations with sources local to the node list.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class _Bundle:
    """The arrays and model of a bundle, memory-mapped."""

    def __init__(self, bundle: Path, threads: int) -> None:
        bundle = Path(bundle)
        manifest = json.loads((bundle / "manifest.json").read_text())
        self.name = manifest["model"]["name"]
        graph = bundle / "graph"
        indptr = np.load(graph / "indptr.npy", mmap_mode="r")
        indices = np.load(graph / "indices.npy", mmap_mode="r")
        self.num_nodes = int(indptr.shape[0] - 1)
        if manifest["graph"].get("adjacency", "out") == "out":  # rows are sources: transpose
            dst = np.asarray(indices, np.int64)
            src = np.repeat(np.arange(self.num_nodes, dtype=np.int64), np.diff(indptr))
            order = np.argsort(dst, kind="stable")
            indices = src[order]
            indptr = np.zeros(self.num_nodes + 1, np.int64)
            np.cumsum(np.bincount(dst, minlength=self.num_nodes), out=indptr[1:])
        self.indptr, self.indices = indptr, indices
        self.features = np.load(graph / "features.npy", mmap_mode="r")
        self.in_degree = np.diff(np.asarray(self.indptr)).astype(np.int64)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(bundle / manifest["model"]["file"]), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.num_layers = sum(1 for n in self.inputs if n.startswith("indptr_"))
        self.output = self.session.get_outputs()[0].name

    def run(self, node_ids: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]
            ) -> np.ndarray:
        feeds = {"x": np.ascontiguousarray(self.features[node_ids])}
        if "in_degree" in self.inputs:
            feeds["in_degree"] = self.in_degree[node_ids]
        for i, (indptr, src) in enumerate(layers):
            feeds[f"indptr_{i}"] = indptr
            feeds[f"src_{i}"] = src
        return self.session.run([self.output], feeds)[0]


class SubgraphModel(_Bundle):
    """Per request: full L-hop neighbourhood with numpy, the model on onnxruntime."""

    def logits(self, ids: np.ndarray) -> np.ndarray:
        seeds, inverse = np.unique(ids, return_inverse=True)
        nodes = seeds
        hops = []
        for _ in range(self.num_layers):
            starts, ends = self.indptr[nodes], self.indptr[nodes + 1]
            counts = ends - starts
            flat = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(
                counts.sum())  # positions of every row's in-neighbours, vectorised
            sources = self.indices[flat]
            fresh = np.setdiff1d(sources, nodes)
            num_dst = nodes.size
            nodes = np.concatenate([nodes, fresh])
            order = np.argsort(nodes)
            local = order[np.searchsorted(nodes[order], sources)]
            indptr = np.zeros(num_dst + 1, np.int64)
            np.cumsum(counts, out=indptr[1:])
            hops.append((indptr, local.astype(np.int64)))
        return self.run(nodes, hops[::-1])[inverse]

    def predict(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs = _softmax(self.logits(ids))
        return probs, probs.argmax(axis=1).astype(np.int64)


class LookupModel(_Bundle):
    """The model once over the whole graph at start; requests gather rows."""

    def __init__(self, bundle: Path, threads: int) -> None:
        super().__init__(bundle, threads)
        n = self.num_nodes
        whole = (np.asarray(self.indptr, np.int64), np.asarray(self.indices, np.int64))
        self.table = _softmax(self.run(np.arange(n, dtype=np.int64), [whole] * self.num_layers))
        self.classes = self.table.argmax(axis=1).astype(np.int64)

    def predict(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.table[ids], self.classes[ids]
