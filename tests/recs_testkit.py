"""Recommender bundles for the serving tests: a bipartite link model exported the normal way plus
the recommender files of docs/bundle-format.md ("Recommender data"), written with the bundle
writer, so the runtime is tested against exactly the agreed format.

External ids follow MovieLens: users and items are both numbered from 1 ("1" is a user and an
item); there are more items than users, so item ids above the user count are items only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.bundle.writer import write_bundle

sys.path.insert(0, str(Path(__file__).parent / "runtime" / "engine"))

RECS_FILES = ("graph/node_type.npy", "graph/external_ids_user.npy",
              "graph/external_ids_item.npy", "graph/seen_indptr.npy", "graph/seen_indices.npy")


def seen_csr(num_users: int, pairs: np.ndarray, exclude: np.ndarray) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """int64 CSR of each user's sorted item node ids in ``pairs`` (user, item node), minus the
    pairs of ``exclude`` (the message-passing interactions)."""
    key = pairs[:, 0] * (1 << 32) + pairs[:, 1]
    drop = exclude[:, 0] * (1 << 32) + exclude[:, 1]
    kept = np.unique(key[~np.isin(key, drop)])
    users, items = kept >> 32, kept & ((1 << 32) - 1)
    indptr = np.zeros(num_users + 1, np.int64)
    np.cumsum(np.bincount(users, minlength=num_users), out=indptr[1:])
    return indptr, items.astype(np.int64)


def add_recs_files(bundle_path: Path, out: Path, data: Any, *, external_ids: bool = True,
                   seen: bool = True) -> Path:
    """A copy of ``bundle_path`` with node types, external ids and the seen CSR of ``data``
    (a qgnn.graph LinkData: graph, train/val/test (user, item node) pairs, counts)."""
    src = load_bundle(bundle_path)
    u, i = int(data.num_users), int(data.num_items)
    files: dict[str, Any] = {name: src.path / name for name in src.files
                             if name not in RECS_FILES}
    files["graph/node_type.npy"] = np.concatenate([np.zeros(u, np.int8), np.ones(i, np.int8)])
    if external_ids:
        files["graph/external_ids_user.npy"] = np.array([str(k + 1) for k in range(u)])
        files["graph/external_ids_item.npy"] = np.array([str(k + 1) for k in range(i)])
    if seen:
        held_out = np.concatenate([data.val, data.test])
        indptr, indices = seen_csr(u, held_out, data.train)
        files["graph/seen_indptr.npy"] = indptr
        files["graph/seen_indices.npy"] = indices
    manifest = {k: v for k, v in src.manifest.raw.items() if k != "files"}
    manifest["graph"] = {**manifest["graph"], "node_types": {"user": u, "item": i}}
    return write_bundle(out, manifest, files, overwrite=True)


def recommender_data(num_users: int = 60, num_items: int = 90, seed: int = 0) -> Any:
    from qgnn.graph.synth import bipartite_recommender

    return bipartite_recommender(num_users, num_items, interactions_per_user=8,
                                 num_features=16, seed=seed)


def recommender_bundle(root: Path, kind: str = "gcn", data: Any = None, *,
                       layer_kwargs: dict | None = None, num_layers: int = 2,
                       **options: Any) -> Path:
    """An exported (calibrated, untrained) INT8 link model of ``kind`` on bipartite data, with
    the recommender files. A layer-mean kind (LightGCN) learns an embedding table instead of
    reading the features, as ``qgnn train`` builds it. Needs torch."""
    import engine_testkit as tk
    from qgnn.contract.layers import layer_spec

    data = data if data is not None else recommender_data()
    if layer_spec(kind).layer_mean:
        plain = _export_embedding_model(root, kind, data.graph.replace(x=None), num_layers)
    else:
        plain = tk.export_calibrated(root, data.graph, kind, "link", layer_kwargs=layer_kwargs,
                                     parity=False, num_layers=num_layers)
    return add_recs_files(plain, root / f"recs-{kind}", data, **options)


def _export_embedding_model(root: Path, kind: str, graph: Any, num_layers: int,
                            width: int = 8) -> Path:
    """A Degree-Quant INT8 link model over a learned embedding table (no features), its ranges
    calibrated by three forward passes, checkpointed and exported by ``qgnn export``."""
    import torch
    from qgnn.exporter.export import export_run
    from qgnn.training.checkpoint import save_run
    from qgnn.training.nn.block import full_graph_block
    from qgnn.training.nn.models import ModelConfig
    from qgnn.training.presets import TrainConfig
    from qgnn.training.quant import QuantConfig, quant_state, quantize_model
    from qgnn.training.tasks.link import build_link_model

    cfg = ModelConfig(model=kind, in_dim=width, out_dim=width, hidden=width,
                      num_layers=num_layers)
    quant = QuantConfig(bits=8)
    torch.manual_seed(0)
    model = quantize_model(build_link_model(cfg, "dot", graph.num_nodes), quant)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(None, full_graph_block(graph))
    model.eval()
    run = root / f"run-{kind}-link"
    save_run(run, model, task="link", dataset="synthetic:bipartite_recommender",
             model_config=cfg, train_config=TrainConfig(), metrics={},
             num_embeddings=graph.num_nodes,
             extra={"quant": {"config": quant.to_dict(), "state": quant_state(model)}})
    return export_run(run, root / f"bundle-{kind}-link", graph=graph, parity=False).bundle
