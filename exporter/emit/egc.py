"""EGC (training/nn/layers/egc.py): shared basis projections aggregated over self-looped edges,
mixed per node and head by node-specific weights.

INT8: ``x`` -> rule 2 -> ``bases``; ``x[:D]`` -> rule 2 (+ bias) -> ``comb``; ``bases`` -> rule 5
(per node: every edge copies its source row) -> ``msg``; per aggregator into ``agg``: ``symnorm``
= rule 4 weighted by ``edge_weight`` (rule 1 on the GCN coefficients; one ``QGCNAggregate``
without a message site, which builds the self-loops and coefficients inside), ``sum``/``mean``/
``max`` = rule 4, ``min`` = rule 4 max on reflected integers (``qmax - q``), ``var``/``std`` = float
island (rule 6) -> rule 1; stacked; ``comb (H x k) @ agg (k x F/H)`` per node = rule 2 on two
activation sites (``MatMulInteger`` uint8 x uint8) + bias -> ``out``.
"""

from __future__ import annotations

import numpy as np
from qgnn.contract import multiplier
from qgnn.exporter.emit.common import Csr, Emitter, LayerInput, gcn_coefficients, to_numpy
from qgnn.exporter.quant_params import LayerSites, bias_int32
from qgnn.training.nn.layers.egc import EGConv


def _float_aggregator(em: Emitter, msg: str, looped: Csr, name: str, coef: str | None) -> str:
    """One aggregator over float messages (N, F) -> (D, F)."""
    g = em.g
    if name == "symnorm":
        return g.qgnn("Aggregate", [msg, looped.indptr, looped.src, coef], name, reduce="sum")
    if name in ("sum", "mean", "max"):
        return g.qgnn("Aggregate", [msg, looped.indptr, looped.src], name, reduce=name)
    if name == "min":
        negated = g.op("Neg", [msg], "neg_msg")
        return g.op("Neg", [g.qgnn("Aggregate", [negated, looped.indptr, looped.src],
                                   "neg_max", reduce="max")], name)
    mean = g.qgnn("Aggregate", [msg, looped.indptr, looped.src], f"{name}_mean", reduce="mean")
    square = g.qgnn("Aggregate", [g.op("Mul", [msg, msg], f"{name}_sq_msg"), looped.indptr,
                                  looped.src], f"{name}_sq_mean", reduce="mean")
    var = g.op("Sub", [square, g.op("Mul", [mean, mean], f"{name}_mean_sq")], f"{name}_var")
    if name == "var":
        return var
    return g.op("Sqrt", [g.op("Max", [var, em.f32(1e-5)], "var_clamped")], name)


