"""Per-site quantisation parameters from ``quant_state``, and the offline integer arithmetic.

``quant_state(model)`` (qgnn.training.quant.state) maps ``"<module path>.<site>"`` to
``{scale, zero_point, bits, signed, per_channel, role}``; :func:`read_sites` validates it into
:class:`Site` records grouped by layer. The helpers here compute what the exported graph stores
as constants, exactly as docs/integer-formulation.md prescribes: int8 weights, int32 biases and
float32 requantisation multipliers (qgnn.contract.multiplier).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qgnn.contract import quantize_bias

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
ROLES = ("src", "dst", "edge", "param")


@dataclass(frozen=True)
class Site:
    """One quantisation site: ``scale`` float32 and ``zero_point`` int64, shaped ``()`` (per
    tensor) or ``(C,)`` (per output channel, dim 0 of the tensor)."""

    key: str
    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    signed: bool
    role: str

    @property
    def per_channel(self) -> bool:
        return self.scale.ndim == 1

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1) - 1) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    def along_rows(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        """Scale and zero point shaped to broadcast against a rank-``ndim`` tensor (per-channel
        values along dim 0)."""
        if not self.per_channel:
            return self.scale, self.zero_point
        view = (-1, *([1] * (ndim - 1)))
        return self.scale.reshape(view), self.zero_point.reshape(view)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """``clamp(rint(x / scale) + zp, qmin, qmax)`` in float32 arithmetic, as int64."""
        scale, zp = self.along_rows(x.ndim)
        q = np.rint(np.asarray(x, np.float32) / scale) + zp.astype(np.float32)
        return np.clip(q, self.qmin, self.qmax).astype(np.int64)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """``float32(q - zp) * scale``."""
        scale, zp = self.along_rows(q.ndim)
        return ((q - zp).astype(np.float32) * scale).astype(np.float32)

    def activation_params(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scale float32 (), zero point uint8 ())`` of an activation site, as ONNX takes
        them; refuses weight-like sites (signed or per-channel)."""
        if self.signed or self.per_channel:
            raise ValueError(f"quant_state[{self.key!r}]: an activation site must be unsigned "
                             f"and per-tensor, got signed={self.signed}, "
                             f"per_channel={self.per_channel}")
        return (np.asarray(self.scale, np.float32).reshape(()),
                np.asarray(self.zero_point, np.uint8).reshape(()))


