"""Figures for qgnn's compiled kernels, each next to the limit or the alternative it answers to.

- memory bandwidth of this machine, measured in the same run (numpy copy of 512 MiB);
- ``qaggregate`` sum, 1M edges x 64 features over 100k nodes: time and the traffic it implies,
  against the bandwidth bound (target: within 2x of it);
- ``aggregate_f32`` on the same graph against torch (``index_add_`` as in training, and a CSR
  sparse matmul), torch being a benchmark-only dependency;
- ``int8_topk`` k=20 over 1M x 64 against float32 numpy (``table @ q`` + ``argpartition``), and
  the recall@20 of INT8 retrieval against exact float32 retrieval;
- ``qlinear`` at each ISA level asked for (``--isa``) against onnxruntime's MatMulInteger
  (alone, and with the requantisation ops that make it the same computation), with the GB/s of
  the bytes each one reads and writes;
- ``edge_softmax``: GAT's exact ``q_edge_softmax`` against the float ``edge_softmax_f32`` it
  replaced, 1.1M edges x 4 heads, at each level asked for.

Single-kernel microbenchmarks only: the onnxruntime side of ``qlinear`` is one linear layer
written by the exporter's own emitter (``Emitter.int_linear``, the nodes ``qgnn export`` writes),
and its MatMulInteger alone. Every model-level figure comes from bundles ``qgnn export`` wrote
(bench_engine, bench_layerwise).

Run ``python -m qgnn.bench.bench_kernels`` (``--quick`` for a smoke run, ``--only qlinear`` for
one figure, ``--isa all`` for every level this host has); prints a markdown table and writes
``bench/results/kernels.json``. Times are medians of repeated runs; the load average
before and after is recorded, since other processes on a 2-core host move every figure.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from qgnn.bench.harness import Timing, interleave, markdown_table, time_repeated, write_result
from qgnn.contract.arithmetic import multiplier
from qgnn.runtime import kernels
from qgnn.runtime.kernels.float_step import float_step_q8

MiB = 2**20


def _gbps(num_bytes: float, seconds: float) -> float:
    return num_bytes / seconds / 1e9


def time_apart(candidates: dict[str, Callable[[], object]], repeat: int) -> dict[str, Timing]:
    """Time each candidate in its own block, with a pause between blocks.

    Not interleaved on purpose: OpenBLAS, GNU OpenMP (torch) and onnxruntime worker threads
    busy-wait for a while after each call, and on a 2-core machine a spinning pool steals the
    core the next candidate needs. The pause lets them go to sleep first.
    """
    out = {}
    for name, fn in candidates.items():
        time.sleep(0.5)
        out[name] = time_repeated(fn, repeat=repeat, warmup=2)
    return out


def bench_bandwidth(repeat: int, size_mib: int) -> dict[str, Any]:
    """STREAM-style copy bandwidth (bytes read + bytes written) and read-only bandwidth."""
    a = np.ones(size_mib * MiB // 8)
    b = np.empty_like(a)
    copy = time_repeated(lambda: np.copyto(b, a), repeat=repeat, warmup=1)
    read = time_repeated(a.sum, repeat=repeat, warmup=1)
    return {"array_mib": size_mib, "copy_gbps": _gbps(2 * a.nbytes, copy.median),
            "read_gbps": _gbps(a.nbytes, read.median), "copy": copy.to_dict(),
            "read": read.to_dict()}


def random_csr(rng: np.random.Generator, nodes: int, edges: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, src, dst): uniformly random edges sorted by destination (no locality)."""
    dst = np.sort(rng.integers(0, nodes, edges))
    src = rng.integers(0, nodes, edges)
    indptr = np.zeros(nodes + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=nodes), out=indptr[1:])
    return indptr, src, dst


