"""Numpy reference of the integer computation a quantised model performs at inference.

The oracle for the exporter: it reads only the model's float parameters and ``quant_state``
(scales and zero points) and follows docs/integer-formulation.md step by step, with integer
tensors (uint8/int8 values held in int32) and the contract's float32 requantisation. Covers GCN
and GraphSAGE (mean) stacks on the full graph (no input projection, residuals or normalisation
layers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class SiteParams:
    """One site's quantisation: ``scale`` float32 and ``zero_point`` int32, each ``()`` or
    ``(C,)``."""

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int

    @classmethod
    def from_state(cls, entry: Mapping[str, Any]) -> SiteParams:
        bits, signed = int(entry["bits"]), bool(entry["signed"])
        qmin, qmax = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        scale = np.asarray(entry["scale"], dtype=np.float32)
        zero_point = np.asarray(entry["zero_point"], dtype=np.int32)
        if not entry.get("per_channel", False):
            scale, zero_point = scale.reshape(()), zero_point.reshape(())
        return cls(scale, zero_point, qmin, qmax)


def quantize(x: np.ndarray, p: SiteParams) -> np.ndarray:
    """``clamp(rint(x / scale) + zp, qmin, qmax)``; per-channel scales apply along dim 0."""
    scale, zp = _along_rows(p.scale, x.ndim), _along_rows(p.zero_point, x.ndim)
    q = np.rint(x.astype(np.float32) / scale) + zp
    return np.clip(q, p.qmin, p.qmax).astype(np.int32)


def dequantize(q: np.ndarray, p: SiteParams) -> np.ndarray:
    return ((q - p.zero_point).astype(np.float32) * p.scale).astype(np.float32)


def multiplier(*ratio: float | np.ndarray) -> np.ndarray:
    """``M = float32(float32(a * b) / c)`` (or ``float32(a / c)``): float32 operations, left to
    right, as the ``ai.qgnn`` operators compute it (docs/onnx-ops.md)."""
    *num, den = (np.asarray(r, dtype=np.float32) for r in ratio)
    value = num[0]
    for factor in num[1:]:
        value = np.multiply(value, factor, dtype=np.float32)
    return np.divide(value, den, dtype=np.float32)


def requantize(acc: np.ndarray, m: np.ndarray, out: SiteParams) -> np.ndarray:
    """``saturate(rint(float32(acc) * M) + zp_y)``: an int32 accumulator to the output site."""
    _check_int32(acc)
    y = np.rint(acc.astype(np.float32) * m.astype(np.float32)) + out.zero_point
    return np.clip(y, out.qmin, out.qmax).astype(np.int32)


def _along_rows(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape(-1, *([1] * (ndim - 1))) if v.ndim == 1 else v


def _check_int32(acc: np.ndarray) -> None:
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError(f"integer accumulator left int32: [{acc.min()}, {acc.max()}]")


def int_linear(x_q: np.ndarray, x: SiteParams, w_q: np.ndarray, w: SiteParams,
               out: SiteParams, bias: np.ndarray | None = None) -> np.ndarray:
    """``(R, K) uint8 x (J, K) int8 -> (R, J)``: ``sum_k (x_q - zp_x) w_q`` in int32, plus
    ``rint(bias / float32(s_x s_w))`` when given, requantised with ``M = float32(s_x s_w / s_y)``
    (one ``M`` per column for per-channel weights)."""
    acc = (x_q.astype(np.int64) - x.zero_point) @ w_q.astype(np.int64).T
    if bias is not None:
        acc_scale = np.multiply(x.scale, w.scale, dtype=np.float32)
        acc = acc + np.rint(np.divide(bias.astype(np.float32), acc_scale,
                                      dtype=np.float32)).astype(np.int64)
    return requantize(acc, multiplier(x.scale, w.scale, out.scale), out)


def int_edge_scale(h_q: np.ndarray, h: SiteParams, src: np.ndarray, w_q: np.ndarray,
                   w: SiteParams, out: SiteParams) -> np.ndarray:
    """Messages ``(E, F)``: ``(h_q[src] - zp_h) * (w_q - zp_w)`` per edge, requantised."""
    scaled = (w_q.astype(np.int64) - w.zero_point)[:, None]
    acc = (h_q[src].astype(np.int64) - h.zero_point) * scaled
    return requantize(acc, multiplier(h.scale, w.scale, out.scale), out)


def int_aggregate_sum(msg_q: np.ndarray, msg: SiteParams, dst: np.ndarray, num_dst: int,
                      out: SiteParams) -> np.ndarray:
    """``acc[v] = sum_{e -> v} (msg_q[e] - zp)`` in int32, requantised with ``s_msg / s_y``;
    a destination without edges gets ``zp_y``."""
    acc = np.zeros((num_dst, *msg_q.shape[1:]), dtype=np.int64)
    np.add.at(acc, dst, msg_q.astype(np.int64) - msg.zero_point)
    return requantize(acc, multiplier(msg.scale, out.scale), out)


def int_aggregate_mean(msg_q: np.ndarray, msg: SiteParams, dst: np.ndarray, num_dst: int,
                       out: SiteParams) -> np.ndarray:
    """The sum's accumulator requantised with ``M_v = float32(M / float32(max(deg_v, 1)))``."""
    acc = np.zeros((num_dst, *msg_q.shape[1:]), dtype=np.int64)
    np.add.at(acc, dst, msg_q.astype(np.int64) - msg.zero_point)
    deg = np.maximum(np.bincount(dst, minlength=num_dst), 1).astype(np.float32)
    m_v = np.divide(multiplier(msg.scale, out.scale), deg, dtype=np.float32)
    return requantize(acc, m_v.reshape(-1, *([1] * (acc.ndim - 1))), out)


