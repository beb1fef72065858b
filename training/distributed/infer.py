"""The ``infer`` mode: distributed layer-wise INT8 inference of a link run into a sharded bundle.

Each rank loads one graph shard (its partition's nodes, in-edges, out-edges and features;
exporter/link_shards.py writes them for a link run) and runs the run's *exported* model, the
per-layer sub-models the serving engine runs (``qgnn.runtime.engine.layerwise.cut``, with the
compiled kernels), over its own nodes: per layer, a chunk of destinations at a time, after
fetching the previous layer's boundary rows of the chunk's remote in-neighbours from their
owners (one request round and one reply round per chunk, every rank running the same number
of chunks). The layers are integer arithmetic per destination row, and every row sees its whole
in-list in the graph's order, so each rank's outputs are the rows the unsharded export's
full-graph run gives its nodes, bit for bit; ``write_part`` stores them as INT8 and rank 0
assembles the bundles (exporter/sharded.py).

What crosses between ranks is the layer boundary as the model carries it (uint8 activations
for an INT8 model, plus float32 sums for LightGCN's layer mean), counted under ``eval``. The
features are quantised by each rank at the model's input site, as ``qgnn export`` does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from qgnn.graph.shards import GraphShard, load_shard
from qgnn.training.distributed.context import DistContext, finish_together, init_from_env
from qgnn.training.distributed.exchange import ByteCounter, Exchanger

FEATURES = "x"
IN_DEGREE = "in_degree"


class HaloRows:
    """This rank's rows of some named tables (the previous layer's boundary), served to and
    fetched from the other ranks as packed bytes, one row per node."""

    def __init__(self, ex: Exchanger, shard: GraphShard, tables: dict[str, np.ndarray]) -> None:
        self.ex, self.shard = ex, shard
        self.names = sorted(tables)
        self.tables = {n: np.ascontiguousarray(tables[n]) for n in self.names}
        self.widths = [self.tables[n].dtype.itemsize * self.tables[n].shape[1]
                       for n in self.names]

    def _packed(self, local_rows: np.ndarray) -> np.ndarray:
        parts = [self.tables[n][local_rows].view(np.uint8).reshape(local_rows.size, -1)
                 for n in self.names]
        return np.concatenate(parts, axis=1) if parts else np.zeros((local_rows.size, 0),
                                                                    np.uint8)

    def fetch(self, remote: np.ndarray) -> dict[str, np.ndarray]:
        """Rows of the sorted remote ids (every rank calls this in lockstep)."""
        owner = self.shard.parts[remote]
        asks = [torch.from_numpy(remote[owner == r]) for r in range(self.ex.world)]
        asked = self.ex.exchange(asks, "eval", "halo-requests")
        width = sum(self.widths)
        replies = [torch.from_numpy(self._packed(self.shard.local_index(a.numpy())))
                   if a.numel() else torch.zeros((0, width), dtype=torch.uint8) for a in asked]
        got = self.ex.exchange(replies, "eval", "halo-rows")
        packed = np.zeros((remote.size, width), np.uint8)
        for r in range(self.ex.world):
            packed[owner == r] = got[r].numpy()
        out, at = {}, 0
        for name, w in zip(self.names, self.widths, strict=True):
            dtype = self.tables[name].dtype
            out[name] = np.ascontiguousarray(packed[:, at:at + w]).view(dtype)
            at += w
        return out


def _chunk_feeds(shard: GraphShard, layer: Any, a: int, b: int, halo: HaloRows
                 ) -> dict[str, np.ndarray]:
    """Layer ``layer``'s inputs for destinations ``a..b-1`` (local rows) over their whole
    in-lists: the block's rows are the destinations, then their other sources in id order."""
    lo, hi = int(shard.indptr[a]), int(shard.indptr[b])
    dst = shard.owned[a:b]
    sources = shard.indices[lo:hi]
    others = np.setdiff1d(sources, dst)
    nodes = np.concatenate([dst, others])
    pos = np.empty(sources.size, np.int64)
    in_dst = np.isin(sources, dst)
    pos[in_dst] = np.searchsorted(dst, sources[in_dst])
    pos[~in_dst] = dst.size + np.searchsorted(others, sources[~in_dst])
    mine = shard.parts[nodes] == shard.part
    remote = np.unique(nodes[~mine])
    fetched = halo.fetch(remote)
    feeds = {f"indptr_{layer.index}": shard.indptr[a:b + 1] - lo, f"src_{layer.index}": pos}
    if IN_DEGREE in layer.graph_inputs:
        feeds[IN_DEGREE] = np.ascontiguousarray(shard.in_degree[nodes], np.int64)
    for name in halo.names:
        table = halo.tables[name]
        rows = np.empty((nodes.size, table.shape[1]), table.dtype)
        rows[mine] = table[shard.local_index(nodes[mine])]
        rows[~mine] = fetched[name][np.searchsorted(remote, nodes[~mine])]
        feeds[name] = rows
    return feeds


