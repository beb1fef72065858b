"""Test kit for the serving runtime: a small but real numpy/onnxruntime backend, bundles for it,
an independent dense oracle and throwaway TLS certificates.

The backend ("mean-mlp"): h_v = [x_v, mean of x_u over in-neighbours u of v] (zeros without
in-neighbours), z_v = relu(h_v W1 + b1) is the embedding, and for node models
probabilities = softmax(z W2 + b2); for link models score(u, v) = sigmoid(z_u . z_v). The
aggregation gathers the requested nodes' in-edges only (a 1-hop subgraph) from CSC arrays and
averages them with a sparse (targets x nodes) operator; the MLP is an ONNX model built with
onnx.helper and run by onnxruntime. The oracle recomputes
everything with a dense adjacency matrix and plain numpy, sharing no code with the backend.

Importing this module registers the backend for bundles with ``model.format ==
"qgnn-test-numpy"``; a ``qgnn serve`` process gets it with ``QGNN_BACKEND_MODULES=serving_testkit``
(and this folder on PYTHONPATH).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from qgnn.runtime.backend import BackendOptions, InductiveNodes
from qgnn.runtime.backend_loaders import register_backend_loader
from qgnn.runtime.bundle.reader import Bundle
from qgnn.runtime.bundle.writer import write_bundle

FORMAT = "qgnn-test-numpy"
NODE_TYPE = "graph/node_type.npy"


# ---------------------------------------------------------------------------------------------
# Bundles


@dataclass
class ModelParams:
    """Everything the oracle needs: the graph and the weights."""

    x: np.ndarray  # float32 (N, F)
    src: np.ndarray  # int64 (E,)
    dst: np.ndarray  # int64 (E,)
    w1: np.ndarray  # (2F, H)
    b1: np.ndarray  # (H,)
    w2: np.ndarray | None  # (H, C) for node models
    b2: np.ndarray | None
    node_type: np.ndarray  # int8 (N,): 0 user, 1 item


def _onnx_model(params: ModelParams, task: str) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    f2, h = params.w1.shape
    nodes = [helper.make_node("MatMul", ["h", "w1"], ["hw"]),
             helper.make_node("Add", ["hw", "b1"], ["pre"]),
             helper.make_node("Relu", ["pre"], ["embedding"])]
    inits = [numpy_helper.from_array(params.w1.astype(np.float32), "w1"),
             numpy_helper.from_array(params.b1.astype(np.float32), "b1")]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", h])]
    if task == "node":
        c = params.w2.shape[1]
        nodes += [helper.make_node("MatMul", ["embedding", "w2"], ["zw"]),
                  helper.make_node("Add", ["zw", "b2"], ["logits"])]
        inits += [numpy_helper.from_array(params.w2.astype(np.float32), "w2"),
                  numpy_helper.from_array(params.b2.astype(np.float32), "b2")]
        outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                        ["batch", c]))
    graph = helper.make_graph(nodes, "mean_mlp",
                              [helper.make_tensor_value_info("h", TensorProto.FLOAT,
                                                             ["batch", f2])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def random_params(num_nodes: int = 30, num_features: int = 6, hidden: int = 8,
                  num_classes: int = 3, *, task: str = "node", seed: int = 0,
                  avg_degree: float = 3.0, num_users: int = 0) -> ModelParams:
    """A random symmetric graph (no self-loops) and random weights."""
    rng = np.random.default_rng(seed)
    m = max(int(num_nodes * avg_degree / 2), 1)
    a, b = rng.integers(0, num_nodes, m), rng.integers(0, num_nodes, m)
    keep = a != b
    pairs = np.unique(np.sort(np.stack([a[keep], b[keep]], 1), axis=1), axis=0)
    src = np.concatenate([pairs[:, 0], pairs[:, 1]]).astype(np.int64)
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]]).astype(np.int64)
    x = rng.normal(size=(num_nodes, num_features)).astype(np.float32)
    w1 = (rng.normal(size=(2 * num_features, hidden)) / np.sqrt(num_features)).astype(np.float32)
    b1 = (rng.normal(size=hidden) * 0.1).astype(np.float32)
    w2 = b2 = None
    if task == "node":
        w2 = rng.normal(size=(hidden, num_classes)).astype(np.float32)
        b2 = (rng.normal(size=num_classes) * 0.1).astype(np.float32)
    node_type = np.ones(num_nodes, np.int8)
    node_type[:num_users] = 0
    return ModelParams(x, src, dst, w1, b1, w2, b2, node_type)


def write_test_bundle(out: Path, params: ModelParams, *, name: str = "toy", version: int = 1,
                      task: str = "node", delay_s: float = 0.0, fmt: str = FORMAT,
                      overwrite: bool = False) -> Path:
    """A real bundle (verified by load_bundle) the test backend serves."""
    n, f = params.x.shape
    order = np.lexsort((params.dst, params.src))
    src, dst = params.src[order], params.dst[order]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    c = 0 if params.w2 is None else params.w2.shape[1]
    h = params.w1.shape[1]
    outputs = [{"name": "embedding", "dtype": "float32", "shape": ["batch", h]}]
    if task == "node":
        outputs.insert(0, {"name": "logits", "dtype": "float32", "shape": ["batch", c]})
    manifest = {
        "model": {"name": name, "version": version, "task": task, "type": "mean-mlp",
                  "file": "model.onnx", "format": fmt,
                  "inputs": [{"name": "h", "dtype": "float32", "shape": ["batch", 2 * f]}],
                  "outputs": outputs},
        "quantisation": {"bits": 32, "method": "none", "num_sites": 0},
        "metrics": {"test_accuracy": 0.5},
        "graph": {"num_nodes": n, "num_edges": len(src), "num_features": f, "num_classes": c},
        "versions": {},
        "test_backend": {"delay_s": delay_s},
    }
    files = {"model.onnx": _onnx_model(params, task), "graph/indptr.npy": indptr,
             "graph/indices.npy": dst, "graph/features.npy": params.x,
             NODE_TYPE: params.node_type}
    return write_bundle(out, manifest, files, overwrite=overwrite)


# ---------------------------------------------------------------------------------------------
# The backend


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated aranges [starts[i], starts[i] + counts[i]) (vectorised)."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return np.arange(total, dtype=np.int64) + offsets


class MeanMlpBackend:
    """ModelBackend over a CSR graph and an ONNX MLP (see the module docstring)."""

    def __init__(self, bundle: Bundle, options: BackendOptions) -> None:
        import onnxruntime as ort

        self.manifest = bundle.manifest
        m = bundle.manifest.model
        self.name, self.version, self.task = m.name, m.version, m.task
        self._observer = options.observer
        self._delay = float(bundle.manifest.raw.get("test_backend", {}).get("delay_s", 0.0))
        indptr = np.asarray(bundle.array("graph/indptr"), np.int64)
        dst = np.asarray(bundle.array("graph/indices"), np.int64)
        src = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        self._x = np.asarray(bundle.array("graph/features"), np.float32)
        self._node_type = np.asarray(bundle.array(NODE_TYPE), np.int8)
        self._set_edges(src, dst)
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(bundle.model_path()), so,
                                             providers=["CPUExecutionProvider"])
        self._hidden = int(m.outputs[-1].shape[1])
        self._classes = bundle.manifest.graph.num_classes
        self.revision = 0
        self.closed = False

    def _set_edges(self, src: np.ndarray, dst: np.ndarray) -> None:
        n = len(self._x)
        self._src, self._dst = src, dst
        by_src = np.lexsort((dst, src))
        self._out_ptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))])
        self._out_idx = dst[by_src]
        by_dst = np.lexsort((src, dst))
        self._in_ptr = np.concatenate([[0], np.cumsum(np.bincount(dst, minlength=n))])
        self._in_idx = src[by_dst]

    # -- sizes -------------------------------------------------------------------------------

    @property
    def num_nodes(self) -> int:
        return len(self._x)

    @property
    def num_edges(self) -> int:
        return len(self._src)

    @property
    def num_features(self) -> int:
        return self._x.shape[1]

    @property
    def num_classes(self) -> int:
        return self._classes

    @property
    def embedding_dim(self) -> int:
        return self._hidden

    # -- computation -------------------------------------------------------------------------

    def _inputs(self, ids: np.ndarray, ind: InductiveNodes | None
                ) -> tuple[np.ndarray, np.ndarray]:
        """The MLP input h (T, 2F) of the distinct ids, and the map from ids to its rows."""
        if self._delay:
            time.sleep(self._delay)
        n = self.num_nodes
        targets, inverse = np.unique(ids, return_inverse=True)
        if ind is not None and len(ind):
            order = np.argsort(ind.ids)
            sorted_ids = ind.ids[order]

            def local(v: np.ndarray) -> np.ndarray:
                out = v.copy()
                big = v >= n
                out[big] = n + order[np.searchsorted(sorted_ids, v[big])]
                return out

            x_all = np.concatenate([self._x, ind.features])
            extra = local(ind.edges.reshape(-1)).reshape(-1, 2)
        else:
            def local(v: np.ndarray) -> np.ndarray:
                return v

            x_all = self._x
            extra = np.zeros((0, 2), np.int64)
        t_local = local(targets)
        base = t_local < n
        base_pos = np.flatnonzero(base)
        counts = self._in_ptr[t_local[base] + 1] - self._in_ptr[t_local[base]]
        src = self._in_idx[_ranges(self._in_ptr[t_local[base]], counts)]
        pos = np.repeat(base_pos, counts)
        if len(extra):
            where = np.searchsorted(t_local, extra[:, 1])
            where = np.minimum(where, len(t_local) - 1)
            hit = t_local[where] == extra[:, 1]
            src = np.concatenate([src, extra[hit, 0]])
            pos = np.concatenate([pos, where[hit]])
        deg = np.bincount(pos, minlength=len(targets)).astype(np.float32)
        weights = (1.0 / np.maximum(deg, 1.0))[pos]
        mean_op = sp.csr_matrix((weights, (pos, src)), shape=(len(targets), len(x_all)))
        mean = np.asarray(mean_op @ x_all, np.float32)  # mean over in-neighbours, 0 for none
        h = np.concatenate([x_all[t_local], mean], axis=1)
        self._observer.subgraph(len(targets) + len(np.unique(src)), len(src))
        return h, inverse

    def _run(self, output: str, ids: np.ndarray, ind: InductiveNodes | None) -> np.ndarray:
        h, inverse = self._inputs(ids, ind)
        started = time.perf_counter()
        out = self._session.run([output], {"h": h})[0]
        self._observer.stage("onnx", time.perf_counter() - started)
        return out[inverse]

    def _embed(self, ids: np.ndarray, ind: InductiveNodes | None) -> np.ndarray:
        return self._run("embedding", ids, ind)

    def predict_nodes(self, ids: np.ndarray, inductive: InductiveNodes | None = None
                      ) -> np.ndarray:
        logits = self._run("logits", ids, inductive).astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def embed(self, ids: np.ndarray, inductive: InductiveNodes | None = None) -> np.ndarray:
        return self._embed(ids, inductive)

    def predict_links(self, pairs: np.ndarray, inductive: InductiveNodes | None = None
                      ) -> np.ndarray:
        z = self._embed(pairs.reshape(-1), inductive).reshape(len(pairs), 2, -1)
        logit = np.einsum("nd,nd->n", z[:, 0].astype(np.float64), z[:, 1].astype(np.float64))
        return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)

    def recommend(self, user: int, k: int, exclude_seen: bool, candidates: np.ndarray | None,
                  inductive: InductiveNodes | None = None) -> tuple[np.ndarray, np.ndarray]:
        items = (np.flatnonzero(self._node_type == 1) if candidates is None
                 else np.unique(candidates))
        items = items[items != user]
        if exclude_seen:
            seen = self._out_idx[self._out_ptr[user]:self._out_ptr[user + 1]] \
                if user < self.num_nodes else np.zeros(0, np.int64)
            if inductive is not None:
                seen = np.concatenate([seen, inductive.edges[inductive.edges[:, 0] == user, 1]])
            items = items[~np.isin(items, seen)]
        if len(items) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        z = self._embed(np.concatenate([[user], items]), inductive)
        logit = z[1:].astype(np.float64) @ z[0].astype(np.float64)
        scores = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
        order = np.lexsort((items, -scores))[:k]
        return items[order].astype(np.int64), scores[order]

    def update_graph(self, features: np.ndarray | None, edges: np.ndarray | None) -> np.ndarray:
        n0 = self.num_nodes
        m = 0 if features is None else len(features)
        x = self._x if features is None else np.concatenate([self._x, features])
        node_type = np.concatenate([self._node_type, np.ones(m, np.int8)])
        src, dst = self._src, self._dst
        if edges is not None:
            src, dst = np.concatenate([src, edges[:, 0]]), np.concatenate([dst, edges[:, 1]])
        self._x, self._node_type = x, node_type
        self._set_edges(src, dst)
        self.revision += 1
        return np.arange(n0, n0 + m, dtype=np.int64)

    def close(self) -> None:
        self.closed = True
        self._session = None


def load_mean_mlp(bundle: Bundle, options: BackendOptions) -> MeanMlpBackend:
    return MeanMlpBackend(bundle, options)


register_backend_loader(load_mean_mlp, format=FORMAT)


# ---------------------------------------------------------------------------------------------
# The oracle (dense, shares nothing with the backend)


def oracle_embeddings(p: ModelParams, extra_x: np.ndarray | None = None,
                      extra_edges: np.ndarray | None = None) -> np.ndarray:
    """z for every node (and appended inductive nodes), via a dense adjacency matrix."""
    x = p.x if extra_x is None else np.concatenate([p.x, extra_x])
    n = len(x)
    adj = np.zeros((n, n))
    adj[p.src, p.dst] = 1.0
    if extra_edges is not None and len(extra_edges):
        adj[extra_edges[:, 0], extra_edges[:, 1]] = 1.0
    deg = adj.sum(axis=0)
    mean = (adj.T @ x) / np.where(deg > 0, deg, 1.0)[:, None]
    h = np.concatenate([x, mean], axis=1)
    return np.maximum(h @ p.w1 + p.b1, 0.0)


def oracle_probabilities(p: ModelParams, **kw: Any) -> np.ndarray:
    logits = oracle_embeddings(p, **kw) @ p.w2 + p.b2
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def oracle_link_scores(p: ModelParams, src: np.ndarray, dst: np.ndarray, **kw: Any
                       ) -> np.ndarray:
    z = oracle_embeddings(p, **kw)
    return 1.0 / (1.0 + np.exp(-(z[src] * z[dst]).sum(axis=1)))


# ---------------------------------------------------------------------------------------------
# TLS material


def make_certificates(directory: Path) -> dict[str, Path] | None:
    """A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate,
    made with the openssl CLI; None when openssl is not installed."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=qgnn test CA")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                  "extendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for role in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{role}.key", "-out",
            f"{role}.csr", "-subj", f"/CN={'localhost' if role == 'server' else 'qgnn-client'}")
        run("x509", "-req", "-in", f"{role}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{role}.pem", "-days", "2", "-extfile", f"{role}.ext")
    return {name: d / name for name in ("ca.pem", "server.pem", "server.key", "client.pem",
                                        "client.key")}
