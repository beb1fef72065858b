"""Per-part graph shards: what one rank of partitioned training loads, and nothing more.

A shard file (``part-<p>.npz``, no pickle) holds the nodes part ``p`` owns (sorted global ids),
their in-edges as a CSR over those nodes whose ``indices`` are *global* source ids, their
features, labels and split masks, and three small global arrays every rank needs: the partition
book ``parts`` (N,) int32 (who owns each node), and the global in- and out-degrees (Degree-Quant
protects by global in-degree; GNS draws its cache by global out-degree). The whole graph is read
once, by :func:`write_shards` (the preprocessing step, as DistDGL's partitioning is); training
ranks read only their own file through :func:`load_shard`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qgnn.graph.container import Adjacency, Graph
from qgnn.graph.partition import Partition

SHARD_VERSION = 1


@dataclass(frozen=True, eq=False)
class GraphShard:
    """One part's nodes, in-edges and node data, plus the global partition book and degrees."""

    part: int
    num_parts: int
    owned: np.ndarray  # (n,) int64 sorted global ids
    indptr: np.ndarray  # (n + 1,) int64 over owned rows
    indices: np.ndarray  # (e,) int64 global source ids
    x: np.ndarray | None  # (n, F) float32
    y: np.ndarray | None  # (n,) int64
    masks: dict[str, np.ndarray]  # train/val/test (n,) bool
    parts: np.ndarray  # (N,) int32 partition book
    in_degree: np.ndarray  # (N,) int64 global
    out_degree: np.ndarray  # (N,) int64 global
    name: str = "graph"
    # out-edges of the owned nodes (CSR over owned rows, global destination ids), written for
    # link models' sharded bundles (exclude-seen drops what a user links to); None otherwise
    out_indptr: np.ndarray | None = None
    out_indices: np.ndarray | None = None

    @property
    def num_nodes(self) -> int:
        """Nodes of the whole graph."""
        return int(self.parts.size)

    @property
    def num_local(self) -> int:
        return int(self.owned.size)

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1 if self.y is not None and self.y.size else 0

    @property
    def csc(self) -> Adjacency:
        """Local in-edges (rows = owned positions); ``edge_ids`` are local edge positions."""
        return Adjacency(self.indptr, self.indices, np.arange(self.indices.size, dtype=np.int64))

    def local_index(self, ids: np.ndarray) -> np.ndarray:
        """Positions in ``owned`` of global ``ids`` (which must all be owned)."""
        pos = np.searchsorted(self.owned, ids)
        if ids.size and (pos.max() >= self.owned.size or (self.owned[pos] != ids).any()):
            bad = ids[(pos >= self.owned.size) | (self.owned[np.minimum(pos, self.owned.size - 1)]
                                                  != ids)][0]
            raise ValueError(f"GraphShard.local_index: node {int(bad)} is not owned by part "
                             f"{self.part} (owner {int(self.parts[bad])})")
        return pos

    def nbytes(self) -> dict[str, int]:
        """Bytes held, by what: the shard's own data and the global book/degree arrays."""
        own = self.owned.nbytes + self.indptr.nbytes + self.indices.nbytes
        feats = 0 if self.x is None else self.x.nbytes
        labels = (0 if self.y is None else self.y.nbytes) + sum(m.nbytes
                                                                 for m in self.masks.values())
        book = self.parts.nbytes + self.in_degree.nbytes + self.out_degree.nbytes
        return {"structure": own, "features": feats, "labels": labels, "book": book}


