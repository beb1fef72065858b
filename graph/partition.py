"""Node partitions of a graph for partitioned (multi-rank) training, and their files.

Three methods, all returning a :class:`Partition` (``parts[v]`` = the part that owns node ``v``):

- ``"metis"``: multilevel k-way METIS (Karypis & Kumar, SIAM J. Sci. Comput. 1998) through the
  optional ``pymetis`` package (``pip install qgnn[partition]``). Best edge-cut; whole graph in
  memory on one host.
- ``"ldg"``: Linear Deterministic Greedy streaming partitioning (Stanton & Kliot, KDD 2012).
  Nodes arrive one at a time, in random order by default (the paper found BFS streams cut
  fewer edges; on qgnn's power-law generator they cut more, 0.51 against 0.40 of the edges for
  4 parts, because the first hubs reached spread over the empty parts), and go to the part
  ``i`` maximising
  ``|N(v) ∩ P_i| · (1 - |P_i| / C)``, ``C = ceil(N / k · (1 + slack))`` the hard capacity;
  ties go to the smaller part. One pass, memory ``O(N)`` beyond the adjacency; a Python loop
  over nodes (about 10 µs a node), the price of the exact greedy rule.
- ``"random"``: a balanced random assignment; the baseline the other two are measured against.

``"auto"`` is METIS when pymetis imports and LDG otherwise. Neighbourhoods are taken as
undirected (in- and out-edges), self-loops ignored.

Files: :func:`save_partition` writes an ``.npz`` (no pickle: every entry a plain numeric or
fixed-width unicode array) holding the parts and a fingerprint of the graph, so
:func:`load_partition` refuses a partition of another graph. :func:`partition_path` puts it next
to the dataset (docs/datasets.md).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from qgnn.graph.container import Graph

Method = Literal["auto", "metis", "ldg", "random"]
METHODS: tuple[Method, ...] = ("auto", "metis", "ldg", "random")
DEFAULT_SLACK = 0.05  # LDG / random capacity: parts at most 5 % above N / k
FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class Partition:
    """``parts[v]`` in ``[0, num_parts)`` for every node; ``method`` names what produced it."""

    parts: np.ndarray  # (N,) int32
    num_parts: int
    method: str
    fingerprint: str = ""

    def __post_init__(self) -> None:
        parts = np.asarray(self.parts)
        if parts.ndim != 1 or not np.issubdtype(parts.dtype, np.integer):
            raise ValueError(f"Partition.parts: expected a 1-D integer array, got "
                             f"{parts.dtype} {parts.shape}")
        k = self.num_parts
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"Partition.num_parts: expected an int >= 1, got {k!r}")
        if parts.size and (int(parts.min()) < 0 or int(parts.max()) >= k):
            bad = int(parts.min()) if int(parts.min()) < 0 else int(parts.max())
            raise ValueError(f"Partition.parts: part {bad} out of range [0, {k})")
        object.__setattr__(self, "parts", parts.astype(np.int32, copy=False))

    @property
    def num_nodes(self) -> int:
        return int(self.parts.size)

    def sizes(self) -> np.ndarray:
        return np.bincount(self.parts, minlength=self.num_parts)

    def nodes(self, part: int) -> np.ndarray:
        """Sorted global ids owned by ``part``."""
        if not 0 <= part < self.num_parts:
            raise ValueError(f"Partition.nodes: part {part} not in [0, {self.num_parts})")
        return np.flatnonzero(self.parts == part).astype(np.int64)

    def balance(self) -> float:
        """Largest part over the mean part size (1.0 = perfectly balanced)."""
        return float(self.sizes().max() / (self.num_nodes / self.num_parts)) \
            if self.num_nodes else 1.0

    def edge_cut(self, graph: Graph) -> float:
        """Fraction of the graph's (directed) edges whose endpoints lie in different parts."""
        if graph.num_edges == 0:
            return 0.0
        src, dst = graph.edge_index()
        return float(np.count_nonzero(self.parts[src] != self.parts[dst]) / graph.num_edges)

    def report(self, graph: Graph) -> dict[str, Any]:
        return {"method": self.method, "num_parts": self.num_parts,
                "sizes": self.sizes().tolist(), "balance": self.balance(),
                "edge_cut": self.edge_cut(graph)}


