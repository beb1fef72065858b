"""Figures for the inference engine (qgnn.runtime.engine), each against what it answers to.

1. Machine: CPU, cores, load average, and memory bandwidth measured in the same run.
2. Whole-model forward of a 2-layer GCN (128 -> 128 -> 64) on a power-law graph (default 100k
   nodes, 1M edges, ``qgnn.graph.synth.powerlaw_communities``): INT8 partitioned (onnxruntime
   segments + compiled kernels) against the same INT8 file on stock onnxruntime (function
   bodies), the FP32 file both ways, torch.sparse.mm over a cached CSR (FP32), and
   torch_geometric ``GCNConv`` with ``edge_index`` as users run it (normalisation every call).
   The GCN files are built here (:class:`BenchGcn`: random weights, ranges calibrated on the
   FP32 activations): per layer ``MatMulInteger`` + requantisation (run by the fused qlinear
   kernel), the normalisation coefficient of every edge of ``A + I`` quantised to uint8, one
   weighted ``QAggregate`` (the contract's weighted sum), bias and ReLU in float
   (docs/engine.md says why this is not the exporter's per-edge-message formulation).
3. Each step of the INT8 run (kernel phases, onnxruntime segments) with the bytes it must move.
4. Single-node prediction (2 layers, fanout 10/10) and a batch of 256 nodes, in-process, on
   Cora and on the power-law graph, with INT8 GCN bundles written by ``qgnn export`` (an
   untrained Degree-Quant model with calibrated ranges: latency does not depend on training).
5. Top-k (k=20) over 1M items x 64-d INT8 embeddings with per-row scales (the bundle format)
   against float32 numpy, and recall@20 against exact float32 retrieval.
6. (``--accuracy-run NAME=RUN_DIR``) served accuracy on the test split against the exported
   model's, for trained runs.

Run ``python -m qgnn.bench.bench_engine`` (``--quick`` for a smoke run); prints markdown tables,
writes ``bench/results/engine.json`` and ``bench/results/engine.md``. Times are medians of
repeated runs at 2 intra-op threads. torch is a benchmark-only dependency here.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from qgnn.bench.harness import RESULTS_DIR, Timing, markdown_table, time_repeated, write_result
from qgnn.exporter.ops import IR_VERSION, function_protos, make_op_node, opset_imports
from qgnn.graph.container import Graph
from qgnn.graph.synth import powerlaw_communities
from qgnn.runtime.bundle import load_bundle
from qgnn.runtime.engine import EmbeddingIndex, Engine, EngineConfig, quantize_rows
from qgnn.runtime.engine.executor import PartitionedExecutor, PortableExecutor
from qgnn.runtime.engine.kernel_ops import FORMAL
from qgnn.runtime.engine.session import SessionConfig

MiB = 2**20


def _gbps(num_bytes: float, seconds: float) -> float:
    return num_bytes / seconds / 1e9


def time_apart(candidates: dict[str, Callable[[], object]], repeat: int,
               warmup: int = 2) -> dict[str, Timing]:
    """Each candidate in its own block after a pause: spinning thread pools (torch's OpenMP,
    OpenBLAS) left by one candidate must not steal the cores of the next on a small host."""
    out = {}
    for name, fn in candidates.items():
        time.sleep(0.5)
        out[name] = time_repeated(fn, repeat=repeat, warmup=warmup)
    return out


def bench_bandwidth(repeat: int, size_mib: int = 256) -> dict[str, Any]:
    """STREAM-style copy (read + write) and read-only bandwidth of one thread."""
    a = np.ones(size_mib * MiB // 8)
    b = np.empty_like(a)
    copy = time_repeated(lambda: np.copyto(b, a), repeat=repeat, warmup=1)
    read = time_repeated(a.sum, repeat=repeat, warmup=1)
    return {"array_mib": size_mib, "copy_gbps": _gbps(2 * a.nbytes, copy.median),
            "read_gbps": _gbps(a.nbytes, read.median)}


# ---------------------------------------------------------------------------------------------
# The benchmark GCN


def _uint8_site(values: np.ndarray) -> tuple[np.float32, int]:
    """Asymmetric uint8 (scale, zero point) covering [min(values, 0), max(values, 0)]."""
    lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    scale = np.float32(max(hi - lo, 1e-8) / 255)
    return scale, int(np.clip(np.rint(-lo / scale), 0, 255))


def _looped_norm(graph: Graph) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The GCN operator's structure: in-CSR of ``A + I`` (each node's self-loop last among its
    in-edges), the in-degree without loops, and ``(d_u + 1)^-1/2 (d_v + 1)^-1/2`` per edge."""
    n = graph.num_nodes
    csc = graph.csc
    degree = np.diff(csc.indptr).astype(np.int64)
    indptr = csc.indptr.astype(np.int64) + np.arange(n + 1, dtype=np.int64)
    src = np.empty(indptr[-1], np.int64)
    loop_at = indptr[1:] - 1
    keep = np.ones(src.size, bool)
    keep[loop_at] = False
    src[keep] = csc.indices
    src[loop_at] = np.arange(n)
    inv = (np.float32(1) / np.sqrt(degree.astype(np.float32) + np.float32(1))).astype(
        np.float32)
    dst = np.repeat(np.arange(n), np.diff(indptr))
    return indptr, src, degree, (inv[src] * inv[dst]).astype(np.float32)


