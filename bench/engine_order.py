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
  memory for reuse instead of unmapping it) to see what faulting in fresh pages costs;
- ``pool``: ``Engine.infer_all`` and the executor with the engine's buffer pool on and off
  (runtime/engine/buffers.py), rounds alternating which goes first: wall, user and sys time per
  forward (min / median / max) and the pool's hits and misses per forward.

``--sections`` picks some (default: all); ``--buffer-pool-bytes`` sets the engine's
``EngineConfig.buffer_pool_bytes`` (0: no pool) for the other sections.

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
from qgnn.bench.harness import (
    ENV_KEYS,
    RESULTS_DIR,
    machine_info,
    markdown_table,
    write_result,
)
from qgnn.graph.synth import powerlaw_communities
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.engine import Engine, EngineConfig
from qgnn.runtime.engine.engine import DEFAULT_BUFFER_POOL_BYTES

SECTIONS = ("pool", "steps", "order", "forward")


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


def pool_ab(engine: Engine, in_memory: dict[str, np.ndarray], repeat: int
            ) -> dict[str, dict[str, Any]]:
    """Per route and pool setting: (wall, user, sys) seconds of every forward and the pool's
    hits and misses per forward; rounds alternate which setting goes first."""
    executor, pool, out = engine.executor, engine.buffers, engine.executor.output_names[0]
    if pool is None:
        raise SystemExit("--sections pool needs the engine's buffer pool (compiled kernels and "
                         "--buffer-pool-bytes > 0)")
    routes = {"int8_engine": lambda: engine.infer_all(chunk_size=engine.num_nodes),
              "int8_executor": lambda: executor.run(in_memory, [out])}
    res: dict[str, dict[str, Any]] = {f"{r}/{s}": {"samples": [], "hits": [], "misses": []}
                                      for r in routes for s in ("pool", "no_pool")}
    for name, fn in routes.items():
        fn()  # warm: the pool's first forward only fills it
        for r in range(repeat):
            for setting in (("pool", "no_pool") if r % 2 == 0 else ("no_pool", "pool")):
                executor.buffers = pool if setting == "pool" else None
                before = pool.stats()
                start = _usage()
                fn()
                cell, after = res[f"{name}/{setting}"], pool.stats()
                cell["samples"].append(_spent(start).tolist())
                cell["hits"].append(after["hits"] - before["hits"])
                cell["misses"].append(after["misses"] - before["misses"])
    executor.buffers = pool
    res["stats"] = pool.stats()
    return res


def measure(model: str, nodes: int, degree: float, repeat: int, root: Path,
            sections: Sequence[str], pool_bytes: int) -> dict[str, Any]:
    graph = powerlaw_communities(nodes, avg_degree=degree, num_features=128, seed=0)
    from qgnn.training.presets import TrainConfig

    exp = export_untrained(model, graph, root / model)
    with load_bundle(exp.bundle) as bundle:
        g = full_graph(bundle, _served_features(graph, TrainConfig()))
    engine = Engine(load_bundle(exp.bundle), EngineConfig(threads=2,
                                                          buffer_pool_bytes=pool_bytes))
    executor, out = engine.executor, engine.executor.output_names[0]
    in_memory = g.feeds(g.x_int8)
    res: dict[str, Any] = {"model": model, "nodes": nodes, "edges": int(g.indices.size),
                           "hidden": HIDDEN, "repeat": repeat, "buffer_pool_bytes": pool_bytes,
                           "cpu": machine_info()["cpu"], "isa": engine.isa,
                           "malloc_env": {k: os.environ[k] for k in ENV_KEYS
                                          if k.startswith(("MALLOC_MMAP", "MALLOC_TRIM",
                                                           "GLIBC_")) and k in os.environ}}
    if "pool" in sections:
        res["pool"] = pool_ab(engine, in_memory, repeat)
    if "steps" in sections:
        own = engine_feeds(engine)
        res["steps"] = steps_by_feeds(executor, {"engine_feeds": own,
                                                 "in_memory_feeds": in_memory}, repeat)
    if "order" in sections:
        pyg = pyg_route(exp.model, g)
        candidates = {"int8_engine": lambda: engine.infer_all(chunk_size=engine.num_nodes),
                      "int8_executor": lambda: executor.run(in_memory, [out]), "pyg": pyg}
        orders = [("int8_engine", "int8_executor", "pyg"),
                  ("int8_executor", "int8_engine", "pyg")]
        res["order"] = [{"order": list(o), "median_s": cyclic(candidates, o, repeat)}
                        for o in orders]
        del pyg, candidates
    if "forward" in sections:
        forward = []
        for _ in range(repeat):
            start = _usage()
            executor.run(in_memory, [out])
            forward.append(_spent(start))
        res["forward_median_s"] = dict(zip(("wall", "user", "sys"),
                                           np.median(forward, axis=0).tolist(), strict=True))
    return res


