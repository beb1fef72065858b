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

Layer boundaries (metadata ``qgnn.layer_outputs``, for the engine's layer-wise full-graph
inference, docs/engine.md): per layer, the tensors the next layer reads from it (rows = the
layer's destinations) with their dtypes, and the graph inputs the layer reads. A residual
connection makes the next layer read two tensors of this layer (its quantised input and the
float value it adds back), so both are listed: every crossing tensor is in the boundary, and
every stack the exporter writes can be cut into per-layer models (``qgnn.layerwise: "1"``).
The input projection belongs to layer 0, the head to the last layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from onnx import ModelProto, TensorProto, helper
from qgnn.contract.layers import LAYERS
from qgnn.contract.signature import IN_DEGREE, OUTPUTS, indptr_name, src_name
from qgnn.exporter.emit.common import Csr, DebugTensor, Emitter, LayerInput, to_numpy
from qgnn.exporter.emit.norms import norm
from qgnn.exporter.onnx_builder import GraphBuilder
from qgnn.exporter.quant_params import LayerSites, Site, StackSites
from qgnn.training.nn.models import GNN
from torch import nn

# the ``emitter`` of each layer spec (qgnn.contract.layers): exporter/emit/<layer>.py ``emit``
LayerEmitter = Callable[[Emitter, nn.Module, str, LayerInput, LayerSites | None], str]
OUTPUT_NAMES = OUTPUTS


@dataclass
class EmittedModel:
    """An exported graph and what its caller must know to feed it."""

    model: ModelProto
    task: str
    num_layers: int
    input_dtype: str  # "uint8" or "float32"
    input_site: Site | None  # the uint8 input's site (input_proj.q.x or layers.0.q.x), else None
    output: str
    debug_tensors: list[DebugTensor]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.model.graph.input]


def _module_sites(sites: Sequence[LayerSites] | None, name: str) -> LayerSites | None:
    return sites.module(name) if isinstance(sites, StackSites) else None


def reads_float_features(gnn: GNN, sites: Sequence[LayerSites] | None = None) -> bool:
    """Whether the stack uses the raw features in float: through a float input projection or a
    residual connection around the first layer (else only through one uint8 input site)."""
    cfg = gnn.cfg
    if cfg.input_proj:
        return _module_sites(sites, "input_proj") is None
    first_out = cfg.out_dim if cfg.num_layers == 1 and not cfg.head else cfg.hidden
    return cfg.residual and cfg.in_dim == first_out


def _linear(em: Emitter, module: nn.Linear, x: str, sites: LayerSites | None, hint: str, *,
            x_quantized: bool = False) -> str:
    """A QLinear (training/nn/linear.py), float32 out: an integer matmul from uint8 at its
    ``x`` site (``x`` is float unless ``x_quantized``), requantised at ``out``, when it was
    quantised; else a float Gemm."""
    weight, bias = to_numpy(module.weight), to_numpy(module.bias)
    if sites is None:
        return em.float_linear(x, weight, bias, hint)
    with em.g.scope(hint):
        x_q = x if x_quantized else em.quantize(x, sites["x"], "x")
        out = em.int_linear(x_q, sites["x"], weight, sites["weight"], bias, sites["out"],
                            "linear")
        em.record(f"{hint}.q.x", x_q, "node")
        em.record(f"{hint}.q.out", out, "node")
        return em.dequantize(out, sites["out"], "out_f32")


def _layer_dims(gnn: GNN) -> list[tuple[int, int]]:
    cfg = gnn.cfg
    dims, dim = [], cfg.hidden if cfg.input_proj else cfg.in_dim
    for i in range(cfg.num_layers):
        out = cfg.out_dim if i == cfg.num_layers - 1 and not cfg.head else cfg.hidden
        dims.append((dim, out))
        dim = out
    return dims


def _needs_degree(gnn: GNN) -> bool:
    return LAYERS[gnn.cfg.model].needs_degree(gnn.cfg.layer_kwargs)


def _crossing(current: str, h_float: str, quantized: bool, residual: bool
              ) -> list[tuple[str, str]]:
    """What the next layer reads of this one: its input (uint8 when quantised) and, when it has
    a residual connection, the float value it adds back (the same tensor in FP32 models)."""
    tensors = [(current, "uint8" if quantized else "float32")]
    if residual and h_float != current:
        tensors.append((h_float, "float32"))
    return tensors


