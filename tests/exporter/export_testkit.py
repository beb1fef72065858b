"""Shared pieces of the exporter tests: small graphs, quickly trained (quantised) models, the
power-of-two surgery that makes float32 arithmetic exact, and feeds for exported models."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from qgnn.exporter.emit.stack import EmittedModel
from qgnn.exporter.store import csr_feeds
from qgnn.graph.container import Graph
from qgnn.training.nn.block import Block, full_graph_block
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.quant import QuantConfig, make_hooks
from qgnn.training.quant.sites import SiteQuantizer, quantized_sites
from torch import nn
from torch.nn import functional as F


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread: the models are tiny, a second thread only spins on a shared box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Small layer settings that still exercise heads, bases and every EGC aggregator.
LAYER_KWARGS: dict[str, dict[str, Any]] = {
    "gat": {"heads": 2, "out_heads": 2},
    "egc": {"heads": 2, "bases": 2,
            "aggregators": ["symnorm", "sum", "mean", "max", "min", "var", "std"]},
}
MODELS = ("gcn", "sage", "gin", "gat", "egc")


def _masks(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    split = rng.permutation(n)
    masks = {}
    for name, part in zip(("train_mask", "val_mask", "test_mask"),
                          np.array_split(split, [n // 2, 3 * n // 4]), strict=True):
        mask = np.zeros(n, bool)
        mask[part] = True
        masks[name] = mask
    return masks


def community_graph(num_classes: int = 3, per_class: int = 30, num_features: int = 5,
                    seed: int = 0) -> Graph:
    """Planted communities with informative features, symmetric, with train/val/test masks."""
    rng = np.random.default_rng(seed)
    n = num_classes * per_class
    y = np.repeat(np.arange(num_classes), per_class)
    prob = np.where(y[:, None] == y[None, :], 0.2, 0.02)
    upper = np.triu(rng.random((n, n)) < prob, 1)
    src, dst = np.nonzero(upper | upper.T)
    centres = rng.standard_normal((num_classes, num_features))
    x = (centres[y] + rng.standard_normal((n, num_features))).astype(np.float32)
    return Graph.from_edges(src, dst, n, x=x, y=y, name="community", **_masks(n, rng))


def regular_graph(n: int = 40, degree: int = 4, num_features: int = 5, num_classes: int = 3,
                  seed: int = 0) -> Graph:
    """Every node has exactly ``degree`` distinct in-neighbours (no self-loops), so mean
    aggregations divide by a power of two when ``degree`` (+ 1 with self-loops) is one."""
    rng = np.random.default_rng(seed)
    scores = rng.random((n, n))
    np.fill_diagonal(scores, np.inf)
    src = np.argsort(scores, axis=1)[:, :degree].reshape(-1)
    dst = np.repeat(np.arange(n), degree)
    y = rng.integers(0, num_classes, n)
    x = rng.standard_normal((n, num_features)).astype(np.float32)
    return Graph.from_edges(src, dst, n, x=x, y=y, name="regular", **_masks(n, rng))


def model_config(name: str, graph: Graph, **fields: Any) -> ModelConfig:
    fields.setdefault("hidden", 8)
    fields.setdefault("dropout", 0.1)
    return ModelConfig(name, graph.num_features, graph.num_classes,
                       layer_kwargs=LAYER_KWARGS.get(name, {}), **fields)


def train_model(graph: Graph, cfg: ModelConfig, quant: QuantConfig | None, steps: int = 15,
                seed: int = 0) -> nn.Module:
    """A GNN trained for a few full-graph steps (Degree-Quant when ``quant``), in eval mode."""
    torch.manual_seed(seed)
    model: nn.Module = build_model(cfg)
    blocks_for: Any = lambda b, _training: b  # noqa: E731
    if quant is not None:
        prepare, blocks_for = make_hooks(quant, graph,
                                         generator=torch.Generator().manual_seed(seed))
        model = prepare(model)
    x, y = torch.from_numpy(graph.x), torch.from_numpy(graph.y)
    block = full_graph_block(graph)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        model.train()
        optimiser.zero_grad()
        F.cross_entropy(model(x, blocks_for(block, True)), y).backward()
        optimiser.step()
    return model.eval()


_TRAINED: dict[str, tuple[Graph, nn.Module]] = {}


def trained(name: str, quant: QuantConfig | None, *, degree: int | None = None,
            **options: Any) -> tuple[Graph, nn.Module]:
    """``(graph, model)``: a fresh copy of a model trained once per session per arguments, on
    :func:`community_graph` or, with ``degree``, :func:`regular_graph`."""
    key = repr((name, None if quant is None else quant.to_dict(), degree, sorted(options.items())))
    if key not in _TRAINED:
        graph = community_graph() if degree is None else regular_graph(degree=degree)
        _TRAINED[key] = graph, train_model(graph, model_config(name, graph, **options), quant)
    graph, model = _TRAINED[key]
    return graph, copy.deepcopy(model)


def _pow2(value: torch.Tensor) -> torch.Tensor:
    return torch.exp2(torch.round(torch.log2(value)))


def _snap(t: torch.Tensor, step: torch.Tensor) -> None:
    with torch.no_grad():
        t.copy_(torch.round(t / step) * step)


def make_arithmetic_exact(model: nn.Module, prefix: str = "") -> None:
    """Power-of-two scales everywhere and every matrix-product bias on its accumulator grid.

    Then every float32 operation the fake-quantised model performs on small integer grids is
    exact, so its integers must equal the exported integer arithmetic bit for bit, except
    where the contract itself rounds differently (mean over a degree that is not a power of
    two) or a float island computes a transcendental (GAT's exp).
    """
    seams = quantized_sites(model)
    for seam in seams.values():
        for quantizer in seam.quantizers.values():
            assert isinstance(quantizer, SiteQuantizer)
            quantizer.scale = _pow2(quantizer.scale)
    gnn = getattr(model, "encoder", model)
    for i, layer in enumerate(gnn.layers):
        q = seams[f"{prefix}layers.{i}.q"].quantizers

        def grid(x_site: str, w_site: str, q: Any = q) -> torch.Tensor:
            return q[x_site].scale * q[w_site].scale

        kind = type(layer).__name__
        if kind == "SAGEConv" and layer.lin_l.bias is not None:
            _snap(layer.lin_l.bias, grid("agg", "weight_l"))
        elif kind == "GINConv":
            _snap(layer.lin1.bias, grid("combined", "weight1"))
            _snap(layer.lin2.bias, grid("hidden", "weight2"))
        elif kind == "EGConv":
            _snap(layer.comb_lin.bias, grid("x", "comb_weight"))
            if layer.bias is not None:
                _snap(layer.bias, grid("comb", "agg"))
    for name in ("input_proj", "head"):
        module = getattr(gnn, name)
        if module is not None:
            q = seams[f"{prefix}{name}.q"].quantizers
            _snap(module.bias, q["x"].scale * q["weight"].scale)


def dyadic(x: np.ndarray, bits: int = 3) -> np.ndarray:
    """Features rounded to multiples of 2^-bits (exact inputs for float-input exactness)."""
    return (np.round(x * 2**bits) / 2**bits).astype(np.float32)


def full_feeds(graph: Graph, em: EmittedModel, features: np.ndarray | None = None
               ) -> dict[str, np.ndarray]:
    """Feeds running ``em`` on the whole of ``graph`` (features quantised for uint8 input)."""
    x = graph.x if features is None else features
    if em.input_site is not None:
        x = em.input_site.quantize(x).astype(np.uint8)
    csc = graph.csc
    feeds = {"x": x, "in_degree": np.diff(csc.indptr).astype(np.int64)}
    for i in range(em.num_layers):
        feeds[f"indptr_{i}"] = csc.indptr.astype(np.int64)
        feeds[f"src_{i}"] = csc.indices.astype(np.int64)
    return feeds


def block_structures(graph: Graph, num_layers: int) -> list[tuple[np.ndarray, np.ndarray]]:
    csc = graph.csc
    return [(csc.indptr.astype(np.int64), csc.indices.astype(np.int64))] * num_layers


def torch_block_of(feeds: dict[str, np.ndarray], layer: int, num_src: int,
                   in_degree: np.ndarray) -> Block:
    """The training Block of layer ``layer`` of a feed dict (same edges, same order)."""
    indptr, src = feeds[f"indptr_{layer}"], feeds[f"src_{layer}"]
    dst = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    return Block(src=torch.from_numpy(src), dst=torch.from_numpy(dst), num_src=num_src,
                 num_dst=int(indptr.size - 1),
                 in_degree=torch.from_numpy(np.ascontiguousarray(in_degree[:num_src])))


def feeds_to_blocks(feeds: dict[str, np.ndarray], num_layers: int) -> list[Block]:
    """Training blocks (input layer first) equivalent to an exported model's feeds."""
    blocks, num_src = [], feeds["in_degree"].size
    for i in range(num_layers):
        blocks.append(torch_block_of(feeds, i, num_src, feeds["in_degree"]))
        num_src = blocks[-1].num_dst
    return blocks


def sampled_feeds(blocks: list, features: np.ndarray, in_degree: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """Feeds of ``khop_blocks`` output over ``features`` (already in the model's input dtype)."""
    ids = blocks[0].node_ids
    feeds = {"x": features[ids], "in_degree": in_degree[ids]}
    for i, block in enumerate(blocks):
        feeds.update(csr_feeds(i, block.src, block.dst, block.num_dst))
    return feeds


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.abs(b).max(initial=0.0)), 1.0)
    return float(np.abs(a - b).max(initial=0.0)) / scale