def render_pool(pool: dict[str, dict[str, Any]]) -> list[str]:
    """The pool A/B table: min / median / max per time kind, and hits / misses per forward."""
    rows = []
    stats = pool.get("stats", {})
    for name, cell in pool.items():
        if name == "stats":
            continue
        s = np.asarray(cell["samples"]) * 1e3
        rows.append([name, *(f"{s[:, i].min():.0f} / {np.median(s[:, i]):.0f} / "
                             f"{s[:, i].max():.0f}" for i in range(3)),
                     f"{np.median(cell['hits']):.0f} / {np.median(cell['misses']):.0f}"])
    return ["Buffer pool on / off, per forward, min / median / max ms:", "",
            markdown_table(["route / pool", "wall", "user CPU", "sys CPU", "hits / misses"],
                           rows, ["l", "r", "r", "r", "r"]), "",
            f"Pool at the end: {stats.get('cached_bytes', 0) / 2**20:.0f} MiB in "
            f"{stats.get('cached_blocks', 0)} blocks cached (peak "
            f"{stats.get('peak_cached_bytes', 0) / 2**20:.0f} MiB, cap "
            f"{stats.get('max_bytes', 0) / 2**20:.0f} MiB), {stats.get('evictions', 0)} evictions"]


def render(res: dict[str, Any]) -> str:
    ms = 1e3
    lines = [f"{res['model']}, {res['nodes']} nodes / {res['edges']} edges, "
             f"{res['repeat']} rounds; load average {os.getloadavg()[0]:.1f}; "
             f"buffer_pool_bytes {res['buffer_pool_bytes']}; {res['cpu']}, kernels at "
             f"{res['isa']}"]
    if "pool" in res:
        lines += ["", *render_pool(res["pool"])]
    if "steps" in res:
        kinds = list(res["steps"])
        rows = [[label, *(f"{v[0] * ms:.1f} / {v[1] * ms:.1f} / {v[2] * ms:.1f}"
                          for v in (res["steps"][k][label] for k in kinds))]
                for label in res["steps"][kinds[0]]]
        rows.append(["total", *(" / ".join(
            f"{sum(v[i] for v in res['steps'][k].values()) * ms:.1f}" for i in range(3))
            for k in kinds)])
        lines += ["", "Executor steps, wall / user / sys ms:", "",
                  markdown_table(["step", *kinds], rows, ["l", "r", "r"])]
    if "order" in res:
        rows = [[" -> ".join(o["order"]), *(f"{o['median_s'][k] * ms:.0f}"
                                             for k in ("int8_engine", "int8_executor"))]
                for o in res["order"]]
        lines += ["", "Fixed cyclic order (median wall ms):", "",
                  markdown_table(["order", "int8_engine", "int8_executor"], rows,
                                 ["l", "r", "r"])]
    if "forward_median_s" in res:
        lines += ["", "One executor forward (median ms): " + ", ".join(
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
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, of {','.join(SECTIONS)}")
    parser.add_argument("--buffer-pool-bytes", type=int, default=DEFAULT_BUFFER_POOL_BYTES,
                        help="EngineConfig.buffer_pool_bytes (0: no pool)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    if not sections or set(sections) - set(SECTIONS):
        parser.error(f"--sections: expected some of {','.join(SECTIONS)}, got {args.sections}")
    with tempfile.TemporaryDirectory() as tmp:
        res = measure(args.model, args.nodes, args.degree, args.repeat, Path(tmp), sections,
                      args.buffer_pool_bytes)
    text = render(res)
    print(text)
    path = write_result(args.name, res, results_dir=args.results_dir)
    path.with_suffix(".md").write_text(text + "\n")
    print(f"\nwritten {path} and its .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
