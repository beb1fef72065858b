"""How well the partitioned GNS input hop estimates neighbour means, against uniform sampling.

One process, no training: the owners' side of the input hop is the real code
(:meth:`PartitionedSampler._serve`), every rank's cache a real draw, the requesters' seeds their
own training nodes and the destinations their sampled 1-hop neighbourhoods (fanout 10). For each
destination ``v`` the estimate ``sum_u w_uv x_u / d_v`` is compared with the exact mean of its
in-neighbours' (row-normalised) features. Reported per estimator: relative mean squared error
``sum ||est - exact||^2 / sum ||exact||^2`` over ``--reps`` neighbour draws, and the squared
bias given the cache (the same sum for the mean estimate over the draws). ``uniform`` is the
partitioned uniform sampler (no cache). This explains accuracy gaps between W = 1 and W > 1 at
equal fanouts: docs/partitioned.md.

``python -m qgnn.bench.bench_partitioned_estimators`` writes
``bench/results/partitioned-estimators.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import torch
from qgnn.bench.harness import RESULTS_DIR, machine_info, markdown_table, write_result

ESTIMATES = ("uniform", "normalized", "unbiased", "stratified")


class _Gathered:
    """The one collective the samplers' set-up makes, answered as W equal ranks would."""

    def __init__(self, rank: int, world: int) -> None:
        from qgnn.training.distributed.context import DistContext
        from qgnn.training.distributed.exchange import ByteCounter

        self.ctx = DistContext(rank, world)
        self.counter = ByteCounter()
        self.world = world

    def all_gather_rows(self, t: torch.Tensor, kind: str) -> list[torch.Tensor]:
        return [t] * self.world


def measure(graph: Any, part: Any, world: int, cache_fraction: float, estimator: str,
            *, uncached_fanout: int, seeds_per_rank: int, reps: int, seed: int
            ) -> dict[str, float]:
    from qgnn.graph.neighbourhood import sample_neighbors
    from qgnn.graph.shards import shard_of
    from qgnn.training.distributed.memory import MemoryLedger
    from qgnn.training.distributed.remote_sampling import PartitionedSampler
    from qgnn.training.sampling.cache import draw_cache

    x = graph.x / np.maximum(graph.x.sum(1, keepdims=True), 1e-12)
    csc = graph.csc
    deg = np.diff(csc.indptr)
    rng = np.random.default_rng(seed)
    samplers = [PartitionedSampler(shard_of(graph, part, p), _Gathered(p, world), (10, 10),
                                   gns=True, cache_fraction=cache_fraction,
                                   ledger=MemoryLedger(None),
                                   estimator="normalized" if estimator == "uniform" else estimator,
                                   uncached_fanout=uncached_fanout) for p in range(world)]
    err2, bias2, norm2 = 0.0, 0.0, 0.0
    for r in range(world):
        cache = draw_cache(samplers[0].inclusion, rng)
        cache = cache[part.parts[cache] != r]
        for s in samplers:
            s.caches_of = [np.zeros(0, np.int64)] * world
            s.caches_of[r] = cache
        seeds = np.flatnonzero((part.parts == r) & np.asarray(graph.train_mask))[:seeds_per_rank]
        nbr, _, _ = sample_neighbors(csc, seeds, 10, rng)
        dst = np.unique(np.concatenate([seeds, nbr]))
        dst = dst[deg[dst] > 0]
        exact = np.stack([x[csc.indices[csc.indptr[v]:csc.indptr[v + 1]]].mean(0) for v in dst])
        total = np.zeros_like(exact)
        for _ in range(reps):
            est = np.zeros_like(exact)
            for p in range(world):
                sel = np.flatnonzero(part.parts[dst] == p)
                counts, nb, w = samplers[p]._serve(r, dst[sel], 10, estimator != "uniform", rng)
                rows = np.repeat(np.arange(sel.size), counts)
                agg = np.zeros((sel.size, x.shape[1]))
                np.add.at(agg, rows, w[:, None] * x[nb])
                est[sel] = agg / deg[dst[sel]][:, None]
            total += est
            err2 += float(((est - exact) ** 2).sum()) / reps
        bias2 += float(((total / reps - exact) ** 2).sum())
        norm2 += float((exact ** 2).sum())
    return {"rel_mse": err2 / norm2, "rel_bias2_given_cache": bias2 / norm2}


def main(argv: list[str] | None = None) -> None:
    from qgnn.graph.partition import partition_graph
    from qgnn.graph.synth import powerlaw_communities

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--cases", default="ldg:2:0.05,ldg:4:0.05,ldg:4:0.2,metis:2:0.05,metis:4:0.05",
                   help="method:W:cache-fraction triples")
    p.add_argument("--uncached-fanout", type=int, default=2)
    p.add_argument("--seeds-per-rank", type=int, default=300)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--name", default="partitioned-estimators")
    args = p.parse_args(argv)
    graph = powerlaw_communities(args.nodes, avg_degree=10, num_communities=8, num_features=64,
                                 homophily=0.7, seed=0)
    rows = []
    for case in args.cases.split(","):
        method, world, frac = case.split(":")
        part = partition_graph(graph, int(world), method, seed=0)
        row: dict[str, Any] = {"method": method, "world": int(world),
                               "cache_fraction": float(frac), "edge_cut": part.edge_cut(graph)}
        for est in ESTIMATES:
            row[est] = measure(graph, part, int(world), float(frac), est,
                               uncached_fanout=args.uncached_fanout,
                               seeds_per_rank=args.seeds_per_rank, reps=args.reps,
                               seed=args.seed)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    command = "python -m qgnn.bench.bench_partitioned_estimators " + " ".join(
        sys.argv[1:] if argv is None else argv)
    machine = machine_info()
    write_result(args.name, {"config": vars(args), "rows": rows}, command=command,
                 machine=machine)
    table = markdown_table(
        ["parts", "W", "cache", "edge cut", *[f"{e}: MSE (bias²)" for e in ESTIMATES]],
        [[r["method"], r["world"], r["cache_fraction"], round(r["edge_cut"], 3),
          *[f"{r[e]['rel_mse']:.3f} ({r[e]['rel_bias2_given_cache']:.3f})" for e in ESTIMATES]]
         for r in rows], ["l", "r", "r", "r", "r", "r", "r", "r"])
    text = (f"# Partitioned GNS input-hop estimators\n\n`{command}`\n\nRelative mean squared "
            f"error of the neighbour-mean estimate (in brackets: squared bias given the cache); "
            f"power-law graph, {args.nodes} nodes, fanout 10, stratified with "
            f"{args.uncached_fanout} non-held draws.\n\n{table}\n")
    (RESULTS_DIR / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
