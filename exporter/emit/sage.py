"""GraphSAGE, mean aggregator (training/nn/layers/sage.py).

INT8: ``x`` -> rule 5 (re-quantised per node; every edge copies its source row) -> ``msg``;
rule 4 (mean) -> ``agg``; rule 2 (``weight_l`` + bias) -> ``lin_l``; ``x[:D]`` -> rule 2
(``weight_r``) -> ``lin_r``; ``lin_l + lin_r`` -> rule 5 -> ``out``.
"""

from __future__ import annotations

from qgnn.exporter.emit.common import Emitter, LayerInput, to_numpy
from qgnn.exporter.quant_params import LayerSites
from qgnn.training.nn.layers.sage import SAGEConv


def emit(em: Emitter, layer: SAGEConv, x: str, inp: LayerInput,
         sites: LayerSites | None) -> str:
    """``x`` (N, K) -> (D, J): uint8 at sites ``x`` -> ``out`` when quantised, else float32."""
    g, csr = em.g, inp.csr
    w_l, w_r = to_numpy(layer.lin_l.weight), to_numpy(layer.lin_r.weight)
    b_l = None if layer.lin_l.bias is None else to_numpy(layer.lin_l.bias)
    x_dst = em.rows(x, csr.num_dst, "x_dst")
    if sites is None:
        agg = g.qgnn("Aggregate", [x, csr.indptr, csr.src], "agg", reduce="mean")
        return g.op("Add", [em.float_linear(agg, w_l, b_l, "lin_l"),
                            em.float_linear(x_dst, w_r, None, "lin_r")], "out")
    s = sites
    msg = em.requantize_float_step(x, s["x"], s["msg"], "msg")
    agg = em.q_aggregate(msg, s["msg"], csr, csr.src, s["agg"], "mean", "agg")
    lin_l = em.int_linear(agg, s["agg"], w_l, s["weight_l"], b_l, s["lin_l"], "lin_l")
    lin_r = em.int_linear(x_dst, s["x"], w_r, s["weight_r"], None, s["lin_r"], "lin_r")
    total = g.op("Add", [em.dequantize(lin_l, s["lin_l"], "lin_l_f32"),
                         em.dequantize(lin_r, s["lin_r"], "lin_r_f32")], "sum")
    out = em.quantize(total, s["out"], "out")
    if em.debug:
        msg_edges = g.op("Gather", [msg, csr.src], "msg_edges", axis=0)
        for key, tensor, layout in (("x", x, "node"), ("msg", msg_edges, "edge"),
                                    ("agg", agg, "node"), ("lin_l", lin_l, "node"),
                                    ("lin_r", lin_r, "node"), ("out", out, "node")):
            em.record(inp.prefix + key, tensor, layout)
    return out
