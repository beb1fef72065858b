"""Micro benchmarks: synthetic graph generation (time, peak RSS) and k-hop sampling throughput.

Run ``python -m qgnn.bench.bench_sampling generate --nodes 1000000`` (one process per size, since
peak RSS is per process) or ``python -m qgnn.bench.bench_sampling sample --nodes 1000000``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
from qgnn.graph.neighbourhood import khop_blocks
from qgnn.graph.synth import powerlaw_communities


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def bench_generate(nodes: int, avg_degree: float, features: int) -> dict[str, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    g = powerlaw_communities(nodes, avg_degree=avg_degree, num_features=features, seed=0)
    return {"nodes": g.num_nodes, "edges": g.num_edges, "features": g.num_features,
            "seconds": round(time.perf_counter() - t0, 2),
            "cpu_seconds": round(time.process_time() - c0, 2),
            "peak_rss_gib": round(_peak_rss_gib(), 2)}


def bench_sample(nodes: int, avg_degree: float, fanouts: list[int], batch: int,
                 batches: int) -> dict[str, float]:
    g = powerlaw_communities(nodes, avg_degree=avg_degree, num_features=1, seed=0)
    t0 = time.perf_counter()
    adj = g.csc
    csc_seconds = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    order = rng.permutation(np.flatnonzero(g.train_mask))
    scratch = np.empty(g.num_nodes, np.int64)
    khop_blocks(adj, order[:batch], fanouts, seed=rng, scratch=scratch)  # warm-up
    edges = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(batches):
        seeds = order[(i * batch) % (order.size - batch):][:batch]
        blocks = khop_blocks(adj, seeds, fanouts, seed=rng, scratch=scratch)
        edges += sum(b.num_edges for b in blocks)
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    return {"nodes": g.num_nodes, "edges": g.num_edges, "fanouts": fanouts, "batch": batch,
            "batches": batches, "csc_seconds": round(csc_seconds, 2),
            "ms_per_batch": round(1e3 * seconds / batches, 2),
            "sampled_edges_per_batch": edges // batches,
            "sampled_edges_per_s": round(edges / seconds),
            "sampled_edges_per_cpu_s": round(edges / cpu_seconds)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["generate", "sample"])
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--avg-degree", type=float, default=10.0)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--fanouts", type=int, nargs="+", default=[10, 10])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=50)
    args = parser.parse_args(argv)
    if args.what == "generate":
        result = bench_generate(args.nodes, args.avg_degree, args.features)
    else:
        result = bench_sample(args.nodes, args.avg_degree, args.fanouts, args.batch, args.batches)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
