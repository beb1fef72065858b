"""Writing sharded bundles: each rank's partition outputs, then the bundles ``qgnn serve`` loads.

Two steps, so no process ever holds more than one partition's outputs:

1. :func:`write_part` (every rank, after distributed layer-wise inference): its nodes' outputs
   as per-row INT8 (``qgnn.runtime.engine.embeddings.quantize_rows``, the same code the
   embedding tables use) plus its node ids and in-edges, as plain ``.npy`` files under
   ``<out>/.parts/part-<p>/``. A node model's outputs are its logits (``predictions``); a link
   model's are its final node embeddings (``embeddings``, the rows PredictLinks and Recommend
   score), stored with the nodes' out-edges (what exclude-seen drops).
2. :func:`assemble` (one process): the INT8 ONNX model of the run (emitted from the checkpoint,
   no graph needed; a link run's MLP decoder too) and the parts become bundles
   (``model.format: "qgnn-sharded"``, docs/partitioned.md): ``<out>/shard-<p>/<name>/<version>/``
   holding shard ``p`` and ``<out>/all/<name>/<version>/`` holding every shard. Each folder
   under ``<out>`` is a model repository for ``qgnn serve``. Files are streamed from the parts,
   never loaded whole. A link bundle also carries the global recommender arrays (``catalogue``,
   exporter/link_shards.py) whole, as it carries the partition book.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.exporter.export import (
    DECODER_FILE,
    _metrics,
    _quantisation,
    _versions,
    check_model,
    decoder_model,
    export_models,
    load_run_model,
    tensor_specs,
)
from qgnn.exporter.link_shards import CATALOGUE, LINK_INFO
from qgnn.graph.shards import GraphShard
from qgnn.runtime.bundle.layout import MODEL_FILE
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.bundle.writer import write_bundle
from qgnn.runtime.catalogue import ITEM
from qgnn.runtime.engine.embeddings import quantize_rows
from qgnn.runtime.engine.sharded import OWNER, SHARD_FILES, SHARDED_FORMAT, shard_file
from qgnn.runtime.engine.sharded_links import (
    IN_EDGES,
    ITEM_FILES,
    ITEMS_REPLICATED,
    LINK_SHARD_FILES,
    OUT_EDGE_FILES,
)

PARTS = ".parts"


def _part_dir(staging: Path, part: int) -> Path:
    return staging / f"part-{part}"


def write_part(staging: str | Path, shard: GraphShard, outputs: np.ndarray, *,
               task: str = "node") -> Path:
    """This rank's outputs ``(n_local, C)`` float32 (its nodes' logits, or a link model's
    embeddings) as INT8 rows, with its node ids and in-edges (link: out-edges too); part 0
    also stores the partition book."""
    if outputs.shape[0] != shard.num_local:
        raise ValueError(f"write_part: {outputs.shape[0]} output rows for {shard.num_local} "
                         f"nodes of part {shard.part}")
    folder = _part_dir(Path(staging), shard.part)
    (folder / "graph").mkdir(parents=True, exist_ok=True)
    q, scale = quantize_rows(outputs)
    arrays = {"nodes": shard.owned, "graph/indptr": shard.indptr,
              "graph/indices": shard.indices}
    if task == "link":
        if shard.out_indptr is None or shard.out_indices is None:
            raise ValueError(f"write_part: part {shard.part} has no out-edges; write link "
                             f"shards with python -m qgnn.exporter.link_shards")
        arrays.update({"embeddings": q, "embedding_scales": scale,
                       "graph/out_indptr": shard.out_indptr,
                       "graph/out_indices": shard.out_indices})
    else:
        arrays.update({"predictions": q, "scales": scale})
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
    if shard.part == 0:
        np.save(Path(staging) / "owner.npy", shard.parts.astype(np.int32), allow_pickle=False)
    return folder


def _out_is_in(folder: Path) -> bool:
    """Whether a link part's out-edges are its in-edges, list for list (a symmetric graph)."""
    def load(name: str) -> np.ndarray:
        return np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)

    return bool(np.array_equal(load("graph/out_indptr"), load("graph/indptr"))
                and np.array_equal(load("graph/out_indices"), load("graph/indices")))


def _item_table(staging: Path, num_parts: int, node_type: np.ndarray) -> dict[str, np.ndarray]:
    """Every item's row, in id order, gathered from the parts (``items/*.npy``)."""
    ids, values, scales = [], [], []
    for p in range(num_parts):
        folder = _part_dir(staging, p)
        nodes = np.load(folder / "nodes.npy", allow_pickle=False)
        mine = node_type[nodes] == ITEM
        ids.append(nodes[mine])
        values.append(np.load(folder / "embeddings.npy", mmap_mode="r", allow_pickle=False)[mine])
        scales.append(np.load(folder / "embedding_scales.npy", mmap_mode="r",
                              allow_pickle=False)[mine])
    all_ids = np.concatenate(ids)
    order = np.argsort(all_ids, kind="stable")
    return {ITEM_FILES["nodes"]: all_ids[order],
            ITEM_FILES["embeddings"]: np.concatenate(values)[order],
            ITEM_FILES["embedding_scales"]: np.concatenate(scales)[order]}


