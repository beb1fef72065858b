"""One spec per layer type: where its torch module, integer oracle and ONNX emitter live, and
which ``ai.qgnn`` ops (the engine's kernels) its INT8 export runs on.

Each stage resolves only its own part, lazily, so this table imports nothing: training asks for
``factory``, the numpy oracle for ``oracle``, the exporter for ``emitter``. Adding a layer type
is one entry here plus the three functions it names; tests/contract checks that every part
resolves and agrees with the others (the module's sites, the emitted ops).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

PARTS = ("factory", "oracle", "emitter")


@dataclass(frozen=True)
class LayerSpec:
    """A layer type. ``factory``/``oracle``/``emitter`` are ``"module:attribute"`` paths:

    - factory ``(in_dim, out_dim, ModelConfig, is_last) -> nn.Module`` (qgnn.training);
    - oracle ``(x_q, params, sites, src, dst, num_nodes, trace, **options) -> out_q``, the
      numpy integer formulation (docs/integer-formulation.md);
    - emitter ``(Emitter, module, x, LayerInput, LayerSites | None) -> output name``.

    ``ops`` are the ``ai.qgnn`` ops its INT8 export may contain; ``degree`` says whether the
    layer reads full-graph in-degrees: ``"always"``, ``"never"``, or the name of the
    ``layer_kwargs["aggregators"]`` entry that needs them. ``degree_norm`` is the inverse
    square-root degree the stack hands its layers: ``"plus_one"`` ``(d + 1)^-1/2`` (GCN's
    self-looped graph) or ``"clamped"`` ``max(d, 1)^-1/2`` (LightGCN, no loops).
    ``layer_mean`` stacks combine by the mean of the input and every layer's output, with no
    non-linearity between layers (LightGCN), instead of ReLU between layers.
    """

    name: str
    factory: str
    oracle: str
    emitter: str
    ops: frozenset[str]
    degree: str = "never"
    default_aggregators: tuple[str, ...] = field(default=())
    degree_norm: str = "plus_one"
    layer_mean: bool = False

    def load(self, part: str) -> Callable[..., Any]:
        """The function behind ``part`` (imports its stage on first use)."""
        if part not in PARTS:
            raise ValueError(f"LayerSpec.load: part must be one of {PARTS}, got {part!r}")
        module, attribute = getattr(self, part).split(":")
        return getattr(importlib.import_module(module), attribute)

    def needs_degree(self, layer_kwargs: Mapping[str, Any]) -> bool:
        """Whether the exported graph takes the ``in_degree`` input for this configuration."""
        if self.degree in ("always", "never"):
            return self.degree == "always"
        aggregators = layer_kwargs.get("aggregators", list(self.default_aggregators))
        return self.degree in aggregators


# The self-looped CSR every GCN / GAT / EGC-symnorm layer builds (exporter/ops/self_loops.py).
LOOP_OPS = ("LoopedIndptr", "LoopedSrc")


def _spec(name: str, ops: set[str], **kwargs: Any) -> LayerSpec:
    return LayerSpec(name=name, factory=f"qgnn.training.nn.models:{name}_layer",
                     oracle=f"qgnn.training.quant.integer_ref:{name}_layer",
                     emitter=f"qgnn.exporter.emit.{name}:emit", ops=frozenset(ops), **kwargs)


LAYERS: dict[str, LayerSpec] = {spec.name: spec for spec in (
    _spec("gcn", {"QGCNAggregate", "EdgeDst"}, degree="always"),
    _spec("sage", {"QAggregate"}),
    _spec("gin", {"QAggregate"}),
    _spec("gat", {"QMessageAggregate", "EdgeDst", "QEdgeSoftmax", *LOOP_OPS}),
    _spec("egc", {"QGCNAggregate", "QAggregate", "EdgeDst", *LOOP_OPS}, degree="symnorm",
          default_aggregators=("symnorm",)),
    # He et al. (SIGIR 2020): weight-free symmetric propagation, layer mean; the INT8 export
    # scales each edge's message by its quantised coefficient in QMessageAggregate
    _spec("lightgcn", {"QMessageAggregate", "EdgeDst"}, degree="always",
          degree_norm="clamped", layer_mean=True),
)}


def layer_spec(name: str) -> LayerSpec:
    """The spec of layer type ``name``; ValueError naming the known ones otherwise."""
    if name not in LAYERS:
        raise ValueError(f"unknown layer type {name!r}; known: {sorted(LAYERS)}")
    return LAYERS[name]
