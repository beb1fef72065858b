"""Cold-start recommendation latency: a new user given by 20 interactions, per layer type.

MovieLens-100k-sized bipartite data from ``qgnn.graph.synth.bipartite_recommender`` (943 users,
1,682 items, ~80k training interactions), an untrained but calibrated INT8 link model of each
type (``--layers`` deep) exported by ``qgnn export`` (serving cost does not depend on the
weights), node types added to the bundle. LightGCN learns an embedding table instead of reading
the features (as ``qgnn train`` builds it), so its bundle serves that table. Per model, in one
process, interleaved round by round (``harness.interleave``), each sample a fresh user with
``--items`` random distinct items:

- ``served``: ``Engine.recommend_new_user``, the route it picks (``Engine.cache_pays``);
- ``cached``: the user's embedding through the layer cache (only rows the user changes), plus
  the same top-k;
- ``khop``: the same by the k-hop route on the overlay graph (its L-hop neighbourhood from the
  features);
- ``inductive``: the exact ``inductive_nodes`` route (``Engine.recommend`` with an inductive
  node): also recomputes every item the user's arrival changes.

The user's output of ``cached`` and ``khop`` must be equal bit for bit (checked every run).
Each candidate is timed twice: wall clock (``served p50``, what a client waits) and this
thread's CPU time (what the request costs; on a loaded shared host the wall clock also holds
the time other jobs had the cores).

    python -m qgnn.bench.bench_recommend_serving [--models gcn,sage,gin,gat,egc,lightgcn]
        [--repeat 30] [--layers 2] [--name recommend-cold-start]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.bench.harness import RESULTS_DIR, interleave, markdown_table, write_result
from qgnn.runtime.engine import Engine, EngineConfig, quantize_rows
from qgnn.runtime.engine.engine import Inductive
from qgnn.runtime.engine.layer_cache import LayerCache

KINDS = ("gcn", "sage", "gin", "gat", "egc", "lightgcn")
LAYER_KWARGS = {"gat": {"heads": 2}, "egc": {"heads": 2, "bases": 2}}


def export_link(data: Any, kind: str, hidden: int, out: Path, layers: int = 2) -> Path:
    """An INT8 Degree-Quant link bundle of ``layers`` layers via ``qgnn export`` with node
    types: random weights, ranges calibrated by three forward passes."""
    import torch
    from qgnn.bench.untrained import calibrate, save_untrained_run
    from qgnn.contract.layers import layer_spec
    from qgnn.exporter.export import export_run
    from qgnn.runtime.bundle.reader import load_bundle
    from qgnn.runtime.bundle.writer import write_bundle
    from qgnn.training.nn.models import ModelConfig
    from qgnn.training.quant import QuantConfig, quantize_model
    from qgnn.training.tasks.link import build_link_model

    graph = data.graph
    table = layer_spec(kind).layer_mean  # weight-free: an embedding per node, no features
    if table:
        graph = graph.replace(x=None)
    cfg = ModelConfig(model=kind, in_dim=hidden if table else graph.num_features,
                      out_dim=hidden, hidden=hidden, num_layers=layers,
                      layer_kwargs=LAYER_KWARGS.get(kind, {}))
    quant = QuantConfig(bits=8)
    torch.manual_seed(0)
    model = calibrate(quantize_model(build_link_model(
        cfg, "dot", graph.num_nodes if table else None), quant), graph,
        features=np.zeros((graph.num_nodes, 1), np.float32) if table else None)
    run = save_untrained_run(out.parent / f"{out.name}-run", model, task="link", graph=graph,
                             model_config=cfg, quant=quant)
    plain = export_run(run, out.parent / f"{out.name}-plain", graph=graph, parity=False,
                       overwrite=True).bundle
    src = load_bundle(plain)
    files: dict[str, Any] = {name: src.path / name for name in src.files}
    files["graph/node_type.npy"] = np.asarray(graph.node_type, np.int8)
    manifest = {k: v for k, v in src.manifest.raw.items() if k != "files"}
    manifest["graph"] = {**manifest["graph"],
                         "node_types": {"user": data.num_users, "item": data.num_items}}
    return write_bundle(out, manifest, files, overwrite=True)


def measure(engine: Engine, data: Any, items_per_user: int, k: int, repeat: int,
            seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    item_ids = np.arange(data.num_users, data.num_users + data.num_items)
    draws = iter([rng.choice(item_ids, items_per_user, replace=False)
                  for _ in range(8 * (repeat + 2) + 3)])
    rows: dict[int, int] = {}

    def served() -> None:
        engine.recommend_new_user(next(draws), k)

    def route(output: Callable[[Any, int], np.ndarray]) -> Callable[[], None]:
        def run() -> None:
            snapshot, user, seen = engine.new_user_view(next(draws))
            values, scales = quantize_rows(output(snapshot, user))
            engine._topk(snapshot, values[0], float(scales[0]), k, np.union1d([user], seen),
                         engine.items(snapshot), np.zeros(0, np.int64))
        return run

    cache = engine.layer_cache()
    cached = route(lambda snapshot, user: cache.outputs(snapshot, np.asarray([user])))
    khop = route(lambda snapshot, user: engine.forward(snapshot, np.asarray([user])))

    def inductive() -> None:
        items = next(draws)
        n = engine.num_nodes
        edges = np.concatenate([np.stack([np.full(items.size, n), items], 1),
                                np.stack([items, np.full(items.size, n)], 1)])
        engine.recommend(n, k, exclude_seen=True, inductive=Inductive(
            np.asarray([n]), np.zeros((1, engine.num_features), np.float32), edges))

    check = rng.choice(item_ids, items_per_user, replace=False)
    snapshot, user, _ = engine.new_user_view(check)
    fresh = LayerCache(engine.layerwise, engine.store.snapshot(), engine.extractor,
                       engine.uses_degree, engine.config.chunk_size)
    start = time.perf_counter()
    fresh.tables()  # what the engine did at load
    build_s = time.perf_counter() - start
    same = np.array_equal(engine.layer_cache().outputs(snapshot, np.asarray([user]),
                                                       rows.__setitem__),
                          engine.forward(snapshot, np.asarray([user])))
    candidates = {"served": served, "cached": cached, "khop": khop, "inductive": inductive}
    timings = interleave(candidates, repeat=repeat, warmup=2)
    # the same work timed in this thread's CPU seconds (the engine runs on the calling thread
    # at threads=1): what a request costs, whatever the other jobs on a shared host do
    cpu = interleave(candidates, repeat=repeat, warmup=0, clock=time.thread_time)
    return {"route": "cache" if engine.cache_pays() else "khop", "isa": engine.isa,
            "cache_build_s": build_s, "bit_exact": bool(same),
            "rows_recomputed_per_layer": [rows[i] for i in sorted(rows)],
            **{name: t.to_dict() for name, t in timings.items()},
            "cpu": {name: t.to_dict() for name, t in cpu.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(KINDS))
    p.add_argument("--users", type=int, default=943)
    p.add_argument("--num-items", type=int, default=1682)
    p.add_argument("--interactions", type=int, default=106,
                   help="per user, before the 80/10/10 time split (106: ~80k train)")
    p.add_argument("--items", type=int, default=20, help="interactions of the new user")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="recommend-cold-start")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    from qgnn.graph.synth import bipartite_recommender

    data = bipartite_recommender(args.users, args.num_items,
                                 interactions_per_user=args.interactions, num_features=32,
                                 seed=0)
    results: dict[str, Any] = {"load_average_before": os.getloadavg(), "users": args.users,
                               "items": args.num_items,
                               "train_interactions": int(data.train.shape[0]),
                               "new_user_items": args.items, "k": args.k,
                               "layers": args.layers, "threads": args.threads, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models.split(","):
            path = export_link(data, kind, args.hidden, Path(tmp) / kind, args.layers)
            from qgnn.runtime.bundle.reader import load_bundle

            engine = Engine(load_bundle(path), EngineConfig(threads=args.threads))
            results["models"][kind] = measure(engine, data, args.items, args.k, args.repeat,
                                              seed=1)
            print(f"{kind}: done", file=sys.stderr)
    results["load_average_after"] = os.getloadavg()
    out = write_result(args.name, results, results_dir=args.results_dir)
    rows = [[kind, r["route"], r["served"]["median_s"] * 1e3, r["served"]["p99_s"] * 1e3,
             r["cpu"]["served"]["median_s"] * 1e3, r["cached"]["median_s"] * 1e3,
             r["khop"]["median_s"] * 1e3, r["cpu"]["cached"]["median_s"] * 1e3,
             r["cpu"]["khop"]["median_s"] * 1e3, r["inductive"]["median_s"] * 1e3,
             "/".join(map(str, r["rows_recomputed_per_layer"])), r["bit_exact"],
             r["cache_build_s"] * 1e3]
            for kind, r in results["models"].items()]
    table = markdown_table(["model", "served route", "served p50 ms", "served p99 ms",
                            "served CPU p50 ms", "cache p50 ms", "k-hop p50 ms",
                            "cache CPU p50 ms", "k-hop CPU p50 ms",
                            "inductive (exact items) p50 ms", "cache rows per layer",
                            "bit-exact", "cache build ms"], rows,
                           ["l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "l", "r"])
    isa = next(iter(results["models"].values()))["isa"] if results["models"] else "-"
    note = (f"{args.layers} layers, ISA {isa}; 1-minute load average "
            f"{results['load_average_before'][0]:.1f} before, "
            f"{results['load_average_after'][0]:.1f} after")
    (args.results_dir / f"{args.name}.md").write_text(table + "\n\n" + note + "\n")
    print(table)
    print(note)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
