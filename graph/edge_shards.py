"""Edge shard files: what one rank of edge-sharded training reads, and nothing more.

Edge-sharded training (``--mode edge-sharded``, docs/distributed.md) gives every rank all node
data and a contiguous 1/W share of the destination-sorted edge list. Loading the dataset on
every rank and cutting it there would hold the whole edge list on each rank at start-up, so
the memory claim would hold only after the cut. This module writes, once, as a preprocessing
step that reads the whole graph:

- ``nodes.npz``: the node data every rank replicates (features, labels, split masks) and the
  global in-degrees (GCN normalisation and Degree-Quant's protection read them);
- ``edges-<r>.npz``: rank ``r``'s edges ``[lo, hi)`` of the destination-sorted list (source
  and destination ids, edge weights) and its self-loop range, exactly the share
  :func:`qgnn.training.distributed.edge_sharded.shard_block` cuts from the whole graph.

A rank reads ``nodes.npz`` and its own ``edges-<r>.npz`` only (:func:`load_edge_shard`, which
reports the bytes it read). Files are ``np.savez`` without object arrays, read with
``allow_pickle=False``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qgnn.graph.container import Graph

EDGE_SHARD_VERSION = 1
NODE_FIELDS = ("x", "y", "train_mask", "val_mask", "test_mask", "node_type")


def _bounds(total: int, rank: int, world: int) -> tuple[int, int]:
    """The same contiguous split as ``edge_sharded.shard_bounds`` (sizes differ by <= 1)."""
    return total * rank // world, total * (rank + 1) // world


@dataclass(frozen=True, eq=False)
class EdgeShard:
    """One rank's view: all node data, global in-degrees, its edges and its self-loop range."""

    rank: int
    world: int
    graph: Graph  # every node's data, only this rank's edges
    src: np.ndarray  # (e,) int64, destination-sorted order of the whole graph
    dst: np.ndarray  # (e,) int64
    edge_weight: np.ndarray | None  # (e,) float32
    in_degree: np.ndarray  # (N,) int64 global
    loop_range: tuple[int, int]  # destinations whose self-loop this rank adds
    total_edges: int
    bytes_read: int  # bytes of the files this rank opened
    files_read: tuple[str, ...]


def nodes_path(directory: str | Path) -> Path:
    return Path(directory) / "nodes.npz"


def edges_path(directory: str | Path, rank: int) -> Path:
    return Path(directory) / f"edges-{rank}.npz"


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)


def write_edge_shards(graph: Graph, world: int, directory: str | Path) -> list[Path]:
    """``nodes.npz`` and ``edges-<r>.npz`` for ``r < world`` under ``directory``."""
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"write_edge_shards.world: expected an int >= 1, got {world!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n = graph.num_nodes
    csc = graph.csc
    in_degree = np.diff(csc.indptr).astype(np.int64)
    total = int(csc.indices.size)
    run_id = secrets.token_hex(8)  # ties the files of one write together
    ident = {"version": np.int64(EDGE_SHARD_VERSION), "world": np.int64(world),
             "num_nodes": np.int64(n), "total_edges": np.int64(total),
             "run_id": np.array(run_id)}
    nodes = {**ident, "in_degree": in_degree, "name": np.array(graph.name),
             "meta": np.array(json.dumps(graph.meta, sort_keys=True, default=str))}
    for f in NODE_FIELDS:
        value = getattr(graph, f)
        if value is not None:
            nodes[f] = np.asarray(value)
    paths = [nodes_path(directory)]
    _save(paths[0], nodes)
    weight = None if graph.edge_weight is None else graph.edge_weight[csc.edge_ids]
    for r in range(world):
        lo, hi = _bounds(total, r, world)
        first, last = _bounds(n, r, world)
        # destinations of edges lo..hi-1: the rows whose CSC range covers them
        dst = (np.searchsorted(csc.indptr, np.arange(lo, hi, dtype=np.int64), side="right")
               - 1).astype(np.int64)
        arrays = {**ident, "rank": np.int64(r), "lo": np.int64(lo), "hi": np.int64(hi),
                  "loop_first": np.int64(first), "loop_last": np.int64(last),
                  "src": np.ascontiguousarray(csc.indices[lo:hi], np.int64), "dst": dst}
        if weight is not None:
            arrays["edge_weight"] = np.ascontiguousarray(weight[lo:hi], np.float32)
        path = edges_path(directory, r)
        _save(path, arrays)
        paths.append(path)
    return paths


