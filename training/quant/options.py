"""The names of every quantisation option, torch-free, so ``qgnn --help`` and parser
registration never import torch (a serving host has none)."""

from __future__ import annotations

from typing import Literal

Method = Literal["dq", "qat"]
METHODS: tuple[Method, ...] = ("dq", "qat")
RangeKind = Literal["percentile", "minmax", "momentum"]
RANGE_KINDS: tuple[RangeKind, ...] = ("percentile", "minmax", "momentum")
MaskMode = Literal["per-layer", "shared"]
MASK_MODES: tuple[MaskMode, ...] = ("per-layer", "shared")
Ste = Literal["plain", "clipped"]
STES: tuple[Ste, ...] = ("plain", "clipped")
