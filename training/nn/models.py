"""Model zoo: a stack of message-passing layers with the usual trimmings, built from a config.

The stack is the same for every layer type; only the layer constructor differs, looked up by name
in the contract's layer table (qgnn.contract.layers: the ``factory`` of each spec is one of the
``*_layer`` functions here). ``forward`` takes one block (full-graph training: reused by every
layer) or one block per layer (sampled minibatches: each layer's output feeds the next block's
sources).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from qgnn.contract.layers import LAYERS as CONTRACT_LAYERS
from qgnn.contract.layers import layer_spec
from qgnn.training.nn.block import Block
from qgnn.training.nn.linear import QLinear
from torch import nn

# (in_dim, out_dim, config, is_last) -> layer with forward(x_src, block) -> (num_dst, out_dim)
LayerFactory = Callable[[int, int, "ModelConfig", bool], nn.Module]
LAYERS = tuple(CONTRACT_LAYERS)  # the layer types, by name
# the layer types that can be node classifiers (LightGCN only propagates learned embeddings)
CLASSIFIER_LAYERS = tuple(n for n in LAYERS if not CONTRACT_LAYERS[n].layer_mean)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (stored beside every checkpoint)."""

    model: str
    in_dim: int
    out_dim: int
    hidden: int = 64
    num_layers: int = 2
    dropout: float = 0.5
    input_dropout: float | None = None  # defaults to ``dropout``
    residual: bool = False  # h <- h + layer(h) where shapes allow (after an input projection)
    norm: str | None = None  # None | "layer" | "batch"
    input_proj: bool = False  # a Linear before the first layer (useful with residual)
    # a Linear after the last convolution, which then stays ``hidden`` wide and gets the norm,
    # ReLU and residual of the others (the residual-network recipe of Platonov et al. 2023)
    head: bool = False
    layer_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. heads for GAT/EGC

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"ModelConfig: unknown fields {sorted(unknown)}")
        return cls(**data)


