"""Edge-sharded full-graph training on W = 1, 2, 4 gloo ranks of this machine.

Each rank builds only its own share of a synthetic graph (destination ranges of about E/W
edges, drawn from per-node seeded streams, so no rank ever holds the whole edge list) plus the
replicated node data, then runs ``--steps`` full-graph GCN training steps (forward, backward,
gradient averaging, Adam). Reported per W: the median step time, each rank's peak RSS
(``VmHWM``) and how much the training added to the RSS the rank held before it (and that per
local edge), the local edge count, the bytes each rank contributed to all-reduces per step against
:func:`~qgnn.training.distributed.edge_sharded.analytic_bytes`, and the last step's loss (equal
for every W up to float summation order).

    python -m qgnn.bench.bench_distributed [--nodes 20000] [--avg-degree 100] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.bench.harness import RESULTS_DIR, machine_info, markdown_table, write_result

MIB = 1 << 20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def in_degrees(num_nodes: int, avg_degree: float, seed: int) -> np.ndarray:
    """Every node's in-degree (node-level data every rank draws identically)."""
    rng = np.random.default_rng(seed)
    return rng.poisson(avg_degree, num_nodes).astype(np.int64)


def local_edges(degree: np.ndarray, first: int, last: int, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Sources and destinations of the in-edges of nodes ``[first, last)``, destination-sorted;
    node ``v``'s sources come from stream ``(seed, v // 1024)``, so any rank reproduces them."""
    n = degree.size
    src_parts, dst_parts = [], []
    for chunk in range(first // 1024, (last - 1) // 1024 + 1):
        lo, hi = chunk * 1024, min((chunk + 1) * 1024, n)
        rng = np.random.default_rng([seed, chunk])
        counts = degree[lo:hi]
        src = rng.integers(0, n, int(counts.sum()), dtype=np.int64)
        dst = np.repeat(np.arange(lo, hi, dtype=np.int64), counts)
        keep = (dst >= first) & (dst < last)
        src_parts.append(src[keep])
        dst_parts.append(dst[keep])
    return np.concatenate(src_parts), np.concatenate(dst_parts)


def node_range(degree: np.ndarray, rank: int, world: int) -> tuple[int, int]:
    """The destination range holding about 1/W of the edges."""
    ends = np.cumsum(degree)
    total = int(ends[-1])
    first = int(np.searchsorted(ends, total * rank // world, side="right")) if rank else 0
    last = int(np.searchsorted(ends, total * (rank + 1) // world, side="right")) \
        if rank + 1 < world else degree.size
    return first, last


def rank_job(ctx: Any, args: dict[str, Any], out_dir: str) -> None:
    """One rank: build its shard, train ``steps`` steps, write ``rank<r>.json``."""
    import torch
    from qgnn.training.distributed.edge_sharded import (
        EdgeCollectives,
        ShardedBlock,
        analytic_bytes,
    )
    from qgnn.training.nn import shards
    from qgnn.training.nn.models import ModelConfig, build_model
    from torch.nn import functional as F

    n, seed = args["nodes"], args["seed"]
    use_cuda = args["device"] == "cuda"
    device = torch.device("cuda", ctx.local_rank) if use_cuda else torch.device("cpu")
    degree = in_degrees(n, args["avg_degree"], seed)
    rng = np.random.default_rng(seed + 1)
    x = torch.from_numpy(rng.standard_normal((n, args["features"]), dtype=np.float32)).to(device)
    y = torch.from_numpy(rng.integers(0, args["classes"], n)).to(device)
    first, last = node_range(degree, ctx.rank, ctx.world_size)
    in_degree = torch.from_numpy(degree).to(device)
    loops = torch.arange(first, last, device=device)
    cfg = ModelConfig(model="gcn", in_dim=args["features"], out_dim=args["classes"],
                      hidden=args["hidden"], num_layers=2, dropout=0.0)
    torch.manual_seed(seed)
    model = build_model(cfg).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    comm = EdgeCollectives(ctx, seed=seed, device=device)
    # one pass over the self-loops alone pays torch's one-off costs (kernels, autograd, thread
    # pools) before the baseline, so "RSS added" is what the edges cost
    with shards.sharded(comm):
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        warm = ShardedBlock(src=empty, dst=empty, num_src=n, num_dst=n, in_degree=in_degree,
                            loop_nodes=loops)
        F.cross_entropy(model(x, warm), y).backward()
        model.zero_grad(set_to_none=True)
    rss_before_edges = _status_kib("VmRSS")
    src, dst = local_edges(degree, first, last, seed)
    block = ShardedBlock(src=torch.from_numpy(src).to(device), dst=torch.from_numpy(dst).to(device),
                         num_src=n, num_dst=n, in_degree=in_degree, loop_nodes=loops)
    times, losses = [], []
    with shards.sharded(comm):
        for step in range(args["steps"] + 1):  # step 0 warms up, untimed
            if step == 1:
                comm.bytes.clear()
            if use_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            optimiser.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x, block), y)
            loss.backward()
            comm.average_grads(model)
            optimiser.step()
            if use_cuda:
                torch.cuda.synchronize()
            if step:
                times.append(time.perf_counter() - start)
            losses.append(float(loss.item()))
    params = list(model.parameters())
    analytic = analytic_bytes(n, [args["hidden"], args["classes"]],
                              sum(p.numel() for p in params), num_tensors=len(params),
                              world_size=ctx.world_size)
    record = {"rank": ctx.rank, "nodes": [first, last], "local_edges": int(src.size),
              "step_s": times, "losses": losses,
              "rss_before_edges_mib": rss_before_edges / 1024,
              "rss_peak_mib": _status_kib("VmHWM") / 1024,
              "bytes_per_step": {k: v / args["steps"] for k, v in comm.bytes.items()},
              "analytic_bytes_per_step": analytic}
    (Path(out_dir) / f"rank{ctx.rank}.json").write_text(json.dumps(record))


def run_world(world: int, args: dict[str, Any], timeout_s: float) -> list[dict[str, Any]]:
    from qgnn.training.distributed.context import launch_local

    backend = "nccl" if args["device"] == "cuda" else "gloo"
    with tempfile.TemporaryDirectory() as tmp:
        launch_local(rank_job, world, args, tmp, backend=backend, timeout_s=timeout_s)
        return [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(world)]


def summarise(world: int, ranks: list[dict[str, Any]]) -> dict[str, Any]:
    measured = {k: max(r["bytes_per_step"].get(k, 0.0) for r in ranks)
                for k in ("aggregate", "aggregate_backward", "grads")}
    analytic = ranks[0]["analytic_bytes_per_step"]
    return {
        "world_size": world,
        "step_s_median": statistics.median(t for r in ranks for t in r["step_s"]),
        "local_edges_max": max(r["local_edges"] for r in ranks),
        "rss_peak_mib_max": max(r["rss_peak_mib"] for r in ranks),
        "rss_added_mib_max": max(r["rss_peak_mib"] - r["rss_before_edges_mib"] for r in ranks),
        "rss_added_bytes_per_edge": max((r["rss_peak_mib"] - r["rss_before_edges_mib"]) * MIB
                                        / max(r["local_edges"], 1) for r in ranks),
        "bytes_per_step": measured, "analytic_bytes_per_step": analytic,
        "bytes_match_analytic": all(measured[k] == analytic[k] for k in measured),
        "last_loss": ranks[0]["losses"][-1],
        "ranks": ranks,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20000)
    parser.add_argument("--avg-degree", type=float, default=100.0)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--worlds", default="1,2,4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda (nccl) when a GPU is visible, else cpu (gloo)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--mmap-threshold", type=int, default=131072,
                        help="glibc MALLOC_MMAP_THRESHOLD_ for the ranks (0: leave glibc's "
                             "dynamic threshold)")
    parser.add_argument("--name", default="distributed-edge-sharded")
    ns = parser.parse_args(argv)
    if ns.device is None:
        import torch

        ns.device = "cuda" if torch.cuda.is_available() else "cpu"
    worlds = [int(w) for w in ns.worlds.split(",")]
    if not worlds or min(worlds) < 1:
        parser.error(f"--worlds: expected positive integers, got {ns.worlds!r}")
    if ns.mmap_threshold:
        # a fixed threshold: tensors above it are mapped and unmapped, so a rank's peak RSS
        # follows its live bytes; glibc's dynamic one keeps freed blocks on the heap and the
        # peak then depends on allocation history (measured: no longer linear in the edges)
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(ns.mmap_threshold)
    args = {k: getattr(ns, k) for k in ("nodes", "avg_degree", "features", "hidden", "classes",
                                         "steps", "seed", "device", "mmap_threshold")}
    rows, results = [], []
    for world in worlds:
        summary = summarise(world, run_world(world, args, ns.timeout))
        results.append(summary)
        rows.append([world, summary["local_edges_max"], summary["step_s_median"] * 1e3,
                     summary["rss_peak_mib_max"], summary["rss_added_mib_max"],
                     summary["rss_added_bytes_per_edge"],
                     summary["bytes_per_step"]["aggregate"] / MIB,
                     summary["bytes_per_step"]["aggregate_backward"] / MIB,
                     summary["bytes_per_step"]["grads"] / 1024,
                     "yes" if summary["bytes_match_analytic"] else "NO", summary["last_loss"]])
    machine = machine_info()
    path = write_result(ns.name, {"config": args, "worlds": results}, machine=machine)
    table = markdown_table(
        ["W", "edges/rank", "step ms", "peak RSS MiB", "RSS added MiB", "added B/edge",
         "fwd all-red MiB",
         "bwd all-red MiB", "grads KiB", "= analytic", "last loss"], rows,
        ["r", "r", "r", "r", "r", "r", "r", "r", "r", "l", "r"])
    header = (f"Edge-sharded GCN, {args['nodes']} nodes, avg in-degree {args['avg_degree']:g}, "
              f"{args['device']} ({'nccl' if args['device'] == 'cuda' else 'gloo'}), "
              f"CPU: {machine.get('cpu')}, {machine.get('usable_cores')} usable cores "
              f"(shared, loaded machine); per-step figures over {args['steps']} steps")
    (RESULTS_DIR / f"{ns.name}.md").write_text(header + "\n\n" + table + "\n")
    print(header)
    print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
