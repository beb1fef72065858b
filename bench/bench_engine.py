"""Figures for the inference engine (qgnn.runtime.engine), each from a bundle ``qgnn export`` wrote.

Every engine figure comes from an exported bundle loaded the way ``qgnn serve`` loads it
(``Engine(load_bundle(path), EngineConfig(threads=2))``), compared in the same run against what
users would pick instead. The bundles hold untrained Degree-Quant INT8 models whose ranges are
calibrated by three training-mode forward passes (speed does not depend on training), written by
:func:`qgnn.exporter.export.export_run` with the FP32 model of the same weights
(``model_fp32.onnx``).

Sections (``--sections``):

- ``whole``: the whole-graph forward of 2-layer GCN, SAGE, GIN, GAT and EGC (128 -> 128 -> C) on
  power-law graphs (``qgnn.graph.synth.powerlaw_communities``; 100k nodes / 1M edges and 300k
  nodes / 4.8M edges). Candidates, interleaved in one process at 2 intra-op threads: the
  INT8 engine (``Engine.infer_all``), its partitioned executor on full-graph feeds, the INT8
  file on stock onnxruntime, the FP32 export on qgnn's float kernels and on stock onnxruntime,
  torch.sparse.mm over a cached CSR (GCN, SAGE, GIN) and torch_geometric with ``edge_index``.
  Answers are checked before timing; the INT8 run is broken down step by step. The INT8 engine
  and executor and both FP32 executors allocate through an engine's default buffer pool
  (runtime/engine/buffers.py).
- ``latency``: single-node p50/p99 and batches of 256 through exported GCN, SAGE and GAT bundles,
  on Cora and the 1M-edge graph, with the bundle's fanouts and with 10/10.
- ``topk``: top-20 over INT8 embeddings against float32 numpy.
- ``accuracy`` (``--accuracy-run NAME=RUN_DIR``): served accuracy of trained runs.

``--fp32-isa matched`` (with ``QGNN_ISA`` below the CPU's best) runs the whole section a second
time in a child process whose torch libraries are held to the INT8 kernels' level, and where
Linux offers CPUID faulting onnxruntime's MLAS too (a preloaded CPUID mask;
:mod:`qgnn.bench.fp32_isa`), and reports both ratios: the unconstrained one (the strict figure)
and the one against FP32 at the matching level.

Run ``python -m qgnn.bench.bench_engine`` (``--quick`` for a smoke run on tiny graphs); prints
markdown, writes ``bench/results/engine.json`` and ``engine.md``. torch and torch_geometric are
benchmark-only dependencies here.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.bench.cpuid_mask import ready as cpuid_mask_ready
from qgnn.bench.fp32_isa import SWITCHES, constrained_env, fp32_isa_state
from qgnn.bench.harness import (
    RESULTS_DIR,
    interleave,
    markdown_table,
    time_repeated,
    write_result,
)
from qgnn.graph.container import Graph
from qgnn.graph.synth import powerlaw_communities
from qgnn.runtime import kernels
from qgnn.runtime.bundle.layout import GRAPH_FEATURES, GRAPH_IN_DEGREE, GRAPH_INDICES, GRAPH_INDPTR
from qgnn.runtime.bundle.reader import Bundle, load_bundle
from qgnn.runtime.engine import EmbeddingIndex, Engine, EngineConfig, quantize_rows
from qgnn.runtime.engine.buffers import make_pool
from qgnn.runtime.engine.executor import PartitionedExecutor, PortableExecutor
from qgnn.runtime.engine.kernel_ops import FORMAL
from qgnn.runtime.engine.session import SessionConfig

MiB = 2**20
MODELS = ("gcn", "sage", "gin", "gat", "egc")
TARGETED = ("gcn", "sage", "gat")  # GIN and EGC are reported only
TARGET_VS_FP32, TARGET_VS_PYG = 2.0, 4.7
HIDDEN = 128
LAYER_KWARGS: dict[str, dict[str, Any]] = {"gat": {"heads": 4}}  # 4 heads x 32, concatenated
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni")
# (label, nodes, average degree): 100k / 1M edges and 300k / 4.8M edges
GRAPHS = (("100k-1M", 100_000, 10.0), ("300k-4.8M", 300_000, 16.0))
QUICK_GRAPHS = (("tiny-1k", 1_000, 10.0), ("tiny-1.5k", 1_500, 16.0))
LATENCY_MODELS = ("gcn", "sage", "gat")
CANDIDATES = {
    "int8_engine": "INT8 engine: Engine.infer_all(chunk_size=N) on the bundle",
    "int8_executor": "INT8 partitioned executor (kernels + onnxruntime), full-graph feeds",
    "int8_stock": "INT8 stock onnxruntime: Engine(portable=True).infer_all (timed apart)",
    "fp32_executor": "FP32 export (model_fp32.onnx), partitioned executor (float kernels)",
    "fp32_stock": "FP32 export (model_fp32.onnx), stock onnxruntime (timed apart)",
    "torch_sparse": "FP32 PyTorch torch.sparse.mm over a cached CSR",
    "pyg": "FP32 torch_geometric conv layers on edge_index",
}
FP32_ROUTES = ("fp32_executor", "fp32_stock", "torch_sparse", "pyg")
FP32_RTOL = 1e-4


def _gbps(num_bytes: float, seconds: float) -> float:
    return num_bytes / seconds / 1e9


def cpu_flags() -> dict[str, bool]:
    """The instruction-set extensions the INT8 kernels dispatch on, from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.partition(":")[2].split())
    return {flag: flag in have for flag in CPU_FLAGS}


