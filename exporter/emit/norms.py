"""Normalisation layers in eval mode, in float32 between a Dequantize and a Quantize.

BatchNorm reproduces PyTorch's CPU kernel bit for bit: per channel ``alpha = (1 / sqrt(var +
eps)) * weight`` and ``beta = bias - mean * alpha`` in float32, then ``y = x * alpha + beta``
with one rounding (PyTorch fuses it into an FMA; we measured its eval outputs equal to
``fma(x, alpha, fma(-mean, alpha, bias))`` on every value). ONNX has no fused multiply-add, so
the graph computes ``x * alpha + beta`` in float64 (the product is exact) and rounds to float32.
LayerNorm uses ONNX ``LayerNormalization``; its float32 reductions may differ from PyTorch's
in the last bit, which moves a quantised value by one step only at a rounding tie.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto
from qgnn.exporter.emit.common import Emitter, to_numpy
from torch import nn


def batch_norm_terms(bn: nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``(alpha, beta)`` per channel, as PyTorch's eval kernel computes them."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm1d without running statistics (track_running_stats=False) "
                         "cannot be exported: its eval output depends on the batch")
    channels = bn.num_features
    mean, var = to_numpy(bn.running_mean), to_numpy(bn.running_var)
    weight = to_numpy(bn.weight) if bn.weight is not None else np.ones(channels, np.float32)
    bias = to_numpy(bn.bias) if bn.bias is not None else np.zeros(channels, np.float32)
    inv_std = np.float32(1.0) / np.sqrt(var + np.float32(bn.eps))
    alpha = (inv_std * weight).astype(np.float32)
    beta = (bias.astype(np.float64) - mean.astype(np.float64) * alpha).astype(np.float32)
    return alpha, beta


def batch_norm(em: Emitter, x: str, bn: nn.BatchNorm1d, hint: str) -> str:
    """(R, C) float32 -> (R, C) float32: ``x * alpha + beta`` rounded once."""
    alpha, beta = batch_norm_terms(bn)
    g = em.g
    with g.scope(hint):
        wide = g.op("Cast", [x], "x_f64", to=TensorProto.DOUBLE)
        y = g.op("Add", [g.op("Mul", [wide, g.const(alpha.astype(np.float64), "alpha")],
                              "scaled"), g.const(beta.astype(np.float64), "beta")], "y_f64")
    return g.op("Cast", [y], hint, to=TensorProto.FLOAT)


def layer_norm(em: Emitter, x: str, ln: nn.LayerNorm, hint: str) -> str:
    """(R, C) float32 -> (R, C) float32 over the last axis."""
    if len(ln.normalized_shape) != 1:
        raise ValueError(f"LayerNorm over {tuple(ln.normalized_shape)}: only the last axis "
                         f"can be exported")
    channels = ln.normalized_shape[0]
    scale = to_numpy(ln.weight) if ln.weight is not None else np.ones(channels, np.float32)
    bias = to_numpy(ln.bias) if ln.bias is not None else np.zeros(channels, np.float32)
    g = em.g
    with g.scope(hint):
        scale_name, bias_name = g.const(scale, "scale"), g.const(bias, "bias")
    return g.op("LayerNormalization", [x, scale_name, bias_name], hint, axis=-1,
                epsilon=float(ln.eps))


def norm(em: Emitter, x: str, module: nn.Module, hint: str) -> str:
    """The stack's between-layer norm (Identity, LayerNorm or BatchNorm1d)."""
    if isinstance(module, nn.Identity):
        return x
    if isinstance(module, nn.BatchNorm1d):
        return batch_norm(em, x, module, hint)
    if isinstance(module, nn.LayerNorm):
        return layer_norm(em, x, module, hint)
    raise ValueError(f"cannot export normalisation layer {type(module).__name__}")
