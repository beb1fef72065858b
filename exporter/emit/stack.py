"""The GNN stack (training/nn/models.py ``GNN``) as one ONNX graph.

Inputs (symbolic node and edge counts, so one model serves the full graph and any sampled
subgraph in the training Block convention):

- ``x``: ``(num_nodes, F)`` node features of the layer-0 sources. uint8, quantised at site
  ``layers.0.q.x``, for INT8 models whose stack reads the features only through that site;
  float32 for FP32 models and for INT8 models with an input projection or a residual
  connection around the first layer (both read the raw features in float).
- ``in_degree``: ``(num_nodes,)`` int64 full-graph in-degree of every layer-0 source. Layer
  ``l``'s node list is a prefix of layer 0's, so its edges index this array directly (GCN and
  EGC's symnorm normalise with it; other layers ignore it).
- per layer ``l``: ``indptr_l`` ``(num_dst_l + 1,)`` and ``src_l`` ``(num_edges_l,)`` int64:
  CSR over the layer's destinations (the first ``num_dst_l`` rows of its input), edges sorted
  by destination, ``src_l`` indexing the layer's input rows.

Output ``logits`` (node task) or ``embeddings`` (link task): float32 ``(num_dst_last, C)``.
Between layers: ``DequantizeLinear``, residual add, norm, ReLU, ``QuantizeLinear`` into the next
layer's ``x`` site (rule 5); the last layer's ``out`` integers are dequantised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from onnx import ModelProto, TensorProto, helper
from qgnn.exporter.emit import egc, gat, gcn, gin, sage
from qgnn.exporter.emit.common import Csr, DebugTensor, Emitter, LayerInput, to_numpy
from qgnn.exporter.emit.norms import norm
from qgnn.exporter.onnx_builder import GraphBuilder
from qgnn.exporter.quant_params import LayerSites, Site
from qgnn.training.nn.models import GNN
from torch import nn

LayerEmitter = Callable[[Emitter, nn.Module, str, LayerInput, LayerSites | None], str]
LAYER_EMITTERS: dict[str, LayerEmitter] = {
    "gcn": gcn.emit, "sage": sage.emit, "gin": gin.emit, "gat": gat.emit, "egc": egc.emit}
OUTPUT_NAMES = {"node": "logits", "link": "embeddings"}


@dataclass
class EmittedModel:
    """An exported graph and what its caller must know to feed it."""

    model: ModelProto
    task: str
    num_layers: int
    input_dtype: str  # "uint8" or "float32"
    input_site: Site | None  # the uint8 input's quantisation (layers.0.q.x), else None
    output: str
    debug_tensors: list[DebugTensor]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.model.graph.input]


def reads_float_features(gnn: GNN) -> bool:
    """Whether the stack uses the raw features other than through layer 0's ``x`` site."""
    cfg = gnn.cfg
    first_in = cfg.hidden if cfg.input_proj else cfg.in_dim
    first_out = cfg.out_dim if cfg.num_layers == 1 else cfg.hidden
    return cfg.input_proj or (cfg.residual and first_in == first_out)


def _layer_dims(gnn: GNN) -> list[tuple[int, int]]:
    cfg = gnn.cfg
    dims, dim = [], cfg.hidden if cfg.input_proj else cfg.in_dim
    for i in range(cfg.num_layers):
        out = cfg.out_dim if i == cfg.num_layers - 1 else cfg.hidden
        dims.append((dim, out))
        dim = out
    return dims


def _needs_degree(gnn: GNN) -> bool:
    cfg = gnn.cfg
    return cfg.model == "gcn" or (cfg.model == "egc" and "symnorm" in cfg.layer_kwargs.get(
        "aggregators", ["symnorm"]))


