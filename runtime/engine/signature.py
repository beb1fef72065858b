"""What an exported model takes and gives, and how a subgraph becomes its inputs.

The exporter's stack (qgnn.exporter.emit.stack, docs/export.md) takes ``x`` (layer-0 source
features, uint8 for INT8 models whose first layer reads them only through its ``x`` site, else
float32), ``in_degree`` (full-graph in-degree of every layer-0 source, int64) and per layer
``l`` (input layer first) ``indptr_l``/``src_l`` (CSR over the layer's destinations); it
returns ``logits`` (node task) or ``embeddings`` (link task), float32, one row per seed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from qgnn.contract.signature import FEATURES, IN_DEGREE, OUTPUTS, indptr_name, src_name
from qgnn.runtime.engine.subgraph import Subgraph

_LAYER = re.compile(r"(indptr|src)_(\d+)")


@dataclass(frozen=True)
class ModelSignature:
    """The inputs and the output the engine feeds and reads."""

    num_layers: int
    feature_dtype: np.dtype
    has_degree: bool
    output: str

    @classmethod
    def of(cls, input_dtypes: Mapping[str, np.dtype], output_names: Sequence[str],
           task: str) -> ModelSignature:
        """Checks a model's signature; ValueError naming what does not match."""
        names = set(input_dtypes)
        layers = sorted({int(m.group(2)) for n in names if (m := _LAYER.fullmatch(n))})
        if not layers or layers != list(range(len(layers))):
            raise ValueError(f"model inputs {sorted(names)}: expected per-layer indptr_0, src_0, "
                             f"... (docs/export.md)")
        expected = {FEATURES, *(f(i) for i in layers for f in (indptr_name, src_name))}
        missing = expected - names
        unknown = names - expected - {IN_DEGREE}
        if missing or unknown:
            raise ValueError(f"model inputs {sorted(names)}: missing {sorted(missing)}, "
                             f"unexpected {sorted(unknown)} (docs/export.md)")
        for name in expected - {FEATURES}:
            if input_dtypes[name] != np.int64:
                raise ValueError(f"model input {name} must be int64, got {input_dtypes[name]}")
        feature_dtype = np.dtype(input_dtypes[FEATURES])
        if feature_dtype not in (np.dtype(np.uint8), np.dtype(np.float32)):
            raise ValueError(f"model input x must be uint8 or float32, got {feature_dtype}")
        if task not in OUTPUTS:
            raise ValueError(f"model.task must be one of {sorted(OUTPUTS)}, got {task!r}")
        if OUTPUTS[task] not in output_names:
            raise ValueError(f"a {task} model must output {OUTPUTS[task]!r}; this one outputs "
                             f"{list(output_names)}")
        return cls(len(layers), feature_dtype, IN_DEGREE in names, OUTPUTS[task])

    def feeds(self, sub: Subgraph, features: np.ndarray, in_degree: np.ndarray
              ) -> dict[str, np.ndarray]:
        """Model inputs for ``sub``: ``features`` (N_0, F) and ``in_degree`` (N_0,) are the rows
        of ``sub.node_ids``."""
        if len(sub.layers) != self.num_layers:
            raise ValueError(f"the model has {self.num_layers} layers, the subgraph "
                             f"{len(sub.layers)}")
        feeds = {FEATURES: np.ascontiguousarray(features)}
        if self.has_degree:
            feeds[IN_DEGREE] = np.ascontiguousarray(in_degree, np.int64)
        for i, layer in enumerate(sub.layers):
            feeds[indptr_name(i)] = layer.indptr
            feeds[src_name(i)] = layer.src
        return feeds
