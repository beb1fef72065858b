"""Numpy reference of the integer computation a quantised model performs at inference.

The oracle for the exporter: it reads only the model's float parameters and ``quant_state``
(scales and zero points) and follows docs/integer-formulation.md step by step, with integer
tensors (uint8/int8 values held in int32) and the contract's float32 requantisation. Covers GCN,
GraphSAGE (mean), GIN (with or without its MLP's BatchNorm), GAT and EGC (every aggregator) stacks
on the full graph (no input projection, output head, residuals or normalisation between layers).
Float islands (GAT's attention logits, EGC's var/std) are float32 numpy steps between sites; GAT's
softmax is the contract's exact integer-table form (qgnn.contract.softmax).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qgnn.contract import (
    edge_softmax_q,
    head_scores,
    mean_multiplier,
    multiplier,
    quantize_bias,
    score_scale,
    softmax_table,
)
from qgnn.contract.layers import LAYERS

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
    """``float32(q - zp) * scale``; per-channel scales apply along dim 0."""
    scale, zp = _along_rows(p.scale, q.ndim), _along_rows(p.zero_point, q.ndim)
    return ((q - zp).astype(np.float32) * scale).astype(np.float32)


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
        acc = acc + quantize_bias(bias, x.scale, w.scale).astype(np.int64)
    return requantize(acc, multiplier(x.scale, out.scale, w.scale), out)


def int_edge_scale(h_q: np.ndarray, h: SiteParams, src: np.ndarray, w_q: np.ndarray,
                   w: SiteParams, out: SiteParams) -> np.ndarray:
    """Messages ``(E, F)``: ``(h_q[src] - zp_h) * (w_q - zp_w)`` per edge, requantised.

    ``w_q`` is ``(E,)``, or ``(E, H)`` with one weight per head when ``F = H * C`` holds ``H``
    heads of ``C`` features each (GAT's attention).
    """
    rows = h_q[src].astype(np.int64) - h.zero_point
    scaled = w_q.astype(np.int64) - w.zero_point
    if scaled.ndim == 1:
        acc = rows * scaled[:, None]
    else:
        acc = (rows.reshape(rows.shape[0], scaled.shape[1], -1) * scaled[:, :, None]).reshape(
            rows.shape)
    return requantize(acc, multiplier(h.scale, out.scale, w.scale), out)


def int_aggregate_sum(msg_q: np.ndarray, msg: SiteParams, dst: np.ndarray, num_dst: int,
                      out: SiteParams,
                      weight: tuple[np.ndarray, SiteParams] | None = None) -> np.ndarray:
    """``acc[v] = sum_{e -> v} (msg_q[e] - zp)`` in int32, requantised with ``s_msg / s_y``;
    a destination without edges gets ``zp_y``. ``weight = (w_q (E,), site)`` accumulates
    ``(msg_q[e] - zp) (w_q[e] - zp_w)`` instead, with ``M = s_msg s_w / s_y`` (the weighted form,
    for an edge weight applied inside the aggregation: EGC's ``symnorm``)."""
    terms = msg_q.astype(np.int64) - msg.zero_point
    w_scale = None
    if weight is not None:
        w_q, w = weight
        terms = terms * (w_q.astype(np.int64) - w.zero_point).reshape(-1, *[1] * (terms.ndim - 1))
        w_scale = w.scale
    acc = np.zeros((num_dst, *msg_q.shape[1:]), dtype=np.int64)
    np.add.at(acc, dst, terms)
    return requantize(acc, multiplier(msg.scale, out.scale, w_scale), out)


def int_aggregate_mean(msg_q: np.ndarray, msg: SiteParams, dst: np.ndarray, num_dst: int,
                       out: SiteParams) -> np.ndarray:
    """The sum's accumulator requantised with ``M_v = float32(M / float32(max(deg_v, 1)))``."""
    acc = np.zeros((num_dst, *msg_q.shape[1:]), dtype=np.int64)
    np.add.at(acc, dst, msg_q.astype(np.int64) - msg.zero_point)
    m_v = mean_multiplier(multiplier(msg.scale, out.scale), np.bincount(dst, minlength=num_dst))
    return requantize(acc, m_v.reshape(-1, *([1] * (acc.ndim - 1))), out)


def int_aggregate_max(msg_q: np.ndarray, msg: SiteParams, dst: np.ndarray, num_dst: int,
                      out: SiteParams, reduce: str = "max") -> np.ndarray:
    """``acc[v] = max_{e -> v} (msg_q[e] - zp)`` (``reduce="min"``: the min, EGC's ``min``
    aggregator as the max of negated values negated back), requantised with ``s_msg / s_y``; a
    destination without edges gets ``zp_y``."""
    if reduce not in ("max", "min"):
        raise ValueError(f"int_aggregate_max: reduce must be 'max' or 'min', got {reduce!r}")
    sign = 1 if reduce == "max" else -1
    acc = np.full((num_dst, *msg_q.shape[1:]), np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(acc, dst, sign * (msg_q.astype(np.int64) - msg.zero_point))
    acc = sign * np.where(acc == np.iinfo(np.int64).min, 0, acc)
    return requantize(acc, multiplier(msg.scale, out.scale), out)


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


def identity(v: np.ndarray) -> np.ndarray:
    return v


def segment_sum_f32(values: np.ndarray, dst: np.ndarray, num_dst: int) -> np.ndarray:
    """Float32 sum of rows into destinations, one edge after another in edge order from 0 (the
    training layers' ``index_add_``); a destination without edges gets 0."""
    total = np.zeros((num_dst, *values.shape[1:]), dtype=np.float32)
    np.add.at(total, dst, values.astype(np.float32))
    return total


def segment_mean_f32(values: np.ndarray, dst: np.ndarray, num_dst: int) -> np.ndarray:
    """The float32 sum divided by ``float32(max(deg, 1))``, as training's mean aggregation."""
    count = np.maximum(np.bincount(dst, minlength=num_dst), 1).astype(np.float32)
    return np.divide(segment_sum_f32(values, dst, num_dst),
                     count.reshape(-1, *[1] * (values.ndim - 1)), dtype=np.float32)


BATCH_NORM_EPS = 1e-5  # nn.BatchNorm1d's default, which GINConv's MLP norm uses (not in state_dict)


def batch_norm_eval(v: np.ndarray, params: Mapping[str, np.ndarray], prefix: str,
                    eps: float = BATCH_NORM_EPS) -> np.ndarray:
    """``(R, C)`` float32 BatchNorm in eval, as PyTorch's CPU kernel computes it: per channel
    ``alpha = float32(1 / sqrt(var + eps)) * weight`` and ``beta = bias - mean * alpha``, then
    ``v * alpha + beta`` with one rounding (a fused multiply-add: the product is exact in float64,
    the sum is rounded there and then to float32)."""
    mean, var = params.get(f"{prefix}running_mean"), params.get(f"{prefix}running_var")
    if mean is None or var is None:
        raise ValueError(f"integer_ref: BatchNorm {prefix!r} has no running statistics "
                         f"(track_running_stats=False), so its eval output depends on the batch")
    channels = mean.shape[0]
    weight = params.get(f"{prefix}weight", np.ones(channels, np.float32)).astype(np.float32)
    bias = params.get(f"{prefix}bias", np.zeros(channels, np.float32)).astype(np.float32)
    inv_std = np.float32(1.0) / np.sqrt(var.astype(np.float32) + np.float32(eps))
    alpha = (inv_std * weight).astype(np.float32)
    beta = (bias.astype(np.float64) - mean.astype(np.float32).astype(np.float64) * alpha
            ).astype(np.float32)
    return (v.astype(np.float64) * alpha + beta.astype(np.float64)).astype(np.float32)


def leaky_relu(v: np.ndarray, negative_slope: float) -> np.ndarray:
    return np.where(v > 0, v, v * np.float32(negative_slope)).astype(np.float32)


def gcn_norm_np(src: np.ndarray, dst: np.ndarray, in_degree: np.ndarray) -> np.ndarray:
    """Float32 ``(d_u + 1)^-1/2 (d_v + 1)^-1/2`` per edge of a self-looped edge list."""
    inv_sqrt = (np.float32(1.0) / np.sqrt(in_degree.astype(np.float32) + np.float32(1.0)))
    return (inv_sqrt[src] * inv_sqrt[dst]).astype(np.float32)


def lightgcn_norm_np(src: np.ndarray, dst: np.ndarray, in_degree: np.ndarray) -> np.ndarray:
    """Float32 ``max(d_u, 1)^-1/2 max(d_v, 1)^-1/2`` per edge (no self-loops)."""
    inv_sqrt = np.float32(1.0) / np.sqrt(np.maximum(in_degree.astype(np.float32),
                                                    np.float32(1.0)))
    return (inv_sqrt[src] * inv_sqrt[dst]).astype(np.float32)


def lightgcn_layer(x_q: np.ndarray, params: Mapping[str, np.ndarray],
                   sites: Mapping[str, SiteParams], src: np.ndarray, dst: np.ndarray,
                   num_nodes: int, trace: Trace) -> np.ndarray:
    """LightGCN: ``x`` -> per-edge ``msg`` scaled by the quantised ``edge_weight`` -> summed
    ``agg`` -> ``out`` (the identity, re-quantised). No parameters."""
    s = sites
    in_degree = np.bincount(dst, minlength=num_nodes)
    trace["edge_weight"] = ew_q = quantize(lightgcn_norm_np(src, dst, in_degree),
                                           s["edge_weight"])
    trace["msg"] = msg_q = int_edge_scale(x_q, s["x"], src, ew_q, s["edge_weight"], s["msg"])
    trace["agg"] = agg_q = int_aggregate_sum(msg_q, s["msg"], dst, num_nodes, s["agg"])
    return float_step(agg_q, s["agg"], identity, s["out"])


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


def gin_layer(x_q: np.ndarray, params: Mapping[str, np.ndarray], sites: Mapping[str, SiteParams],
              src: np.ndarray, dst: np.ndarray, num_nodes: int, trace: Trace) -> np.ndarray:
    """GIN: ``x`` -> ``msg`` (re-quantised copy per edge) -> summed ``agg``;
    ``agg + (1 + eps) x`` -> ``combined`` -> ``lin1`` (with bias) -> BatchNorm (when the MLP has
    one) and ReLU -> ``hidden`` -> ``lin2`` (with bias) -> ``out``. ``params``: ``eps``,
    ``lin1.*``, ``lin2.*``, optionally ``norm.*``."""
    s = sites
    trace["msg"] = msg_q = float_step(x_q[src], s["x"], identity, s["msg"])
    trace["agg"] = agg_q = int_aggregate_sum(msg_q, s["msg"], dst, num_nodes, s["agg"])
    # (1 + eps) in float32 times the node's features, added to the aggregate (the layer's order)
    self_weight = np.float32(1.0) + np.asarray(params["eps"], np.float32).reshape(())
    combined = dequantize(agg_q, s["agg"]) + self_weight * dequantize(x_q, s["x"])
    trace["combined"] = c_q = quantize(combined, s["combined"])
    trace["weight1"] = w1_q = quantize(params["lin1.weight"], s["weight1"])
    trace["lin1"] = l1_q = int_linear(c_q, s["combined"], w1_q, s["weight1"], s["lin1"],
                                      params.get("lin1.bias"))
    has_norm = any(k.startswith("norm.") for k in params)
    trace["hidden"] = h_q = float_step(
        l1_q, s["lin1"],
        (lambda v: relu(batch_norm_eval(v, params, "norm."))) if has_norm else relu, s["hidden"])
    trace["weight2"] = w2_q = quantize(params["lin2.weight"], s["weight2"])
    return int_linear(h_q, s["hidden"], w2_q, s["weight2"], s["out"], params.get("lin2.bias"))


def gat_layer(x_q: np.ndarray, params: Mapping[str, np.ndarray], sites: Mapping[str, SiteParams],
              src: np.ndarray, dst: np.ndarray, num_nodes: int, trace: Trace, *,
              concat: bool = True, negative_slope: float = 0.2) -> np.ndarray:
    """GAT: ``x`` -> ``lin`` ``(N, H*C)``; per-head scores of ``lin`` and the quantised
    ``att_src``/``att_dst`` (qgnn.contract.attention); float island: LeakyReLU of source plus
    destination score per edge -> ``logits``; the contract's exact softmax of the quantised
    logits (qgnn.contract.softmax) -> ``edge_weight`` ``(E', H)``; ``lin[src] * alpha`` per
    head -> ``msg`` -> summed ``agg``; heads concatenated (``concat``) or averaged, ``+ bias`` ->
    ``out``. Edges: self-loops dropped, then one per node appended after all edges
    (``with_fresh_self_loops``)."""
    s = sites
    att_src, att_dst = params["att_src"], params["att_dst"]
    heads, dim = att_src.shape
    bias = params.get("bias")
    width = heads * dim if concat else dim
    if bias is not None and bias.shape != (width,):
        raise ValueError(f"gat_layer: bias of shape {bias.shape} does not fit concat={concat} "
                         f"with {heads} heads of {dim}")
    trace["weight"] = w_q = quantize(params["lin.weight"], s["weight"])
    trace["lin"] = lin_q = int_linear(x_q, s["x"], w_q, s["weight"], s["lin"])
    trace["att_src"] = a_src_q = quantize(att_src, s["att_src"])
    trace["att_dst"] = a_dst_q = quantize(att_dst, s["att_dst"])
    score_src, score_dst = (  # (N, H) each: exact per-head dots, one float32 scale
        head_scores(lin_q, int(s["lin"].zero_point), a_q,
                    score_scale(s["lin"].scale, s[k].scale))
        for a_q, k in ((a_src_q, "att_src"), (a_dst_q, "att_dst")))
    keep = src != dst
    loops = np.arange(num_nodes, dtype=np.int64)
    src_l, dst_l = np.concatenate([src[keep], loops]), np.concatenate([dst[keep], loops])
    logits = leaky_relu(score_src[src_l] + score_dst[dst_l], negative_slope)  # (E', H)
    trace["logits"] = logits_q = quantize(logits, s["logits"])
    table = softmax_table(s["logits"].scale, s["logits"].qmax.bit_length())  # unsigned site
    alpha = edge_softmax_q(logits_q.astype(np.uint8), dst_l, num_nodes, table, "gat_layer")
    trace["edge_weight"] = alpha_q = quantize(alpha, s["edge_weight"])
    trace["msg"] = msg_q = int_edge_scale(lin_q, s["lin"], src_l, alpha_q, s["edge_weight"],
                                          s["msg"])
    trace["agg"] = agg_q = int_aggregate_sum(msg_q, s["msg"], dst_l, num_nodes, s["agg"])
    agg = dequantize(agg_q, s["agg"])
    if not concat:  # the mean over heads: their float32 sum divided by H
        agg = np.divide(agg.reshape(num_nodes, heads, dim).sum(1, dtype=np.float32),
                        np.float32(heads), dtype=np.float32)
    return quantize(agg if bias is None else agg + bias.astype(np.float32), s["out"])


EGC_AGGREGATORS = ("symnorm", "sum", "mean", "max", "min", "var", "std")


def egc_layer(x_q: np.ndarray, params: Mapping[str, np.ndarray], sites: Mapping[str, SiteParams],
              src: np.ndarray, dst: np.ndarray, num_nodes: int, trace: Trace, *,
              aggregators: Sequence[str] = ("symnorm",), heads: int = 8) -> np.ndarray:
    """EGC: ``x`` -> ``bases``; ``x`` -> ``comb`` (with bias); ``bases`` gathered along
    self-looped edges (loops after all edges) -> ``msg``; each aggregator into ``agg`` (``symnorm``
    weighted by ``edge_weight``, the quantised GCN coefficients; ``var``/``std`` a float island);
    per node and head ``comb (H x k) @ agg (k x F/H)`` over two activation sites, + bias folded
    at ``s_comb s_agg`` -> ``out``. The number of bases follows from the weights' shapes."""
    s = sites
    bad = [a for a in aggregators if a not in EGC_AGGREGATORS]
    if not aggregators or bad or len(set(aggregators)) != len(aggregators):
        raise ValueError(f"egc_layer: aggregators must be distinct names from {EGC_AGGREGATORS}, "
                         f"got {list(aggregators)!r}")
    w_b, w_c = params["bases_lin.weight"], params["comb_lin.weight"]
    slots = heads * len(aggregators)
    bases = w_c.shape[0] // slots
    bias = params.get("bias")
    if (bases == 0 or w_c.shape[0] != slots * bases or w_b.shape[0] % bases
            or (bias is not None and bias.shape != (heads * w_b.shape[0] // bases,))):
        raise ValueError(f"egc_layer: comb_lin.weight {w_c.shape}, bases_lin.weight {w_b.shape}"
                         f" and bias {None if bias is None else bias.shape} do not fit "
                         f"heads={heads} and {len(aggregators)} aggregators")
    k, width = len(aggregators) * bases, w_b.shape[0] // bases  # width = F / H
    trace["bases_weight"] = wb_q = quantize(w_b, s["bases_weight"])
    trace["bases"] = b_q = int_linear(x_q, s["x"], wb_q, s["bases_weight"], s["bases"])
    trace["comb_weight"] = wc_q = quantize(w_c, s["comb_weight"])
    trace["comb"] = c_q = int_linear(x_q, s["x"], wc_q, s["comb_weight"], s["comb"],
                                     params.get("comb_lin.bias"))
    loops = np.arange(num_nodes, dtype=np.int64)
    src_l, dst_l = np.concatenate([src, loops]), np.concatenate([dst, loops])
    trace["msg"] = msg_q = float_step(b_q[src_l], s["bases"], identity, s["msg"])
    weight = None
    if "symnorm" in aggregators:
        coef = gcn_norm_np(src_l, dst_l, np.bincount(dst, minlength=num_nodes))
        trace["edge_weight"] = ew_q = quantize(coef, s["edge_weight"])
        weight = (ew_q, s["edge_weight"])
    m, a = s["msg"], s["agg"]
    parts = []
    for name in aggregators:
        if name == "symnorm":
            parts.append(int_aggregate_sum(msg_q, m, dst_l, num_nodes, a, weight))
        elif name == "sum":
            parts.append(int_aggregate_sum(msg_q, m, dst_l, num_nodes, a))
        elif name == "mean":
            parts.append(int_aggregate_mean(msg_q, m, dst_l, num_nodes, a))
        elif name in ("max", "min"):
            parts.append(int_aggregate_max(msg_q, m, dst_l, num_nodes, a, name))
        else:  # var / std: float island on the dequantised messages, as training computes it
            v = dequantize(msg_q, m)
            mean = segment_mean_f32(v, dst_l, num_nodes)
            var = segment_mean_f32(v * v, dst_l, num_nodes) - mean * mean
            parts.append(quantize(var if name == "var" else
                                  np.sqrt(np.maximum(var, np.float32(1e-5))), a))
    trace["agg"] = agg_q = np.stack(parts, 1)  # (N, |A|, bases * F/H)
    comb_c = (c_q.astype(np.int64) - s["comb"].zero_point).reshape(num_nodes, heads, k)
    agg_c = (agg_q.astype(np.int64) - a.zero_point).reshape(num_nodes, k, width)
    acc = np.einsum("nhk,nkf->nhf", comb_c, agg_c).reshape(num_nodes, heads * width)
    if bias is not None:
        acc = acc + quantize_bias(bias, s["comb"].scale, a.scale).astype(np.int64)
    return requantize(acc, multiplier(s["comb"].scale, s["out"].scale, a.scale), s["out"])


# (x_q, params, sites, src, dst, num_nodes, trace, **options) -> out_q: the ``oracle`` of
# each layer spec (qgnn.contract.layers) is one of the ``*_layer`` functions above
LayerFn = Callable[..., np.ndarray]


def layer_options(model: str, layer_kwargs: Mapping[str, Any], last: bool) -> dict[str, Any]:
    """The options of one layer that its parameters do not record, from ``ModelConfig``'s
    ``layer_kwargs`` with the model stack's defaults (``training/nn/models.py``): GAT hidden
    layers concatenate their heads, the output layer averages them; EGC uses ``heads`` heads in
    hidden layers and ``out_heads`` in the output layer."""
    if model == "gat":
        return {"concat": bool(layer_kwargs.get("concat", True)) and not last,
                "negative_slope": float(layer_kwargs.get("negative_slope", 0.2))}
    if model == "egc":
        return {"aggregators": list(layer_kwargs.get("aggregators", ["symnorm"])),
                "heads": int(layer_kwargs.get("out_heads", 1) if last else
                             layer_kwargs.get("heads", 8))}
    return {}


def integer_forward(model: str, x: np.ndarray, params: Mapping[str, np.ndarray],
                    qstate: Mapping[str, Any], src: np.ndarray, dst: np.ndarray, num_layers: int,
                    trace: Trace | None = None,
                    layer_kwargs: Mapping[str, Any] | None = None) -> np.ndarray:
    """A stack of ``model`` layers (ReLU between them) on the full graph, in integers.

    ``params`` are the model's float parameters by ``state_dict`` name, ``qstate`` is
    ``quant_state(model)``, ``src``/``dst`` the graph's edges (no self-loops). ``layer_kwargs``
    are ``ModelConfig.layer_kwargs`` (GAT's ``concat``/``negative_slope``, EGC's ``heads``/
    ``out_heads``/``aggregators``; see :func:`layer_options`). Returns the dequantised ``(N, C)``
    logits; ``trace`` (optional) receives every site's integers by path.
    """
    if model not in LAYERS:
        raise ValueError(f"integer_forward: model must be one of {sorted(LAYERS)}, got "
                         f"{model!r}")
    layer_fn: LayerFn = LAYERS[model].load("oracle")
    extra = sorted({k.split(".", 1)[0] for k in (*params, *qstate)
                    if k.split(".", 1)[0] in ("input_proj", "head", "norms")})
    if extra:
        raise ValueError(f"integer_forward covers plain stacks of layers; this model has "
                         f"{extra} (input projection, output head or normalisation layers)")
    n = x.shape[0]
    sites_of = [{key.rsplit(".", 1)[1]: SiteParams.from_state(v) for key, v in qstate.items()
                 if key.startswith(f"layers.{i}.q.")} for i in range(num_layers)]
    x_q = quantize(x, sites_of[0]["x"])
    out_q = x_q
    mean = LAYERS[model].layer_mean  # LightGCN: average of the input and every layer's output
    total = dequantize(x_q, sites_of[0]["x"]) if mean else None
    for i, sites in enumerate(sites_of):
        prefix = f"layers.{i}."
        layer_params = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
        layer_trace: Trace = {"x": x_q}
        options = layer_options(model, layer_kwargs or {}, i + 1 == num_layers)
        out_q = layer_fn(x_q, layer_params, sites, src, dst, n, layer_trace, **options)
        layer_trace["out"] = out_q
        if trace is not None:
            trace.update({f"{prefix}q.{k}": v for k, v in layer_trace.items()})
        if total is not None:
            total = (total + dequantize(out_q, sites["out"])).astype(np.float32)
        if i + 1 < num_layers:
            x_q = float_step(out_q, sites["out"], identity if mean else relu,
                             sites_of[i + 1]["x"])
    if total is not None:
        return (total / np.float32(num_layers + 1)).astype(np.float32)
    return dequantize(out_q, sites_of[-1]["out"])