def _layer_outputs(crossing: list[list[tuple[str, str]]], output: str, num_layers: int,
                   degree: bool) -> list[dict[str, list[str]]]:
    """The ``qgnn.layer_outputs`` entries (module docstring): per layer its boundary tensors,
    their dtypes and the graph inputs it reads."""
    entries = []
    for i in range(num_layers):
        tensors = crossing[i] if i < num_layers - 1 else [(output, "float32")]
        inputs = (["x"] if i == 0 else []) + (["in_degree"] if degree else []) + [
            f"indptr_{i}", f"src_{i}"]
        entries.append({"outputs": [name for name, _ in tensors],
                        "dtypes": [dtype for _, dtype in tensors], "inputs": inputs})
    return entries


def _layer_mean(em: Emitter, gnn: GNN, emit_layer: LayerEmitter,
                sites: Sequence[LayerSites] | None, current: str, csrs: list[Csr],
                inv_sqrt: str) -> tuple[str, list[list[tuple[str, str]]]]:
    """A layer-mean stack (LightGCN): layer ``i + 1`` reads layer ``i``'s output (re-quantised
    at its ``x`` site); the output is the mean of the input (as layer 0 reads it) and every
    layer's output. The running float sum crosses each layer boundary next to the input of the
    next layer, so the engine can still run one layer at a time."""
    g = em.g
    total = current if sites is None else em.dequantize(current, sites[0]["x"], "mean_input")
    crossing: list[list[tuple[str, str]]] = []
    last = len(gnn.layers) - 1
    for i, (layer, csr) in enumerate(zip(gnn.layers, csrs, strict=True)):
        layer_sites = None if sites is None else sites[i]
        with g.scope(f"layers.{i}"):
            out = emit_layer(em, layer, current, LayerInput(csr, inv_sqrt, i, f"layers.{i}.q."),
                             layer_sites)
            value = out if layer_sites is None else em.dequantize(
                out, layer_sites["out"], "out_f32")
            total = g.op("Add", [em.rows(total, csr.num_dst, "total_rows"), value], "total")
            if i < last:
                current = value if sites is None else em.requantize_float_step(
                    out, layer_sites["out"], sites[i + 1]["x"], "next_x")
                crossing.append([(current, "uint8" if sites is not None else "float32")]
                                + ([(total, "float32")] if total != current else []))
    final = g.op("Div", [total, em.f32(float(len(gnn.layers) + 1))], "layer_mean")
    return final, crossing