def merged_feeds(requests: list[list], features: np.ndarray, in_degree: np.ndarray,
                 pad: int = 0) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """One batch out of several requests' sampled blocks (each input layer first), plus
    ``pad`` padding seeds (zero features, degree 0, no edges) after the real seeds.

    Nodes are ordered by hop level, then request (all seeds, then every request's hop-1
    nodes, ...), so each layer's node list stays a prefix of the previous one's. Returns the
    feeds and, per request, the output rows of its seeds.
    """
    num_layers = len(requests[0])
    ids, levels_of = [], []
    for blocks in requests:
        bounds = [blocks[0].num_src] + [b.num_dst for b in blocks]  # p_0 >= p_1 >= ... >= p_L
        levels_of.append(bounds)
    position: list[np.ndarray] = [np.empty(b[0], np.int64) for b in levels_of]
    order: list[np.ndarray] = []
    next_id = 0
    for level in range(num_layers, -1, -1):  # seeds first
        for r, bounds in enumerate(levels_of):
            lo = bounds[level + 1] if level < num_layers else 0
            hi = bounds[level]
            position[r][lo:hi] = next_id + np.arange(hi - lo)
            next_id += hi - lo
            order.append(requests[r][0].node_ids[lo:hi])
        if level == num_layers and pad:
            order.append(np.full(pad, -1, np.int64))
            next_id += pad
    ids = np.concatenate(order)
    real = ids >= 0
    x = np.zeros((ids.size, features.shape[1]), features.dtype)
    x[real] = features[ids[real]]
    degree = np.zeros(ids.size, np.int64)
    degree[real] = in_degree[ids[real]]
    feeds: dict[str, np.ndarray] = {"x": x, "in_degree": degree}
    for layer in range(num_layers):
        src = np.concatenate([position[r][b[layer].src] for r, b in enumerate(requests)])
        dst = np.concatenate([position[r][b[layer].dst] for r, b in enumerate(requests)])
        num_dst = sum(b[layer].num_dst for b in requests) + pad
        keep = np.argsort(dst, kind="stable")
        feeds.update(csr_feeds(layer, src[keep], dst[keep], num_dst))
    seeds = [position[r][: b[-1].num_dst] for r, b in enumerate(requests)]
    return feeds, seeds