def graph_fingerprint(graph: Graph) -> str:
    """SHA-256 over the node count and the CSR arrays: a partition file names its graph."""
    h = hashlib.sha256()
    h.update(np.int64(graph.num_nodes).tobytes())
    h.update(np.ascontiguousarray(graph.indptr, np.int64).tobytes())
    h.update(np.ascontiguousarray(graph.indices, np.int64).tobytes())
    return h.hexdigest()


def undirected_adjacency(graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, indices)`` of the symmetrised graph, self-loops and duplicates removed."""
    src, dst = graph.edge_index()
    keep = src != dst
    a = np.concatenate([src[keep], dst[keep]])
    b = np.concatenate([dst[keep], src[keep]])
    n = graph.num_nodes
    key = np.unique(a * n + b) if a.size else np.zeros(0, np.int64)
    rows, cols = key // max(n, 1), key % max(n, 1)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return indptr, cols.astype(np.int64)


def bfs_order(indptr: np.ndarray, indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every node once, breadth-first from a random start, each new component from a random
    unvisited node (frontier-at-a-time, vectorised)."""
    n = indptr.size - 1
    seen = np.zeros(n, np.bool_)
    order: list[np.ndarray] = []
    starts = rng.permutation(n)
    cursor = 0
    while cursor < n:
        while cursor < n and seen[starts[cursor]]:
            cursor += 1
        if cursor == n:
            break
        frontier = starts[cursor:cursor + 1]
        seen[frontier] = True
        while frontier.size:
            order.append(frontier)
            counts = indptr[frontier + 1] - indptr[frontier]
            offsets = np.repeat(indptr[frontier] - np.cumsum(counts) + counts, counts)
            nbr = indices[offsets + np.arange(int(counts.sum()))]
            nbr = nbr[~seen[nbr]]
            frontier = np.unique(nbr)
            seen[frontier] = True
    return np.concatenate(order) if order else np.zeros(0, np.int64)


def _capacity(n: int, k: int, slack: float) -> int:
    return max(math.ceil(n / k * (1.0 + slack)), math.ceil(n / k))


def ldg_partition(graph: Graph, num_parts: int, *, slack: float = DEFAULT_SLACK,
                  order: Literal["bfs", "random"] | np.ndarray = "random",
                  seed: int = 0) -> Partition:
    """Linear Deterministic Greedy (module docstring); every part holds at most
    ``ceil(N / k · (1 + slack))`` nodes. ``order`` may also be the stream itself (a
    permutation of the node ids)."""
    k = _check_parts(num_parts, graph.num_nodes)
    if not 0.0 <= slack <= 1.0:
        raise ValueError(f"ldg_partition.slack: expected a fraction in [0, 1], got {slack!r}")
    n = graph.num_nodes
    indptr, indices = undirected_adjacency(graph)
    rng = np.random.default_rng(seed)
    if isinstance(order, np.ndarray):
        stream = order.astype(np.int64)
        if not np.array_equal(np.sort(stream), np.arange(n)):
            raise ValueError("ldg_partition.order: an explicit stream must be a permutation "
                             "of the node ids")
    elif order == "bfs":
        stream = bfs_order(indptr, indices, rng)
    elif order == "random":
        stream = rng.permutation(n)
    else:
        raise ValueError(f"ldg_partition.order: expected 'bfs', 'random' or a permutation, "
                         f"got {order!r}")
    cap = _capacity(n, k, slack)
    parts = np.full(n, -1, np.int64)
    sizes = np.zeros(k, np.float64)
    # local bindings: the loop runs once per node
    bincount, argmax = np.bincount, np.argmax
    for v in stream.tolist():
        nbr_parts = parts[indices[indptr[v]:indptr[v + 1]]]
        placed = nbr_parts[nbr_parts >= 0]
        score = bincount(placed, minlength=k) * (1.0 - sizes / cap)
        score[sizes >= cap] = -np.inf
        # ties (and nodes without placed neighbours) go to the smallest open part
        best = argmax(score - sizes * 1e-9 / cap)
        parts[v] = best
        sizes[best] += 1
    return Partition(parts, k, "ldg", graph_fingerprint(graph))


