"""The fused ``QMessageAggregate`` against the two-step formulation it replaced (rule 3 as standard
ops over E x F, then ``QAggregate`` by edge id), on a power-law graph (default 100k nodes, 1M
edges, 128 features).

1. One GCN layer's edge scaling + sum over ``A + I``: the fused kernel alone against the two-step
   path as the partitioned engine ran it (the onnxruntime segment of ``Emitter.edge_scale``, then
   the ``qaggregate`` kernel over the (E, F) messages). Outputs must be identical.
2. An untrained, calibrated INT8 GCN (``export_untrained_gcn``) exported twice, fused (today's
   exporter) and two-step (the pre-fusion GCN emitter, kept here), each served by
   ``Engine(load_bundle(path), EngineConfig(threads))``: ``infer_all(chunk_size=nodes)``.
   Outputs must be identical. For scale, FP32 torch.sparse.mm of the same GCN shape.

    python -m qgnn.bench.bench_message_aggregate --nodes 100000 --features 128 --threads 2

Prints medians (candidates interleaved round by round); torch is needed for part 2 only.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto
from qgnn.bench.bench_engine import _looped_norm, export_untrained_gcn
from qgnn.bench.harness import interleave, machine_info
from qgnn.exporter.emit import gcn
from qgnn.exporter.emit.common import Emitter, LayerInput, gcn_coefficients, to_numpy
from qgnn.exporter.onnx_builder import GraphBuilder
from qgnn.exporter.quant_params import LayerSites, Site
from qgnn.graph.synth import powerlaw_communities
from qgnn.runtime import kernels
from qgnn.runtime.bundle import load_bundle
from qgnn.runtime.engine import Engine, EngineConfig
from qgnn.runtime.kernels._ext import ext


def _site(key: str, scale: float, zero_point: int) -> Site:
    return Site(key, np.asarray(scale, np.float32), np.asarray(zero_point, np.int64), 8, False,
                "src")


def bench_layer(graph: Any, features: int, threads: int, repeat: int) -> dict[str, float]:
    """Part 1: median seconds of the fused kernel and of the two-step path."""
    rng = np.random.default_rng(0)
    indptr, src, _, _ = _looped_norm(graph)
    lin = rng.integers(0, 256, (graph.num_nodes, features), dtype=np.uint8)
    ew = rng.integers(0, 256, src.size, dtype=np.uint8)
    h, w = _site("lin", 0.05, 120), _site("edge_weight", 0.004, 0)
    msg = _site("msg", 0.02, 128)
    g = GraphBuilder()
    em = Emitter(g)
    names = [g.input("lin", TensorProto.UINT8, ["N", features]),
             g.input("src", TensorProto.INT64, ["E"]), g.input("ew", TensorProto.UINT8, ["E"])]
    out = em.edge_scale(names[0], h, names[1], names[2], w, msg, "msg")
    g.output(out, "msg_q", TensorProto.UINT8, None)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(g.model("edge_scale").SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    edge_ids = np.arange(src.size, dtype=np.int64)
    m_msg = float(kernels.requant_multiplier(0.05, 0.02, 0.004))
    m_agg = float(kernels.requant_multiplier(0.02, 0.1))

    def fused() -> np.ndarray:
        return ext().message_aggregate(lin, 120, indptr, src, ew, 0, m_msg, 128, 8, m_agg, 128,
                                       8, 0, threads)

    def two_step() -> np.ndarray:
        messages = session.run(None, {"lin": lin, "src": src, "ew": ew})[0]
        return ext().qaggregate(messages, 128, indptr, edge_ids, m_agg, 128, 0, None, 0, 8,
                                threads)

    if not np.array_equal(fused(), two_step()):
        raise AssertionError("fused and two-step layer outputs differ")
    times = interleave({"fused kernel": fused, "two-step": two_step}, repeat=repeat, warmup=1)
    return {k: t.median for k, t in times.items()}


def two_step_gcn(em: Emitter, layer: Any, x: str, inp: LayerInput,
                 sites: LayerSites | None) -> str:
    """The INT8 GCN emitter before QMessageAggregate: rule 3 as (E, F) standard ops, then
    QAggregate over edge ids (debug outputs left out; FP32 as today)."""
    s, g = sites, em.g
    if s is None:
        return gcn.emit(em, layer, x, inp, None)
    looped = inp.csr.with_self_loops(drop_existing=False)
    coef = gcn_coefficients(em, looped, inp.inv_sqrt_degree, "gcn_norm")
    lin = em.int_linear(x, s["x"], to_numpy(layer.lin.weight), s["weight"], None, s["lin"],
                        "lin")
    ew = em.quantize(coef, s["edge_weight"], "edge_weight")
    msg = em.edge_scale(lin, s["lin"], looped.src, ew, s["edge_weight"], s["msg"], "msg")
    agg = em.q_aggregate(msg, s["msg"], looped, looped.edge_ids, s["agg"], "sum", "agg")
    value = em.dequantize(agg, s["agg"], "agg_f32")
    if layer.bias is not None:
        value = g.op("Add", [value, g.const(to_numpy(layer.bias), "bias")], "agg_bias")
    return em.quantize(value, s["out"], "out")


def bench_engine(graph: Any, hidden: int, threads: int, repeat: int,
                 workdir: Path) -> dict[str, float]:
    """Part 2: median seconds of ``infer_all`` on the fused and the two-step GCN bundle."""
    from qgnn.exporter.emit import stack

    fused_path = export_untrained_gcn(graph, hidden, workdir / "fused")
    original = stack.LAYER_EMITTERS["gcn"]
    stack.LAYER_EMITTERS["gcn"] = two_step_gcn
    try:
        two_step_path = export_untrained_gcn(graph, hidden, workdir / "two-step")
    finally:
        stack.LAYER_EMITTERS["gcn"] = original
    engines = {name: Engine(load_bundle(path), EngineConfig(threads=threads))
               for name, path in (("fused", fused_path), ("two-step", two_step_path))}
    chunk = graph.num_nodes
    outputs = {name: e.infer_all(chunk_size=chunk) for name, e in engines.items()}
    if not np.array_equal(outputs["fused"], outputs["two-step"]):
        raise AssertionError("fused and two-step GCN bundles answer differently")
    candidates = {f"INT8 engine, {name}": (lambda e=e: e.infer_all(chunk_size=chunk))
                  for name, e in engines.items()}
    candidates["FP32 torch.sparse.mm"] = torch_sparse_gcn(graph, hidden, outputs["fused"].shape[1],
                                                          threads)
    times = interleave(candidates, repeat=repeat, warmup=1)
    return {k: t.median for k, t in times.items()}


def torch_sparse_gcn(graph: Any, hidden: int, classes: int, threads: int) -> Any:
    """The same 2-layer GCN shape in FP32 over a cached normalised CSR (random weights)."""
    import torch

    torch.set_num_threads(threads)
    indptr, src, _, coef = _looped_norm(graph)
    n = graph.num_nodes
    adj = torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(src),
                                  torch.from_numpy(coef), size=(n, n))
    gen = torch.Generator().manual_seed(0)
    ws = [torch.randn(a, b, generator=gen) / a ** 0.5
          for a, b in ((graph.num_features, hidden), (hidden, classes))]
    x = torch.from_numpy(np.ascontiguousarray(graph.x, np.float32))

    def run() -> Any:
        with torch.no_grad():
            h = torch.relu(torch.sparse.mm(adj, x @ ws[0]))
            return torch.sparse.mm(adj, h @ ws[1])

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-engine", action="store_true")
    args = parser.parse_args(argv)
    info = machine_info()
    graph = powerlaw_communities(args.nodes, num_features=args.features)
    print(f"CPU {info.get('cpu')}; {args.nodes} nodes, {graph.num_edges} edges, "
          f"{args.features} features, {args.threads} threads, medians of {args.repeat}")
    for name, seconds in bench_layer(graph, args.features, args.threads, args.repeat).items():
        print(f"layer  {name:14s} {seconds * 1e3:8.1f} ms")
    if not args.skip_engine:
        with tempfile.TemporaryDirectory() as tmp:
            results = bench_engine(graph, args.hidden, args.threads, args.repeat, Path(tmp))
        for name, seconds in results.items():
            print(f"model  {name:24s} {seconds * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
