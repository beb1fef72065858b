"""The names an exported model's inputs and outputs carry (docs/export.md).

``x``: layer-0 source features; ``in_degree``: full-graph in-degree of every layer-0 source;
per layer ``i`` (input layer first) ``indptr_i``/``src_i``: the CSR over that layer's
destinations; the output is ``logits`` (node task) or ``embeddings`` (link task). The exporter
writes these names and the engine feeds them, so both take them from here.
"""

from __future__ import annotations

FEATURES = "x"
IN_DEGREE = "in_degree"
OUTPUTS = {"node": "logits", "link": "embeddings"}


def indptr_name(layer: int) -> str:
    return f"indptr_{layer}"


def src_name(layer: int) -> str:
    return f"src_{layer}"