class BenchGcn:
    """Weights, FP32 reference activations and the site ranges of a 2-layer GCN
    ``H' = Â H W + b`` with ``Â = D^-1/2 (A + I) D^-1/2`` (Kipf & Welling 2017); its structure
    inputs carry the self-loops, as the cached ``Â`` of the torch.sparse path does."""

    def __init__(self, graph: Graph, dims: tuple[int, int, int], seed: int = 0) -> None:
        import torch

        rng = np.random.default_rng(seed)
        self.dims = dims
        self.weights = [(rng.standard_normal((a, b)) * np.sqrt(2.0 / (a + b))).astype(
            np.float32) for a, b in itertools.pairwise(dims)]
        self.biases = [(0.1 * rng.standard_normal(b)).astype(np.float32) for b in dims[1:]]
        self.indptr, self.src, self.degree, self.coef = _looped_norm(graph)
        n = graph.num_nodes
        self.x = np.ascontiguousarray(graph.x, np.float32)
        self.adjacency = torch.sparse_csr_tensor(
            torch.from_numpy(self.indptr), torch.from_numpy(self.src),
            torch.from_numpy(self.coef), size=(n, n))
        h = torch.from_numpy(self.x)
        self.sites: list[dict[str, tuple[np.float32, int]]] = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            lin = h @ torch.from_numpy(w)
            agg = torch.sparse.mm(self.adjacency, lin)
            self.sites.append({"x": _uint8_site(h.numpy()), "lin": _uint8_site(lin.numpy()),
                               "agg": _uint8_site(agg.numpy())})
            h = agg + torch.from_numpy(b)
            h = torch.relu(h) if i == 0 else h
        self.reference = h.numpy()

    def feeds(self, int8: bool) -> dict[str, np.ndarray]:
        x = self.x
        if int8:
            s, zp = self.sites[0]["x"]
            x = np.clip(np.rint(x / s) + np.float32(zp), 0, 255).astype(np.uint8)
        feeds = {"x": x, "in_degree": self.degree}
        for i in range(2):
            feeds[f"indptr_{i}"], feeds[f"src_{i}"] = self.indptr, self.src
        return feeds

    def model(self, int8: bool) -> onnx.ModelProto:
        """The GCN with the exporter's input names (``x``, ``in_degree``, ``indptr_l``/``src_l``
        -> ``logits``), INT8 or FP32; here the structure must include the self-loops."""
        nodes: list = []
        inits: list = []

        def const(value: Any, name: str) -> str:
            inits.append(numpy_helper.from_array(np.asarray(value), name))
            return name

        def op(kind: str, inputs: list[str], out: str, **attrs: Any) -> str:
            nodes.append(helper.make_node(kind, inputs, [out], name=out, **attrs))
            return out

        deg = op("Cast", ["in_degree"], "deg_f", to=TensorProto.FLOAT)
        inv = op("Reciprocal", [op("Sqrt", [op("Add", [deg, const(np.float32(1), "one")],
                                                 "deg1")], "sqrt")], "inv_sqrt")
        h = "x"
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            p = f"l{i}_"
            indptr, src = f"indptr_{i}", f"src_{i}"
            nodes.append(make_op_node("EdgeDst", [indptr], [p + "dst"], name=p + "dst"))
            coef = op("Mul", [op("Gather", [inv, src], p + "inv_src", axis=0),
                              op("Gather", [inv, p + "dst"], p + "inv_dst", axis=0)], p + "coef")
            if int8:
                site = self.sites[i]
                s_x, zp_x = site["x"]
                s_lin, zp_lin = site["lin"]
                s_agg, zp_agg = site["agg"]
                s_w = np.float32(np.abs(w).max() / 127)
                w_q = np.clip(np.rint(w / s_w), -127, 127).astype(np.int8)
                acc = op("MatMulInteger", [h, const(w_q, p + "w_q"),
                                           const(np.uint8(zp_x), p + "zp_x")], p + "acc")
                mult = np.float32(np.float32(s_x * s_w) / s_lin)
                scaled = op("Mul", [op("Cast", [acc], p + "acc_f", to=TensorProto.FLOAT),
                                    const(mult, p + "m")], p + "scaled")
                shifted = op("Add", [op("Round", [scaled], p + "rounded"),
                                     const(np.float32(zp_lin), p + "zp_lin_f")], p + "shifted")
                lin = op("Cast", [op("Clip", [shifted, const(np.float32(0), p + "lo"),
                                               const(np.float32(255), p + "hi")], p + "clip")],
                         p + "lin_q", to=TensorProto.UINT8)
                s_c, zp_c = const(np.float32(1 / 255), p + "s_c"), const(np.uint8(0), p + "zp_c")
                coef_q = op("QuantizeLinear", [coef, s_c, zp_c], p + "coef_q")
                s_agg_n, zp_agg_n = const(s_agg, p + "s_agg"), const(np.uint8(zp_agg),
                                                                       p + "zp_agg")
                nodes.append(make_op_node(
                    "QAggregate", [lin, const(s_lin, p + "s_lin"), const(np.uint8(zp_lin),
                                                                         p + "zp_lin"),
                                   indptr, src, coef_q, s_c, zp_c, s_agg_n, zp_agg_n],
                    [p + "agg_q"], name=p + "agg_q", reduce="sum"))
                agg = op("DequantizeLinear", [p + "agg_q", s_agg_n, zp_agg_n], p + "agg")
            else:
                lin = op("MatMul", [h, const(w, p + "w")], p + "lin")
                nodes.append(make_op_node("Aggregate", [lin, indptr, src, coef], [p + "agg"],
                                          name=p + "agg", reduce="sum"))
                agg = p + "agg"
            out = op("Add", [agg, const(b, p + "b")], p + "out")
            if i == 0:
                relu = op("Relu", [out], p + "relu")
                if int8:
                    s_next, zp_next = self.sites[1]["x"]
                    h = op("QuantizeLinear", [relu, const(s_next, p + "s_next"),
                                              const(np.uint8(zp_next), p + "zp_next")],
                           p + "next")
                else:
                    h = relu
            else:
                h = out
        nodes.append(helper.make_node("Identity", [h], ["logits"], name="logits"))
        inputs = [helper.make_tensor_value_info(
            "x", TensorProto.UINT8 if int8 else TensorProto.FLOAT, ["num_nodes", self.dims[0]]),
            helper.make_tensor_value_info("in_degree", TensorProto.INT64, ["num_nodes"])]
        for i in range(2):
            inputs += [helper.make_tensor_value_info(f"indptr_{i}", TensorProto.INT64, [None]),
                       helper.make_tensor_value_info(f"src_{i}", TensorProto.INT64, [None])]
        graph = helper.make_graph(nodes, "bench_gcn", inputs, [helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, [None, self.dims[-1]])], inits)
        model = helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION,
                                  functions=function_protos(graph.node))
        onnx.checker.check_model(model)
        return model