SYNTHETIC = "synthetic:powerlaw?nodes=150&features=6&communities=3&avg_degree=6&seed=3"


def save_trained_run(directory: Any, *, task: str = "node", model: str = "gcn",
                     dataset: str = SYNTHETIC, quant: QuantConfig | None = None,
                     epochs: int = 8, data: Any = None, train_options: dict | None = None,
                     preset_model: bool = False, **model_fields: Any) -> Any:
    """Train with the real training loop (``train_node``/``train_link``, Degree-Quant hooks
    when ``quant``) and save the run as ``qgnn train`` does, the quantisation recorded in
    ``extra["quant"] = {"config": QuantConfig, "state": quant_state}``. ``data`` replaces the
    dataset spec's graph (a Graph, or LinkData for the link task); ``train_options`` override
    TrainConfig fields (e.g. ``decoder="mlp"``). The model is small (hidden 8, few heads)
    unless ``preset_model``, which keeps the preset's architecture for the dataset."""
    import dataclasses

    from qgnn.graph.datasets import load_dataset
    from qgnn.graph.links import split_edges
    from qgnn.training.checkpoint import save_run
    from qgnn.training.presets import preset
    from qgnn.training.quant import quant_state
    from qgnn.training.tasks.link import link_model_config, train_link
    from qgnn.training.tasks.node import node_model_config, train_node

    chosen = preset(model, dataset)
    train_cfg = dataclasses.replace(chosen.train, epochs=epochs, patience=None,
                                    **(train_options or {}))
    if preset_model:
        fields = {**chosen.model, **model_fields}
    else:
        fields = {**chosen.model, "hidden": 8, **model_fields}
        fields["layer_kwargs"] = {**LAYER_KWARGS.get(model, {}),
                                  **fields.get("layer_kwargs", {})}
    loaded = data if data is not None else load_dataset(dataset)
    num_embeddings = None
    if task == "node":
        cfg = node_model_config(loaded, model, **fields)
        depth_graph = loaded
    else:
        if isinstance(loaded, Graph):
            loaded = split_edges(loaded, seed=train_cfg.split)
        cfg = link_model_config(loaded, model, **fields)
        depth_graph = loaded.graph
        num_embeddings = None if loaded.graph.x is not None else loaded.graph.num_nodes
    hooks: dict[str, Any] = {}
    if quant is not None:
        prepare, blocks_for = make_hooks(quant, depth_graph, num_layers=cfg.num_layers,
                                         generator=torch.Generator().manual_seed(0))
        hooks = {"prepare_model": prepare, "blocks_for": blocks_for}
    trainer = train_node if task == "node" else train_link
    result = trainer(loaded, cfg, train_cfg, progress=False, **hooks)
    extra = {} if quant is None else {"quant": {"config": quant.to_dict(),
                                                "state": quant_state(result.model)}}
    save_run(directory, result.model, task=task, dataset=dataset, model_config=cfg,
             train_config=train_cfg, metrics=result.summary(), num_embeddings=num_embeddings,
             extra=extra)
    return directory