def emit(em: Emitter, layer: EGConv, x: str, inp: LayerInput, sites: LayerSites | None) -> str:
    """``x`` (N, K) -> (D, out_dim): uint8 at ``x`` -> ``out`` when quantised, else float32."""
    g, csr = em.g, inp.csr
    heads, num_bases, aggregators = layer.heads, layer.bases, layer.aggregators
    width = layer.out_dim // heads  # F / H
    k = len(aggregators) * num_bases
    w_b, w_c = to_numpy(layer.bases_lin.weight), to_numpy(layer.comb_lin.weight)
    b_c = None if layer.comb_lin.bias is None else to_numpy(layer.comb_lin.bias)
    bias = None if layer.bias is None else to_numpy(layer.bias)
    x_dst = em.rows(x, csr.num_dst, "x_dst")
    s = sites
    if s is None:
        looped = csr.with_self_loops(drop_existing=False)
        coef = (gcn_coefficients(em, looped, inp.inv_sqrt_degree, "gcn_norm")
                if "symnorm" in aggregators else None)
        bases = em.float_linear(x, w_b, None, "bases")
        comb = em.float_linear(x_dst, w_c, b_c, "comb")
        parts = [_float_aggregator(em, bases, looped, a, coef) for a in aggregators]
    else:
        bases = em.int_linear(x, s["x"], w_b, s["bases_weight"], None, s["bases"], "bases")
        comb = em.int_linear(x_dst, s["x"], w_c, s["comb_weight"], b_c, s["comb"], "comb")
        msg = em.requantize_float_step(bases, s["bases"], s["msg"], "msg")
        parts = [_int_aggregator(em, msg, s, inp, a) for a in aggregators]
    agg = parts[0] if len(parts) == 1 else g.op(
        "Concat", [g.op("Unsqueeze", [p, em.i64([1])], f"{a}_slot")
                   for p, a in zip(parts, aggregators, strict=True)], "agg_stacked", axis=1)
    agg_k = g.op("Reshape", [agg, em.i64([0, k, width])], "agg_k")  # (D, k, F/H)
    comb_k = g.op("Reshape", [comb, em.i64([0, heads, k])], "comb_k")  # (D, H, k)
    shape = em.i64([0, layer.out_dim])
    if s is None:
        out = g.op("Reshape", [g.op("MatMul", [comb_k, agg_k], "mix"), shape], "mix_flat")
        return out if bias is None else g.op("Add", [out, g.const(bias, "bias")], "out")
    acc = g.op("Reshape", [g.op("MatMulInteger", [comb_k, agg_k, em.zero_point(s["comb"]),
                                                  em.zero_point(s["agg"])], "mix_acc"), shape],
               "mix_acc_flat")
    if bias is not None:
        acc = g.op("Add", [acc, g.const(bias_int32(bias, s["comb"], s["agg"]), "bias_q")],
                   "mix_acc_bias")
    out = em.requantize(acc, multiplier(s["comb"].scale, s["out"].scale, s["agg"].scale),
                        s["out"], "out")
    if em.debug:
        looped = csr.with_self_loops(drop_existing=False)
        records = [("x", x, "node"), ("bases", bases, "node"), ("comb", comb, "node"),
                   ("msg", g.op("Gather", [msg, looped.src], "msg_edges", axis=0),
                    "looped_edge"), ("agg", agg, "node"), ("out", out, "node")]
        if "symnorm" in aggregators:  # the fused op keeps its weights internal
            coef = gcn_coefficients(em, looped, inp.inv_sqrt_degree, "gcn_norm")
            records.append(("edge_weight", em.quantize(coef, s["edge_weight"], "edge_weight"),
                            "looped_edge"))
        for key, tensor, layout in records:
            em.record(inp.prefix + key, tensor, layout)
    return out


def _int_aggregator(em: Emitter, msg: str, s: LayerSites, inp: LayerInput, name: str) -> str:
    """One aggregator of uint8 messages (N, F) at ``msg`` into uint8 (D, F) at ``agg``. Only
    aggregators other than ``symnorm`` build the self-looped CSR (once, cached on the Csr)."""
    g, m, a = em.g, s["msg"], s["agg"]
    if name == "symnorm":
        return em.q_gcn_aggregate(msg, m, inp.csr, inp.inv_sqrt_degree, s["edge_weight"], None,
                                  a, name)
    looped = inp.csr.with_self_loops(drop_existing=False)
    if name in ("sum", "mean", "max"):
        return em.q_aggregate(msg, m, looped, looped.src, a, name, name)
    if name == "min":
        # min(q - zp) = -max(q' - zp') with q' = qmax - q, zp' = qmax - zp; requantising the
        # reflected max with zero point qmax - zp_y and reflecting back gives the contract's
        # clamp(zp_y + rint(min * M)) (round half to even is symmetric).
        top = np.uint8(m.qmax)
        reflected = g.op("Sub", [g.shared(top, np.uint8), msg], "min_reflected")
        zp_in = g.const(np.asarray(m.qmax - int(m.zero_point), np.uint8), "min_msg_zp")
        zp_out = g.const(np.asarray(a.qmax - int(a.zero_point), np.uint8), "min_agg_zp")
        result = g.qgnn("QAggregate", [reflected, em.scale(m), zp_in, looped.indptr, looped.src,
                                       "", "", "", em.scale(a), zp_out], "min_reflected_max",
                        reduce="max", bits=a.bits)
        return g.op("Sub", [g.shared(np.uint8(a.qmax), np.uint8), result], name)
    value = _float_aggregator(em, em.dequantize(msg, m, f"{name}_msg_f32"), looped, name, None)
    return em.quantize(value, a, name)
