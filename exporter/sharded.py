"""Writing sharded bundles: each rank's partition outputs, then the bundles ``qgnn serve`` loads.

Two steps, so no process ever holds more than one partition's outputs:

1. :func:`write_part` (every rank, after distributed layer-wise inference): its nodes' outputs
   as per-row INT8 (``qgnn.runtime.engine.embeddings.quantize_rows``, the same code the
   embedding tables use) plus its node ids and in-edges, as plain ``.npy`` files under
   ``<out>/.parts/part-<p>/``.
2. :func:`assemble` (one process): the INT8 ONNX model of the run (emitted from the checkpoint,
   no graph needed) and the parts become bundles (``model.format: "qgnn-sharded"``,
   docs/partitioned.md): ``<out>/shard-<p>/<name>/<version>/`` holding shard ``p`` and
   ``<out>/all/<name>/<version>/`` holding every shard. Each folder under ``<out>`` is a model
   repository for ``qgnn serve``. Files are streamed from the parts, never loaded whole.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.exporter.export import (
    _metrics,
    _quantisation,
    _versions,
    check_model,
    export_models,
    load_run_model,
    tensor_specs,
)
from qgnn.graph.shards import GraphShard
from qgnn.runtime.bundle.layout import MODEL_FILE
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.bundle.writer import write_bundle
from qgnn.runtime.engine.embeddings import quantize_rows
from qgnn.runtime.engine.sharded import OWNER, SHARD_FILES, SHARDED_FORMAT, shard_file

PARTS = ".parts"


def _part_dir(staging: Path, part: int) -> Path:
    return staging / f"part-{part}"


def write_part(staging: str | Path, shard: GraphShard, outputs: np.ndarray) -> Path:
    """This rank's outputs ``(n_local, C)`` float32 (its nodes' logits) as INT8 rows, with its
    node ids and in-edges; part 0 also stores the partition book."""
    if outputs.shape[0] != shard.num_local:
        raise ValueError(f"write_part: {outputs.shape[0]} output rows for {shard.num_local} "
                         f"nodes of part {shard.part}")
    folder = _part_dir(Path(staging), shard.part)
    (folder / "graph").mkdir(parents=True, exist_ok=True)
    q, scale = quantize_rows(outputs)
    arrays = {"nodes": shard.owned, "predictions": q, "scales": scale,
              "graph/indptr": shard.indptr, "graph/indices": shard.indices}
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
    if shard.part == 0:
        np.save(Path(staging) / "owner.npy", shard.parts.astype(np.int32), allow_pickle=False)
    return folder


def assemble(out: str | Path, run_dir: str | Path, num_parts: int, num_nodes: int, *,
             name: str = "partitioned", version: int = 1,
             metrics: dict[str, Any] | None = None, keep_parts: bool = False) -> list[Path]:
    """Bundles from the parts under ``out/.parts`` and the run in ``run_dir`` (module
    docstring); returns the bundle directories, the all-shard one first."""
    out = Path(out)
    staging = out / PARTS
    missing = [p for p in range(num_parts) if not (_part_dir(staging, p) / "nodes.npy").is_file()]
    if missing or not (staging / "owner.npy").is_file():
        raise ValueError(f"assemble: parts {missing or ['owner']} missing under {staging}")
    run = load_run_model(run_dir)
    if run.task != "node":
        raise ValueError(f"assemble: sharded bundles serve node predictions; the run is "
                         f"{run.task!r}")
    main, _ = export_models(run, name=name)
    check_model(main.model)
    model_bytes = main.model.SerializeToString()
    num_edges = sum(int(np.load(_part_dir(staging, p) / "graph/indices.npy", mmap_mode="r",
                                allow_pickle=False).shape[0]) for p in range(num_parts))
    cfg = run.gnn.cfg

    def manifest(held: list[int]) -> dict[str, Any]:
        graph = main.model.graph
        return {
            "model": {"name": name, "version": version, "task": "node", "type": cfg.model,
                      "file": MODEL_FILE, "format": SHARDED_FORMAT,
                      "precision": "int8" if run.quantised else "fp32",
                      "inputs": tensor_specs(graph.input), "outputs": tensor_specs(graph.output),
                      "num_layers": main.num_layers, "config": cfg.to_dict()},
            "quantisation": _quantisation(run),
            "metrics": _metrics(metrics or run.checkpoint.metrics),
            "graph": {"num_nodes": num_nodes, "num_edges": num_edges,
                      "num_features": cfg.in_dim, "num_classes": cfg.out_dim,
                      "adjacency": "in", "dataset": run.checkpoint.dataset},
            "sharding": {"num_shards": num_parts, "held": held,
                         "predictions": "int8 per-row symmetric logits (z = scale * q)"},
            "versions": _versions()}

    def files(held: list[int]) -> dict[str, Any]:
        entries: dict[str, Any] = {MODEL_FILE: model_bytes, OWNER: staging / "owner.npy"}
        for p in held:
            for f in SHARD_FILES:
                entries[shard_file(p, f)] = _part_dir(staging, p) / f"{f}.npy"
        return entries

    written = []
    layouts = [("all", list(range(num_parts)))] + [(f"shard-{p}", [p])
                                                   for p in range(num_parts)]
    for folder, held in layouts:
        target = out / folder / name / str(version)
        write_bundle(target, manifest(held), files(held), overwrite=target.exists())
        with load_bundle(target, verify=True):
            pass
        written.append(target)
    if not keep_parts:
        shutil.rmtree(staging, ignore_errors=True)
    return written