# ---------------------------------------------------------------------------------------------
# 2 + 3: whole model, and the INT8 run step by step


def bench_whole_model(graph: Graph, threads: int, repeat: int) -> dict[str, Any]:
    import torch
    from torch_geometric.nn import GCNConv

    torch.set_num_threads(threads)
    gcn = BenchGcn(graph, (graph.num_features, 128, 64))
    config = SessionConfig(threads=threads)
    int8_model, fp32_model = gcn.model(True).SerializeToString(), gcn.model(
        False).SerializeToString()
    int8_feeds, fp32_feeds = gcn.feeds(True), gcn.feeds(False)
    fast_int8 = PartitionedExecutor(int8_model, config)
    stock_int8 = PortableExecutor(int8_model, config)
    fast_fp32 = PartitionedExecutor(fp32_model, config)
    stock_fp32 = PortableExecutor(fp32_model, config)

    n = graph.num_nodes
    adj = gcn.adjacency
    x = torch.from_numpy(gcn.x)
    ws = [torch.from_numpy(w) for w in gcn.weights]
    bs = [torch.from_numpy(b) for b in gcn.biases]

    def torch_sparse() -> torch.Tensor:
        with torch.no_grad():
            h = x
            for i in range(2):
                h = torch.sparse.mm(adj, h @ ws[i]) + bs[i]
                h = torch.relu(h) if i == 0 else h
            return h

    convs = [GCNConv(a, b) for a, b in ((graph.num_features, 128), (128, 64))]
    for conv, w, b in zip(convs, ws, bs, strict=True):
        conv.lin.weight.data = w.t().contiguous()
        conv.bias.data = b.clone()
    csc = graph.csc  # the graph as users hold it: edge_index without self-loops
    edge_index = torch.from_numpy(np.stack([csc.indices.astype(np.int64), np.repeat(
        np.arange(n), gcn.degree)]))

    def pyg() -> torch.Tensor:
        with torch.no_grad():
            return convs[1](torch.relu(convs[0](x, edge_index)), edge_index)

    runs = {
        "INT8 partitioned (kernels + onnxruntime)": lambda: fast_int8.run(int8_feeds),
        "INT8 stock onnxruntime (function bodies)": lambda: stock_int8.run(int8_feeds),
        "FP32 partitioned (float kernels + onnxruntime)": lambda: fast_fp32.run(fp32_feeds),
        "FP32 stock onnxruntime (function bodies)": lambda: stock_fp32.run(fp32_feeds),
        "FP32 torch.sparse.mm (cached CSR)": torch_sparse,
        "FP32 torch_geometric GCNConv (edge_index)": pyg,
    }
    timings = time_apart(runs, repeat)
    outputs = {"int8": fast_int8.run(int8_feeds)["logits"],
               "int8_stock": stock_int8.run(int8_feeds)["logits"],
               "fp32_onnx": fast_fp32.run(fp32_feeds)["logits"],
               "torch": torch_sparse().numpy(), "pyg": pyg().numpy()}
    ref = gcn.reference
    scale = float(np.abs(ref).max())
    fp32 = [k for k in runs if k.startswith("FP32")]
    best_fp32 = min(fp32, key=lambda k: timings[k].median)
    int8 = timings["INT8 partitioned (kernels + onnxruntime)"].median
    steps: dict[str, float] = {}
    for _ in range(repeat):
        fast_int8.run(int8_feeds, timings=steps)
    return {
        "nodes": n, "edges": graph.num_edges, "features": graph.num_features,
        "dims": list(gcn.dims), "threads": threads,
        "timings": {k: t.to_dict() for k, t in timings.items()},
        "best_fp32": best_fp32,
        "speedup_vs_best_fp32": timings[best_fp32].median / int8,
        "speedup_vs_pyg": timings["FP32 torch_geometric GCNConv (edge_index)"].median / int8,
        "speedup_vs_stock_int8": timings["INT8 stock onnxruntime (function bodies)"].median
        / int8,
        "checks": {
            "int8_partitioned_equals_stock": bool(np.array_equal(outputs["int8"],
                                                                 outputs["int8_stock"])),
            "fp32_onnx_vs_torch_max_rel": float(np.abs(outputs["fp32_onnx"] - ref).max()
                                                / scale),
            "pyg_vs_torch_max_rel": float(np.abs(outputs["pyg"] - outputs["torch"]).max()
                                          / scale),
            "int8_vs_fp32_mean_rel": float(np.abs(outputs["int8"] - ref).mean() / scale),
            "int8_vs_fp32_argmax_agreement": float(np.mean(
                outputs["int8"].argmax(1) == ref.argmax(1)))},
        "int8_steps": _step_traffic(fast_int8, int8_feeds, steps, repeat),
    }