def float_step(a_q: np.ndarray, a: SiteParams, fn: Callable[[np.ndarray], np.ndarray],
               out: SiteParams) -> np.ndarray:
    """An elementwise float32 step between two sites: dequantise, ``fn``, quantise.

    Used where no integer accumulation happens (bias after aggregation, ReLU into the next
    layer); it performs the fake-quantised model's float32 operations in the same order, so its
    integers equal training's exactly.
    """
    return quantize(fn(dequantize(a_q, a)), out)


def relu(v: np.ndarray) -> np.ndarray:
    return np.maximum(v, np.float32(0.0))


def gcn_norm_np(src: np.ndarray, dst: np.ndarray, in_degree: np.ndarray) -> np.ndarray:
    """Float32 ``(d_u + 1)^-1/2 (d_v + 1)^-1/2`` per edge of a self-looped edge list."""
    inv_sqrt = (np.float32(1.0) / np.sqrt(in_degree.astype(np.float32) + np.float32(1.0)))
    return (inv_sqrt[src] * inv_sqrt[dst]).astype(np.float32)


Trace = dict[str, np.ndarray]


def gcn_layer(x_q: np.ndarray, params: Mapping[str, np.ndarray], sites: Mapping[str, SiteParams],
              src: np.ndarray, dst: np.ndarray, num_nodes: int, trace: Trace) -> np.ndarray:
    """GCN: ``x`` -> ``lin`` -> per-edge ``msg`` over self-looped edges -> summed ``agg`` ->
    ``+ bias`` -> ``out``. ``params``: ``lin.weight`` (J, K), optionally ``bias`` (J,)."""
    s = sites
    in_degree = np.bincount(dst, minlength=num_nodes)
    loops = np.arange(num_nodes, dtype=np.int64)
    src_l, dst_l = np.concatenate([src, loops]), np.concatenate([dst, loops])
    trace["weight"] = w_q = quantize(params["lin.weight"], s["weight"])
    trace["lin"] = lin_q = int_linear(x_q, s["x"], w_q, s["weight"], s["lin"])
    trace["edge_weight"] = ew_q = quantize(gcn_norm_np(src_l, dst_l, in_degree), s["edge_weight"])
    trace["msg"] = msg_q = int_edge_scale(lin_q, s["lin"], src_l, ew_q, s["edge_weight"], s["msg"])
    trace["agg"] = agg_q = int_aggregate_sum(msg_q, s["msg"], dst_l, num_nodes, s["agg"])
    bias = params.get("bias")
    return float_step(agg_q, s["agg"], (lambda v: v + bias) if bias is not None else (lambda v: v),
                      s["out"])


