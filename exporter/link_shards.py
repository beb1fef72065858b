"""Graph shards of a link run: what each rank of distributed inference loads for a link model.

A node model's shards come from its dataset (``python -m qgnn.graph.shards``). A link model
serves the message-passing graph of its run's edge split (training's split seed, LightGCN's
learned embedding table as features, ratings stripped): :func:`~qgnn.exporter.export.serving_data`,
the graph ``qgnn export`` writes into an unsharded bundle. This step, which reads that whole
graph once as the node shards' step does, partitions it and writes:

- ``part-<p>.npz`` per part (:mod:`qgnn.graph.shards`), with the features as the model reads
  them before input quantisation, and the owned nodes' out-edges (exclude-seen);
- ``catalogue/*.npy``: the recommender arrays every bundle carries whole (node types, external
  ids, serving-only seen items; docs/bundle-format.md), as ``qgnn export`` writes them;
- ``link.json``: the run it was made for (its path and the SHA-256 of its config and weights,
  which ``--mode infer`` checks), the partition report, ``node_types``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.exporter.export import load_run_model, serving_data
from qgnn.exporter.recsys import EDGE_WEIGHT, node_types_manifest, recommender_files
from qgnn.graph.links import LinkData
from qgnn.graph.partition import METHODS, Method, partition_graph
from qgnn.graph.shards import write_shards

CATALOGUE = "catalogue"
LINK_INFO = "link.json"


def run_fingerprint(run_dir: str | Path) -> str:
    """SHA-256 of a run's config and weights: the shards' features (a learned table's rows,
    or the features as this run transforms them) and graph split belong to this run only."""
    from qgnn.training.checkpoint import CONFIG, WEIGHTS

    digest = hashlib.sha256()
    for name in (CONFIG, WEIGHTS):
        with open(Path(run_dir) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_run(shard_dir: str | Path, run_dir: str | Path) -> None:
    """ValueError unless the shards under ``shard_dir`` were written for ``run_dir``."""
    info = Path(shard_dir) / LINK_INFO
    if not info.is_file():
        raise ValueError(f"{shard_dir}: no {LINK_INFO}; write link shards with python -m "
                         f"qgnn.exporter.link_shards")
    recorded = json.loads(info.read_text()).get("run_fingerprint")
    actual = run_fingerprint(run_dir)
    if recorded != actual:
        raise ValueError(f"{shard_dir} holds shards of run {recorded}, not of {run_dir} "
                         f"({actual}); write its shards with python -m qgnn.exporter.link_shards")


def write_link_shards(run_dir: str | Path, out: str | Path, num_parts: int,
                      method: Method = "auto", *, seed: int = 0,
                      data: LinkData | None = None, dataset: str | None = None
                      ) -> dict[str, Any]:
    """Partition the link run in ``run_dir``'s serving graph into ``num_parts`` shards under
    ``out`` (module docstring); ``data``/``dataset`` as for ``qgnn export``. Returns the
    partition report."""
    run = load_run_model(run_dir)
    if run.task != "link":
        raise ValueError(f"{run_dir}: a {run.task!r} run; link shards are for link runs "
                         f"(node runs: python -m qgnn.graph.shards)")
    served = serving_data(run, data, dataset)
    graph = served.graph.replace(x=served.features)
    partition = partition_graph(graph, num_parts, method, seed=seed)
    out = Path(out)
    write_shards(graph, partition, out, out_edges=True)
    catalogue = out / CATALOGUE
    catalogue.mkdir(exist_ok=True)
    for old in catalogue.glob("*.npy"):
        old.unlink()
    if served.link is not None:
        files = recommender_files(served.link, served.weighted_graph or served.graph)
        for rel, arr in files.items():
            if rel != EDGE_WEIGHT:  # in the unsharded graph's CSC order: no shard's order
                np.save(catalogue / Path(rel).name, arr, allow_pickle=False)
    report = {**partition.report(graph), "run": str(Path(run_dir).resolve()),
              "run_fingerprint": run_fingerprint(run_dir),
              "node_types": node_types_manifest(served.link), "shards": str(out)}
    (out / LINK_INFO).write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    """``python -m qgnn.exporter.link_shards --checkpoint RUN --parts K --out DIR``: partition
    a link run's serving graph and write one shard file per part (then ``torchrun ... -m
    qgnn.training.distributed --mode infer``); prints the partition report as JSON."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m qgnn.exporter.link_shards",
                                     description=main.__doc__)
    parser.add_argument("--checkpoint", required=True,
                        help="the link run's folder (qgnn train --task link --out)")
    parser.add_argument("--parts", type=int, required=True)
    parser.add_argument("--out", required=True, help="shard folder")
    parser.add_argument("--method", choices=METHODS, default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default=None,
                        help="the run's dataset when it moved (as qgnn export --dataset)")
    args = parser.parse_args(argv)
    try:
        report = write_link_shards(args.checkpoint, args.out, args.parts, args.method,
                                   seed=args.seed, dataset=args.dataset)
    except (ValueError, OSError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
