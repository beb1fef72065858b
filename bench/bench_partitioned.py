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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qgnn.bench.harness import RESULTS_DIR, machine_info, markdown_table, write_result

RUNS = ("gns/affinity", "gns/random", "uniform/owner", "uniform/random")


def _graph(name: str, nodes: int, features: int) -> Any:
    from qgnn.graph.datasets import load_dataset
    from qgnn.graph.synth import powerlaw_communities

    if name == "powerlaw":
        return powerlaw_communities(nodes, avg_degree=10, num_communities=8,
                                    num_features=features, homophily=0.7, seed=0)
    return load_dataset(name)


def _run(shards: Path, world: int, graph: Any, run: str, args: argparse.Namespace,
         out: Path) -> dict[str, Any]:
    from qgnn.training.distributed import launch_local
    from qgnn.training.distributed.partitioned import PartitionedConfig, run_rank
    from qgnn.training.nn.models import ModelConfig
    from qgnn.training.presets import TrainConfig

    sampler, assignment = run.split("/")
    mc = ModelConfig(model=args.model, in_dim=graph.num_features, out_dim=graph.num_classes,
                     hidden=args.hidden, num_layers=len(args.fanouts))
    tc = TrainConfig(epochs=args.epochs, lr=args.lr, patience=None, seed=args.seed)
    # one global batch at every W (each rank takes batch / W seeds): the same number of
    # optimiser steps per epoch as the single-machine run, so accuracies compare
    cfg = PartitionedConfig(sampler=sampler, fanouts=args.fanouts, estimator=args.estimator,
                            batch_size=max(1, args.batch_size // world),
                            cache_fraction=args.cache_fraction, assignment=assignment)
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
    p.add_argument("--runs", default=",".join(RUNS))
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
    p.add_argument("--estimator", choices=("unbiased", "normalized"), default="unbiased",
                   help="GNS input-hop weights")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--quant", choices=("fp32", "dq8"), default="fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--name", default="partitioned")
    args = p.parse_args(argv)

    from qgnn.graph.partition import partition_graph
    from qgnn.graph.shards import write_shards

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qgnn-bench-partitioned-") as tmp:
        for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
            graph = _graph(dataset, args.nodes, args.features)
            for world in [int(w) for w in args.worlds.split(",")]:
                part = partition_graph(graph, world, args.method, seed=args.seed)
                shards = Path(tmp) / dataset / f"w{world}"
                write_shards(graph, part, shards)
                for run in [r.strip() for r in args.runs.split(",") if r.strip()]:
                    out = Path(tmp) / dataset / f"w{world}-{run.replace('/', '-')}"
                    r = _run(shards, world, graph, run, args, out)
                    row = {"dataset": dataset, "world": world, "run": run,
                           "partition": part.method, "edge_cut": part.edge_cut(graph),
                           "metric": r["metric"], "test": r["test_metric"],
                           "feature_bytes": r["cross_rank_feature_bytes_per_epoch"],
                           "cache_fill_bytes": r["cross_rank_cache_fill_bytes_per_epoch"],
                           "structure_bytes": r["cross_rank_structure_bytes_per_epoch"],
                           "cache_hit_rate": r["cache_hit_rate"],
                           "remote_input_rate": r["remote_input_rate"],
                           "epoch_seconds": r["epoch_seconds"],
                           "peak_graph_bytes_max_rank": r["peak_graph_bytes_max_rank"],
                           "wall_seconds": r["wall_seconds"]}
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    for row in rows:
        base = next((b for b in rows if b["dataset"] == row["dataset"]
                     and b["world"] == row["world"] and b["run"] == "uniform/owner"), None)
        row["bytes_vs_uniform_owner"] = (row["feature_bytes"] / base["feature_bytes"]
                                         if base and base["feature_bytes"] else None)
        single = next((b for b in rows if b["dataset"] == row["dataset"] and b["world"] == 1
                       and b["run"] == row["run"]), None)
        row["test_minus_w1"] = None if single is None else row["test"] - single["test"]
    command = "python -m qgnn.bench.bench_partitioned " + " ".join(sys.argv[1:] if argv is None
                                                                    else argv)
    machine = machine_info()
    write_result(args.name, {"config": {k: (list(v) if isinstance(v, tuple) else v)
                                        for k, v in vars(args).items()}, "rows": rows},
                 command=command, machine=machine)
    table = markdown_table(
        ["data", "W", "run", "feature B/epoch", "vs uniform/owner", "cache hit", "remote rows",
         "structure B/epoch", "test", "test - W1", "s/epoch", "peak graph B/rank"],
        [[r["dataset"], r["world"], r["run"], int(r["feature_bytes"]),
          r["bytes_vs_uniform_owner"], r["cache_hit_rate"], r["remote_input_rate"],
          int(r["structure_bytes"]), r["test"], r["test_minus_w1"], r["epoch_seconds"],
          int(r["peak_graph_bytes_max_rank"])] for r in rows],
        ["l", "r", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r"])
    text = (f"# Partitioned training\n\n`{command}`\n\nMachine: {machine.get('cpu')}, "
            f"{machine.get('usable_cores')} usable cores; loopback gloo ranks (W processes "
            f"share the cores). Metric: {rows[0]['metric'] if rows else ''}.\n\n{table}\n")
    (RESULTS_DIR / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
