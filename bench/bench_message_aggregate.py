"""The fused ``QMessageAggregate`` kernel against the two-step formulation it replaced (rule 3 as
standard ops over E x F, then ``QAggregate`` by edge id): one layer's edge scaling and sum on a
power-law graph (default 100k nodes, 1M edges, 128 features), as the partitioned engine ran it
(the onnxruntime segment of ``Emitter.edge_scale``, then the ``qaggregate`` kernel over the
(E, F) messages). A single-kernel microbenchmark: outputs must be identical. Whole-model figures
come from exported bundles (``qgnn.bench.bench_engine``).

    python -m qgnn.bench.bench_message_aggregate --nodes 100000 --features 128 --threads 2

Prints medians (candidates interleaved round by round).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto
from qgnn.bench.harness import interleave, machine_info
from qgnn.exporter.emit.common import Emitter
from qgnn.exporter.onnx_builder import GraphBuilder
from qgnn.exporter.quant_params import Site
from qgnn.graph.synth import powerlaw_communities
from qgnn.runtime import kernels
from qgnn.runtime.kernels._ext import ext


def _site(key: str, scale: float, zero_point: int) -> Site:
    return Site(key, np.asarray(scale, np.float32), np.asarray(zero_point, np.int64), 8, False,
                "src")


def bench_layer(graph: Any, features: int, threads: int, repeat: int) -> dict[str, float]:
    """Median seconds of the fused kernel and of the two-step path."""
    rng = np.random.default_rng(0)
    csc = graph.csc
    indptr, src = csc.indptr.astype(np.int64), csc.indices.astype(np.int64)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    info = machine_info()
    graph = powerlaw_communities(args.nodes, num_features=args.features)
    print(f"CPU {info.get('cpu')}; {args.nodes} nodes, {graph.num_edges} edges, "
          f"{args.features} features, {args.threads} threads, medians of {args.repeat}")
    for name, seconds in bench_layer(graph, args.features, args.threads, args.repeat).items():
        print(f"layer  {name:14s} {seconds * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