def infer_shard(ex: Exchanger, shard: GraphShard, model: bytes, num_layers: int,
                x: np.ndarray, chunk_size: int = 4096, threads: int = 1) -> np.ndarray:
    """The model's output rows (n_local, C) float32 for this rank's nodes (module docstring);
    ``x``: this rank's features as the model's ``x`` input takes them."""
    from qgnn.runtime.engine import onnx_proto
    from qgnn.runtime.engine.executor import make_executor
    from qgnn.runtime.engine.layerwise import LayerwiseRunner, cut
    from qgnn.runtime.engine.session import SessionConfig

    layers = cut(onnx_proto.load_model(model), num_layers)
    n = shard.num_local
    mine = torch.tensor([[n, math.ceil(n / chunk_size)]], dtype=torch.int64)
    counts = torch.cat(ex.all_gather_rows(mine, "stats"))
    if int(counts[:, 0].min()) == 0:  # every rank refuses, so none waits in a collective
        empty = torch.nonzero(counts[:, 0] == 0).flatten().tolist()
        raise ValueError(f"part(s) {empty} own no nodes; partition into fewer parts")
    num_chunks = int(counts[:, 1].max())
    tables: dict[str, np.ndarray] = {FEATURES: x}
    for layer in layers:
        executor = make_executor(layer.model, SessionConfig(threads=threads))
        carried = {name: tables[name] for name in (*layer.carried,
                                                   *([FEATURES] if FEATURES in
                                                     layer.graph_inputs else []))}
        halo = HaloRows(ex, shard, carried)
        produced: dict[str, np.ndarray] = {}
        for k in range(num_chunks):
            a, b = min(k * chunk_size, n), min((k + 1) * chunk_size, n)
            feeds = _chunk_feeds(shard, layer, a, b, halo)  # every rank fetches, in lockstep
            if b == a:  # this rank has fewer chunks than the busiest one
                continue
            out = LayerwiseRunner.checked(layer, executor.run(feeds, list(layer.outputs)), b - a)
            for name, value in out.items():
                if name not in produced:
                    produced[name] = np.empty((n, value.shape[1]), value.dtype)
                produced[name][a:b] = value
        tables = produced
    return tables[layers[-1].outputs[0]]


