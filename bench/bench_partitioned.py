"""Partitioned GNS training at W = 1, 2, 4 loopback ranks: cross-rank bytes, accuracy, assignment.

For each dataset (``--datasets``: ``tolokers``, ``powerlaw``) the graph is cut into W parts
(``--method``, METIS when pymetis is installed) and written as shards; then each sampler /
assignment pair (``--runs``) trains for ``--epochs`` epochs on W spawned ranks (gloo over
loopback, ``launch_local``) with the same fanouts, global batch (``batch / W`` seeds per rank,
so every W takes the same optimiser steps per epoch), model and seed:

- ``gns/affinity``: per-rank GNS caches, seeds sent to the rank whose cache (and partition)
  holds most of their in-neighbours;
- ``gns/random``: the same caches, seeds dealt out at random;
- ``uniform/owner``: partitioned uniform sampling without caches, each seed trained by its
  owner (the locality-friendly baseline);
- ``uniform/random``: the same with seeds dealt out at random.

A third field picks the GNS input-hop estimator, e.g. ``gns/affinity/normalized`` or
``gns/affinity/owner-sum`` (owners send one partial-sum row per input-hop destination over the
in-neighbours they own; docs/partitioned.md).

Per row: feature bytes received from other ranks per epoch (batch rows plus cache fills, all
ranks together), the ratio to ``uniform/owner`` at the same W, the share of input rows read from
a cache and fetched remotely, structure bytes (ids, neighbour lists), the test metric and its
difference from the W = 1 run of the same row (W = 1: one rank holds the whole graph, the
single-machine reference), epoch time and the largest per-rank graph memory.

Writes ``bench/results/partitioned.json`` and ``partitioned.md``; one command reproduces the
table: ``python -m qgnn.bench.bench_partitioned``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qgnn.bench.harness import RESULTS_DIR, machine_info, markdown_table, write_result
from qgnn.training.distributed.remote_sampling import ESTIMATORS

RUNS = ("gns/affinity", "gns/random", "uniform/owner", "uniform/random")


def _graph(name: str, nodes: int, features: int) -> Any:
    from qgnn.graph.datasets import load_dataset
    from qgnn.graph.synth import powerlaw_communities

    if name == "powerlaw":
        return powerlaw_communities(nodes, avg_degree=10, num_communities=8,
                                    num_features=features, homophily=0.7, seed=0)
    return load_dataset(name)


def _run(shards: Path, world: int, graph: Any, run: str, args: argparse.Namespace,
         out: Path, seed: int) -> dict[str, Any]:
    from qgnn.training.distributed import launch_local
    from qgnn.training.distributed.partitioned import PartitionedConfig, run_rank
    from qgnn.training.nn.models import ModelConfig
    from qgnn.training.presets import TrainConfig

    sampler, assignment, *rest = run.split("/")
    estimator = rest[0] if rest else args.estimator
    mc = ModelConfig(model=args.model, in_dim=graph.num_features, out_dim=graph.num_classes,
                     hidden=args.hidden, num_layers=len(args.fanouts))
    tc = TrainConfig(epochs=args.epochs, lr=args.lr, patience=None, seed=seed)
    # one global batch at every W (each rank takes batch / W seeds): the same number of
    # optimiser steps per epoch as the single-machine run, so accuracies compare
    cfg = PartitionedConfig(sampler=sampler, fanouts=args.fanouts, estimator=estimator,
                            batch_size=max(1, args.batch_size // world),
                            cache_fraction=args.cache_fraction, assignment=assignment,
                            uncached_fanout=args.uncached_fanout)
    quant = {"method": "dq", "bits": 8} if args.quant == "dq8" else None
    started = time.perf_counter()
    launch_local(run_rank, world, str(shards), mc, tc, cfg, str(out), quant, graph.name,
                 timeout_s=args.timeout)
    result = json.loads((out / "result.json").read_text())
    result["wall_seconds"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="tolokers,powerlaw")
    p.add_argument("--worlds", default="1,2,4")
    p.add_argument("--runs", default=",".join(RUNS),
                   help="sampler/assignment[/estimator] pairs, e.g. gns/affinity/stratified")
    p.add_argument("--nodes", type=int, default=50_000, help="powerlaw graph size")
    p.add_argument("--features", type=int, default=64, help="powerlaw feature width")
    p.add_argument("--method", default="auto", help="partitioner: auto, metis, ldg, random")
    p.add_argument("--model", default="sage")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--fanouts", type=lambda s: tuple(int(x) for x in s.split(",")),
                   default=(10, 10))
    p.add_argument("--batch-size", type=int, default=512,
                   help="global seeds per step (each of W ranks takes batch / W)")
    p.add_argument("--cache-fraction", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--estimator", choices=ESTIMATORS,
                   default="unbiased", help="GNS input-hop weights")
    p.add_argument("--uncached-fanout", type=int, default=4,
                   help="GNS stratified: uniform draws per destination for its non-held part")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--quant", choices=("fp32", "dq8"), default="fp32")
    p.add_argument("--w1-once", action="store_true",
                   help="at W = 1 train only the first of --runs, the single-machine reference "
                        "every W > 1 row is compared with")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds (partition and training); rows per seed plus a "
                        "mean +- std summary. Default: --seed")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--name", default="partitioned")
    args = p.parse_args(argv)
    seeds = [int(x) for x in (args.seeds or str(args.seed)).split(",") if x.strip()]

    from qgnn.graph.partition import partition_graph
    from qgnn.graph.shards import write_shards

    rows: list[dict[str, Any]] = []
    loads: list[float] = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="qgnn-bench-partitioned-") as tmp:
        for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
            graph = _graph(dataset, args.nodes, args.features)
            for seed in seeds:
                for world in [int(w) for w in args.worlds.split(",")]:
                    part = partition_graph(graph, world, args.method, seed=seed)
                    shards = Path(tmp) / dataset / f"s{seed}-w{world}"
                    write_shards(graph, part, shards)
                    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
                    if world == 1 and args.w1_once:
                        runs = runs[:1]  # one rank holds everything: the reference run
                    for run in runs:
                        out = Path(tmp) / dataset / f"s{seed}-w{world}-{run.replace('/', '-')}"
                        r = _run(shards, world, graph, run, args, out, seed)
                        loads.append(os.getloadavg()[0])
                        row = {"dataset": dataset, "seed": seed, "world": world, "run": run,
                               "partition": part.method, "edge_cut": part.edge_cut(graph),
                               "metric": r["metric"], "test": r["test_metric"],
                               "feature_bytes": r["cross_rank_feature_bytes_per_epoch"],
                               "cache_fill_bytes": r["cross_rank_cache_fill_bytes_per_epoch"],
                               "structure_bytes": r["cross_rank_structure_bytes_per_epoch"],
                               "cache_hit_rate": r["cache_hit_rate"],
                               "remote_input_rate": r["remote_input_rate"],
                               "partial_sum_rows": r.get("partial_sum_rows", 0.0),
                               "bytes_by_part": {k.split(":", 1)[1]: v for k, v in r.items()
                                                 if k.startswith("bytes_per_epoch:")},
                               "epoch_seconds": r["epoch_seconds"],
                               "peak_graph_bytes_max_rank": r["peak_graph_bytes_max_rank"],
                               "wall_seconds": r["wall_seconds"], "loadavg_1m": loads[-1]}
                        rows.append(row)
                        print(json.dumps(row), file=sys.stderr, flush=True)
    for row in rows:
        base = next((b for b in rows if b["dataset"] == row["dataset"] and b["seed"] == row["seed"]
                     and b["world"] == row["world"] and b["run"] == "uniform/owner"), None)
        row["bytes_vs_uniform_owner"] = (row["feature_bytes"] / base["feature_bytes"]
                                         if base and base["feature_bytes"] else None)
        single = next((b for b in rows if b["dataset"] == row["dataset"] and b["world"] == 1
                       and b["seed"] == row["seed"]
                       and (args.w1_once or b["run"] == row["run"])), None)
        row["test_minus_w1"] = None if single is None else row["test"] - single["test"]
    command = "python -m qgnn.bench.bench_partitioned " + " ".join(sys.argv[1:] if argv is None
                                                                    else argv)
    machine = machine_info()
    summary = _summarise(rows)
    load = {"min": min(loads), "max": max(loads)}
    write_result(args.name, {"config": {k: (list(v) if isinstance(v, tuple) else v)
                                        for k, v in vars(args).items()}, "rows": rows,
                             "summary": summary, "loadavg_1m": load},
                 command=command, machine=machine)
    table = markdown_table(
        ["data", "seed", "W", "run", "feature B/epoch", "vs uniform/owner", "cache hit",
         "remote rows", "structure B/epoch", "test", "test - W1", "s/epoch", "peak graph B/rank"],
        [[r["dataset"], r["seed"], r["world"], r["run"], int(r["feature_bytes"]),
          r["bytes_vs_uniform_owner"], r["cache_hit_rate"], r["remote_input_rate"],
          int(r["structure_bytes"]), r["test"], r["test_minus_w1"], r["epoch_seconds"],
          int(r["peak_graph_bytes_max_rank"])] for r in rows],
        ["l", "r", "r", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r"])
    stats = markdown_table(
        ["data", "W", "run", "seeds", "test mean", "test std", "test - W1 mean",
         "test - W1 std", "vs uniform/owner mean"],
        [[s["dataset"], s["world"], s["run"], s["seeds"], s["test_mean"], s["test_std"],
          s["test_minus_w1_mean"], s["test_minus_w1_std"], s["bytes_vs_uniform_owner_mean"]]
         for s in summary], ["l", "r", "l", "r", "r", "r", "r", "r", "r"])
    text = (f"# Partitioned training\n\n`{command}`\n\nMachine: {machine.get('cpu')}, "
            f"{machine.get('usable_cores')} usable cores, shared machine (1-minute load "
            f"average {load['min']:.1f} to {load['max']:.1f}); loopback gloo ranks (W processes "
            f"share the cores). Metric: {rows[0]['metric'] if rows else ''}.\n\n"
            f"Over seeds {seeds} (std: sample standard deviation across seeds):\n\n{stats}\n\n"
            f"Per seed:\n\n{table}\n")
    (RESULTS_DIR / f"{args.name}.md").write_text(text)
    print(text)


def _summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds of the test metric, its gap to W = 1 and the byte ratio,
    per (dataset, W, run)."""
    def stat(values: list[float]) -> tuple[float | None, float | None]:
        if not values:
            return None, None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    out = []
    keys = list(dict.fromkeys((r["dataset"], r["world"], r["run"]) for r in rows))
    for dataset, world, run in keys:
        group = [r for r in rows if (r["dataset"], r["world"], r["run"]) == (dataset, world, run)]
        test = stat([r["test"] for r in group])
        gap = stat([r["test_minus_w1"] for r in group if r["test_minus_w1"] is not None])
        ratio = stat([r["bytes_vs_uniform_owner"] for r in group
                      if r["bytes_vs_uniform_owner"] is not None])
        out.append({"dataset": dataset, "world": world, "run": run, "seeds": len(group),
                    "test_mean": test[0], "test_std": test[1], "test_minus_w1_mean": gap[0],
                    "test_minus_w1_std": gap[1], "bytes_vs_uniform_owner_mean": ratio[0]})
    return out


if __name__ == "__main__":
    main()