def bench_bandwidth(repeat: int, size_mib: int = 256) -> dict[str, Any]:
    """STREAM-style copy (read + write) and read-only bandwidth of one thread."""
    a = np.ones(size_mib * MiB // 8)
    b = np.empty_like(a)
    copy = time_repeated(lambda: np.copyto(b, a), repeat=repeat, warmup=1)
    read = time_repeated(a.sum, repeat=repeat, warmup=1)
    return {"array_mib": size_mib, "copy_gbps": _gbps(2 * a.nbytes, copy.median),
            "read_gbps": _gbps(a.nbytes, read.median)}


# ---------------------------------------------------------------------------------------------
# Bundles: what `qgnn export` writes, from untrained calibrated Degree-Quant models


@dataclass
class Exported:
    """A bundle written by ``export_run`` and the float model with the same weights."""

    kind: str
    bundle: Path
    export_s: float  # seconds in export_run (parity off: the benchmark checks answers itself)
    model: Any  # qgnn.training.nn.models.GNN in eval mode, unquantised float weights


def model_config(kind: str, in_dim: int, classes: int, hidden: int = HIDDEN) -> Any:
    """2 layers, ``in_dim -> hidden -> classes``; GAT's heads keep the hidden layer ``hidden``
    wide, EGC takes its defaults."""
    from qgnn.training.nn.models import ModelConfig

    return ModelConfig(model=kind, in_dim=in_dim, out_dim=classes, hidden=hidden, num_layers=2,
                       layer_kwargs=dict(LAYER_KWARGS.get(kind, {})))


def _calibrated(cfg: Any, graph: Graph, features: np.ndarray, quant: Any) -> Any:
    """A Degree-Quant model with random weights whose ranges saw three training-mode passes."""
    import torch
    from qgnn.bench.untrained import calibrate
    from qgnn.training.nn.models import build_model
    from qgnn.training.quant import quantize_model

    torch.manual_seed(0)
    return calibrate(quantize_model(build_model(cfg), quant), graph, features)


def float_twin(cfg: Any, quantised: Any) -> Any:
    """The unquantised model holding the quantised model's float weights (quantiser buffers
    dropped), in eval mode: what the FP32 export and the PyTorch routes compute."""
    from qgnn.training.nn.models import build_model

    model = build_model(cfg)
    state = {k: v for k, v in quantised.state_dict().items() if ".q.quantizers." not in k}
    model.load_state_dict(state, strict=True)
    return model.eval()


def export_untrained(kind: str, graph: Graph, out: Path, hidden: int = HIDDEN) -> Exported:
    """An INT8 bundle of ``kind`` via ``export_run`` (``include_fp32=True``), from a calibrated
    untrained model: serving speed does not depend on training."""
    from qgnn.bench.untrained import save_untrained_run
    from qgnn.exporter.export import export_run
    from qgnn.training.presets import TrainConfig
    from qgnn.training.quant import QuantConfig

    classes = int(graph.y.max()) + 1 if graph.y is not None else 8
    cfg = model_config(kind, graph.num_features, classes, hidden)
    quant, train = QuantConfig(bits=8), TrainConfig()
    features = _served_features(graph, train)
    model = _calibrated(cfg, graph, features, quant)
    run = out.parent / f"{out.name}-run"
    save_untrained_run(run, model, task="node", graph=graph, model_config=cfg, quant=quant,
                       train=train)
    start = time.perf_counter()
    export_run(run, out, graph=graph, parity=False, overwrite=True, include_fp32=True)
    return Exported(kind, out, time.perf_counter() - start, float_twin(cfg, model))


def _served_features(graph: Graph, train: Any) -> np.ndarray:
    """The float32 features the exported model reads (the training transforms applied)."""
    from qgnn.training.tasks.node import prepare_features

    return np.ascontiguousarray(prepare_features(graph, train).x, np.float32)


# ---------------------------------------------------------------------------------------------
# Section "whole": whole-graph forward, every route a user could pick


@dataclass
class FullGraph:
    """The exported graph as the candidates hold it (in-neighbour CSR by destination)."""

    indptr: np.ndarray  # (N + 1,) int64
    indices: np.ndarray  # (E,) int64, the source of each in-edge
    in_degree: np.ndarray  # (N,) int64
    x_int8: np.ndarray  # (N, F) uint8, the bundle's quantised features
    x_float: np.ndarray  # (N, F) float32, what the FP32 export and PyTorch read

    @property
    def num_nodes(self) -> int:
        return int(self.in_degree.size)

    def feeds(self, x: np.ndarray, num_layers: int = 2) -> dict[str, np.ndarray]:
        """Full-graph model inputs, as ``GraphStore.full_graph_feeds`` builds them."""
        feeds = {"x": x, "in_degree": self.in_degree}
        for i in range(num_layers):
            feeds[f"indptr_{i}"], feeds[f"src_{i}"] = self.indptr, self.indices
        return feeds


def full_graph(bundle: Bundle, x_float: np.ndarray) -> FullGraph:
    """The bundle's graph arrays, read into memory."""
    def read(name: str, dtype: Any = None) -> np.ndarray:
        return np.array(bundle.array(name), dtype, copy=True, order="C")  # not the mmap

    return FullGraph(read(GRAPH_INDPTR, np.int64), read(GRAPH_INDICES, np.int64),
                     read(GRAPH_IN_DEGREE, np.int64), read(GRAPH_FEATURES), x_float)


def _csr(g: FullGraph, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray) -> Any:
    import torch

    n = g.num_nodes
    return torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(indices),
                                   torch.from_numpy(values.astype(np.float32)), size=(n, n))


