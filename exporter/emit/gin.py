"""GIN (training/nn/layers/gin.py): ``MLP((1 + eps) x_v + sum of neighbours)``.

INT8: ``x`` -> rule 5 -> ``msg``; rule 4 (sum) -> ``agg``; ``agg + (1 + eps) x[:D]`` -> rule 5
-> ``combined``; rule 2 (``weight1`` + bias) -> ``lin1``; BatchNorm (eval) and ReLU, rule 5 ->
``hidden``; rule 2 (``weight2`` + bias) -> ``out``.
"""

from __future__ import annotations

import numpy as np
from qgnn.exporter.emit.common import Emitter, LayerInput, to_numpy
from qgnn.exporter.emit.norms import batch_norm
from qgnn.exporter.quant_params import LayerSites
from qgnn.training.nn.layers.gin import GINConv
from torch import nn


def emit(em: Emitter, layer: GINConv, x: str, inp: LayerInput, sites: LayerSites | None) -> str:
    """``x`` (N, K) -> (D, J): uint8 at sites ``x`` -> ``out`` when quantised, else float32."""
    g, csr = em.g, inp.csr
    w1, b1 = to_numpy(layer.lin1.weight), to_numpy(layer.lin1.bias)
    w2, b2 = to_numpy(layer.lin2.weight), to_numpy(layer.lin2.bias)
    # (1 + eps) in float32, as the training layer computes it from its float32 eps
    self_weight = np.float32(1.0) + to_numpy(layer.eps).reshape(())
    x_dst = em.rows(x, csr.num_dst, "x_dst")

    def combine(agg: str, root: str) -> str:
        scaled = root if self_weight == 1.0 else g.op(
            "Mul", [root, em.f32(float(self_weight))], "root_scaled")
        return g.op("Add", [agg, scaled], "combined_f32")

    def norm_relu(h: str) -> str:
        if isinstance(layer.norm, nn.BatchNorm1d):
            h = batch_norm(em, h, layer.norm, "norm")
        return g.op("Relu", [h], "hidden_f32")

    if sites is None:
        agg = g.qgnn("Aggregate", [x, csr.indptr, csr.src], "agg", reduce="sum")
        hidden = norm_relu(em.float_linear(combine(agg, x_dst), w1, b1, "lin1"))
        return em.float_linear(hidden, w2, b2, "out")
    s = sites
    msg = em.requantize_float_step(x, s["x"], s["msg"], "msg")
    agg = em.q_aggregate(msg, s["msg"], csr, csr.src, s["agg"], "sum", "agg")
    combined = em.quantize(combine(em.dequantize(agg, s["agg"], "agg_f32"),
                                   em.dequantize(x_dst, s["x"], "x_dst_f32")),
                           s["combined"], "combined")
    lin1 = em.int_linear(combined, s["combined"], w1, s["weight1"], b1, s["lin1"], "lin1")
    hidden = em.quantize(norm_relu(em.dequantize(lin1, s["lin1"], "lin1_f32")), s["hidden"],
                         "hidden")
    out = em.int_linear(hidden, s["hidden"], w2, s["weight2"], b2, s["out"], "out")
    if em.debug:
        msg_edges = g.op("Gather", [msg, csr.src], "msg_edges", axis=0)
        for key, tensor, layout in (("x", x, "node"), ("msg", msg_edges, "edge"),
                                    ("agg", agg, "node"), ("combined", combined, "node"),
                                    ("lin1", lin1, "node"), ("hidden", hidden, "node"),
                                    ("out", out, "node")):
            em.record(inp.prefix + key, tensor, layout)
    return out
