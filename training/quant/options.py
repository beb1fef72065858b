"""The names of every quantisation option and the per-model defaults, torch-free, so
``qgnn --help`` and parser registration never import torch (a serving host has none)."""

from __future__ import annotations

from typing import Any, Literal

Method = Literal["dq", "qat"]
METHODS: tuple[Method, ...] = ("dq", "qat")
RangeKind = Literal["percentile", "minmax", "momentum"]
RANGE_KINDS: tuple[RangeKind, ...] = ("percentile", "minmax", "momentum")
MaskMode = Literal["per-layer", "shared"]
MASK_MODES: tuple[MaskMode, ...] = ("per-layer", "shared")
Ste = Literal["plain", "clipped"]
STES: tuple[Ste, ...] = ("plain", "clipped")

# Per-(model, bits) defaults that replace QuantConfig's where the general default measurably
# fails a model, read by the command-line config (``qgnn train``, ``qgnn bench accuracy``); an
# option given on the command line wins, and ``QuantConfig(...)`` in Python does not read them.
# Keys are QuantConfig fields. Both methods use them (QAT's momentum ranges lag the same way).
# EGC at INT4 (DQ, Cora, 2 seeds): momentum 0.1 -> 76.3, 0.5 -> 77.3; its activations grow
# from a near-zero plateau and slow ranges clip them (docs/degree-quant.md). At INT8 the same
# lag lets the signal die on some seeds (10 seeds at momentum 0.1: 64.0 +- 26.7, three stuck at
# the initial loss; 0.5: 80.36 +- 2.04, no collapse; 0.25: seed 0 collapsed again). With ranges
# in evaluation units (dropout gain), 10 seeds of EGC DQ INT8 at momentum 0.5: clipped STE
# 80.11, plain STE 80.79, no protection at all 80.56; the clipped STE's zero gradient outside
# the range slows a model whose output is a product of two small terms (docs/degree-quant.md).
MODEL_QUANT_PRESETS: dict[tuple[str, int], dict[str, Any]] = {
    ("egc", 4): {"momentum": 0.25},  # with evaluation-unit ranges, 10 seeds DQ: 0.5 -> 76.38,
    # 0.25 -> 78.19 (the plain STE: 67.67, two seeds stuck; percentile 0.1%: 60.28)
    ("egc", 8): {"momentum": 0.5, "ste": "plain"},
    # GCN at INT8, 10 seeds DQ: the clipped STE gives CiteSeer 71.08 (p_max 0.05 / 0.2: 71.54 /
    # 70.90; min/max input range: 71.15), the plain STE 71.79 +- 0.28 and Cora 82.18 (82.08).
    ("gcn", 8): {"ste": "plain"},
}


# Link prediction and recommendation: these replace the entries above for ``task="link"``
# (``qgnn train --task link``, bench_recommend). A featureless link model learns an embedding
# table, and full-batch training takes one step per epoch, so in the first epochs activations
# grow about 50% per step; ranges at momentum 0.1 trail by ~10 steps and clip most of them (DQ
# INT8 GCN on the generated MovieLens-format log: 54% of the final embeddings clipped at step
# 1, 89% at step 5, 95% of layer 2's linear output), the model settles on the popularity
# plateau and never leaves it (Recall@20 0.1618, most-popular 0.1617; FP32 0.2148). At
# momentum 0.5 the ranges follow: 0.2138 (docs/degree-quant.md, "Link prediction"). SAGE DQ
# INT8 on the same log: momentum 0.1 -> 0.2824, 0.5 -> 0.2862 (FP32 0.2898). LightGCN (0.3324
# at 0.1, FP32 0.3326) keeps the node default. One seed each.
LINK_QUANT_PRESETS: dict[tuple[str, int], dict[str, Any]] = {
    ("gcn", 8): {"ste": "plain", "momentum": 0.5},
    ("sage", 8): {"momentum": 0.5},
}

TASKS = ("node", "link")


def model_quant_preset(model: str | None, bits: int, task: str = "node") -> dict[str, Any]:
    """The quantisation defaults ``model`` uses at ``bits`` for ``task`` (empty: QuantConfig's
    own); a link task's entry replaces the node one."""
    if task not in TASKS:
        raise ValueError(f"model_quant_preset: task must be one of {TASKS}, got {task!r}")
    if model is None:
        return {}
    if task == "link" and (model, bits) in LINK_QUANT_PRESETS:
        return dict(LINK_QUANT_PRESETS[(model, bits)])
    return dict(MODEL_QUANT_PRESETS.get((model, bits), {}))
