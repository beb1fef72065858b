"""Learned quantisation parameters as plain JSON-able data, keyed by dotted site path.

``quant_state(model)["layers.0.q.lin"] == {"scale": [...], "zero_point": [...], "bits": 8,
"signed": False, "per_channel": False, "role": "src"}``: what the exporter reads from the
checkpoint's ``config.json`` (under ``extra``) without re-running training. Scales are float32
values written as Python floats (exactly representable); one entry per channel when
``per_channel``, else one. Sites a model never used (never observed a range) are absent.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.quantiser import qrange
from qgnn.training.quant.sites import (
    QuantizedSites,
    SiteQuantizer,
    quantize_model,
    quantized_sites,
)
from torch import nn

SiteState = dict[str, Any]


def quant_state(model: nn.Module) -> dict[str, SiteState]:
    """``{"<module path>.<site>": {scale, zero_point, bits, signed, per_channel, role}}``."""
    out: dict[str, SiteState] = {}
    for path, seam in quantized_sites(model).items():
        for name, quantizer in seam.quantizers.items():
            assert isinstance(quantizer, SiteQuantizer)
            if not quantizer.calibrated:
                continue
            out[f"{path}.{name}" if path else name] = {
                "scale": [float(s) for s in quantizer.scale.detach().cpu().reshape(-1)],
                "zero_point": [int(z) for z in quantizer.zero_point.cpu().reshape(-1)],
                "bits": quantizer.bits,
                "signed": quantizer.signed,
                "per_channel": quantizer.per_channel,
                "role": quantizer.role,
            }
    return out


def load_quant_state(model: nn.Module, state: dict[str, SiteState]) -> nn.Module:
    """Set every listed site's scale and zero point (a quantised model of the same shape).

    Each entry must match the model's site (bits, signedness, role); the range trackers are
    reset to the range the parameters represent, so training can continue from them.
    """
    seams = quantized_sites(model)
    for key, entry in state.items():
        path, _, name = key.rpartition(".")
        seam = seams.get(path)
        if not isinstance(seam, QuantizedSites) or name not in seam.quantizers:
            raise ValueError(f"load_quant_state: {key!r} is not a quantisation site of the model")
        quantizer = seam.quantizers[name]
        assert isinstance(quantizer, SiteQuantizer)
        for field in ("bits", "signed", "role"):
            if entry.get(field) != getattr(quantizer, field):
                raise ValueError(f"load_quant_state: {key}.{field} is {entry.get(field)!r} but "
                                 f"the model's site has {getattr(quantizer, field)!r}")
        scale = np.asarray(entry["scale"], dtype=np.float32)
        zero_point = np.asarray(entry["zero_point"], dtype=np.int64)
        if scale.ndim != 1 or scale.size == 0 or scale.shape != zero_point.shape:
            raise ValueError(f"load_quant_state: {key} needs equally long non-empty scale and "
                             f"zero_point lists, got {scale.shape} and {zero_point.shape}")
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError(f"load_quant_state: {key}.scale must be finite and > 0, got "
                             f"{scale.tolist()}")
        qmin, qmax = qrange(quantizer.bits, quantizer.signed)
        if ((zero_point < qmin) | (zero_point > qmax)).any() or (
                quantizer.signed and (zero_point != 0).any()):
            raise ValueError(f"load_quant_state: {key}.zero_point {zero_point.tolist()} is "
                             f"outside [{qmin}, {qmax}] (or non-zero for a signed site)")
        per_channel = bool(entry.get("per_channel", False))
        device = quantizer.scale.device
        s = torch.from_numpy(scale).to(device)
        z = torch.from_numpy(zero_point).to(device)
        if not per_channel:
            if s.numel() != 1:
                raise ValueError(f"load_quant_state: {key} is per-tensor but has {s.numel()} "
                                 f"scales")
            s, z = s.reshape(()), z.reshape(())
        quantizer.scale, quantizer.zero_point = s, z
        quantizer.tracker.lo = (qmin - z).to(torch.float32) * s
        quantizer.tracker.hi = (qmax - z).to(torch.float32) * s
    return model


def quant_extra(model: nn.Module) -> dict[str, Any]:
    """The checkpoint ``extra`` that rebuilds the quantised model: ``{"quant": {"config":
    QuantConfig.to_dict(), "state": quant_state(model)}}`` (what ``qgnn train`` stores and the
    exporter reads); ``{}`` for a float model."""
    seams = quantized_sites(model)
    if not seams:
        return {}
    configs = {json.dumps(s.cfg.to_dict(), sort_keys=True) for s in seams.values()}
    if len(configs) != 1:
        raise ValueError(f"quant_extra: the model's sites use {len(configs)} different configs")
    return {"quant": {"config": next(iter(seams.values())).cfg.to_dict(),
                      "state": quant_state(model)}}


def restore_quantized(model: nn.Module, extra: dict[str, Any]) -> nn.Module:
    """Quantise a freshly built float model as a checkpoint's ``extra`` describes (see
    :func:`quant_extra`) and set its scales and zero points; without ``extra["quant"]`` the
    model is returned as is."""
    record = extra.get("quant")
    if record is None:
        return model
    if not isinstance(record, dict) or "config" not in record:
        raise ValueError("restore_quantized: extra['quant'] needs a 'config' (and a 'state')")
    model = quantize_model(model, QuantConfig.from_dict(record["config"]))
    return load_quant_state(model, record.get("state", {}))