def emit_stack(gnn: GNN, sites: Sequence[LayerSites] | None, *, task: str, debug: bool = False,
               name: str = "qgnn") -> EmittedModel:
    """The ONNX model of ``gnn`` in eval mode: INT8 when ``sites`` (one per layer; a
    :class:`StackSites` also brings the input projection's and head's) are given, else FP32.
    ``debug`` adds every quantisation site's integers as extra outputs."""
    cfg = gnn.cfg
    if cfg.model not in LAYERS:
        raise ValueError(f"ModelConfig.model: cannot export {cfg.model!r}; supported: "
                         f"{sorted(LAYERS)}")
    emit_layer: LayerEmitter = LAYERS[cfg.model].load("emitter")
    if task not in OUTPUT_NAMES:
        raise ValueError(f"task: expected one of {sorted(OUTPUT_NAMES)}, got {task!r}")
    if sites is not None and len(sites) != len(gnn.layers):
        raise ValueError(f"{len(gnn.layers)} layers need as many site groups, got {len(sites)}")
    g = GraphBuilder()
    em = Emitter(g, debug)
    proj_sites = _module_sites(sites, "input_proj")
    head_sites = _module_sites(sites, "head")
    float_input = sites is None or reads_float_features(gnn, sites)
    x = g.input("x", TensorProto.FLOAT if float_input else TensorProto.UINT8,
                ["num_nodes", cfg.in_dim])
    in_degree = g.input(IN_DEGREE, TensorProto.INT64, ["num_nodes"])
    csrs = []
    for i in range(len(gnn.layers)):
        indptr = g.input(indptr_name(i), TensorProto.INT64, [f"num_dst_{i}_plus_1"])
        src = g.input(src_name(i), TensorProto.INT64, [f"num_edges_{i}"])
        csrs.append(Csr(em, indptr, src, f"graph_{i}"))
    inv_sqrt = ""
    spec = LAYERS[cfg.model]
    if _needs_degree(gnn):
        with g.scope("degree"):
            degree = g.op("Cast", [in_degree], "in_degree_f32", to=TensorProto.FLOAT)
            if spec.degree_norm == "clamped":  # LightGCN: no self-loops, max(d, 1)
                shifted = g.op("Max", [degree, em.f32(1.0)], "at_least_one")
            else:
                shifted = g.op("Add", [degree, em.f32(1.0)], "plus_one")
            inv_sqrt = g.op("Reciprocal", [g.op("Sqrt", [shifted], "sqrt")], "inv_sqrt")

    h_float = x if float_input else None  # the float value of the current layer's input
    if gnn.input_proj is not None:
        h_float = g.op("Relu", [_linear(em, gnn.input_proj, x, proj_sites, "input_proj",
                                        x_quantized=not float_input)], "input_proj_relu")
    # what the first layer reads: uint8 at its x site (quantised here from float input), or float
    current = x
    if h_float is not None:
        current = h_float if sites is None else em.quantize(h_float, sites[0]["x"], "layers.0/x")
    dims = _layer_dims(gnn)
    last = len(gnn.layers) - 1
    final = ""
    crossing: list[list[tuple[str, str]]] = []  # per layer < last: (tensor, dtype) read next
    if spec.layer_mean:
        final, crossing = _layer_mean(em, gnn, emit_layer, sites, current, csrs, inv_sqrt)
    for i, (layer, norm_module, csr) in enumerate(zip(gnn.layers, gnn.norms, csrs,
                                                      strict=True)):
        if spec.layer_mean:
            break
        layer_sites = None if sites is None else sites[i]
        with g.scope(f"layers.{i}"):
            out = emit_layer(em, layer, current,
                                           LayerInput(csr, inv_sqrt, i, f"layers.{i}.q."),
                                           layer_sites)
            value = out if layer_sites is None else em.dequantize(
                out, layer_sites["out"], "out_f32")
            if cfg.residual and dims[i][0] == dims[i][1]:
                assert h_float is not None
                value = g.op("Add", [value, em.rows(h_float, csr.num_dst, "residual_src")],
                             "residual")
            if i == last and gnn.head is None:
                final = value
                break
            value = g.op("Relu", [norm(em, value, norm_module, "norm")], "relu")
            h_float = value
            if i < last:
                current = value if sites is None else em.quantize(value, sites[i + 1]["x"],
                                                                  "next_x")
                crossing.append(_crossing(current, h_float, sites is not None,
                                          cfg.residual and dims[i + 1][0] == dims[i + 1][1]))
    if gnn.head is not None:
        assert h_float is not None
        final = _linear(em, gnn.head, h_float, head_sites, "head")
    output = OUTPUT_NAMES[task]
    g.output(final, output, TensorProto.FLOAT, [f"num_dst_{last}", cfg.out_dim])
    precision = "fp32" if sites is None else "int8"
    model = g.model(name, doc=f"qgnn {cfg.model} {task} model, {precision} "
                              f"({len(gnn.layers)} layers); inputs: docs/export.md")
    input_site = None
    if not float_input and sites is not None:
        input_site = proj_sites["x"] if proj_sites is not None else sites[0]["x"]
    metadata = {"qgnn.task": task, "qgnn.model": cfg.model, "qgnn.precision": precision,
                "qgnn.num_layers": str(len(gnn.layers)),
                "qgnn.layerwise": "1",
                "qgnn.layer_outputs": json.dumps(_layer_outputs(
                    crossing, output, len(gnn.layers), _needs_degree(gnn)))}
    if input_site is not None:
        scale, zero_point = input_site.activation_params()
        metadata.update({"qgnn.input_scale": repr(float(scale)),
                         "qgnn.input_zero_point": str(int(zero_point))})
    helper.set_model_props(model, metadata)
    return EmittedModel(model, task, len(gnn.layers), "float32" if float_input else "uint8",
                        input_site, output, em.debug_tensors)