def emit_stack(gnn: GNN, sites: list[LayerSites] | None, *, task: str, debug: bool = False,
               name: str = "qgnn") -> EmittedModel:
    """The ONNX model of ``gnn`` in eval mode: INT8 when ``sites`` (one per layer) are given,
    else FP32. ``debug`` adds every quantisation site's integers as extra outputs."""
    cfg = gnn.cfg
    if cfg.model not in LAYER_EMITTERS:
        raise ValueError(f"ModelConfig.model: cannot export {cfg.model!r}; supported: "
                         f"{sorted(LAYER_EMITTERS)}")
    if task not in OUTPUT_NAMES:
        raise ValueError(f"task: expected one of {sorted(OUTPUT_NAMES)}, got {task!r}")
    if sites is not None and len(sites) != len(gnn.layers):
        raise ValueError(f"{len(gnn.layers)} layers need as many site groups, got {len(sites)}")
    g = GraphBuilder()
    em = Emitter(g, debug)
    float_input = sites is None or reads_float_features(gnn)
    x = g.input("x", TensorProto.FLOAT if float_input else TensorProto.UINT8,
                ["num_nodes", cfg.in_dim])
    in_degree = g.input("in_degree", TensorProto.INT64, ["num_nodes"])
    csrs = []
    for i in range(len(gnn.layers)):
        indptr = g.input(f"indptr_{i}", TensorProto.INT64, [f"num_dst_{i}_plus_1"])
        src = g.input(f"src_{i}", TensorProto.INT64, [f"num_edges_{i}"])
        csrs.append(Csr(em, indptr, src, f"graph_{i}"))
    inv_sqrt = ""
    if _needs_degree(gnn):
        with g.scope("degree"):
            plus_one = g.op("Add", [g.op("Cast", [in_degree], "in_degree_f32",
                                         to=TensorProto.FLOAT), em.f32(1.0)], "plus_one")
            inv_sqrt = g.op("Reciprocal", [g.op("Sqrt", [plus_one], "sqrt")], "inv_sqrt")

    h_float = x if float_input else None  # the float value of the current layer's input
    if gnn.input_proj is not None:
        with g.scope("input_proj"):
            h_float = g.op("Relu", [em.float_linear(x, to_numpy(gnn.input_proj.weight),
                                                    to_numpy(gnn.input_proj.bias), "linear")],
                           "relu")
    # what the first layer reads: uint8 at its x site (quantised here from float input), or float
    current = x
    if h_float is not None:
        current = h_float if sites is None else em.quantize(h_float, sites[0]["x"], "layers.0/x")
    dims = _layer_dims(gnn)
    last = len(gnn.layers) - 1
    final = ""
    for i, (layer, norm_module, csr) in enumerate(zip(gnn.layers, gnn.norms, csrs,
                                                      strict=True)):
        layer_sites = None if sites is None else sites[i]
        with g.scope(f"layers.{i}"):
            out = LAYER_EMITTERS[cfg.model](em, layer, current,
                                           LayerInput(csr, inv_sqrt, i, f"layers.{i}.q."),
                                           layer_sites)
            value = out if layer_sites is None else em.dequantize(
                out, layer_sites["out"], "out_f32")
            if cfg.residual and dims[i][0] == dims[i][1]:
                assert h_float is not None
                value = g.op("Add", [value, em.rows(h_float, csr.num_dst, "residual_src")],
                             "residual")
            if i == last:
                final = value
                break
            value = g.op("Relu", [norm(em, value, norm_module, "norm")], "relu")
            h_float = value
            current = value if sites is None else em.quantize(value, sites[i + 1]["x"],
                                                              "next_x")
    output = OUTPUT_NAMES[task]
    g.output(final, output, TensorProto.FLOAT, [f"num_dst_{last}", cfg.out_dim])
    precision = "fp32" if sites is None else "int8"
    model = g.model(name, doc=f"qgnn {cfg.model} {task} model, {precision} "
                              f"({len(gnn.layers)} layers); inputs: docs/export.md")
    input_site = None if float_input or sites is None else sites[0]["x"]
    metadata = {"qgnn.task": task, "qgnn.model": cfg.model, "qgnn.precision": precision,
                "qgnn.num_layers": str(len(gnn.layers))}
    if input_site is not None:
        scale, zero_point = input_site.activation_params()
        metadata.update({"qgnn.input_scale": repr(float(scale)),
                         "qgnn.input_zero_point": str(int(zero_point))})
    helper.set_model_props(model, metadata)
    return EmittedModel(model, task, len(gnn.layers), "float32" if float_input else "uint8",
                        input_site, output, em.debug_tensors)