def gcn_operator(g: FullGraph) -> Any:
    """``Â = D^-1/2 (A + I) D^-1/2`` as a torch CSR (rows are destinations; ``D`` counts
    in-edges plus the loop), built once: what a user caching the operator holds."""
    n = g.num_nodes
    indptr = g.indptr + np.arange(n + 1, dtype=np.int64)
    src = np.empty(indptr[-1], np.int64)
    loop_at = indptr[1:] - 1
    keep = np.ones(src.size, bool)
    keep[loop_at] = False
    src[keep] = g.indices
    src[loop_at] = np.arange(n)
    inv = 1.0 / np.sqrt(g.in_degree.astype(np.float64) + 1.0)
    dst = np.repeat(np.arange(n), np.diff(indptr))
    return _csr(g, indptr, src, inv[src] * inv[dst])


def torch_sparse_route(model: Any, g: FullGraph) -> Callable[[], np.ndarray] | None:
    """The model as torch.sparse.mm over a cached CSR (GCN: Â; SAGE: row-normalised A plus
    the root weight; GIN: A with sum, then the MLP), or None where no such formulation is
    standard (GAT, EGC)."""
    import torch
    from torch.nn import functional as F

    kind = model.cfg.model
    ones = np.ones(g.indices.size)
    if kind == "gcn":
        adj = gcn_operator(g)

        def step(layer: Any, h: torch.Tensor) -> torch.Tensor:
            return torch.sparse.mm(adj, h @ layer.lin.weight.t()) + layer.bias
    elif kind == "sage":
        adj = _csr(g, g.indptr, g.indices, ones / np.repeat(np.maximum(g.in_degree, 1),
                                                             g.in_degree))

        def step(layer: Any, h: torch.Tensor) -> torch.Tensor:
            neigh = torch.sparse.mm(adj, h)
            return (F.linear(neigh, layer.lin_l.weight, layer.lin_l.bias)
                    + F.linear(h, layer.lin_r.weight))
    elif kind == "gin":
        adj = _csr(g, g.indptr, g.indices, ones)

        def step(layer: Any, h: torch.Tensor) -> torch.Tensor:
            combined = torch.sparse.mm(adj, h) + (1 + layer.eps) * h
            return layer.lin2(torch.relu(layer.norm(layer.lin1(combined))))
    else:
        return None
    return _stacked(model, lambda layer, h, _i: step(layer, h), g)


def _stacked(model: Any, step: Callable[[Any, Any, int], Any], g: FullGraph
             ) -> Callable[[], np.ndarray]:
    """Two layers with ReLU between them, as ``GNN.step`` does in eval mode."""
    import torch

    x = torch.from_numpy(g.x_float)
    layers = list(model.layers)

    def run() -> np.ndarray:
        with torch.no_grad():
            h = x
            for i, layer in enumerate(layers):
                h = step(layer, h, i)
                h = torch.relu(h) if i < len(layers) - 1 else h
            return h.numpy()
    return run


def pyg_conv(kind: str, layer: Any) -> Any:
    """torch_geometric's layer holding ``layer``'s weights (the layouts copy 1:1)."""
    import torch
    from torch import nn
    from torch_geometric import nn as pyg

    with torch.no_grad():
        if kind == "gcn":
            conv = pyg.GCNConv(layer.lin.in_features, layer.lin.out_features)
            conv.lin.weight.copy_(layer.lin.weight)
            conv.bias.copy_(layer.bias)
        elif kind == "sage":
            conv = pyg.SAGEConv(layer.lin_l.in_features, layer.lin_l.out_features, aggr="mean")
            conv.load_state_dict({"lin_l.weight": layer.lin_l.weight,
                                  "lin_l.bias": layer.lin_l.bias,
                                  "lin_r.weight": layer.lin_r.weight})
        elif kind == "gin":
            mlp = nn.Sequential(nn.Linear(layer.lin1.in_features, layer.lin1.out_features),
                                nn.BatchNorm1d(layer.lin1.out_features), nn.ReLU(),
                                nn.Linear(layer.lin2.in_features, layer.lin2.out_features))
            conv = pyg.GINConv(mlp, eps=float(layer.eps), train_eps=False)  # resets mlp
            for target, source in ((mlp[0], layer.lin1), (mlp[1], layer.norm),
                                   (mlp[3], layer.lin2)):
                target.load_state_dict(source.state_dict())
        elif kind == "gat":
            heads, dim = layer.heads, layer.head_dim
            conv = pyg.GATConv(layer.lin.in_features, dim, heads=heads, concat=layer.concat,
                               negative_slope=layer.negative_slope, add_self_loops=True)
            conv.lin.weight.copy_(layer.lin.weight)
            conv.att_src.copy_(layer.att_src.view(1, heads, dim))
            conv.att_dst.copy_(layer.att_dst.view(1, heads, dim))
            conv.bias.copy_(layer.bias)
        elif kind == "egc":
            conv = pyg.EGConv(layer.bases_lin.in_features, layer.out_dim, list(layer.aggregators),
                              num_heads=layer.heads, num_bases=layer.bases, add_self_loops=True)
            conv.bases_lin.weight.copy_(layer.bases_lin.weight)
            conv.comb_lin.weight.copy_(layer.comb_lin.weight)
            conv.comb_lin.bias.copy_(layer.comb_lin.bias)
            conv.bias.copy_(layer.bias)
        else:
            raise ValueError(f"no torch_geometric layer for {kind!r}")
    return conv.eval()