def run_rank(ctx: DistContext, run_dir: str, shard_dir: str, bundle_out: str,
             name: str = "partitioned", version: int = 1, chunk_size: int = 4096,
             threads: int = 1, replicate_items: bool = False) -> dict[str, Any]:
    """Load this rank's shard, infer its rows, write its part; rank 0 assembles the bundles
    (``replicate_items``: every item's row in each shard's bundle) and returns the summary
    (other ranks: their own figures)."""
    from qgnn.exporter.export import export_models, load_run_model
    from qgnn.exporter.link_shards import CATALOGUE, check_run
    from qgnn.exporter.sharded import assemble, write_part

    check_run(shard_dir, run_dir)  # on every rank, before any collective
    if replicate_items and not (Path(shard_dir) / CATALOGUE / "node_type.npy").is_file():
        raise ValueError(f"{shard_dir}: --replicate-items needs a bipartite link run (node "
                         f"types in the shards' catalogue)")
    shard = load_shard(shard_dir, ctx.rank)
    if shard.num_parts != ctx.world_size:
        raise ValueError(f"{shard_dir}: {shard.num_parts} parts for {ctx.world_size} ranks; "
                         f"run one rank per part")
    started = time.perf_counter()
    run = load_run_model(run_dir)
    if run.task != "link":
        raise ValueError(f"{run_dir}: a {run.task!r} run; --mode infer writes link models' "
                         f"sharded bundles (node models write theirs at the end of "
                         f"--mode partitioned, with --bundle-out)")
    main, _ = export_models(run, name=name)
    if shard.x is None:
        raise ValueError(f"{shard_dir}: part {shard.part} has no features")
    x = np.ascontiguousarray(shard.x, np.float32)
    if main.input_site is not None:
        x = main.input_site.quantize(x).astype(np.uint8)
    counter = ByteCounter()
    outputs = infer_shard(Exchanger(ctx, counter), shard, main.model.SerializeToString(),
                          main.num_layers, x, chunk_size, threads)
    seconds = time.perf_counter() - started
    write_part(Path(bundle_out) / ".parts", shard, outputs, task=run.task)
    summary = {"rank": ctx.rank, "world_size": ctx.world_size, "nodes": shard.num_local,
               "seconds": seconds, "halo_bytes": counter.parts_snapshot()}
    if ctx.world_size > 1:
        dist.barrier()
    if ctx.is_main:
        written = assemble(Path(bundle_out), run_dir, shard.num_parts, shard.num_nodes,
                           name=name, version=version,
                           link_shards=shard_dir, replicate_items=replicate_items)
        summary["bundles"] = [str(p) for p in written]
    if ctx.world_size > 1:
        dist.barrier()
    return summary


def main(argv: list[str] | None = None) -> None:
    """``torchrun --nproc-per-node W -m qgnn.training.distributed --mode infer --checkpoint RUN
    --shards DIR --bundle-out DIR``: one rank per part of a link run's shards; prints rank 0's
    summary as JSON."""
    parser = argparse.ArgumentParser(prog="python -m qgnn.training.distributed --mode infer",
                                     description=main.__doc__)
    parser.add_argument("--checkpoint", required=True,
                        help="the link run's folder (qgnn train --task link --out)")
    parser.add_argument("--shards", required=True,
                        help="folder of part-<r>.npz files (python -m qgnn.exporter.link_shards)")
    parser.add_argument("--bundle-out", required=True, help="where the sharded bundles go")
    parser.add_argument("--name", default="partitioned", help="the served model's name")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=4096, help="destinations per model call")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--replicate-items", action="store_true",
                        help="bipartite runs: every item's row in each shard's bundle, so one "
                             "shard's replica recommends to its users over every item")
    parser.add_argument("--backend", choices=("gloo",), default="gloo",
                        help="gloo only: the exchanges run on CPU tensors")
    args = parser.parse_args(argv)
    if args.chunk < 1 or args.threads < 1 or args.version < 1:
        parser.exit(2, f"{parser.prog}: error: --chunk, --threads and --version must be >= 1\n")
    ctx = init_from_env(args.backend)
    try:
        summary = run_rank(ctx, args.checkpoint, args.shards, args.bundle_out, args.name,
                           args.version, args.chunk, args.threads, args.replicate_items)
        if ctx.is_main:
            json.dump(summary, sys.stdout)
            sys.stdout.write("\n")
        finish_together()
    finally:
        dist.destroy_process_group()
