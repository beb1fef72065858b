"""GAT (training/nn/layers/gat.py): multi-head attention over in-neighbours and the node itself.

INT8: ``x`` -> rule 2 -> ``lin`` (N, H*C). Scores (qgnn.contract.attention): per head the
exact integer dot of the centred ``lin`` and the int8 ``att_src``/``att_dst`` (one
``MatMulInteger`` with a block-diagonal weight each) times ``float32(s_lin * s_att)``; float
island (rule 6): LeakyReLU of the source plus destination score per edge -> rule 1 ->
``logits``; ``ai.qgnn::QEdgeSoftmax`` of the quantised logits through the contract's integer
table (qgnn.contract.softmax, exact by construction) -> rule 1 -> ``edge_weight``
(attention); rule 3 per head -> ``msg``; rule 4 (sum) -> ``agg`` (rules 3 and 4 as one
``QMessageAggregate`` with per-head weights, so no E x F tensor outside a debug export); heads
concatenated (hidden layers) or averaged (output layer), + bias, rule 5 -> ``out``. Edges:
existing self-loops dropped, one fresh loop per destination (as training).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto
from qgnn.contract import (
    WEIGHT_STORAGE_OFFSET,
    attention_matrix,
    score_scale,
    softmax_table,
    weight_storage,
)
from qgnn.exporter.emit.common import Emitter, LayerInput, to_numpy
from qgnn.exporter.quant_params import LayerSites, Site, quantize_weight
from qgnn.training.nn.layers.gat import GATConv


def _scores(em: Emitter, lin: str, lin_site: Site, vector: np.ndarray, att: Site, side: str
            ) -> str:
    """(R, H) float32 scores of (R, H*C) uint8 ``lin``: ``MatMulInteger`` with the
    block-diagonal int8 attention matrix (stored ``w + 128``), times ``float32(s_lin * s_att)``."""
    if np.any(att.zero_point):
        raise ValueError(f"quant_state[{att.key!r}]: attention sites must be symmetric "
                         f"(zero point 0), got {att.zero_point.tolist()}")
    g = em.g
    with g.scope(f"score_{side}"):
        matrix = g.const(weight_storage(attention_matrix(quantize_weight(vector, att))),
                         "att_q")  # (H*C, H)
        dots = g.op("MatMulInteger", [lin, matrix, em.zero_point(lin_site),
                                      g.shared(WEIGHT_STORAGE_OFFSET, np.uint8)], "dots")
        scale = g.const(score_scale(lin_site.scale, att.scale).reshape(-1), "scale")
        return g.op("Mul", [g.op("Cast", [dots], "dots_f32", to=TensorProto.FLOAT), scale],
                    "scores")


def _per_tensor(site: Site) -> np.float32:
    """The logits site's one scale (the softmax table needs a single one)."""
    if site.per_channel:
        raise ValueError(f"quant_state[{site.key!r}]: the attention logits need one scale, got "
                         f"{site.scale.shape}")
    return np.float32(site.scale)


def emit(em: Emitter, layer: GATConv, x: str, inp: LayerInput, sites: LayerSites | None) -> str:
    """``x`` (N, K) -> (D, out_dim): uint8 at ``x`` -> ``out`` when quantised, else float32."""
    g, csr = em.g, inp.csr
    heads, dim = layer.heads, layer.head_dim
    weight = to_numpy(layer.lin.weight)
    bias = None if layer.bias is None else to_numpy(layer.bias)
    s = sites
    looped = csr.with_self_loops(drop_existing=True)
    if s is None:
        h = em.float_linear(x, weight, None, "lin")
        cube = g.op("Reshape", [h, em.i64([0, heads, dim])], "lin_heads")  # (N, H, C)
        axes = em.i64([2])
        score_src = g.op("ReduceSum", [g.op("Mul", [cube, g.const(
            to_numpy(layer.att_src), "att_src")], "src_terms"), axes], "score_src", keepdims=0)
        cube_dst = em.rows(cube, csr.num_dst, "lin_heads_dst")
        score_dst = g.op("ReduceSum", [g.op("Mul", [cube_dst, g.const(
            to_numpy(layer.att_dst), "att_dst")], "dst_terms"), axes], "score_dst", keepdims=0)
    else:
        lin = em.int_linear(x, s["x"], weight, s["weight"], None, s["lin"], "lin")
        score_src = _scores(em, lin, s["lin"], to_numpy(layer.att_src), s["att_src"], "src")
        score_dst = _scores(em, em.rows(lin, csr.num_dst, "lin_dst"), s["lin"],
                            to_numpy(layer.att_dst), s["att_dst"], "dst")
    logits = g.op("LeakyRelu", [g.op("Add", [
        g.op("Gather", [score_src, looped.src], "score_src_edges", axis=0),
        g.op("Gather", [score_dst, looped.dst], "score_dst_edges", axis=0)], "score")],
        "logits_f32", alpha=float(layer.negative_slope))  # (E, H)
    if s is None:
        alpha = g.qgnn("EdgeSoftmax", [logits, looped.indptr], "alpha")
        msg = g.op("Mul", [g.op("Gather", [cube, looped.src], "lin_edges", axis=0),
                           g.op("Unsqueeze", [alpha, axes], "alpha_col")], "msg_heads")
        msg = g.op("Reshape", [msg, em.i64([0, heads * dim])], "msg")
        agg = g.qgnn("Aggregate", [msg, looped.indptr, looped.edge_ids], "agg", reduce="sum")
    else:
        logits_q = em.quantize(logits, s["logits"], "logits")
        table = g.const(softmax_table(_per_tensor(s["logits"]), s["logits"].bits),
                        "softmax_table")
        alpha = g.qgnn("QEdgeSoftmax", [logits_q, looped.indptr, table], "alpha")
        alpha_q = em.quantize(alpha, s["edge_weight"], "edge_weight")  # (E, H)
        agg_q = em.q_message_aggregate(lin, s["lin"], looped, alpha_q, s["edge_weight"],
                                       s["msg"], s["agg"], "sum", "agg")
        agg = em.dequantize(agg_q, s["agg"], "agg_f32")
    if not layer.concat:
        per_head = g.op("Reshape", [agg, em.i64([0, heads, dim])], "agg_heads")
        agg = g.op("Div", [g.op("ReduceSum", [per_head, em.i64([1])], "head_sum", keepdims=0),
                           em.f32(float(heads))], "head_mean")
    if bias is not None:
        agg = g.op("Add", [agg, g.const(bias, "bias")], "agg_bias")
    if s is None:
        return agg
    out = em.quantize(agg, s["out"], "out")
    if em.debug:  # the fused op keeps the (E, F) messages internal; expose them separately
        msg = em.edge_scale(lin, s["lin"], looped.src, alpha_q, s["edge_weight"], s["msg"],
                            "msg", heads=(heads, dim))
        for key, tensor, layout in (("x", x, "node"), ("lin", lin, "node"),
                                    ("logits", logits_q, "fresh_looped_edge"),
                                    ("edge_weight", alpha_q, "fresh_looped_edge"),
                                    ("msg", msg, "fresh_looped_edge"), ("agg", agg_q, "node"),
                                    ("out", out, "node")):
            em.record(inp.prefix + key, tensor, layout)
    return out