def pyg_route(model: Any, g: FullGraph) -> Callable[[], np.ndarray]:
    """torch_geometric on ``edge_index`` as users hold it (no self-loops; each layer adds
    them and normalises every call)."""
    import torch

    kind = model.cfg.model
    convs = [pyg_conv(kind, layer) for layer in model.layers]
    edge_index = torch.from_numpy(np.stack([g.indices, np.repeat(
        np.arange(g.num_nodes, dtype=np.int64), g.in_degree)]))
    return _stacked(model, lambda _layer, h, i: convs[i](h, edge_index), g)


def pytorch_reference(model: Any, graph: Graph, g: FullGraph) -> np.ndarray:
    """The float qgnn model itself, full graph, eval mode: the answer FP32 routes must give."""
    import torch
    from qgnn.training.nn.block import full_graph_block

    with torch.no_grad():
        return model(torch.from_numpy(g.x_float), full_graph_block(graph)).numpy()


@dataclass
class WholeRun:
    """The candidates of one (model, graph) and what the step breakdown needs. ``stock``
    builds the stock onnxruntime routes one at a time: each session's arena keeps its peak
    (several GB at 1M edges), so they cannot all stay alive beside the others."""

    candidates: dict[str, Callable[[], np.ndarray]]
    stock: dict[str, Callable[[], Callable[[], np.ndarray]]]
    executor: PartitionedExecutor
    int8_feeds: dict[str, np.ndarray]
    pyg_layer: str


def whole_candidates(exp: Exported, g: FullGraph, threads: int) -> WholeRun:
    """Every route to the full (N, C) output, each built once, as its user would hold it."""
    engine = Engine(load_bundle(exp.bundle), EngineConfig(threads=threads))
    if not isinstance(engine.executor, PartitionedExecutor):
        raise RuntimeError("the compiled kernels are not built: the engine runs stock "
                           "onnxruntime, so there is nothing to compare")
    with load_bundle(exp.bundle) as bundle:
        fp32_model = bundle.model_path("model_fp32.onnx").read_bytes()
    session = SessionConfig(threads=threads)
    fp32_fast = PartitionedExecutor(fp32_model, session)
    # the buffer pool an engine gives its executors (buffers.py), so that INT8 against FP32
    # compares the arithmetic, not page faults
    fp32_fast.buffers = make_pool(EngineConfig().buffer_pool_bytes)
    n, out = g.num_nodes, engine.executor.output_names[0]
    int8_feeds, fp32_feeds = g.feeds(g.x_int8), g.feeds(g.x_float)
    candidates: dict[str, Callable[[], np.ndarray]] = {
        "int8_engine": lambda: engine.infer_all(chunk_size=n),
        "int8_executor": lambda: engine.executor.run(int8_feeds, [out])[out],
        "fp32_executor": lambda: fp32_fast.run(fp32_feeds, [out])[out],
    }
    sparse = torch_sparse_route(exp.model, g)
    if sparse is not None:
        candidates["torch_sparse"] = sparse
    candidates["pyg"] = pyg_route(exp.model, g)

    def int8_stock() -> Callable[[], np.ndarray]:
        stock = Engine(load_bundle(exp.bundle), EngineConfig(threads=threads, portable=True))
        return lambda: stock.infer_all(chunk_size=n)

    def fp32_stock() -> Callable[[], np.ndarray]:
        portable = PortableExecutor(fp32_model, session)
        portable.buffers = make_pool(EngineConfig().buffer_pool_bytes)
        return lambda: portable.run(fp32_feeds, [out])[out]

    return WholeRun(candidates, {"int8_stock": int8_stock, "fp32_stock": fp32_stock},
                    engine.executor, int8_feeds,
                    type(pyg_conv(exp.kind, exp.model.layers[0])).__name__)