def random_partition(graph: Graph, num_parts: int, *, seed: int = 0) -> Partition:
    """Balanced random parts (sizes differ by at most one)."""
    k = _check_parts(num_parts, graph.num_nodes)
    parts = np.empty(graph.num_nodes, np.int64)
    parts[np.random.default_rng(seed).permutation(graph.num_nodes)] = \
        np.arange(graph.num_nodes) % k
    return Partition(parts, k, "random", graph_fingerprint(graph))


def metis_available() -> bool:
    try:
        import pymetis  # noqa: F401
    except ImportError:
        return False
    return True


def metis_partition(graph: Graph, num_parts: int, *, seed: int = 0) -> Partition:
    """k-way METIS through pymetis (raises with the install hint when it is absent)."""
    k = _check_parts(num_parts, graph.num_nodes)
    try:
        import pymetis
    except ImportError:
        raise ValueError("partition method 'metis' needs the pymetis package "
                         "(pip install 'qgnn[partition]'); use method='ldg'") from None
    if k == 1:
        return Partition(np.zeros(graph.num_nodes, np.int64), 1, "metis",
                         graph_fingerprint(graph))
    indptr, indices = undirected_adjacency(graph)
    options = pymetis.Options(seed=seed)
    if hasattr(pymetis, "CSRAdjacency"):  # 2025.2 and later
        _, membership = pymetis.part_graph(k, pymetis.CSRAdjacency(indptr, indices),
                                           options=options)
    else:
        _, membership = pymetis.part_graph(k, xadj=indptr, adjncy=indices, options=options)
    return Partition(np.asarray(membership, np.int64), k, "metis", graph_fingerprint(graph))


def partition_graph(graph: Graph, num_parts: int, method: Method = "auto", *,
                    seed: int = 0) -> Partition:
    """``graph`` cut into ``num_parts`` parts by ``method`` (module docstring)."""
    if method not in METHODS:
        raise ValueError(f"partition method: expected one of {METHODS}, got {method!r}")
    if method == "auto":
        method = "metis" if metis_available() else "ldg"
    if method == "metis":
        return metis_partition(graph, num_parts, seed=seed)
    if method == "ldg":
        return ldg_partition(graph, num_parts, seed=seed)
    return random_partition(graph, num_parts, seed=seed)


def _check_parts(num_parts: Any, num_nodes: int) -> int:
    if isinstance(num_parts, bool) or not isinstance(num_parts, int | np.integer) \
            or num_parts < 1:
        raise ValueError(f"num_parts: expected an int >= 1, got {num_parts!r}")
    if num_parts > max(num_nodes, 1):
        raise ValueError(f"num_parts: {num_parts} parts for {num_nodes} nodes")
    return int(num_parts)


# ---------------------------------------------------------------- files


