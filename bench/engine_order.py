"""Where the whole-graph benchmark's engine-vs-executor gap came from (issue 15).

``python -m qgnn.bench.engine_order --model gin`` exports one untrained model on the
300k-node / 4.8M-edge power-law graph (as ``bench_engine`` does) and measures, in one process:

- ``feeds``: the engine's executor per step, on the engine's own full-graph feeds (the bundle's
  memory-mapped arrays) and on the in-memory copies ``bench_engine``'s ``int8_executor`` uses,
  rounds alternating; process CPU time (user, sys) and wall time per step;
- ``order``: ``Engine.infer_all``, the executor and the PyG route in a fixed cyclic order (the
  rotation ``harness.interleave`` used before), once with the engine right after PyG and once
  with the executor there;
- ``forward``: user, sys and wall time of one executor forward on the in-memory feeds. Run it
  again under ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=17179869184`` (glibc keeps freed
  memory for reuse instead of unmapping it) to see what faulting in fresh pages costs.

Writes ``bench/results/<name>.json`` and ``.md`` (the printed tables); docs/benchmarks.md,
"Order effects".
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.bench.bench_engine import (
    HIDDEN,
    _served_features,
    export_untrained,
    full_graph,
    pyg_route,
)
from qgnn.bench.harness import ENV_KEYS, RESULTS_DIR, markdown_table, write_result
from qgnn.graph.synth import powerlaw_communities
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.engine import Engine, EngineConfig


def _usage() -> tuple[float, float, float]:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), u.ru_utime, u.ru_stime


def _spent(start: tuple[float, float, float]) -> np.ndarray:
    return np.subtract(_usage(), start)


def engine_feeds(engine: Engine) -> dict[str, np.ndarray]:
    """The feeds ``Engine.infer_all`` gives its executor on a whole-graph run."""
    seen: dict[str, np.ndarray] = {}
    run = engine.executor.run

    def capture(feeds: Any, outputs: Any = None, timings: Any = None) -> Any:
        seen.update(feeds)
        return run(feeds, outputs, timings)

    engine.executor.run = capture  # type: ignore[method-assign]
    try:
        engine.infer_all(chunk_size=engine.num_nodes)
    finally:
        engine.executor.run = run  # type: ignore[method-assign]
    return seen


def steps_by_feeds(executor: Any, feeds: dict[str, dict[str, np.ndarray]], repeat: int
                   ) -> dict[str, dict[str, list[float]]]:
    """Mean (wall, user, sys) seconds of every executor step per feed kind, kinds alternating
    in order round by round."""
    totals = {kind: {} for kind in feeds}
    kinds = list(feeds)
    for r in range(repeat):
        for kind in (kinds if r % 2 == 0 else kinds[::-1]):
            tensors = dict(executor.constants)
            tensors.update(feeds[kind])
            for step in executor.steps:
                start = _usage()
                if hasattr(step, "session"):
                    values = step.session.run(step.outputs, {n: tensors[n] for n in step.inputs})
                    tensors.update(zip(step.outputs, values, strict=True))
                else:
                    tensors[step.output] = step.fn(tensors)
                acc = totals[kind].setdefault(step.label, np.zeros(3))
                acc += _spent(start)
    return {kind: {label: list(v / repeat) for label, v in steps.items()}
            for kind, steps in totals.items()}


def cyclic(candidates: dict[str, Callable[[], object]], order: Sequence[str], repeat: int
           ) -> dict[str, float]:
    """Median wall seconds per candidate, rounds rotating a fixed cyclic order (the old
    ``harness.interleave``): who runs right after whom never changes."""
    samples: dict[str, list[float]] = {name: [] for name in order}
    for name in order:
        candidates[name]()
    for r in range(repeat):
        shift = r % len(order)
        for name in list(order[shift:]) + list(order[:shift]):
            start = time.perf_counter()
            candidates[name]()
            samples[name].append(time.perf_counter() - start)
    return {name: float(np.median(s)) for name, s in samples.items()}


def measure(model: str, nodes: int, degree: float, repeat: int, root: Path) -> dict[str, Any]:
    graph = powerlaw_communities(nodes, avg_degree=degree, num_features=128, seed=0)
    from qgnn.training.presets import TrainConfig

    exp = export_untrained(model, graph, root / model)
    with load_bundle(exp.bundle) as bundle:
        g = full_graph(bundle, _served_features(graph, TrainConfig()))
    engine = Engine(load_bundle(exp.bundle), EngineConfig(threads=2))
    executor, out = engine.executor, engine.executor.output_names[0]
    in_memory = g.feeds(g.x_int8)
    own = engine_feeds(engine)
    steps = steps_by_feeds(executor, {"engine_feeds": own, "in_memory_feeds": in_memory}, repeat)
    pyg = pyg_route(exp.model, g)
    candidates = {"int8_engine": lambda: engine.infer_all(chunk_size=engine.num_nodes),
                  "int8_executor": lambda: executor.run(in_memory, [out]), "pyg": pyg}
    orders = [("int8_engine", "int8_executor", "pyg"), ("int8_executor", "int8_engine", "pyg")]
    order = [{"order": list(o), "median_s": cyclic(candidates, o, repeat)} for o in orders]
    del pyg, candidates
    forward = []
    for _ in range(repeat):
        start = _usage()
        executor.run(in_memory, [out])
        forward.append(_spent(start))
    return {"model": model, "nodes": nodes, "edges": int(g.indices.size), "hidden": HIDDEN,
            "repeat": repeat, "steps": steps, "order": order,
            "forward_median_s": dict(zip(("wall", "user", "sys"),
                                         np.median(forward, axis=0).tolist(), strict=True)),
            "malloc_env": {k: os.environ[k] for k in ENV_KEYS
                           if k.startswith(("MALLOC_MMAP", "MALLOC_TRIM", "GLIBC_"))
                           and k in os.environ}}


def render(res: dict[str, Any]) -> str:
    ms = 1e3
    kinds = list(res["steps"])
    rows = [[label, *(f"{v[0] * ms:.1f} / {v[1] * ms:.1f} / {v[2] * ms:.1f}"
                      for v in (res["steps"][k][label] for k in kinds))]
            for label in res["steps"][kinds[0]]]
    rows.append(["total", *(" / ".join(f"{sum(v[i] for v in res['steps'][k].values()) * ms:.1f}"
                                       for i in range(3)) for k in kinds)])
    lines = [f"{res['model']}, {res['nodes']} nodes / {res['edges']} edges, "
             f"{res['repeat']} rounds; load average {os.getloadavg()[0]:.1f}", "",
             "Executor steps, wall / user / sys ms:", "",
             markdown_table(["step", *kinds], rows, ["l", "r", "r"]), "",
             "Fixed cyclic order (median wall ms):", ""]
    rows = [[" -> ".join(o["order"]), *(f"{o['median_s'][k] * ms:.0f}"
                                         for k in ("int8_engine", "int8_executor"))]
            for o in res["order"]]
    lines += [markdown_table(["order", "int8_engine", "int8_executor"], rows, ["l", "r", "r"]),
              "", "One executor forward (median ms): " + ", ".join(
                  f"{k} {v * ms:.0f}" for k, v in res["forward_median_s"].items())
              + (f" under {res['malloc_env']}" if res["malloc_env"] else "")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qgnn.bench.engine_order",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gin", choices=("gcn", "sage", "gin", "gat", "egc"))
    parser.add_argument("--nodes", type=int, default=300_000)
    parser.add_argument("--degree", type=float, default=16.0)
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--name", default="engine-order")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        res = measure(args.model, args.nodes, args.degree, args.repeat, Path(tmp))
    text = render(res)
    print(text)
    path = write_result(args.name, res, results_dir=args.results_dir)
    path.with_suffix(".md").write_text(text + "\n")
    print(f"\nwritten {path} and its .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