def assemble(out: str | Path, run_dir: str | Path, num_parts: int, num_nodes: int, *,
             name: str = "partitioned", version: int = 1,
             metrics: dict[str, Any] | None = None, keep_parts: bool = False,
             link_shards: str | Path | None = None, replicate_items: bool = False
             ) -> list[Path]:
    """Bundles from the parts under ``out/.parts`` and the run in ``run_dir`` (module
    docstring); returns the bundle directories, the all-shard one first. A link run needs
    ``link_shards``, the shard folder its parts came from (its ``catalogue``);
    ``replicate_items`` (bipartite link runs) puts every item's row into each ``shard-<p>``
    bundle, so one shard's replica answers its users over the whole catalogue."""
    out = Path(out)
    staging = out / PARTS
    missing = [p for p in range(num_parts) if not (_part_dir(staging, p) / "nodes.npy").is_file()]
    if missing or not (staging / "owner.npy").is_file():
        raise ValueError(f"assemble: parts {missing or ['owner']} missing under {staging}")
    run = load_run_model(run_dir)
    if run.task == "link" and link_shards is None:
        raise ValueError("assemble: a link run's bundles need link_shards (the shard folder "
                         "with its catalogue)")
    main, _ = export_models(run, name=name)
    check_model(main.model)
    model_bytes = main.model.SerializeToString()
    decoder = decoder_model(run) if run.task == "link" else None
    if decoder is not None:
        check_model(decoder)
    shared: dict[str, Any] = {MODEL_FILE: model_bytes, OWNER: staging / "owner.npy"}
    if decoder is not None:
        shared[DECODER_FILE] = decoder.SerializeToString()
    node_types = None
    if link_shards is not None:
        for path in sorted((Path(link_shards) / CATALOGUE).glob("*.npy")):
            shared[f"graph/{path.name}"] = path
        node_types = json.loads((Path(link_shards) / LINK_INFO).read_text()).get("node_types")
    items: dict[str, Any] = {}
    if replicate_items:
        type_file = None if link_shards is None else Path(link_shards) / CATALOGUE / "node_type.npy"
        if type_file is None or not type_file.is_file():
            raise ValueError("assemble: replicate_items needs a bipartite link run (node types "
                             "in its link shards' catalogue)")
        items = _item_table(staging, num_parts, np.load(type_file, allow_pickle=False))
    part_files = LINK_SHARD_FILES if run.task == "link" else SHARD_FILES
    symmetric = run.task == "link" and all(_out_is_in(_part_dir(staging, p))
                                           for p in range(num_parts))
    if symmetric:  # every out-list is the in-list: the bundle stores the edges once
        part_files = tuple(f for f in part_files if f not in OUT_EDGE_FILES)
    num_edges = sum(int(np.load(_part_dir(staging, p) / "graph/indices.npy", mmap_mode="r",
                                allow_pickle=False).shape[0]) for p in range(num_parts))
    cfg = run.gnn.cfg

    def manifest(held: list[int]) -> dict[str, Any]:
        graph = main.model.graph
        doc: dict[str, Any] = {
            "model": {"name": name, "version": version, "task": run.task, "type": cfg.model,
                      "file": MODEL_FILE, "format": SHARDED_FORMAT,
                      "precision": "int8" if run.quantised else "fp32",
                      "inputs": tensor_specs(graph.input), "outputs": tensor_specs(graph.output),
                      "num_layers": main.num_layers, "config": cfg.to_dict()},
            "quantisation": _quantisation(run),
            "metrics": _metrics(metrics or run.checkpoint.metrics),
            "graph": {"num_nodes": num_nodes, "num_edges": num_edges,
                      "num_features": cfg.in_dim,
                      "num_classes": cfg.out_dim if run.task == "node" else 0,
                      "adjacency": "in", "dataset": run.checkpoint.dataset},
            "sharding": {"num_shards": num_parts, "held": held,
                         "predictions": "int8 per-row symmetric logits (z = scale * q)"},
            "versions": _versions()}
        if run.task == "link":
            doc["sharding"]["embeddings"] = "int8 per-row symmetric embeddings (z = scale * q)"
            del doc["sharding"]["predictions"]
            width = np.load(_part_dir(staging, 0) / "embeddings.npy", mmap_mode="r",
                            allow_pickle=False).shape[1]
            doc["link"] = {"decoder": run.checkpoint.train_config.decoder,
                           "embedding_dim": int(width)}
            if decoder is not None:
                doc["link"]["decoder_file"] = DECODER_FILE
            if node_types is not None:
                doc["graph"]["node_types"] = node_types
            doc["sharding"]["out_edges"] = IN_EDGES if symmetric else "stored"
            if items and len(held) < num_parts:
                doc["sharding"]["items"] = ITEMS_REPLICATED
        return doc

    def files(held: list[int]) -> dict[str, Any]:
        entries: dict[str, Any] = dict(shared)
        for p in held:
            for f in part_files:
                entries[shard_file(p, f)] = _part_dir(staging, p) / f"{f}.npy"
        if len(held) < num_parts:  # the all-shard bundle has every item already
            entries.update(items)
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