def bench_qaggregate(rng: np.random.Generator, nodes: int, edges: int, feats: int, threads: int,
                     repeat: int, copy_gbps: float) -> dict[str, Any]:
    indptr, src, _ = random_csr(rng, nodes, edges)
    x = rng.integers(0, 256, (nodes, feats), dtype=np.uint8)
    runs: dict[str, Callable[[], object]] = {
        f"{t} thread(s)": (lambda t=t: kernels.qaggregate(x, 3, indptr, src, 0.01, 128, "sum",
                                                          num_threads=t))
        for t in sorted({1, threads})}
    timings = interleave(runs, repeat=repeat)
    # CPU seconds of a 1-thread call: what the kernel costs whenever it has a core to itself
    cpu = time_repeated(runs["1 thread(s)"], repeat=repeat, clock=time.process_time)
    # every edge reads its 8-byte src and one F-byte source row; indptr read, output written
    traffic = 8 * edges + 8 * (nodes + 1) + edges * feats + nodes * feats
    best = timings[f"{threads} thread(s)"].median
    bound = traffic / (copy_gbps * 1e9)
    return {"nodes": nodes, "edges": edges, "features": feats, "threads": threads,
            "traffic_bytes": traffic, "bandwidth_bound_s": bound,
            "median_s": best, "min_s": timings[f"{threads} thread(s)"].min,
            "effective_gbps": _gbps(traffic, best), "x_bandwidth_bound": best / bound,
            "cpu_s_1thread": cpu.median,
            "timings": {k: v.to_dict() for k, v in timings.items()}}


def bench_aggregate_f32(rng: np.random.Generator, nodes: int, edges: int, feats: int,
                        threads: int, repeat: int, copy_gbps: float) -> dict[str, Any]:
    indptr, src, dst = random_csr(rng, nodes, edges)
    x = rng.standard_normal((nodes, feats)).astype(np.float32)
    runs: dict[str, Callable[[], object]] = {
        "qgnn aggregate_f32": lambda: kernels.aggregate_f32(x, indptr, src, "sum",
                                                            num_threads=threads)}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(threads)
        xt, srct, dstt = torch.from_numpy(x), torch.from_numpy(src), torch.from_numpy(dst)
        with warnings.catch_warnings():  # "sparse CSR is beta", "invariant checks off"
            warnings.simplefilter("ignore", UserWarning)
            adj = torch.sparse_csr_tensor(torch.from_numpy(indptr), srct,
                                          torch.ones(edges, dtype=torch.float32), (nodes, nodes))

        def index_add() -> object:
            return torch.zeros(nodes, feats).index_add_(0, dstt, xt.index_select(0, srct))

        runs["torch index_add_"] = index_add
        runs["torch sparse_csr @ x"] = lambda: adj @ xt
    timings = time_apart(runs, repeat)
    traffic = 8 * edges + 8 * (nodes + 1) + 4 * edges * feats + 4 * nodes * feats
    ours = timings["qgnn aggregate_f32"].median
    return {"nodes": nodes, "edges": edges, "features": feats, "threads": threads,
            "traffic_bytes": traffic, "x_bandwidth_bound": ours / (traffic / (copy_gbps * 1e9)),
            "median_s": {k: v.median for k, v in timings.items()},
            "timings": {k: v.to_dict() for k, v in timings.items()}}


def embeddings(rng: np.random.Generator, n: int, dim: int, rank: int = 16
               ) -> tuple[np.ndarray, Callable[[int], np.ndarray]]:
    """A float32 table with structure: rank-``rank`` latent factors, isotropic noise and
    log-normal popularity (norm) per item; plus a sampler of queries from the same factors."""
    proj = (rng.standard_normal((rank, dim)) / np.sqrt(rank)).astype(np.float32)
    table = rng.standard_normal((n, rank), dtype=np.float32) @ proj
    table += 0.3 * rng.standard_normal((n, dim), dtype=np.float32)
    table *= rng.lognormal(0.0, 0.3, n).astype(np.float32)[:, None]

    def queries(count: int) -> np.ndarray:
        q = rng.standard_normal((count, rank), dtype=np.float32) @ proj
        return q + 0.3 * rng.standard_normal((count, dim), dtype=np.float32)

    return table, queries


