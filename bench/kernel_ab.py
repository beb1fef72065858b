"""Two builds of one ISA level's kernels in one process, interleaved: a before/after that a
shared host cannot blur.

``python -m qgnn.bench.kernel_ab --before DIR --after DIR [--level baseline]`` loads
``_qgnn_kernels_<level>`` from each folder (copies of ``runtime/kernels/*.so`` taken before and
after a change) as separate modules, checks that both give identical outputs, and times the
layer-sized calls of the whole-graph benchmark round-robin (``harness.interleave``): ``qlinear``
100k x 128 -> 128, ``qaggregate`` mean over 1M power-law edges x 128 columns, and
``float_step_q8`` (add + relu, the SAGE/GIN layer output) over 100k x 128, ``gcn_aggregate``
(GCN's layer: A + I, with and without a message site) and ``message_aggregate`` with 4 heads
(GAT's layer) over the same graph, and ``lut_u8``
(a one-input float step as a byte table) where both builds have it. Prints a table and writes
``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from qgnn.bench.harness import RESULTS_DIR, interleave, markdown_table, write_result
from qgnn.runtime.kernels import dense, float_step, graph_ops
from qgnn.runtime.kernels._levels import MODULE_PREFIX


def load_build(folder: Path, level: str) -> ModuleType:
    """The level's extension module from ``folder``, not registered in sys.modules (each
    ``dlopen`` is local, so two builds of the same module coexist)."""
    name = f"qgnn.runtime.kernels.{MODULE_PREFIX}{level}"
    matches = sorted(folder.glob(f"{MODULE_PREFIX}{level}.*.so"))
    if not matches:
        raise SystemExit(f"no {MODULE_PREFIX}{level}*.so in {folder}")
    loader = importlib.machinery.ExtensionFileLoader(name, str(matches[0]))
    spec = importlib.util.spec_from_file_location(name, matches[0], loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _calls(threads: int) -> dict[str, Callable[[], np.ndarray]]:
    """Layer-sized calls through the public wrappers (their ``ext`` is swapped per build)."""
    from qgnn.graph.synth import powerlaw_communities

    rng = np.random.default_rng(0)
    n, f = 100_000, 128
    x = rng.integers(0, 256, (n, f), dtype=np.uint8)
    b = rng.integers(0, 256, (n, f), dtype=np.uint8)
    w = rng.integers(-127, 128, (f, f), dtype=np.int8)
    bias = rng.integers(-5000, 5000, f, dtype=np.int32)
    graph = powerlaw_communities(n, avg_degree=10.0, num_features=8, seed=0)
    indptr, src = graph.indptr, graph.indices
    inv = (1.0 / np.sqrt(np.diff(indptr) + 1.0)).astype(np.float32)
    table = rng.integers(0, 256, (f, 256), dtype=np.uint8)
    heads = rng.integers(0, 256, (len(src), 4), dtype=np.uint8)  # GAT's per-head edge weights
    return {
        "qlinear 100k x 128 -> 128": lambda: dense.qlinear(
            x, 3, w, bias, 2.5e-4, 7, num_threads=threads),
        "qaggregate mean 1M edges x 128": lambda: graph_ops.qaggregate(
            x, 3, indptr, src, 0.9, 5, "mean", num_threads=threads),
        "float_step add+relu 100k x 128": lambda: float_step.float_step_q8(
            x, 0.05, 3, [("add_b", 0, None), ("relu", 0, None)], 0.04, 0, b=b, b_scale=0.03,
            b_zp=9, num_threads=threads),
        "gcn_aggregate message 1M edges x 128": lambda: graph_ops.gcn_aggregate(
            x, 3, indptr, src, inv, 1 / 255, 0, 0.004, 128, 0.3, 128, num_threads=threads),
        "gcn_aggregate weighted 1M edges x 128": lambda: graph_ops.gcn_aggregate(
            x, 3, indptr, src, inv, 1 / 255, 0, None, 0, 1e-4, 128, num_threads=threads),
        "message_aggregate 4 heads 1M edges x 128": lambda: graph_ops.message_aggregate(
            x, 3, indptr, src, heads, 128, 0.004, 128, 0.3, 128, num_threads=threads),
        "lut_u8 per column 100k x 128": lambda: float_step.lut_u8(x, table, num_threads=threads),
    }


def _with(module: ModuleType, call: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        saved = dense.ext, graph_ops.ext, float_step.ext
        dense.ext = graph_ops.ext = float_step.ext = lambda isa=None: module
        try:
            return call()
        finally:
            dense.ext, graph_ops.ext, float_step.ext = saved
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qgnn.bench.kernel_ab",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--level", default="baseline")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: process CPU time (all threads), steadier on a loaded host")
    parser.add_argument("--only", nargs="*", default=None, metavar="WORD",
                        help="time only the calls whose label contains one of these words")
    parser.add_argument("--name", default="kernels-ab")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    builds = {"before": load_build(args.before, args.level),
              "after": load_build(args.after, args.level)}
    load_before = list(os.getloadavg())
    rows, record = [], []
    for label, call in _calls(args.threads).items():
        if label.startswith("lut_u8") and not all(hasattr(m, "lut_u8") for m in builds.values()):
            continue
        if args.only and not any(word in label for word in args.only):
            continue
        fns = {k: _with(m, call) for k, m in builds.items()}
        same = bool(np.array_equal(fns["before"](), fns["after"]()))
        t = interleave(fns, repeat=args.repeat, warmup=1,
                       clock=time.process_time if args.clock == "cpu" else time.perf_counter)
        entry: dict[str, Any] = {"kernel": label, "identical_outputs": same,
                                 **{k: v.to_dict() for k, v in t.items()}}
        record.append(entry)
        rows.append([label, round(t["before"].median * 1e3, 2), round(t["after"].median * 1e3, 2),
                     round(t["before"].median / t["after"].median, 2), same])
    results = {"level": args.level, "threads": args.threads, "repeat": args.repeat,
               "clock": args.clock,
               "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
               "kernels": record}
    print(f"level {args.level}, {args.threads} threads, {args.clock} clock, medians of "
          f"{args.repeat} interleaved rounds; load average {load_before[0]:.2f} -> "
          f"{results['load_average_after'][0]:.2f}")
    print(markdown_table(["kernel", "before ms", "after ms", "speed-up", "identical"], rows,
                         ["l", "r", "r", "r", "l"]))
    write_result(args.name, results, results_dir=args.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