def _check(path: Path, z: np.lib.npyio.NpzFile, world: int) -> None:
    if int(z["version"]) > EDGE_SHARD_VERSION:
        raise ValueError(f"edge shard {path}: version {int(z['version'])} is newer than this "
                         f"qgnn reads ({EDGE_SHARD_VERSION})")
    if int(z["world"]) != world:
        raise ValueError(f"edge shard {path}: written for {int(z['world'])} ranks, not {world}; "
                         f"write the edge shards for this world size")


def load_edge_shard(directory: str | Path, rank: int, world: int) -> EdgeShard:
    """Rank ``rank``'s view, from ``nodes.npz`` and ``edges-<rank>.npz`` only."""
    npath, epath = nodes_path(directory), edges_path(directory, rank)
    for path in (npath, epath):
        if not path.is_file():
            raise ValueError(f"edge shard {path}: missing; write the edge shards first "
                             f"(python -m qgnn.graph.edge_shards)")
    with np.load(npath, allow_pickle=False) as z:
        _check(npath, z, world)
        run_id, n = str(z["run_id"]), int(z["num_nodes"])
        node_data = {f: z[f] for f in NODE_FIELDS if f in z.files}
        in_degree, name = z["in_degree"], str(z["name"])
        meta = json.loads(str(z["meta"]))
    with np.load(epath, allow_pickle=False) as z:
        _check(epath, z, world)
        if int(z["rank"]) != rank:
            raise ValueError(f"edge shard {epath}: holds rank {int(z['rank'])}'s edges, not "
                             f"{rank}'s")
        if str(z["run_id"]) != run_id:
            raise ValueError(f"edge shard {epath}: written by another run than {npath}; "
                             f"rewrite the edge shards")
        src, dst = z["src"], z["dst"]
        weight = z["edge_weight"] if "edge_weight" in z.files else None
        loops = (int(z["loop_first"]), int(z["loop_last"]))
        total = int(z["total_edges"])
    if src.shape != dst.shape or (src.size and (src.max() >= n or dst.max() >= n)):
        raise ValueError(f"edge shard {epath}: edge ids out of range for {n} nodes")
    if in_degree.shape != (n,):
        raise ValueError(f"edge shard {npath}: in-degrees have shape {in_degree.shape}, "
                         f"expected ({n},)")
    graph = Graph.from_edges(src, dst, n, edge_weight=weight, name=name, meta=meta,
                             **node_data)
    return EdgeShard(rank=rank, world=world, graph=graph, src=src, dst=dst, edge_weight=weight,
                     in_degree=in_degree, loop_range=loops, total_edges=total,
                     bytes_read=npath.stat().st_size + epath.stat().st_size,
                     files_read=(str(npath), str(epath)))


def main(argv: list[str] | None = None) -> None:
    """``python -m qgnn.graph.edge_shards --dataset D --world W --out DIR``: write the edge
    shard files of edge-sharded training (reads the whole graph once); prints them as JSON."""
    import argparse

    from qgnn.graph.datasets import load_node_graph

    parser = argparse.ArgumentParser(prog="python -m qgnn.graph.edge_shards",
                                     description=main.__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--world", type=int, required=True, help="ranks that will train")
    parser.add_argument("--out", required=True, help="folder for nodes.npz and edges-<r>.npz")
    args = parser.parse_args(argv)
    try:
        graph = load_node_graph(args.dataset, "edge-sharded training")
        paths = write_edge_shards(graph, args.world, args.out)
    except ValueError as exc:
        parser.exit(2, f"python -m qgnn.graph.edge_shards: error: {exc}\n")
    print(json.dumps({"dataset": args.dataset, "world": args.world,
                      "files": [{"path": str(p), "bytes": p.stat().st_size} for p in paths]}))


if __name__ == "__main__":
    main()