def _rows_of(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """The CSR of ``rows`` of a CSR (their lists in order), int64."""
    counts = indptr[rows + 1] - indptr[rows]
    out_ptr = np.zeros(rows.size + 1, np.int64)
    np.cumsum(counts, out=out_ptr[1:])
    starts = np.repeat(indptr[rows] - out_ptr[:-1], counts)
    return out_ptr, indices[starts + np.arange(int(out_ptr[-1]), dtype=np.int64)].astype(np.int64)


def shard_of(graph: Graph, partition: Partition, part: int, split: int = 0, *,
             out_edges: bool = False) -> GraphShard:
    """Part ``part`` of ``graph`` in memory (what :func:`write_shards` stores); ``out_edges``
    adds the owned nodes' out-edges."""
    if partition.num_nodes != graph.num_nodes:
        raise ValueError(f"shard_of: partition covers {partition.num_nodes} nodes, graph has "
                         f"{graph.num_nodes}")
    g = graph.with_split(split) if graph.num_splits > 1 else graph
    owned = partition.nodes(part)
    csc = g.csc
    indptr, indices = _rows_of(csc.indptr, csc.indices, owned)
    out_indptr = out_indices = None
    if out_edges:
        out_indptr, out_indices = _rows_of(g.csr.indptr, g.csr.indices, owned)
    masks = {}
    for name in ("train", "val", "test"):
        m = getattr(g, f"{name}_mask")
        if m is not None:
            masks[name] = np.asarray(m)[owned]
    return GraphShard(part=part, num_parts=partition.num_parts, owned=owned, indptr=indptr,
                      indices=indices.astype(np.int64),
                      x=None if g.x is None else np.ascontiguousarray(g.x[owned], np.float32),
                      y=None if g.y is None else np.asarray(g.y)[owned].astype(np.int64),
                      masks=masks, parts=partition.parts.astype(np.int32),
                      in_degree=g.in_degree().astype(np.int64),
                      out_degree=g.out_degree().astype(np.int64), name=g.name,
                      out_indptr=out_indptr, out_indices=out_indices)


def shard_path(directory: str | Path, part: int) -> Path:
    return Path(directory) / f"part-{part}.npz"


def write_shards(graph: Graph, partition: Partition, directory: str | Path,
                 split: int = 0, *, out_edges: bool = False) -> list[Path]:
    """One ``part-<p>.npz`` per part under ``directory`` (atomic per file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in range(partition.num_parts):
        s = shard_of(graph, partition, p, split, out_edges=out_edges)
        arrays = {"part": np.int64(p), "num_parts": np.int64(s.num_parts),
                  "version": np.int64(SHARD_VERSION), "name": np.array(s.name),
                  "fingerprint": np.array(partition.fingerprint),
                  "owned": s.owned, "indptr": s.indptr, "indices": s.indices,
                  "parts": s.parts, "in_degree": s.in_degree, "out_degree": s.out_degree}
        if s.x is not None:
            arrays["x"] = s.x
        if s.y is not None:
            arrays["y"] = s.y
        arrays.update({f"{k}_mask": v for k, v in s.masks.items()})
        if s.out_indptr is not None and s.out_indices is not None:
            arrays["out_indptr"], arrays["out_indices"] = s.out_indptr, s.out_indices
        path = shard_path(directory, p)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        tmp.replace(path)
        paths.append(path)
    return paths


def load_shard(directory: str | Path, part: int) -> GraphShard:
    """Part ``part``'s file, checked for the right part number and consistent shapes."""
    path = shard_path(directory, part)
    if not path.is_file():
        raise ValueError(f"graph shard {path}: missing; write the shards first "
                         f"(qgnn.graph.shards.write_shards)")
    with np.load(path, allow_pickle=False) as z:
        if int(z["version"]) > SHARD_VERSION:
            raise ValueError(f"graph shard {path}: version {int(z['version'])} is newer than "
                             f"this qgnn reads ({SHARD_VERSION})")
        if int(z["part"]) != part:
            raise ValueError(f"graph shard {path}: holds part {int(z['part'])}, not {part}")
        shard = GraphShard(
            part=part, num_parts=int(z["num_parts"]), owned=z["owned"], indptr=z["indptr"],
            indices=z["indices"], x=z["x"] if "x" in z.files else None,
            y=z["y"] if "y" in z.files else None,
            masks={k: z[f"{k}_mask"] for k in ("train", "val", "test") if f"{k}_mask" in z.files},
            parts=z["parts"], in_degree=z["in_degree"], out_degree=z["out_degree"],
            name=str(z["name"]),
            out_indptr=z["out_indptr"] if "out_indptr" in z.files else None,
            out_indices=z["out_indices"] if "out_indices" in z.files else None)
    n = shard.num_local
    if shard.indptr.shape != (n + 1,) or int(shard.indptr[-1]) != shard.indices.size:
        raise ValueError(f"graph shard {path}: indptr does not match {n} owned nodes")
    if shard.out_indptr is not None and (
            shard.out_indptr.shape != (n + 1,) or shard.out_indices is None
            or int(shard.out_indptr[-1]) != shard.out_indices.size):
        raise ValueError(f"graph shard {path}: out_indptr does not match {n} owned nodes")
    if shard.x is not None and shard.x.shape[0] != n:
        raise ValueError(f"graph shard {path}: features have {shard.x.shape[0]} rows, "
                         f"{n} nodes owned")
    if not np.array_equal(np.flatnonzero(shard.parts == part), shard.owned):
        raise ValueError(f"graph shard {path}: owned nodes disagree with the partition book")
    return shard


def main(argv: list[str] | None = None) -> None:
    """``python -m qgnn.graph.shards --dataset D --parts K [--method M] [--out DIR]``: partition
    a dataset (reusing the stored partition when there is one) and write one shard file per
    part; prints the partition report and the shard folder as JSON."""
    import argparse
    import json

    from qgnn.graph.datasets import load_dataset
    from qgnn.graph.partition import METHODS, load_or_partition

    parser = argparse.ArgumentParser(prog="python -m qgnn.graph.shards", description=main.__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--parts", type=int, required=True)
    parser.add_argument("--method", choices=METHODS, default="auto")
    parser.add_argument("--split", type=int, default=0, help="which fixed split's masks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None,
                        help="shard folder (default: <partition file without .npz>/)")
    args = parser.parse_args(argv)
    try:
        graph = load_dataset(args.dataset)
        if not isinstance(graph, Graph):
            parser.error("--dataset: partitioned training takes a node graph, got link data")
        part, path = load_or_partition(graph, args.dataset, args.parts, args.method,
                                       seed=args.seed)
        out = Path(args.out) if args.out else path.with_suffix("")
        write_shards(graph, part, out, args.split)
    except ValueError as exc:
        parser.exit(2, f"python -m qgnn.graph.shards: error: {exc}\n")
    print(json.dumps({**part.report(graph), "partition_file": str(path), "shards": str(out)}))


if __name__ == "__main__":
    main()