def bench_topk(rng: np.random.Generator, n: int, dim: int, k: int, threads: int, repeat: int,
               recall_queries: int) -> dict[str, Any]:
    table, queries = embeddings(rng, n, dim)
    scale = float(np.abs(table).max()) / 127  # per-table symmetric
    table_q = kernels.quantize_s8(table, scale)
    qs = queries(max(recall_queries, repeat))
    q8 = [kernels.quantize_s8(q, float(np.abs(q).max()) / 127) for q in qs]
    state = {"i": 0}

    def next_query() -> int:
        state["i"] = (state["i"] + 1) % len(qs)
        return state["i"]

    runs = {
        "int8_topk": lambda: kernels.int8_topk(q8[next_query()], table_q, k,
                                               num_threads=threads),
        "numpy float32 (table @ q + argpartition)": lambda: np.argpartition(
            table @ qs[next_query()], -k)[-k:],
    }
    timings = time_apart(runs, repeat)
    cpu = time_repeated(lambda: kernels.int8_topk(q8[next_query()], table_q, k, num_threads=1),
                        repeat=repeat, clock=time.process_time)
    recall: dict[str, list[float]] = {"int8 query": [], "int32 query": [],
                                      "int8 query, top-30 then exact re-rank": []}
    for q, q_8 in zip(qs[:recall_queries], q8[:recall_queries], strict=True):
        exact = np.argpartition(table @ q, -k)[-k:]
        q32 = np.rint(q / (np.abs(q).max() / 32767)).astype(np.int32)
        for name, ids in (("int8 query", kernels.int8_topk(q_8, table_q, k)[0]),
                          ("int32 query", kernels.int8_topk(q32, table_q, k)[0]),
                          ("int8 query, top-30 then exact re-rank",
                           kernels.int8_topk(q_8, table_q, k * 3 // 2)[0])):
            recall[name].append(np.intersect1d(exact, ids).size / k)
    ours, theirs = timings["int8_topk"], timings["numpy float32 (table @ q + argpartition)"]
    return {"items": n, "dim": dim, "k": k, "threads": threads, "table_scale": scale,
            "int8_p50_s": ours.median, "int8_p90_s": ours.p90, "int8_min_s": ours.min,
            "int8_cpu_s_1thread": cpu.median, "numpy_f32_p50_s": theirs.median,
            "speedup_vs_numpy": theirs.median / ours.median,
            "recall_at_k": {name: float(np.mean(v)) for name, v in recall.items()},
            "recall_queries": recall_queries,
            "timings": {name: t.to_dict() for name, t in timings.items()}}


# bench_qlinear's layer: x at zero point 3, y at 128 with scale 1 / QLINEAR_MULT (the contract's
# multiplier is then about 2e-4), w at scale 1 so the integer weights are their own floats.
QLINEAR_X_ZP, QLINEAR_Y_ZP, QLINEAR_MULT = 3, 128, 2e-4


def _qlinear_sites() -> tuple[Any, Any, Any]:
    """(x, w, y) quantisation sites of the benchmarked layer."""
    from qgnn.exporter.quant_params import Site
    one = np.float32(1.0)
    return (Site("x", one, np.int64(QLINEAR_X_ZP), 8, False, "src"),
            Site("w", one, np.int64(0), 8, True, "param"),
            Site("y", np.float32(1.0 / QLINEAR_MULT), np.int64(QLINEAR_Y_ZP), 8, False, "dst"))


def _ort_qlinear_sessions(w: np.ndarray, bias: np.ndarray, threads: int
                          ) -> dict[str, Any] | None:
    """onnxruntime sessions for the linear layer exactly as ``qgnn export`` writes it (the
    exporter's own emitter: MatMulInteger on uint8 weights stored as ``w + 128``, + bias, Cast,
    Mul, QuantizeLinear; exact on every onnxruntime kernel) and for its MatMulInteger alone, or
    None without onnx."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto
        from qgnn.exporter.emit.common import Emitter
        from qgnn.exporter.onnx_builder import GraphBuilder
    except ImportError:
        return None
    x_site, w_site, y_site = _qlinear_sites()
    g = GraphBuilder()
    em = Emitter(g)
    x = g.input("x", TensorProto.UINT8, ["N", w.shape[0]])
    y = em.int_linear(x, x_site, w.T.astype(np.float32), w_site, bias.astype(np.float32),
                      y_site, "lin")
    g.output(y, "y", TensorProto.UINT8, ["N", w.shape[1]])
    full = g.model("qlinear")
    matmul = onnx.ModelProto()
    matmul.CopyFrom(full)
    [mm] = [n for n in full.graph.node if n.op_type == "MatMulInteger"]
    used = set(mm.input)
    del matmul.graph.node[:], matmul.graph.output[:], matmul.graph.initializer[:]
    matmul.graph.node.append(mm)
    matmul.graph.initializer.extend(t for t in full.graph.initializer if t.name in used)
    matmul.graph.output.append(onnx.helper.make_tensor_value_info(
        mm.output[0], TensorProto.INT32, ["N", w.shape[1]]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Spinning workers would keep a core busy between runs (and slow whatever runs next).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {}
    for name, model in (("matmul", matmul), ("full", full)):
        onnx.checker.check_model(model)
        sessions[name] = ort.InferenceSession(model.SerializeToString(), options,
                                              providers=["CPUExecutionProvider"])
    return sessions


def _qlinear_bytes(n: int, k: int, m: int, out_itemsize: int) -> int:
    """Bytes a (n, k) x (k, m) product reads (uint8 x, int8 w) and writes (n, m) outputs."""
    return n * k + k * m + n * m * out_itemsize


def bench_qlinear(rng: np.random.Generator, shapes: list[tuple[int, int, int]], threads: int,
                  repeat: int, levels: list[str]) -> list[dict[str, Any]]:
    """qlinear at each of ``levels`` and onnxruntime on the same inputs, one row per shape."""
    rows = []
    x_site, w_site, y_site = _qlinear_sites()
    mult = float(multiplier(x_site.scale, y_site.scale, w_site.scale))  # what the layer holds
    for n, k, m in shapes:
        x = rng.integers(0, 256, (n, k), dtype=np.uint8)
        w = rng.integers(-127, 128, (k, m), dtype=np.int8)
        bias = rng.integers(-1000, 1000, m).astype(np.int32)
        runs: dict[str, Callable[[], object]] = {
            f"qgnn qlinear [{lvl}]": lambda x=x, w=w, bias=bias, lvl=lvl: kernels.qlinear(
                x, QLINEAR_X_ZP, w, bias, mult, QLINEAR_Y_ZP, num_threads=threads, isa=lvl)
            for lvl in levels}
        moved = {name: _qlinear_bytes(n, k, m, 1) for name in runs}
        outputs = {lvl: kernels.qlinear(x, QLINEAR_X_ZP, w, bias, mult, QLINEAR_Y_ZP,
                                        num_threads=threads, isa=lvl) for lvl in levels}
        same_levels = all(np.array_equal(o, outputs[levels[0]]) for o in outputs.values())
        sessions = _ort_qlinear_sessions(w, bias, threads)
        same = None
        if sessions is not None:
            runs["ort MatMulInteger (int32 out)"] = (
                lambda x=x, s=sessions["matmul"]: s.run(None, {"x": x}))
            moved["ort MatMulInteger (int32 out)"] = _qlinear_bytes(n, k, m, 4)
            runs["ort MatMulInteger + requant ops"] = (
                lambda x=x, s=sessions["full"]: s.run(None, {"x": x}))
            moved["ort MatMulInteger + requant ops"] = _qlinear_bytes(n, k, m, 1)
            same = bool(np.array_equal(outputs[levels[0]],
                                       sessions["full"].run(None, {"x": x})[0]))
        timings = time_apart(runs, repeat)
        rows.append({"n": n, "k": k, "m": m, "threads": threads, "levels": levels,
                     "bit_identical_to_ort": same, "bit_identical_across_levels": same_levels,
                     "median_s": {name: t.median for name, t in timings.items()},
                     "gbps": {name: _gbps(moved[name], t.median) for name, t in timings.items()},
                     "gmacs": {name: n * k * m / t.median / 1e9 for name, t in timings.items()},
                     "timings": {name: t.to_dict() for name, t in timings.items()}})
    return rows


def bench_float_step(rng: np.random.Generator, n: int, f: int, threads: int, repeat: int,
                     levels: list[str]) -> list[dict[str, Any]]:
    """float_step_q8 at each of ``levels`` on GIN-like programs over an (n, f) uint8 tensor:
    its time is the dequantise / quantise loops (a division per value) more than the ops."""
    a = rng.integers(0, 256, (n, f), dtype=np.uint8)
    b = rng.integers(0, 256, (n, f), dtype=np.uint8)
    bias = rng.standard_normal(f).astype(np.float32)
    programs = {"relu": ([("relu", 0, None)], None),
                "add + relu": ([("add", 0, bias), ("relu", 0, None)], None),
                "two inputs, add_b": ([("add_b", 0, None)], b)}
    rows = []
    for name, (ops, other) in programs.items():
        runs: dict[str, Callable[[], object]] = {
            f"float_step {name} [{lvl}]": lambda ops=ops, other=other, lvl=lvl: float_step_q8(
                a, 0.02, 3, ops, 0.05, 0, b=other, b_scale=0.03, b_zp=5, num_threads=threads,
                isa=lvl) for lvl in levels}
        outs = [fn() for fn in runs.values()]
        timings = time_apart(runs, repeat)
        rows.append({"program": name, "n": n, "f": f, "threads": threads, "levels": levels,
                     "bit_identical_across_levels": all(np.array_equal(o, outs[0])
                                                        for o in outs),
                     "median_s": {k: t.median for k, t in timings.items()}})
    return rows


def bench_edge_softmax(rng: np.random.Generator, nodes: int, edges: int, heads: int,
                       threads: int, repeat: int, levels: list[str]) -> dict[str, Any]:
    """GAT's softmax step at each of ``levels``, interleaved in one process on the same graph
    (``edges`` random edges plus one self-loop per node, ``heads`` heads): ``q_edge_softmax``
    (the exact integer-table form current exports run) on uint8 logits against
    ``edge_softmax_f32`` (glibc ``expf``, what bundles exported before it run) on the same
    logits dequantised; and each followed by the edge weights' quantisation (the engine's
    ``QEdgeSoftmaxQ`` does it in the same pass). Wall time at ``threads`` threads and CPU time of
    1-thread calls."""
    from qgnn.contract import softmax_table

    indptr, _, _ = random_csr(rng, nodes, edges + nodes)
    q = rng.integers(60, 200, (int(indptr[-1]), heads), dtype=np.uint8)
    scale, zp = np.float32(0.05), 128
    table = softmax_table(scale, 8)
    logits = (q.astype(np.float32) - np.float32(zp)) * scale

    w_scale = np.float32(1 / 255)

    def call(form: str, lvl: str, t: int) -> Callable[[], object]:
        if form == "q_edge_softmax":
            return lambda: kernels.q_edge_softmax(q, indptr, table, num_threads=t, isa=lvl)
        if form == "q_edge_softmax, quantised":
            return lambda: kernels.q_edge_softmax(q, indptr, table, scale=w_scale,
                                                  num_threads=t, isa=lvl)
        if form == "edge_softmax_f32, then quantize_u8":
            return lambda: kernels.quantize_u8(kernels.edge_softmax_f32(
                logits, indptr, num_threads=t, isa=lvl), w_scale, 0, num_threads=t, isa=lvl)
        return lambda: kernels.edge_softmax_f32(logits, indptr, num_threads=t, isa=lvl)

    forms = ("edge_softmax_f32", "q_edge_softmax", "edge_softmax_f32, then quantize_u8",
             "q_edge_softmax, quantised")
    names = {(form, lvl): f"{form} [{lvl}]" for lvl in levels for form in forms}
    timings = interleave({n: call(*k, threads) for k, n in names.items()}, repeat=repeat)
    cpu = interleave({n: call(*k, 1) for k, n in names.items()}, repeat=repeat,
                     clock=time.process_time)
    exact = [kernels.q_edge_softmax(q, indptr, table, isa=lvl) for lvl in levels]
    float_alpha = kernels.edge_softmax_f32(logits, indptr)
    return {"nodes": nodes, "edges": int(indptr[-1]), "heads": heads, "threads": threads,
            "levels": levels,
            "exact_bit_identical_across_levels": all(np.array_equal(e, exact[0]) for e in exact),
            "max_relative_difference_float_vs_exact": float(
                np.max(np.abs(float_alpha.astype(np.float64) - exact[0]) / exact[0])),
            "median_s": {k: t.median for k, t in timings.items()},
            "cpu_s_1thread": {k: t.median for k, t in cpu.items()},
            "timings": {k: t.to_dict() for k, t in timings.items()}}


def summary(res: dict[str, Any]) -> str:
    ms = 1e3
    rows = []
    if "bandwidth" in res:
        bw = res["bandwidth"]
        rows.append(["memory bandwidth (numpy copy, r+w)", f"{bw['copy_gbps']:.1f} GB/s", ""])
    if "qaggregate" in res:
        qa = res["qaggregate"]
        rows += [
            [f"qaggregate sum {qa['edges']:,} x {qa['features']} ({qa['threads']} thr)",
             f"{qa['median_s'] * ms:.2f} ms = {qa['effective_gbps']:.1f} GB/s",
             f"{qa['x_bandwidth_bound']:.2f}x bandwidth bound (target <= 2x); min "
             f"{qa['min_s'] * ms:.2f} ms"],
            ["qaggregate, CPU time of a 1-thread call", f"{qa['cpu_s_1thread'] * ms:.2f} ms", ""],
        ]
    if "aggregate_f32" in res:
        fa = res["aggregate_f32"]
        for name, t in fa["median_s"].items():
            rows.append([f"{name} sum f32 ({fa['threads']} thr)", f"{t * ms:.2f} ms", ""])
    if "topk" in res:
        tk = res["topk"]
        rows += [
            [f"int8_topk k={tk['k']} over {tk['items']:,} x {tk['dim']} ({tk['threads']} thr)",
             f"p50 {tk['int8_p50_s'] * ms:.2f} ms, p90 {tk['int8_p90_s'] * ms:.2f} ms",
             f"target p50 <= 8 ms; min {tk['int8_min_s'] * ms:.2f} ms, 1-thread CPU "
             f"{tk['int8_cpu_s_1thread'] * ms:.2f} ms"],
            ["numpy float32 top-k, same table", f"p50 {tk['numpy_f32_p50_s'] * ms:.2f} ms",
             f"int8 is {tk['speedup_vs_numpy']:.1f}x faster (target >= 2.5x)"],
        ]
        for name, r in tk["recall_at_k"].items():
            rows.append([f"recall@{tk['k']} vs float32, {name}", f"{r:.4f}", "target >= 0.99"])
    for q in res.get("qlinear", []):
        for name, t in q["median_s"].items():
            rows.append([f"{name} {q['n']}x{q['k']}x{q['m']} ({q['threads']} thr)",
                         f"{t * ms:.2f} ms", f"{q['gbps'][name]:.2f} GB/s moved"])
    for fs in res.get("float_step", []):
        for name, t in fs["median_s"].items():
            rows.append([f"{name} {fs['n']}x{fs['f']} ({fs['threads']} thr)", f"{t * ms:.2f} ms",
                         "levels bit-identical" if fs["bit_identical_across_levels"] else
                         "LEVELS DIFFER"])
    if "edge_softmax" in res:
        es = res["edge_softmax"]
        shape = f"{es['edges']:,} x {es['heads']}"
        for name, t in es["median_s"].items():
            rows.append([f"{name} {shape} ({es['threads']} thr)", f"{t * ms:.2f} ms", ""])
        for name, t in es["cpu_s_1thread"].items():
            rows.append([f"{name} {shape}, CPU time", f"{t * ms:.2f} ms", ""])
        rows.append(["q_edge_softmax across levels",
                     "bit-identical" if es["exact_bit_identical_across_levels"] else "DIFFER",
                     f"float path within {es['max_relative_difference_float_vs_exact']:.1e} "
                     "relative"])
    return markdown_table(["figure", "value", "note"], rows, ["l", "r", "l"])


FIGURES = ("bandwidth", "qaggregate", "aggregate_f32", "topk", "qlinear", "float_step",
           "edge_softmax")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=2, help="kernel threads (default 2)")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per figure")
    parser.add_argument("--quick", action="store_true",
                        help="sizes / 10, written as kernels-quick.json (a smoke run)")
    parser.add_argument("--results-dir", help="folder for the JSON (default bench/results)")
    parser.add_argument("--isa", nargs="+", default=None, metavar="LEVEL",
                        help="ISA levels to run qlinear, float_step and edge_softmax at "
                             "('all': every level this host supports and built; default: the "
                             "default level)")
    parser.add_argument("--only", nargs="+", choices=FIGURES, default=None,
                        help="run only these figures (the aggregations bring bandwidth along)")
    parser.add_argument("--name", default=None,
                        help="result name (default: kernels[-quick][-<only figures>])")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``qgnn bench kernels`` (registered by listing this module in qgnn.bench.cli)."""
    p = sub.add_parser("kernels", help="compiled-kernel figures against bandwidth and baselines",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    p.set_defaults(func=run_cli)


def _levels(asked: list[str] | None) -> list[str]:
    if not asked:
        return [kernels.default_level()]
    if asked == ["all"]:
        return [lvl for lvl in kernels.levels_supported() if lvl in kernels.levels_built()]
    return [kernels.resolve_level(lvl, "--isa") for lvl in asked]


def run_cli(args: argparse.Namespace) -> None:
    kernels.build_info()  # fails early, with the reason, if the extension is missing
    levels = _levels(args.isa)
    only = set(args.only or FIGURES)
    if only & {"qaggregate", "aggregate_f32"}:  # their figures are against the bandwidth
        only.add("bandwidth")
    rng = np.random.default_rng(0)
    scale = 10 if args.quick else 1
    nodes, edges = 100_000 // scale, 1_000_000 // scale
    res: dict[str, Any] = {"build": kernels.build_info(levels[-1]),
                           "load_average_before": list(os.getloadavg())}
    if "bandwidth" in only:
        res["bandwidth"] = bench_bandwidth(args.repeat, 512 // scale)
    if "qaggregate" in only:
        res["qaggregate"] = bench_qaggregate(rng, nodes, edges, 64, args.threads, args.repeat,
                                             res["bandwidth"]["copy_gbps"])
    if "aggregate_f32" in only:
        res["aggregate_f32"] = bench_aggregate_f32(rng, nodes, edges, 64, args.threads,
                                                   args.repeat, res["bandwidth"]["copy_gbps"])
    if "topk" in only:
        res["topk"] = bench_topk(rng, 1_000_000 // scale, 64, 20, args.threads, 3 * args.repeat,
                                 100 // scale)
    if "qlinear" in only:
        res["qlinear"] = bench_qlinear(
            rng, [(nodes, 64, 64), (nodes, 128, 128), (3 * nodes, 128, 128), (nodes, 256, 256),
                  (1_000, 128, 128), (nodes, 128, 8), (nodes, 128, 16)],  # classifier layers
            args.threads, args.repeat, levels)
    if "float_step" in only:
        res["float_step"] = bench_float_step(rng, nodes, 128, args.threads, args.repeat, levels)
    if "edge_softmax" in only:
        res["edge_softmax"] = bench_edge_softmax(rng, nodes, edges, 4, args.threads, args.repeat,
                                                 levels)
    res["load_average_after"] = list(os.getloadavg())
    print(summary(res))
    command = (f"python -m qgnn.bench.bench_kernels --threads {args.threads} "
               f"--repeat {args.repeat}" + (" --quick" if args.quick else "")
               + (f" --isa {' '.join(args.isa)}" if args.isa else "")
               + (f" --only {' '.join(args.only)}" if args.only else "")
               + (f" --name {args.name}" if args.name else ""))
    name = "kernels-quick" if args.quick else "kernels"
    if args.only:
        name += "-" + "-".join(sorted(set(args.only)))
    if args.name:
        name = args.name
    path = write_result(name, res, results_dir=args.results_dir, command=command)
    print(f"\nwritten {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    main()
