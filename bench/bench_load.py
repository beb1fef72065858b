"""Bundle load time, by stage: what parsing the ONNX model once (instead of three times) and the
edge-hash symmetry check cost when an exported bundle is loaded.

    python -m qgnn.bench.bench_load --model gin --nodes 100000 --name load-gin-shared-machine

Exports an untrained model on ``powerlaw_communities(nodes)`` (as bench_engine's whole-graph
section does), then times, interleaved: the earlier load path's model stages (weight rewrite,
``partition`` and the engine's metadata each parsing the bytes), the current one (one parse,
rewritten in place), the symmetry hash with one binary search per edge (the earlier owner
lookup) and with the current per-chunk lookup, and ``Engine(...)`` end to end.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from qgnn.bench.bench_engine import export_untrained
from qgnn.bench.harness import interleave, machine_info, write_result
from qgnn.graph.synth import powerlaw_communities
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.engine import Engine, EngineConfig, graph_data
from qgnn.runtime.engine import onnx_proto as op
from qgnn.runtime.engine.partition import partition
from qgnn.runtime.engine.store import edge_key
from qgnn.runtime.engine.weight_storage import rewrite_weights_as_uint8, store_weights_as_uint8


def _search_hash(indptr: np.ndarray, cols: np.ndarray) -> tuple[int, int]:
    """The symmetry hash with one binary search per edge (the owner lookup before this change)."""
    forward = backward = np.uint64(0)
    n = indptr.size - 1
    with np.errstate(over="ignore"):
        for start in range(0, cols.size, graph_data._HASH_CHUNK):
            stop = min(start + graph_data._HASH_CHUNK, cols.size)
            owner = np.minimum(np.searchsorted(indptr, np.arange(start, stop), side="right") - 1,
                               n - 1)
            col = np.asarray(cols[start:stop], np.int64)
            forward += edge_key(12345, owner, col).sum(dtype=np.uint64)
            backward += edge_key(12345, col, owner).sum(dtype=np.uint64)
    return int(forward), int(backward)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gin")
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--name", default="load")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    graph = powerlaw_communities(args.nodes, avg_degree=10, num_features=128, seed=0)
    with tempfile.TemporaryDirectory(prefix="qgnn-bench-load-") as tmp:
        path = export_untrained(args.model, graph, Path(tmp) / args.model).bundle
        data = (Path(path) / "model.onnx").read_bytes()
        with load_bundle(path) as bundle:  # the arrays load_graph checks
            indptr = np.array(bundle.array(graph_data.GRAPH_INDPTR))
            indices = np.array(bundle.array(graph_data.GRAPH_INDICES))

        def three_parses() -> None:
            partition(store_weights_as_uint8(data))
            op.load_model(data)

        def one_parse() -> None:
            proto = op.load_model(data)
            rewrite_weights_as_uint8(proto)
            partition(proto)

        def engine_load() -> None:
            with load_bundle(path) as bundle:
                Engine(bundle, EngineConfig(threads=2))

        timed = interleave({"model stages, three parses": three_parses,
                           "model stages, one parse": one_parse,
                           "symmetry hash, search per edge": lambda: _search_hash(indptr, indices),
                           "symmetry hash, per-chunk owners":
                               lambda: graph_data._edge_hash(indptr, indices),
                           "Engine load, end to end": engine_load}, repeat=args.repeat)
        ms = {name: t.median * 1e3 for name, t in timed.items()}
    machine = machine_info()
    load = (*load_before[:1], os.getloadavg()[0])
    res = {"load_average_before_after": list(load), "model": args.model, "nodes": args.nodes,
           "edges": int(indices.size),
           "model_bytes": len(data), "median_ms": ms}
    lines = [f"Load stages, {args.model}, {args.nodes} nodes / {indices.size} edges, model.onnx "
             f"{len(data)} bytes (ms, medians of {args.repeat} rotating rounds)", "",
             f"Machine: {machine['cpu']}, {machine['usable_cores']} usable cores; load average "
             f"before/after {load[0]:.2f}/{load[1]:.2f} (a shared host: compare rows, not runs).",
             "", "| stage | ms |", "|---|---:|"] + [f"| {k} | {v:.3f} |" for k, v in ms.items()]
    text = "\n".join(lines)
    print(text)
    out = write_result(args.name, res, machine=machine, command="python -m qgnn.bench.bench_load "
                       f"--model {args.model} --nodes {args.nodes} --name {args.name}")
    out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