def _site(key: str, entry: Any) -> Site:
    if not isinstance(entry, Mapping):
        raise ValueError(f"quant_state[{key!r}]: expected an object, got {type(entry).__name__}")
    missing = [f for f in ("scale", "zero_point", "bits", "signed", "role") if f not in entry]
    if missing:
        raise ValueError(f"quant_state[{key!r}]: missing fields {missing}")
    bits, signed, role = entry["bits"], entry["signed"], entry["role"]
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"quant_state[{key!r}].bits: expected an int in [2, 8], got {bits!r}")
    if not isinstance(signed, bool):
        raise ValueError(f"quant_state[{key!r}].signed: expected true/false, got {signed!r}")
    if role not in ROLES:
        raise ValueError(f"quant_state[{key!r}].role: expected one of {ROLES}, got {role!r}")
    if signed != (role == "param"):
        raise ValueError(f"quant_state[{key!r}]: role {role!r} with signed={signed}; weights "
                         f"(role param) are signed and activations unsigned")
    try:
        scale = np.asarray(entry["scale"], dtype=np.float64)
        zero_point = np.asarray(entry["zero_point"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"quant_state[{key!r}]: scale and zero_point must be lists of "
                         f"numbers") from None
    if scale.ndim != 1 or scale.size == 0 or scale.shape != zero_point.shape:
        raise ValueError(f"quant_state[{key!r}]: scale and zero_point must be equally long "
                         f"non-empty lists, got {scale.shape} and {zero_point.shape}")
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError(f"quant_state[{key!r}].scale: must be finite and > 0, got "
                         f"{scale.tolist()}")
    if not np.array_equal(scale.astype(np.float32).astype(np.float64), scale):
        raise ValueError(f"quant_state[{key!r}].scale: values must be float32 numbers, got "
                         f"{scale.tolist()}")
    if not np.array_equal(np.round(zero_point), zero_point):
        raise ValueError(f"quant_state[{key!r}].zero_point: must be integers, got "
                         f"{zero_point.tolist()}")
    site = Site(key, scale.astype(np.float32), zero_point.astype(np.int64), bits, signed, role)
    if ((site.zero_point < site.qmin) | (site.zero_point > site.qmax)).any() or (
            signed and (site.zero_point != 0).any()):
        raise ValueError(f"quant_state[{key!r}].zero_point: {list(entry['zero_point'])} is outside "
                         f"[{site.qmin}, {site.qmax}] (or non-zero for a signed site)")
    per_channel = bool(entry.get("per_channel", False))
    if not per_channel:
        if scale.size != 1:
            raise ValueError(f"quant_state[{key!r}]: per-tensor but {scale.size} scales")
        site = Site(key, site.scale.reshape(()), site.zero_point.reshape(()), bits, signed, role)
    return site


class LayerSites:
    """The sites of one layer (``<prefix>layers.<i>.q.<name>``) by site name."""

    def __init__(self, prefix: str, sites: dict[str, Site]) -> None:
        self.prefix = prefix
        self.sites = sites

    def __getitem__(self, name: str) -> Site:
        if name not in self.sites:
            raise ValueError(f"quant_state has no site '{self.prefix}{name}': the model was not "
                             f"calibrated there (has: {sorted(self.sites)})")
        return self.sites[name]

    def __contains__(self, name: str) -> bool:
        return name in self.sites


# Modules of the stack outside ``layers`` that carry sites (training/nn/linear.py QLinear).
STACK_MODULES = ("input_proj", "head")


class StackSites(Sequence[LayerSites]):
    """The sites of a whole stack: one :class:`LayerSites` per layer (indexing and ``len`` go
    to the layers) plus those of the input projection and output head, where they were
    quantised (``modules``, keyed by module name)."""

    def __init__(self, layers: list[LayerSites], modules: dict[str, LayerSites]) -> None:
        self.layers = layers
        self.modules = modules

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> LayerSites:  # type: ignore[override]
        return self.layers[index]

    def module(self, name: str) -> LayerSites | None:
        return self.modules.get(name)


def read_sites(state: Mapping[str, Any], prefix: str, num_layers: int) -> StackSites:
    """Validated sites of layers ``0 .. num_layers - 1`` under ``prefix`` (``""`` for a node
    model, ``"encoder."`` for a link model), and of the modules in :data:`STACK_MODULES`.
    Entries of other modules are refused: the exporter must not silently drop a quantised
    tensor it does not know how to emit."""
    if not isinstance(state, Mapping) or not state:
        raise ValueError("quant_state: expected a non-empty object of sites")
    layers: list[dict[str, Site]] = [{} for _ in range(num_layers)]
    modules: dict[str, dict[str, Site]] = {}
    for key, entry in state.items():
        module = next((m for m in STACK_MODULES if key.startswith(f"{prefix}{m}.q.")), None)
        if module is not None:
            site_name = key[len(f"{prefix}{module}.q."):]
            if site_name:
                modules.setdefault(module, {})[site_name] = _site(key, entry)
                continue
        head = f"{prefix}layers."
        rest = key[len(head):] if key.startswith(head) else ""
        index, _, site_name = rest.partition(".q.")
        if not index.isdigit() or int(index) >= num_layers or not site_name:
            raise ValueError(f"quant_state: site {key!r} is not a site of "
                             f"{prefix}layers.0 .. {num_layers - 1} or of "
                             f"{', '.join(prefix + m for m in STACK_MODULES)}")
        layers[int(index)][site_name] = _site(key, entry)
    return StackSites([LayerSites(f"{prefix}layers.{i}.q.", sites)
                       for i, sites in enumerate(layers)],
                      {m: LayerSites(f"{prefix}{m}.q.", sites) for m, sites in modules.items()})


def quantize_weight(weight: np.ndarray, site: Site) -> np.ndarray:
    """int8 ``(J, K)`` of a float32 ``nn.Linear``-layout weight (per-channel along rows)."""
    if not site.signed:
        raise ValueError(f"quant_state[{site.key!r}]: a weight site must be signed")
    if site.per_channel and site.scale.size != weight.shape[0]:
        raise ValueError(f"quant_state[{site.key!r}]: {site.scale.size} channel scales for a "
                         f"weight with {weight.shape[0]} rows")
    return site.quantize(weight).astype(np.int8)


def bias_int32(bias: np.ndarray, x: Site, w: Site) -> np.ndarray:
    """``rint(bias / float32(s_x * s_w))`` as int32 (one per output channel)."""
    q = quantize_bias(bias, x.scale, w.scale)
    if q.size and (q.min() < INT32_MIN or q.max() > INT32_MAX):
        raise ValueError(f"{w.key}: the bias does not fit int32 at the accumulator scale "
                         f"{float(np.min(np.multiply(x.scale, w.scale, dtype=np.float32)))!r} "
                         f"(|bias / step| up to {float(np.abs(q).max())})")
    return q.astype(np.int32)