def _step_traffic(executor: PartitionedExecutor, feeds: dict[str, np.ndarray],
                  totals: dict[str, float], repeat: int) -> list[dict[str, Any]]:
    """Per step of the INT8 run: mean time, and the bytes its inputs and outputs occupy (the
    least it must move; a gather re-reads rows, so aggregation kernels count E rows)."""
    tensors = dict(executor.constants)
    tensors.update(feeds)
    rows = []
    for step in executor.steps:
        if hasattr(step, "session"):
            values = step.session.run(step.outputs, {k: tensors[k] for k in step.inputs})
            produced = dict(zip(step.outputs, values, strict=True))
            read = sum(tensors[k].nbytes for k in step.inputs)
        else:
            produced = {step.output: step.fn(tensors)}
            read = _kernel_read_bytes(step, tensors)
        tensors.update(produced)
        written = sum(v.nbytes for v in produced.values())
        seconds = totals[step.label] / repeat
        rows.append({"step": step.label, "seconds": seconds, "bytes": read + written,
                     "gbps": _gbps(read + written, seconds)})
    return rows


def _kernel_read_bytes(step: Any, tensors: dict[str, np.ndarray]) -> int:
    """Bytes a kernel step reads: its inputs in full, except that an aggregation gathers one
    row of ``x`` per edge (E x F) instead of reading ``x`` once; QLinear also reads W."""
    spec = step.spec
    named = dict(zip(FORMAL[spec.op_type], spec.inputs, strict=False))
    if spec.op_type == "QLinear":
        return tensors[named["x_q"]].nbytes + spec.attributes["weight"].nbytes
    if spec.op_type == "EdgeDst":
        return tensors[named["indptr"]].nbytes
    src = tensors[named["src"]]
    x = tensors[named["x_q" if "x_q" in named else "x"]]
    weight = named.get("w_q") or named.get("w")
    total = tensors[named["indptr"]].nbytes + src.nbytes + src.size * x.shape[1] * x.itemsize
    return total + (tensors[weight].nbytes if weight else 0)


