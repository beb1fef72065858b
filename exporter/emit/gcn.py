"""GCN layer (training/nn/layers/gcn.py): project, scale by the symmetric normalisation over
self-looped edges, sum, add the bias.

INT8: ``x`` -> rule 2 -> ``lin``; coefficients (float32) -> rule 1 -> ``edge_weight``;
rule 3 -> ``msg``; rule 4 (sum) -> ``agg``, all of it one ``QGCNAggregate`` over the stored
edges (the self-loops, coefficients and their quantisation happen inside it, so no tensor per
looped edge, let alone E x F, outside a debug export); rule 5 (+ bias) -> ``out``. A debug
export also builds the old path's ``edge_weight`` and ``msg`` tensors to expose them.
"""

from __future__ import annotations

from qgnn.exporter.emit.common import Emitter, LayerInput, gcn_coefficients, to_numpy
from qgnn.exporter.quant_params import LayerSites
from qgnn.training.nn.layers.gcn import GCNConv


def emit(em: Emitter, layer: GCNConv, x: str, inp: LayerInput, sites: LayerSites | None) -> str:
    """``x`` (N, K) -> (D, J): uint8 at sites ``x`` -> ``out`` when quantised, else float32."""
    g = em.g
    weight = to_numpy(layer.lin.weight)
    bias = None if layer.bias is None else to_numpy(layer.bias)
    if sites is None:
        looped = inp.csr.with_self_loops(drop_existing=False)
        coef = gcn_coefficients(em, looped, inp.inv_sqrt_degree, "gcn_norm")
        h = em.float_linear(x, weight, None, "lin")
        out = g.qgnn("Aggregate", [h, looped.indptr, looped.src, coef], "agg", reduce="sum")
        return out if bias is None else g.op("Add", [out, g.const(bias, "bias")], "out")
    s = sites
    lin = em.int_linear(x, s["x"], weight, s["weight"], None, s["lin"], "lin")
    agg = em.q_gcn_aggregate(lin, s["lin"], inp.csr, inp.inv_sqrt_degree, s["edge_weight"],
                             s["msg"], s["agg"], "agg")
    value = em.dequantize(agg, s["agg"], "agg_f32")
    if bias is not None:
        value = g.op("Add", [value, g.const(bias, "bias")], "agg_bias")
    out = em.quantize(value, s["out"], "out")
    if em.debug:  # the fused op keeps weights and messages internal; expose them separately
        looped = inp.csr.with_self_loops(drop_existing=False)
        coef = gcn_coefficients(em, looped, inp.inv_sqrt_degree, "gcn_norm")
        ew = em.quantize(coef, s["edge_weight"], "edge_weight")
        msg = em.edge_scale(lin, s["lin"], looped.src, ew, s["edge_weight"], s["msg"], "msg")
        for key, tensor, layout in (("x", x, "node"), ("lin", lin, "node"),
                                    ("edge_weight", ew, "looped_edge"),
                                    ("msg", msg, "looped_edge"), ("agg", agg, "node"),
                                    ("out", out, "node")):
            em.record(inp.prefix + key, tensor, layout)
    return out