def _norm(kind: str | None, dim: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == "layer":
        return nn.LayerNorm(dim)
    if kind == "batch":
        return nn.BatchNorm1d(dim)
    raise ValueError(f"ModelConfig.norm: expected None, 'layer' or 'batch', got {kind!r}")


class GNN(nn.Module):
    """Layers with ReLU, dropout, optional residual connections and normalisation."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.model not in CONTRACT_LAYERS:
            raise ValueError(f"ModelConfig.model: unknown model {cfg.model!r}; choose from "
                             f"{sorted(CONTRACT_LAYERS)}")
        if cfg.num_layers < 1:
            raise ValueError(f"ModelConfig.num_layers: need >= 1, got {cfg.num_layers}")
        self.cfg = cfg
        factory: LayerFactory = layer_spec(cfg.model).load("factory")
        dim = cfg.in_dim
        self.input_proj: QLinear | None = None
        if cfg.input_proj:
            self.input_proj = QLinear(cfg.in_dim, cfg.hidden, "src")
            dim = cfg.hidden
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(cfg.num_layers):
            last = i == cfg.num_layers - 1 and not cfg.head  # the convolution that emits out_dim
            out = cfg.out_dim if last else cfg.hidden
            layer = factory(dim, out, cfg, last)
            self.layers.append(layer)
            self.norms.append(nn.Identity() if last else _norm(cfg.norm, out))
            dim = out
        self.head = QLinear(cfg.hidden, cfg.out_dim, "dst") if cfg.head else None
        # LightGCN-style stacks: output = mean of the input and every layer's output
        self.layer_mean = layer_spec(cfg.model).layer_mean
        if self.layer_mean and (cfg.input_proj or cfg.head or cfg.residual or cfg.norm):
            raise ValueError(f"ModelConfig: {cfg.model} averages its layers' outputs; it takes "
                             f"no input_proj, head, residual or norm")

    @property
    def out_dim(self) -> int:
        return self.cfg.out_dim

    def forward(self, x: torch.Tensor, blocks: Block | Sequence[Block]) -> torch.Tensor:
        blocks = [blocks] * len(self.layers) if isinstance(blocks, Block) else list(blocks)
        if len(blocks) != len(self.layers):
            raise ValueError(f"GNN: {len(self.layers)} layers need as many blocks, got "
                             f"{len(blocks)}")
        x = self.begin(x, blocks[0])
        if self.layer_mean:
            total = self.mean_input(x, blocks[0])
            for i, block in enumerate(blocks):
                x = self.step(i, x, block)
                total = total[: block.num_dst] + x
            return total / (len(self.layers) + 1)
        for i, block in enumerate(blocks):
            x = self.step(i, x, block)
        return self.finish(x, blocks[-1])

    # The three stages of ``forward``, public so layer-wise inference (one layer over the whole
    # graph at a time) runs exactly the same arithmetic.

    def begin(self, x: torch.Tensor, block: Block | None = None) -> torch.Tensor:
        """Input dropout and the input projection: the features layer 0 reads."""
        cfg = self.cfg
        in_drop = cfg.dropout if cfg.input_dropout is None else cfg.input_dropout
        x = nn.functional.dropout(x, in_drop, self.training)
        if self.input_proj is not None:
            x = torch.relu(self.input_proj(x, block))
            x = nn.functional.dropout(x, self.cfg.dropout, self.training)
        return x

    def step(self, i: int, x: torch.Tensor, block: Block) -> torch.Tensor:
        """Layer ``i`` over ``block``: convolution, residual, then norm, ReLU and dropout unless
        it is the convolution that emits the output."""
        h = self.layers[i](x, block)
        if self.layer_mean:  # no non-linearity between LightGCN layers; forward averages
            return h
        if self.cfg.residual and h.shape[-1] == x.shape[-1]:
            h = h + x[: block.num_dst]
        if i == len(self.layers) - 1 and self.head is None:
            return h
        h = torch.relu(self.norms[i](h))
        return nn.functional.dropout(h, self.cfg.dropout, self.training)

    def mean_input(self, x: torch.Tensor, block: Block | None = None) -> torch.Tensor:
        """A layer-mean stack's first term: the input as layer 0 reads it (its ``x`` site), so
        the INT8 export, which only has the quantised input, averages the same value."""
        return self.layers[0].q("x", x, block)

    def finish(self, x: torch.Tensor, block: Block | None = None) -> torch.Tensor:
        """The output head, if any."""
        return x if self.head is None else self.head(x, block)

    def input_dropouts(self) -> list[tuple[nn.Module, float]]:
        """Each module whose input ``x`` comes straight out of a dropout, with its probability
        (in forward order). Quantisation-aware training needs it: inverted dropout scales the
        training input by ``1 / (1 - p)``, which an input range must not learn (at evaluation,
        what the exported model runs, there is no dropout)."""
        cfg = self.cfg
        in_drop = cfg.dropout if cfg.input_dropout is None else cfg.input_dropout
        modules: list[nn.Module] = [m for m in (self.input_proj, *self.layers, self.head)
                                    if m is not None]
        return [(m, in_drop if i == 0 else cfg.dropout) for i, m in enumerate(modules)]


def layer_options(cfg: ModelConfig, defaults: dict[str, Any]) -> dict[str, Any]:
    """``cfg.layer_kwargs`` over a layer's defaults; a key the layer does not know is an error."""
    unknown = sorted(set(cfg.layer_kwargs) - set(defaults))
    if unknown:
        raise ValueError(f"ModelConfig.layer_kwargs: {unknown} not understood by model "
                         f"{cfg.model!r}; known keys: {sorted(defaults)}")
    return {**defaults, **cfg.layer_kwargs}


def gcn_layer(in_dim: int, out_dim: int, cfg: ModelConfig, last: bool) -> nn.Module:
    from qgnn.training.nn.layers.gcn import GCNConv

    layer_options(cfg, {})
    return GCNConv(in_dim, out_dim)


def sage_layer(in_dim: int, out_dim: int, cfg: ModelConfig, last: bool) -> nn.Module:
    from qgnn.training.nn.layers.sage import SAGEConv

    layer_options(cfg, {})
    return SAGEConv(in_dim, out_dim)


def gin_layer(in_dim: int, out_dim: int, cfg: ModelConfig, last: bool) -> nn.Module:
    """The MLP's hidden width is ``cfg.hidden`` (also in the output layer)."""
    from qgnn.training.nn.layers.gin import GINConv

    opts = layer_options(cfg, {"eps": 0.0, "train_eps": False, "batch_norm": True})
    return GINConv(in_dim, out_dim, hidden_dim=cfg.hidden, **opts)


def gat_layer(in_dim: int, out_dim: int, cfg: ModelConfig, last: bool) -> nn.Module:
    """Hidden layers: ``heads`` heads, concatenated (each ``out_dim / heads`` wide) or averaged.
    Output layer: ``out_heads`` heads, averaged. Attention dropout defaults to ``cfg.dropout``."""
    from qgnn.training.nn.layers.gat import GATConv

    opts = layer_options(cfg, {"heads": 8, "out_heads": 1, "concat": True,
                               "attn_dropout": cfg.dropout, "negative_slope": 0.2})
    heads = opts["out_heads"] if last else opts["heads"]
    concat = opts["concat"] and not last
    if concat and out_dim % heads:
        raise ValueError(f"ModelConfig.layer_kwargs: GAT heads={heads} must divide the layer "
                         f"width {out_dim} when concat=True")
    return GATConv(in_dim, out_dim // heads if concat else out_dim, heads=heads, concat=concat,
                   negative_slope=opts["negative_slope"], attn_dropout=opts["attn_dropout"])


def egc_layer(in_dim: int, out_dim: int, cfg: ModelConfig, last: bool) -> nn.Module:
    """Hidden layers use ``heads`` heads, the output layer ``out_heads`` (it must divide the
    number of classes)."""
    from qgnn.training.nn.layers.egc import EGConv

    opts = layer_options(cfg, {"heads": 8, "out_heads": 1, "bases": 4,
                               "aggregators": ["symnorm"]})
    heads = opts["out_heads"] if last else opts["heads"]
    if out_dim % heads:
        raise ValueError(f"ModelConfig.layer_kwargs: EGC {'out_heads' if last else 'heads'}="
                         f"{heads} must divide the layer width {out_dim}")
    return EGConv(in_dim, out_dim, aggregators=opts["aggregators"], heads=heads,
                  bases=opts["bases"])


def lightgcn_layer(in_dim: int, out_dim: int, cfg: ModelConfig, last: bool) -> nn.Module:
    """Weight-free: every layer keeps the embedding width (``in_dim == hidden == out_dim``)."""
    from qgnn.training.nn.layers.lightgcn import LightGCNConv

    layer_options(cfg, {})
    return LightGCNConv(in_dim, out_dim)


def build_model(cfg: ModelConfig) -> GNN:
    return GNN(cfg)
