"""Full-graph inference, layer-wise vs k-hop chunks (``Engine.infer_all(method=...)``).

An untrained but calibrated INT8 GCN and SAGE (``qgnn export`` bundles) on a power-law graph;
for each model, method and chunk size one fresh process loads the engine (and builds the
layer-wise sub-models' executors, a one-off load cost reported apart), runs ``infer_all``
``--repeat`` times and reports the median time, its peak RSS (``VmHWM``) and the RSS the
loaded engine already held, so the difference is what inference itself added. Every method
must give the same outputs bit for bit (checked through a digest of the output array).

    python -m qgnn.bench.bench_layerwise [--nodes 100000] [--threads 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.bench.harness import RESULTS_DIR, machine_info, markdown_table, write_result
from qgnn.graph.container import Graph

KINDS = ("gcn", "sage")
METHODS = ("khop", "layerwise")
MIB = 1 << 20


def export_untrained(graph: Graph, kind: str, hidden: int, out: Path) -> Path:
    """An INT8 Degree-Quant 2-layer bundle via ``qgnn export``: random weights, ranges
    calibrated by three forward passes (inference cost does not depend on training)."""
    import torch
    from qgnn.bench.untrained import calibrate, save_untrained_run
    from qgnn.exporter.export import export_run
    from qgnn.training.nn.models import ModelConfig, build_model
    from qgnn.training.quant import QuantConfig, quantize_model

    classes = int(graph.y.max()) + 1 if graph.y is not None else 8
    cfg = ModelConfig(model=kind, in_dim=graph.num_features, out_dim=classes, hidden=hidden,
                      num_layers=2)
    quant = QuantConfig(bits=8)
    torch.manual_seed(0)
    model = calibrate(quantize_model(build_model(cfg), quant), graph)
    run = save_untrained_run(out.parent / f"{out.name}-run", model, task="node", graph=graph,
                             model_config=cfg, quant=quant)
    return export_run(run, out, graph=graph, parity=False, overwrite=True).bundle


def _status_bytes(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process. Not ``ru_maxrss``: Linux keeps it
    across fork and exec, so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(bundle: Path, method: str, chunk: int, threads: int, repeat: int) -> dict[str, Any]:
    """One case, in this process: engine load, then ``repeat`` timed ``infer_all`` calls."""
    from qgnn.runtime.bundle.reader import load_bundle
    from qgnn.runtime.engine import Engine, EngineConfig

    engine = Engine(load_bundle(bundle), EngineConfig(threads=threads))
    start = time.perf_counter()
    if method == "layerwise" and engine.layerwise is not None:
        engine.layerwise.executors()  # built once per engine, on first use: a load cost
    setup = time.perf_counter() - start
    loaded = _status_bytes("VmRSS")
    samples, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = engine.infer_all(chunk_size=chunk, method=method)
        samples.append(time.perf_counter() - start)
    assert out is not None
    peak = _status_bytes("VmHWM")
    return {"method": method, "chunk": chunk, "samples_s": samples, "setup_s": setup,
            "median_s": float(np.median(samples)), "loaded_rss_bytes": loaded,
            "peak_rss_bytes": peak, "added_rss_bytes": peak - loaded,
            "digest": hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest()[:16]}


def _in_child(bundle: Path, method: str, chunk: int, threads: int, repeat: int
              ) -> dict[str, Any]:
    """:func:`measure` in a fresh interpreter, so the peak RSS is this case's alone."""
    cmd = [sys.executable, "-m", "qgnn.bench.bench_layerwise", "--child", str(bundle), method,
           str(chunk), "--threads", str(threads), "--repeat", str(repeat)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def render(results: dict[str, Any]) -> str:
    rows = []
    for kind, cases in results["models"].items():
        khop = {c["chunk"]: c["median_s"] for c in cases if c["method"] == "khop"}
        for c in cases:
            chunk = "N" if c["chunk"] == results["nodes"] else f"{c['chunk']:,}"
            rows.append([kind, c["method"], chunk, f"{c['median_s']:.3g}",
                         f"{khop[c['chunk']] / c['median_s']:.2f}",
                         f"{c['peak_rss_bytes'] / MIB:.0f}", f"{c['added_rss_bytes'] / MIB:.0f}"])
    head = (f"### Full-graph inference: 2-layer INT8 models (hidden {results['hidden']}) on "
            f"{results['nodes']:,} nodes / {results['edges']:,} edges, {results['threads']} "
            f"threads\n\nMachine: {results['machine_cpu']}. Median of {results['repeat']} "
            f"`infer_all` calls per case, each case in a fresh process; 'added' = peak RSS "
            f"minus the loaded engine's RSS. Outputs identical across methods: "
            f"{results['identical']}.\n")
    return head + "\n" + markdown_table(
        ["model", "method", "chunk", "seconds", "x k-hop", "peak RSS MiB", "added MiB"], rows,
        ["l", "l", "r", "r", "r", "r", "r"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qgnn.bench.bench_layerwise",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunks", type=int, nargs="+", default=[2048, 16384, 0],
                        help="chunk sizes; 0 = every node in one chunk")
    parser.add_argument("--name", default="layerwise")
    parser.add_argument("--child", nargs=3, metavar=("BUNDLE", "METHOD", "CHUNK"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        bundle, method, chunk = args.child
        print(json.dumps(measure(Path(bundle), method, int(chunk), args.threads, args.repeat)))
        return 0
    from qgnn.graph.synth import powerlaw_communities

    graph = powerlaw_communities(args.nodes, num_features=128, seed=0)
    print(f"graph: {graph.num_nodes} nodes, {graph.num_edges} edges", flush=True)
    machine = machine_info()
    results: dict[str, Any] = {
        "nodes": graph.num_nodes, "edges": graph.num_edges, "hidden": args.hidden,
        "threads": args.threads, "repeat": args.repeat,
        "machine_cpu": f"{machine['cpu']}, {machine['usable_cores']} usable cores",
        "load_average_before": list(os.getloadavg()), "models": {}}
    chunks = [c or graph.num_nodes for c in args.chunks]
    identical = True
    with tempfile.TemporaryDirectory(prefix="qgnn-bench-layerwise-") as tmp:
        for kind in KINDS:
            bundle = export_untrained(graph, kind, args.hidden, Path(tmp) / kind)
            cases = []
            for chunk in chunks:
                for method in METHODS:
                    case = _in_child(bundle, method, chunk, args.threads, args.repeat)
                    print(f"{kind} {method} chunk {chunk}: {case['median_s']:.3f} s, peak RSS "
                          f"{case['peak_rss_bytes'] / MIB:.0f} MiB", flush=True)
                    cases.append(case)
            identical &= len({c["digest"] for c in cases}) == 1
            results["models"][kind] = cases
    results["identical"] = identical
    results["load_average_after"] = list(os.getloadavg())
    text = render(results)
    print(text)
    path = write_result(args.name, results, machine=machine)
    (RESULTS_DIR / f"{args.name}.md").write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