def time_stock(builders: dict[str, Callable[[], Callable[[], np.ndarray]]], repeat: int
               ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Each stock onnxruntime route built, checked (first call), timed and freed in turn."""
    outputs, timings = {}, {}
    for name, build in builders.items():
        fn = build()
        outputs[name] = np.asarray(fn())
        timings[name] = time_repeated(fn, repeat=repeat, warmup=0)
        del fn
        gc.collect()
    return outputs, timings


def check_answers(outputs: dict[str, np.ndarray], reference: np.ndarray) -> dict[str, Any]:
    """INT8 routes bit for bit equal; FP32 routes within ``FP32_RTOL`` of PyTorch (max abs
    error over max abs output); how often INT8 picks FP32's class."""
    scale = max(float(np.abs(reference).max()), 1e-30)
    rel = {k: float(np.abs(outputs[k] - reference).max() / scale) for k in FP32_ROUTES
           if k in outputs}
    int8 = outputs["int8_engine"]
    checks = {
        "int8_engine_equals_stock": (bool(np.array_equal(int8, outputs["int8_stock"]))
                                     if "int8_stock" in outputs else None),
        "int8_engine_equals_executor": bool(np.array_equal(int8, outputs["int8_executor"])),
        "fp32_max_rel_vs_pytorch": rel,
        "fp32_within_tolerance": all(v <= FP32_RTOL for v in rel.values()),
        "int8_vs_fp32_argmax_agreement": float(np.mean(int8.argmax(1) == reference.argmax(1))),
        "int8_vs_fp32_mean_rel": float(np.abs(int8 - reference).mean() / scale),
    }
    checks["passed"] = bool(checks["int8_engine_equals_stock"] is not False
                            and checks["int8_engine_equals_executor"]
                            and checks["fp32_within_tolerance"])
    return checks


def _targets(kind: str, vs_fp32: float, vs_pyg: float) -> dict[str, Any] | None:
    if kind not in TARGETED:
        return None
    return {"vs_best_fp32": {"target": TARGET_VS_FP32, "met": vs_fp32 >= TARGET_VS_FP32},
            "vs_pyg": {"target": TARGET_VS_PYG, "met": vs_pyg >= TARGET_VS_PYG}}


def bench_whole(exp: Exported, graph: Graph, g: FullGraph, threads: int, repeat: int,
                stock_max_edges: int | None = None) -> dict[str, Any]:
    """Check every candidate's answer (its first call, also the warm-up), then time them
    interleaved and break the INT8 run down step by step. Above ``stock_max_edges`` edges the
    stock onnxruntime routes are skipped (their function bodies hold E x F int64 tensors: GBs
    per tensor on large graphs), and the record says so."""
    run = whole_candidates(exp, g, threads)
    outputs = {name: np.asarray(fn()) for name, fn in run.candidates.items()}
    skip_stock = stock_max_edges is not None and int(g.indices.size) > stock_max_edges
    stock_outputs, stock_timings = time_stock({} if skip_stock else run.stock, repeat)
    checks = check_answers({**outputs, **stock_outputs},
                           pytorch_reference(exp.model, graph, g))
    classes = int(outputs["int8_engine"].shape[1])
    del outputs, stock_outputs
    timings = {**interleave(run.candidates, repeat=repeat, warmup=0), **stock_timings}
    medians = {k: t.median for k, t in timings.items()}
    best = min((k for k in FP32_ROUTES if k in medians), key=medians.__getitem__)
    int8 = medians["int8_engine"]
    steps: dict[str, float] = {}
    for _ in range(repeat):
        run.executor.run(run.int8_feeds, timings=steps)
    step_rows = _step_traffic(run.executor, run.int8_feeds, steps, repeat)
    vs_fp32, vs_pyg = medians[best] / int8, medians["pyg"] / int8
    return {
        "model": exp.kind, "nodes": g.num_nodes, "edges": int(g.indices.size),
        "features": int(g.x_float.shape[1]), "hidden": HIDDEN, "classes": classes,
        "threads": threads, "bundle": exp.bundle.name, "export_s": exp.export_s,
        "pyg_layer": run.pyg_layer,
        "timings": {k: t.to_dict() for k, t in timings.items()},
        "timed_apart": sorted(stock_timings),
        "median_s": medians, "best_fp32": best,
        "speedup_vs_best_fp32": vs_fp32, "speedup_vs_pyg": vs_pyg,
        "executor_speedup_vs_best_fp32": medians[best] / medians["int8_executor"],
        "speedup_vs_int8_stock": (medians["int8_stock"] / int8 if "int8_stock" in medians
                                  else None),
        "stock_skipped": skip_stock,
        "targets": _targets(exp.kind, vs_fp32, vs_pyg), "checks": checks,
        "int8_steps": step_rows,
        "slowest_int8_step": max(step_rows, key=lambda r: r["seconds"])["step"],
    }


def _step_traffic(executor: PartitionedExecutor, feeds: dict[str, np.ndarray],
                  totals: dict[str, float], repeat: int) -> list[dict[str, Any]]:
    """Per step of the INT8 run: mean time, its share, and the bytes its inputs and outputs
    occupy (the least it must move; a gather re-reads rows, so aggregations count E rows)."""
    tensors = dict(executor.constants)
    tensors.update(feeds)
    rows = []
    whole = sum(totals.values())
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
        rows.append({"step": step.label, "seconds": seconds,
                     "share": totals[step.label] / whole, "bytes": read + written,
                     "gbps": _gbps(read + written, seconds)})
    return rows


def _kernel_read_bytes(step: Any, tensors: dict[str, np.ndarray]) -> int:
    """Bytes a kernel step reads: its inputs in full (structure ops such as LoopedSrc too),
    except that an aggregation gathers one row of ``x`` per edge (E x F) instead of reading
    ``x`` once; QLinear also reads W."""
    spec = step.spec
    named = dict(zip(FORMAL.get(spec.op_type, ()), spec.inputs, strict=False))
    if spec.op_type == "QLinear":
        return tensors[named["x_q"]].nbytes + spec.attributes["weight"].nbytes
    if "src" not in named or not {"x_q", "x"} & named.keys():  # structure only
        return sum(tensors[k].nbytes for k in spec.inputs if k in tensors)
    src = tensors[named["src"]]
    x = tensors[named["x_q" if "x_q" in named else "x"]]
    weight = named.get("w_q") or named.get("w")
    row = int(np.prod(x.shape[1:])) * x.itemsize
    total = tensors[named["indptr"]].nbytes + src.nbytes + src.size * row
    return total + (tensors[weight].nbytes if weight else 0)


# ---------------------------------------------------------------------------------------------
# Section "latency": single-node and batch prediction through exported bundles


def bench_latency(bundle: Path, threads: int, fanouts: tuple[int, ...] | None, requests: int,
                  batch: int, seed: int = 0) -> dict[str, Any]:
    """p50/p99 of one-node requests and the median of 256-node batches, in-process;
    ``fanouts`` None keeps the bundle's (what ``qgnn serve`` uses)."""
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
    batch = min(batch, n)
    batches = [rng.choice(n, batch, replace=False) for _ in range(max(10, requests // 100))]
    it = iter(batches * 3)
    timing = time_repeated(lambda: engine.predict_nodes(next(it)), repeat=len(batches),
                           warmup=2)
    sizes = [engine.extractor.extract(engine.store.snapshot(), np.array([v]), engine.fanouts)
             for v in rng.integers(0, n, 200)]
    return {"nodes": n, "edges": engine.num_edges, "mode": engine.mode,
            "fanouts": list(engine.fanouts), "single_p50_s": float(np.percentile(singles, 50)),
            "single_p90_s": float(np.percentile(singles, 90)),
            "single_p99_s": float(np.percentile(singles, 99)),
            "single_requests": requests, "batch": batch, "batch_median_s": timing.median,
            "batch_p90_s": timing.p90,
            "mean_subgraph_nodes": float(np.mean([s.node_ids.size for s in sizes])),
            "mean_subgraph_edges": float(np.mean([s.num_edges for s in sizes]))}


def latency_section(graphs: dict[str, tuple[Graph, int]], root: Path, threads: int,
                    requests: int, settle: float) -> dict[str, Any]:
    """GCN, SAGE and GAT bundles per graph, with the bundle's fanouts and with 10/10;
    ``settle`` seconds of pause let torch's OpenMP workers go idle before each timing."""
    rows = {}
    for name, (graph, hidden) in graphs.items():
        for kind in LATENCY_MODELS:
            exp = export_untrained(kind, graph, root / f"latency-{name}-{kind}", hidden)
            for label, fanouts in (("bundle", None), ("10/10", (10, 10))):
                time.sleep(settle)
                rows[f"{name}/{kind}/{label}"] = {
                    "graph": name, "model": kind, "hidden": hidden, "export_s": exp.export_s,
                    **bench_latency(exp.bundle, threads, fanouts, requests, 256)}
            print(f"latency {name} {kind} done", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# Section "topk"


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

    timings = interleave({"engine INT8 (EmbeddingIndex.topk)":
                          lambda: index.topk(user_q[next_user()], k),
                          "numpy float32 (table @ q + argpartition + sort)": numpy_f32},
                         repeat=repeat)
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
# Section "accuracy": trained runs


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
# Rendering and the command line


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)


def _verdict(run: dict[str, Any]) -> str:
    targets = run["targets"]
    if targets is None:
        return "reported only"
    return " / ".join(f"{'met' if t['met'] else 'MISSED'} (>= {t['target']}x)"
                      for t in targets.values())


def _render_whole(results: dict[str, Any]) -> list[str]:
    runs = results["whole"]["runs"]
    names = list(CANDIDATES)
    rows = []
    for r in runs:
        med = r["median_s"]
        c = r["checks"]
        rows.append([r["model"], r["graph"], *[_ms(med[k]) if k in med else "-" for k in names],
                     r["best_fp32"], round(r["speedup_vs_best_fp32"], 2),
                     round(r["speedup_vs_pyg"], 2), _verdict(r),
                     round(c["int8_vs_fp32_argmax_agreement"], 3),
                     "pass" if c["passed"] else "FAIL", round(r["export_s"], 1)])
    lines = ["### Whole-graph forward (ms, medians of interleaved rounds; 2 threads)", "",
             "Stock onnxruntime routes are timed apart (each session built, timed and freed in "
             "turn: their arenas keep several GB); the others interleaved, every candidate once "
             "per round in balanced orders. '-' where a route "
             "does not exist for the model or was skipped (`--stock-max-edges`).", "",
             markdown_table(["model", "graph", *names, "best FP32", "x best FP32", "x PyG",
                             "targets (x FP32 / x PyG)", "argmax = FP32", "checks",
                             "export s"], rows,
                            ["l", "l", *["r"] * len(names), "l", "r", "r", "l", "r", "l", "r"]),
             "", *[f"- `{k}`: {v}" for k, v in CANDIDATES.items()], ""]
    for r in runs:
        lines += [f"#### INT8 steps: {r['model']} on {r['graph']} (slowest: "
                  f"`{r['slowest_int8_step']}`)", "",
                  markdown_table(["step", "ms", "share", "MB moved (min)", "GB/s"], [
                      [s["step"], _ms(s["seconds"]), f"{100 * s['share']:.0f}%",
                       round(s["bytes"] / 1e6, 1), round(s["gbps"], 2)]
                      for s in r["int8_steps"]], ["l", "r", "r", "r", "r"]), ""]
    return lines


def _render_latency(results: dict[str, Any]) -> list[str]:
    return ["### Node prediction latency (in-process, exported bundles)", "",
            markdown_table(["graph", "model", "fanouts", "subgraph nodes", "p50 ms", "p99 ms",
                            "batch", "batch median ms"], [
                [r["graph"], r["model"], r["fanouts"], round(r["mean_subgraph_nodes"], 1),
                 _ms(r["single_p50_s"]), _ms(r["single_p99_s"]), r["batch"],
                 _ms(r["batch_median_s"])] for r in results["latency"].values()],
                ["l", "l", "l", "r", "r", "r", "r", "r"]), ""]


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


def _render_machine(results: dict[str, Any]) -> list[str]:
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in results["cpu_flags"].items())
    build = results["kernels"]
    isa = f"isa {build['isa']}, " if "isa" in build else ""
    return [f"Machine: {results['machine_cpu']}; {flags}. Kernels: {isa}"
            f"{build.get('dispatch', '')}, VNNI used {build.get('vnni_used')}, "
            f"{build.get('compiler', '')}. Load average before/after "
            f"{results['load_average_before'][0]:.2f}/{results['load_average_after'][0]:.2f}; "
            f"memory bandwidth (1 thread): copy {results['bandwidth']['copy_gbps']:.2f} GB/s, "
            f"read {results['bandwidth']['read_gbps']:.2f} GB/s.", ""]


def _render_matched(results: dict[str, Any]) -> list[str]:
    matched = results["whole_fp32_matched"]
    state = matched["fp32_isa"]
    strict = {(r["model"], r["graph"]): r for r in results["whole"]["runs"]}
    rows = []
    for r in matched["runs"]:
        med, base = r["median_s"], strict.get((r["model"], r["graph"]))
        rows.append([r["model"], r["graph"], _ms(med["int8_engine"]),
                     *[_ms(med[k]) if k in med else "-" for k in FP32_ROUTES],
                     r["best_fp32"], round(r["speedup_vs_best_fp32"], 2),
                     round(r["speedup_vs_pyg"], 2),
                     round(base["speedup_vs_best_fp32"], 2) if base else "-",
                     "pass" if r["checks"]["passed"] else "FAIL"])
    switches = ", ".join(f"{k}={state[k]}" for k in ("ATEN_CPU_CAPABILITY",
                                                     "MKL_ENABLE_INSTRUCTIONS",
                                                     "ONEDNN_MAX_CPU_ISA"))
    return [f"### FP32 routes held to the INT8 level ({matched['level']}; child process, ms)", "",
            f"Switches: {switches}; torch.backends.cpu.get_cpu_capability() = "
            f"`{state['torch_cpu_capability']}`; qgnn's dispatch sees "
            f"{', '.join(state.get('kernel_levels_supported', [])) or '?'}. "
            f"{state['onnxruntime']}. Load average "
            f"{matched['load_average'][0]:.2f}. INT8 re-timed in the same child, interleaved "
            "with the constrained routes; `x best FP32 (strict)` is the table above.", "",
            markdown_table(["model", "graph", "int8_engine", *FP32_ROUTES, "best FP32",
                            "x best FP32 (matched)", "x PyG (matched)", "x best FP32 (strict)",
                            "checks"], rows,
                           ["l", "l", "r", *["r"] * len(FP32_ROUTES), "l", "r", "r", "r", "l"]),
            ""]


def render(results: dict[str, Any]) -> str:
    lines = _render_machine(results)
    for key, part in (("whole", _render_whole), ("whole_fp32_matched", _render_matched),
                      ("latency", _render_latency),
                      ("topk", _render_topk), ("accuracy", _render_accuracy)):
        if results.get(key):
            lines += part(results)
    return "\n".join(lines)


SECTIONS = ("whole", "latency", "topk", "accuracy")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qgnn.bench.bench_engine",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny graphs (a smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=11,
                        help="interleaved rounds of the whole-graph candidates (11: with 5 on a "
                             "noisy 2-core host SAGE's INT8 samples spread over 98-172 ms)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"whole section: comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--graphs", default=",".join(label for label, _, _ in GRAPHS),
                        help="whole section: comma-separated subset of the graph labels")
    parser.add_argument("--accuracy-run", action="append", default=[], metavar="NAME=RUN_DIR",
                        help="a trained node-task run to export and serve (repeatable)")
    parser.add_argument("--stock-max-edges", type=int, default=None,
                        help="whole section: skip the stock onnxruntime routes on graphs with "
                             "more edges (their function bodies hold E x F int64 tensors)")
    parser.add_argument("--fp32-isa", choices=("native", "matched"), default="native",
                        help="whole section: 'matched' also times the FP32 routes with torch's "
                             "libraries held to the INT8 kernels' ISA level (a child process)")
    parser.add_argument("--name", default="engine")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return parser


def _choices(parser: argparse.ArgumentParser, flag: str, given: str,
             allowed: tuple[str, ...]) -> list[str]:
    chosen = [s for s in given.split(",") if s]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown or not chosen:
        parser.error(f"{flag}: expected a subset of {','.join(allowed)}, got {given!r}")
    return chosen


def whole_section(graphs: tuple[tuple[str, int, float], ...], models: list[str], root: Path,
                  threads: int, repeat: int, settle: float,
                  stock_max_edges: int | None = None) -> dict[str, Any]:
    """Every model on every graph; one graph in memory at a time; ``settle`` seconds of
    pause after each export let torch's OpenMP workers go idle before timing."""
    from qgnn.training.presets import TrainConfig

    runs = []
    for label, nodes, degree in graphs:
        graph = powerlaw_communities(nodes, avg_degree=degree, num_features=128, seed=0)
        print(f"graph {label}: {graph.num_nodes} nodes, {graph.num_edges} edges", flush=True)
        x_float = _served_features(graph, TrainConfig())
        for kind in models:
            exp = export_untrained(kind, graph, root / f"whole-{label}-{kind}")
            with load_bundle(exp.bundle) as bundle:
                g = full_graph(bundle, x_float)
            time.sleep(settle)
            runs.append({"graph": label, **bench_whole(exp, graph, g, threads, repeat,
                                                       stock_max_edges)})
            print(f"whole {label} {kind}: INT8 {runs[-1]['speedup_vs_best_fp32']:.2f}x best "
                  f"FP32, {runs[-1]['speedup_vs_pyg']:.2f}x PyG", flush=True)
    return {"graphs": [{"label": label, "nodes": n, "avg_degree": d} for label, n, d in graphs],
            "targets": {"models": list(TARGETED), "vs_best_fp32": TARGET_VS_FP32,
                        "vs_pyg": TARGET_VS_PYG},
            "candidates": CANDIDATES, "runs": runs}


def matched_fp32_section(args: argparse.Namespace, level: str, tmp: Path) -> dict[str, Any]:
    """The whole section again in a child process started with the switches that hold torch's
    FP32 libraries to ``level`` (they are read once, at load); its INT8 route is re-timed there
    so its ratios come from one process."""
    name = "fp32-matched"
    cmd = [sys.executable, "-m", "qgnn.bench.bench_engine", "--sections", "whole",
           "--graphs", args.graphs, "--models", args.models, "--threads", str(args.threads),
           "--repeat", str(args.repeat), "--name", name, "--results-dir", str(tmp)]
    if args.quick:
        cmd.append("--quick")
    if args.stock_max_edges is not None:
        cmd += ["--stock-max-edges", str(args.stock_max_edges)]
    mask, mask_missing = cpuid_mask_ready(tmp)
    if mask_missing is not None:
        print(f"fp32-isa matched: onnxruntime's MLAS stays at the CPU's best level "
              f"({mask_missing})", flush=True)
    subprocess.run(cmd, env=constrained_env(level, cpuid_mask=mask), check=True)
    child = json.loads((tmp / f"{name}.json").read_text(encoding="utf-8"))["results"]
    return {"level": level, "fp32_isa": child["fp32_isa"], "cpuid_mask_missing": mask_missing,
            "load_average": child["load_average_after"], "runs": child["whole"]["runs"]}


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = _parser()
    args = parser.parse_args(argv)
    sections = set(_choices(parser, "--sections", args.sections, SECTIONS))
    models = _choices(parser, "--models", args.models, MODELS)
    quick = args.quick
    pool = QUICK_GRAPHS if quick else GRAPHS
    labels = _choices(parser, "--graphs", args.graphs, tuple(label for label, _, _ in GRAPHS))
    graphs = tuple(spec for spec, full in zip(pool, GRAPHS, strict=True) if full[0] in labels)
    repeat = 3 if quick else args.repeat
    level = kernels.build_info().get("isa", "")
    if args.fp32_isa == "matched" and level not in SWITCHES:
        parser.error(f"--fp32-isa matched: the kernels run at {level!r}, where torch's FP32 "
                     "libraries have nothing narrower (set QGNN_ISA to a lower level)")
    settle = 0.0 if quick else 0.5
    torch.set_num_threads(args.threads)
    from qgnn.bench.harness import machine_info

    machine = machine_info()
    results: dict[str, Any] = {
        "load_average_before": list(os.getloadavg()),
        "machine_cpu": f"{machine['cpu']}, {machine['usable_cores']} usable cores",
        "cpu_flags": cpu_flags(), "kernels": kernels.build_info(), "sections": sorted(sections),
        "fp32_isa": fp32_isa_state(),
        "quick": quick, "bandwidth": bench_bandwidth(repeat)}
    with tempfile.TemporaryDirectory(prefix="qgnn-bench-engine-") as tmp:
        root = Path(tmp)
        if "whole" in sections:
            results["whole"] = whole_section(graphs, models, root, args.threads, repeat,
                                             settle, args.stock_max_edges)
            if args.fp32_isa == "matched":
                results["whole_fp32_matched"] = matched_fp32_section(args, level, root)
        if "latency" in sections:
            results["latency"] = latency_section(_latency_graphs(quick), root, args.threads,
                                                 50 if quick else 2000, settle)
        if "topk" in sections:
            results["topk"] = bench_topk(20_000 if quick else 1_000_000, 64, 20, args.threads,
                                         max(repeat, 20), 50)
            print("top-k done", flush=True)
        runs = dict(item.split("=", 1) for item in args.accuracy_run)
        if "accuracy" in sections and runs:
            results["accuracy"] = bench_accuracy({k: Path(v) for k, v in runs.items()}, root,
                                                 args.threads)
    results["load_average_after"] = list(os.getloadavg())
    text = render(results)
    print(text)
    path = write_result(args.name, results, results_dir=args.results_dir, machine=machine)
    (args.results_dir / f"{args.name}.md").write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


def _latency_graphs(quick: bool) -> dict[str, tuple[Graph, int]]:
    """Cora (hidden 64) and the 1M-edge power-law graph (hidden 128); a tiny one if quick."""
    label, nodes, degree = (QUICK_GRAPHS if quick else GRAPHS)[0]
    graphs: dict[str, tuple[Graph, int]] = {}
    if not quick:
        from qgnn.graph.datasets import load_dataset

        graphs["cora"] = (load_dataset("cora"), 64)
    graphs[f"powerlaw-{label}"] = (powerlaw_communities(nodes, avg_degree=degree,
                                                        num_features=128, seed=0), HIDDEN)
    return graphs


if __name__ == "__main__":
    raise SystemExit(main())