# ---------------------------------------------------------------------------------------------
# 4: single-node and batch latency through exported bundles


def export_untrained_gcn(graph: Graph, hidden: int, out: Path) -> Path:
    """An INT8 Degree-Quant GCN bundle via ``qgnn export``: random weights, ranges calibrated
    by three forward passes (serving latency does not depend on training)."""
    import torch
    from qgnn.exporter.export import export_run
    from qgnn.training.checkpoint import save_run
    from qgnn.training.nn.block import full_graph_block
    from qgnn.training.nn.models import ModelConfig, build_model
    from qgnn.training.presets import TrainConfig
    from qgnn.training.quant import QuantConfig, quant_state, quantize_model

    classes = int(graph.y.max()) + 1 if graph.y is not None else 8
    cfg = ModelConfig(model="gcn", in_dim=graph.num_features, out_dim=classes, hidden=hidden,
                      num_layers=2)
    quant = QuantConfig(bits=8)
    torch.manual_seed(0)
    model = quantize_model(build_model(cfg), quant)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.from_numpy(graph.x.astype(np.float32)), full_graph_block(graph))
    model.eval()
    run = out.parent / f"{out.name}-run"
    save_run(run, model, task="node", dataset=graph.name, model_config=cfg,
             train_config=TrainConfig(), metrics={},
             extra={"quant": {"config": quant.to_dict(), "state": quant_state(model)}})
    return export_run(run, out, graph=graph, parity=False, overwrite=True).bundle