def sage_layer(x_q: np.ndarray, params: Mapping[str, np.ndarray], sites: Mapping[str, SiteParams],
               src: np.ndarray, dst: np.ndarray, num_nodes: int, trace: Trace) -> np.ndarray:
    """GraphSAGE (mean): ``x`` -> ``msg`` (re-quantised copy per edge) -> mean ``agg`` ->
    ``lin_l`` (with bias); ``x`` -> ``lin_r``; ``lin_l + lin_r`` -> ``out``. No edge weights."""
    s = sites
    trace["msg"] = msg_q = float_step(x_q[src], s["x"], lambda v: v, s["msg"])
    trace["agg"] = agg_q = int_aggregate_mean(msg_q, s["msg"], dst, num_nodes, s["agg"])
    trace["weight_l"] = wl_q = quantize(params["lin_l.weight"], s["weight_l"])
    trace["lin_l"] = l_q = int_linear(agg_q, s["agg"], wl_q, s["weight_l"], s["lin_l"],
                                      params.get("lin_l.bias"))
    trace["weight_r"] = wr_q = quantize(params["lin_r.weight"], s["weight_r"])
    trace["lin_r"] = r_q = int_linear(x_q, s["x"], wr_q, s["weight_r"], s["lin_r"])
    return quantize(dequantize(l_q, s["lin_l"]) + dequantize(r_q, s["lin_r"]), s["out"])


LayerFn = Callable[[np.ndarray, Mapping[str, np.ndarray], Mapping[str, SiteParams], np.ndarray,
                    np.ndarray, int, Trace], np.ndarray]
LAYER_FNS: dict[str, LayerFn] = {"gcn": gcn_layer, "sage": sage_layer}


def integer_forward(model: str, x: np.ndarray, params: Mapping[str, np.ndarray],
                    qstate: Mapping[str, Any], src: np.ndarray, dst: np.ndarray, num_layers: int,
                    trace: Trace | None = None) -> np.ndarray:
    """A stack of ``model`` layers (ReLU between them) on the full graph, in integers.

    ``params`` are the model's float parameters by ``state_dict`` name, ``qstate`` is
    ``quant_state(model)``, ``src``/``dst`` the graph's edges (no self-loops). Returns the
    dequantised ``(N, C)`` logits; ``trace`` (optional) receives every site's integers by path.
    """
    if model not in LAYER_FNS:
        raise ValueError(f"integer_forward: model must be one of {sorted(LAYER_FNS)}, got "
                         f"{model!r}")
    n = x.shape[0]
    sites_of = [{key.rsplit(".", 1)[1]: SiteParams.from_state(v) for key, v in qstate.items()
                 if key.startswith(f"layers.{i}.q.")} for i in range(num_layers)]
    x_q = quantize(x, sites_of[0]["x"])
    out_q = x_q
    for i, sites in enumerate(sites_of):
        prefix = f"layers.{i}."
        layer_params = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
        layer_trace: Trace = {"x": x_q}
        out_q = LAYER_FNS[model](x_q, layer_params, sites, src, dst, n, layer_trace)
        layer_trace["out"] = out_q
        if trace is not None:
            trace.update({f"{prefix}q.{k}": v for k, v in layer_trace.items()})
        if i + 1 < num_layers:
            x_q = float_step(out_q, sites["out"], relu, sites_of[i + 1]["x"])
    return dequantize(out_q, sites_of[-1]["out"])
