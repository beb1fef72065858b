"""LightGCN layer (training/nn/layers/lightgcn.py): each in-edge's message scaled by
``max(d_u, 1)^-1/2 max(d_v, 1)^-1/2``, summed, no weights, no self-loops.

INT8: coefficients (float32, from the stack's clamped inverse square-root degrees) -> rule 1 ->
``edge_weight``; rules 3 and 4 fused in one ``QMessageAggregate`` over the stored edges
(``x`` -> ``msg`` -> ``agg``, never an E x F tensor in a kernel); rule 5 with the identity ->
``out``. FP32: the float ``Aggregate`` with the coefficients as edge weights. The stack
(exporter/emit/stack.py) averages the input and every layer's output.
"""

from __future__ import annotations

from qgnn.exporter.emit.common import Emitter, LayerInput
from qgnn.exporter.quant_params import LayerSites
from qgnn.training.nn.layers.lightgcn import LightGCNConv


def emit(em: Emitter, layer: LightGCNConv, x: str, inp: LayerInput,
         sites: LayerSites | None) -> str:
    """``x`` (N, D) -> (num_dst, D): uint8 at sites ``x`` -> ``out`` when quantised, else
    float32."""
    g, csr = em.g, inp.csr
    with g.scope("lightgcn_norm"):
        coef = g.op("Mul", [g.op("Gather", [inp.inv_sqrt_degree, csr.src], "inv_src", axis=0),
                            g.op("Gather", [inp.inv_sqrt_degree, csr.dst], "inv_dst", axis=0)],
                    "coef")
    if sites is None:
        return g.qgnn("Aggregate", [x, csr.indptr, csr.src, coef], "agg", reduce="sum")
    s = sites
    w_q = em.quantize(coef, s["edge_weight"], "edge_weight")
    agg = em.q_message_aggregate(x, s["x"], csr, w_q, s["edge_weight"], s["msg"], s["agg"],
                                 "sum", "agg")
    out = em.requantize_float_step(agg, s["agg"], s["out"], "out")
    if em.debug:  # the fused op keeps the messages internal; expose them separately
        msg = em.edge_scale(x, s["x"], csr.src, w_q, s["edge_weight"], s["msg"], "msg")
        for key, tensor, layout in (("x", x, "node"), ("edge_weight", w_q, "edge"),
                                    ("msg", msg, "edge"), ("agg", agg, "node"),
                                    ("out", out, "node")):
            em.record(inp.prefix + key, tensor, layout)
    return out