def bench_latency(bundle: Path, threads: int, fanouts: tuple[int, int], requests: int,
                  batch: int, seed: int = 0) -> dict[str, Any]:
    engine = Engine(load_bundle(bundle), EngineConfig(threads=threads, fanouts=fanouts))
    rng = np.random.default_rng(seed)
    n = engine.num_nodes
    for node in rng.integers(0, n, 50):
        engine.predict_nodes(np.array([node]))
    singles = []
    for node in rng.integers(0, n, requests):
        start = time.perf_counter()
        engine.predict_nodes(np.array([node]))
        singles.append(time.perf_counter() - start)
    batches = [rng.choice(n, batch, replace=False) for _ in range(max(10, requests // 100))]
    it = iter(batches * 3)
    timing = time_repeated(lambda: engine.predict_nodes(next(it)), repeat=len(batches),
                           warmup=2)
    sizes = [engine.extractor.extract(engine.store.snapshot(), np.array([v]), fanouts)
             for v in rng.integers(0, n, 200)]
    return {"nodes": n, "edges": engine.num_edges, "mode": engine.mode,
            "fanouts": list(fanouts), "single_p50_s": float(np.percentile(singles, 50)),
            "single_p90_s": float(np.percentile(singles, 90)),
            "single_p99_s": float(np.percentile(singles, 99)),
            "single_requests": requests, "batch": batch, "batch_median_s": timing.median,
            "batch_p90_s": timing.p90,
            "mean_subgraph_nodes": float(np.mean([s.node_ids.size for s in sizes])),
            "mean_subgraph_edges": float(np.mean([s.num_edges for s in sizes]))}


# ---------------------------------------------------------------------------------------------
# 5: top-k


def bench_topk(items: int, dim: int, k: int, threads: int, repeat: int,
               recall_queries: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    rank = 16
    proj = (rng.standard_normal((rank, dim)) / np.sqrt(rank)).astype(np.float32)
    table = rng.standard_normal((items, rank), dtype=np.float32) @ proj
    table += 0.3 * rng.standard_normal((items, dim), dtype=np.float32)
    table *= rng.lognormal(0.0, 0.3, items).astype(np.float32)[:, None]
    values, scales = quantize_rows(table)  # the bundle's per-row format
    index = EmbeddingIndex(values, scales, threads=threads)
    users = (rng.standard_normal((max(repeat, recall_queries) + 4, rank),
                                 dtype=np.float32) @ proj)
    user_q, _ = quantize_rows(users)
    state = {"i": 0}

    def next_user() -> int:
        state["i"] = (state["i"] + 1) % len(users)
        return state["i"]

    def numpy_f32() -> np.ndarray:
        scores = table @ users[next_user()]
        top = np.argpartition(scores, -k)[-k:]
        return top[np.argsort(-scores[top], kind="stable")]

    timings = time_apart({"engine INT8 (EmbeddingIndex.topk)":
                          lambda: index.topk(user_q[next_user()], k),
                          "numpy float32 (table @ q + argpartition + sort)": numpy_f32},
                         repeat)
    recall = []
    for i in range(recall_queries):
        exact = np.argpartition(table @ users[i], -k)[-k:]
        got = index.topk(user_q[i], k)[0]
        recall.append(np.intersect1d(exact, got).size / k)
    ours = timings["engine INT8 (EmbeddingIndex.topk)"]
    theirs = timings["numpy float32 (table @ q + argpartition + sort)"]
    return {"items": items, "dim": dim, "k": k, "threads": threads,
            "scale_spread": float(scales.max() / scales.min()),
            "int8_p50_s": ours.median, "int8_p90_s": ours.p90,
            "numpy_f32_p50_s": theirs.median, "speedup_vs_numpy": theirs.median / ours.median,
            "recall_at_k": float(np.mean(recall)), "recall_queries": recall_queries,
            "timings": {name: t.to_dict() for name, t in timings.items()}}


# ---------------------------------------------------------------------------------------------
# 6: accuracy of trained runs


def bench_accuracy(runs: dict[str, Path], out_dir: Path, threads: int) -> list[dict[str, Any]]:
    """Export each trained run, serve its test split, compare with the exporter's figures and
    with its own onnxruntime full-graph outputs."""
    import onnxruntime as ort
    from qgnn.exporter.export import export_run

    rows = []
    for name, run in runs.items():
        summary = export_run(run, out_dir / f"acc-{name}", overwrite=True)
        bundle = load_bundle(summary.bundle)
        labels = np.asarray(bundle.array("graph/labels"))
        test = np.flatnonzero(np.asarray(bundle.array("graph/test_mask")))
        engine = Engine(bundle, EngineConfig(threads=threads))
        logits = engine.forward(engine.store.snapshot(), test)
        indptr = np.asarray(bundle.array("graph/indptr"))
        feeds = {"x": np.asarray(bundle.array("graph/features")),
                 "in_degree": np.diff(indptr).astype(np.int64)}
        for i in range(len(engine.fanouts)):
            feeds[f"indptr_{i}"] = indptr
            feeds[f"src_{i}"] = np.asarray(bundle.array("graph/indices"))
        exported = ort.InferenceSession(str(bundle.model_path()), providers=[
            "CPUExecutionProvider"]).run(None, feeds)[0][test]
        rows.append({"dataset": name, "test_nodes": int(test.size),
                     "served_accuracy": float(np.mean(logits.argmax(1) == labels[test])),
                     "exported_onnx_accuracy": summary.parity.onnx_accuracy,
                     "torch_accuracy": summary.parity.torch_accuracy,
                     "served_equals_exported_outputs": bool(np.array_equal(logits, exported)),
                     "fanouts": list(engine.fanouts)})
    return rows


# ---------------------------------------------------------------------------------------------


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def _render_whole(results: dict[str, Any]) -> list[str]:
    whole = results["whole_model"]
    int8 = whole["timings"]["INT8 partitioned (kernels + onnxruntime)"]["median_s"]
    return [f"### Whole-model forward: 2-layer GCN {whole['dims']} on {whole['nodes']:,} "
            f"nodes / {whole['edges']:,} edges, {whole['threads']} threads", "",
            markdown_table(["path", "median ms", "p90 ms", "x INT8 partitioned"], [
                [name, _ms(t["median_s"]), _ms(t["p90_s"]), round(t["median_s"] / int8, 2)]
                for name, t in whole["timings"].items()], ["l", "r", "r", "r"]), "",
            f"INT8 vs best FP32 ({whole['best_fp32']}): {whole['speedup_vs_best_fp32']:.2f}x; "
            f"vs torch_geometric: {whole['speedup_vs_pyg']:.2f}x; checks: {whole['checks']}",
            "", "### INT8 run, step by step", "",
            markdown_table(["step", "ms", "MB moved (min)", "GB/s"], [
                [s["step"], _ms(s["seconds"]), round(s["bytes"] / 1e6, 1), round(s["gbps"], 2)]
                for s in whole["int8_steps"]], ["l", "r", "r", "r"]), ""]


def _render_latency(results: dict[str, Any]) -> list[str]:
    return ["### Node prediction latency (in-process)", "",
            markdown_table(["graph", "nodes", "edges", "fanouts", "subgraph nodes",
                            "p50 ms", "p99 ms", "batch", "batch median ms"], [
                [name, r["nodes"], r["edges"], r["fanouts"], round(r["mean_subgraph_nodes"], 1),
                 _ms(r["single_p50_s"]), _ms(r["single_p99_s"]), r["batch"],
                 _ms(r["batch_median_s"])] for name, r in results["latency"].items()],
                ["l", "r", "r", "l", "r", "r", "r", "r", "r"]), ""]


def _render_topk(results: dict[str, Any]) -> list[str]:
    topk = results["topk"]
    return [f"### Top-{topk['k']} over {topk['items']:,} x {topk['dim']} INT8 embeddings", "",
            markdown_table(["path", "p50 ms", "p90 ms"], [
                [name, _ms(t["median_s"]), _ms(t["p90_s"])]
                for name, t in topk["timings"].items()], ["l", "r", "r"]), "",
            f"Speed-up {topk['speedup_vs_numpy']:.2f}x, recall@{topk['k']} "
            f"{topk['recall_at_k']:.4f} (per-row scale spread {topk['scale_spread']:.1f}x).", ""]


def _render_accuracy(results: dict[str, Any]) -> list[str]:
    return ["### Served accuracy (test split)", "", markdown_table(
        ["dataset", "test nodes", "served", "exported ONNX", "PyTorch",
         "served logits = exported", "fanouts"],
        [[r["dataset"], r["test_nodes"], r["served_accuracy"], r["exported_onnx_accuracy"],
          r["torch_accuracy"], r["served_equals_exported_outputs"], r["fanouts"]]
         for r in results["accuracy"]]), ""]


def render(results: dict[str, Any]) -> str:
    lines = [f"Machine: {results['machine_cpu']}, load average before/after "
             f"{results['load_average_before'][0]:.1f}/{results['load_average_after'][0]:.1f}; "
             f"memory bandwidth (1 thread): copy {results['bandwidth']['copy_gbps']:.2f} GB/s, "
             f"read {results['bandwidth']['read_gbps']:.2f} GB/s.", ""]
    for key, part in (("whole_model", _render_whole), ("latency", _render_latency),
                      ("topk", _render_topk), ("accuracy", _render_accuracy)):
        if results.get(key):
            lines += part(results)
    return "\n".join(lines)


SECTIONS = ("whole", "latency", "topk", "accuracy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qgnn.bench.bench_engine",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--accuracy-run", action="append", default=[], metavar="NAME=RUN_DIR",
                        help="a trained node-task run to export and serve (repeatable)")
    parser.add_argument("--name", default="engine")
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        parser.error(f"--sections: unknown {sorted(sections - set(SECTIONS))}")
    quick = args.quick
    nodes, topk_items = (10_000, 100_000) if quick else (100_000, 1_000_000)
    repeat = 3 if quick else args.repeat
    from qgnn.bench.harness import machine_info

    machine = machine_info()
    results: dict[str, Any] = {"load_average_before": list(os.getloadavg()),
                               "machine_cpu": f"{machine['cpu']}, {machine['usable_cores']} "
                                              f"usable cores", "sections": sorted(sections)}
    results["bandwidth"] = bench_bandwidth(repeat)
    graph = None
    if sections & {"whole", "latency"}:
        graph = powerlaw_communities(nodes, avg_degree=10.0, num_features=128, seed=0)
        print(f"graph: {graph.num_nodes} nodes, {graph.num_edges} edges", flush=True)
    if "whole" in sections:
        results["whole_model"] = bench_whole_model(graph, args.threads, repeat)
        print("whole model done", flush=True)
    with tempfile.TemporaryDirectory(prefix="qgnn-bench-engine-") as tmp:
        root = Path(tmp)
        if "latency" in sections:
            from qgnn.graph.datasets import load_dataset

            latency = {}
            for name, g, hidden in (("cora", load_dataset("cora"), 64),
                                    ("powerlaw", graph, 128)):
                bundle = export_untrained_gcn(g, hidden, root / name)
                time.sleep(1.0)  # let torch's OpenMP workers stop spinning before timing
                latency[name] = bench_latency(bundle, args.threads, (10, 10),
                                              200 if quick else 2000, 256)
                print(f"latency {name} done", flush=True)
            results["latency"] = latency
        if "topk" in sections:
            results["topk"] = bench_topk(topk_items, 64, 20, args.threads, max(repeat, 20), 50)
            print("top-k done", flush=True)
        runs = dict(item.split("=", 1) for item in args.accuracy_run)
        if "accuracy" in sections and runs:
            results["accuracy"] = bench_accuracy({k: Path(v) for k, v in runs.items()}, root,
                                                 args.threads)
    results["load_average_after"] = list(os.getloadavg())
    text = render(results)
    print(text)
    path = write_result(args.name, results, machine=machine)
    (RESULTS_DIR / f"{args.name}.md").write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