def partition_path(dataset: str, num_parts: int, method: str, *,
                   root: str | Path | None = None) -> Path:
    """Where the partition of ``dataset`` lives: ``<data dir>/<name>/partitions/`` for a
    built-in name, ``<file>.partitions/`` (or ``<folder>/partitions/``) beside a path, and
    ``<data dir>/synthetic/<spec digest>/partitions/`` for a ``synthetic:`` spec."""
    from qgnn.graph.datasets import BUILTIN, data_dir

    name = f"{method}-{num_parts}.npz"
    key = dataset.strip().lower()
    if key in BUILTIN:
        return data_dir(root) / key / "partitions" / name
    if dataset.startswith(("synthetic:", "interactions:")):
        digest = hashlib.sha256(dataset.encode()).hexdigest()[:16]
        return data_dir(root) / "synthetic" / digest / "partitions" / name
    path = Path(dataset).expanduser()
    if path.is_dir():
        return path / "partitions" / name
    return path.with_name(path.name + ".partitions") / name


def save_partition(path: str | Path, partition: Partition) -> Path:
    """Write ``partition`` as an ``.npz`` without pickled entries (atomic rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, parts=partition.parts.astype(np.int32),
                 num_parts=np.int64(partition.num_parts),
                 method=np.array(partition.method), fingerprint=np.array(partition.fingerprint),
                 format_version=np.int64(FORMAT_VERSION))
    tmp.replace(path)
    return path


def load_partition(path: str | Path, graph: Graph | None = None) -> Partition:
    """Read a file :func:`save_partition` wrote; with ``graph``, refuse a partition of
    another graph."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["format_version"])
            if version > FORMAT_VERSION:
                raise ValueError(f"partition file {path}: format version {version} is newer "
                                 f"than this qgnn reads ({FORMAT_VERSION})")
            part = Partition(z["parts"], int(z["num_parts"]), str(z["method"]),
                             str(z["fingerprint"]))
    except (KeyError, OSError) as exc:
        raise ValueError(f"partition file {path}: unreadable or incomplete ({exc})") from None
    if graph is not None:
        if part.num_nodes != graph.num_nodes:
            raise ValueError(f"partition file {path}: covers {part.num_nodes} nodes, the graph "
                             f"has {graph.num_nodes}")
        if part.fingerprint and part.fingerprint != graph_fingerprint(graph):
            raise ValueError(f"partition file {path}: made for another graph (fingerprint "
                             f"{part.fingerprint[:12]} != {graph_fingerprint(graph)[:12]}); "
                             f"delete it to repartition")
    return part


def load_or_partition(graph: Graph, dataset: str, num_parts: int, method: Method = "auto", *,
                      path: str | Path | None = None, seed: int = 0) -> tuple[Partition, Path]:
    """The stored partition when its file exists (checked against ``graph``), else a new one,
    saved next to the dataset."""
    if method == "auto":
        method = "metis" if metis_available() else "ldg"
    target = Path(path) if path is not None else partition_path(dataset, num_parts, method)
    if target.is_file():
        part = load_partition(target, graph)
        if part.num_parts != num_parts:
            raise ValueError(f"partition file {target}: has {part.num_parts} parts, "
                             f"{num_parts} wanted")
        return part, target
    part = partition_graph(graph, num_parts, method, seed=seed)
    return part, save_partition(target, part)


def main(argv: list[str] | None = None) -> None:
    """``python -m qgnn.graph.partition --dataset D --parts K [--method M] [--out PATH]``:
    partition a dataset, store the file next to it, print the report as JSON."""
    import argparse
    import json

    from qgnn.graph.datasets import load_node_graph

    parser = argparse.ArgumentParser(prog="python -m qgnn.graph.partition",
                                     description=main.__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--parts", type=int, required=True)
    parser.add_argument("--method", choices=METHODS, default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="file (default: next to the dataset)")
    args = parser.parse_args(argv)
    try:
        graph = load_node_graph(args.dataset, "partitioning")
        part = partition_graph(graph, args.parts, args.method, seed=args.seed)
        out = Path(args.out) if args.out else partition_path(args.dataset, args.parts,
                                                             part.method)
        save_partition(out, part)
    except ValueError as exc:
        parser.exit(2, f"python -m qgnn.graph.partition: error: {exc}\n")
    print(json.dumps({**part.report(graph), "file": str(out)}))


if __name__ == "__main__":
    main()
