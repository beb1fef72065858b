"""Small real models, graphs and bundles for the engine tests, plus independent oracles.

Models follow the exporter's signature (``x``, ``in_degree``, ``indptr_l``/``src_l``, output
``logits``/``embeddings``) and use the ai.qgnn ops through ``qgnn.exporter.ops``:

- ``int8_model``: per layer, a weighted quantised sum (layer 0: edge weights
  ``(d_src + 1)^-1/2`` quantised in the graph, so ``in_degree`` matters) or a quantised mean,
  then ``MatMulInteger`` of the aggregate and of the destinations' own rows, requantisation,
  ReLU between layers (dequantise, Relu, quantise), dequantised output;
- ``float_model``: the same shape in float32 with ``Aggregate`` (mean) and ``MatMul``.

The oracle is onnx's ReferenceEvaluator with the ops' numpy references (no onnxruntime, no
compiled kernel), run on the *full graph* (every node a seed, every in-edge kept), so a
subgraph answer that equals it shows the extraction, the feeds and the execution are right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from qgnn.exporter.ops import (
    IR_VERSION,
    function_protos,
    make_op_node,
    opset_imports,
    reference_ops,
)
from qgnn.runtime.bundle.layout import (
    EMBEDDING_SCALES,
    EMBEDDINGS,
    GRAPH_FEATURE_SCALE,
    GRAPH_FEATURE_ZERO_POINT,
    GRAPH_FEATURES,
    GRAPH_INDICES,
    GRAPH_INDPTR,
)
from qgnn.runtime.bundle.writer import write_bundle


class _Builder:
    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def const(self, value: np.ndarray, hint: str) -> str:
        self.count += 1
        name = f"{hint}_{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs: object) -> str:
        self.count += 1
        out = f"{hint}_{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def qgnn(self, op_type: str, inputs: list[str], hint: str, **attrs: object) -> str:
        self.count += 1
        out = f"{hint}_{self.count}"
        self.nodes.append(make_op_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _requant(b: _Builder, acc: str, mult: float, zp: int, hint: str) -> str:
    scaled = b.op("Mul", [b.op("Cast", [acc], f"{hint}_f", to=TensorProto.FLOAT),
                          b.const(np.float32(mult), "m")], f"{hint}_s")
    shifted = b.op("Add", [b.op("Round", [scaled], f"{hint}_r"), b.const(np.float32(zp), "zp")],
                   f"{hint}_z")
    clipped = b.op("Clip", [shifted, b.const(np.float32(0), "lo"),
                            b.const(np.float32(255), "hi")], f"{hint}_c")
    return b.op("Cast", [clipped], hint, to=TensorProto.UINT8)


def _finish(b: _Builder, num_layers: int, num_features: int, output: str, out_name: str,
            x_type: int) -> onnx.ModelProto:
    b.nodes.append(helper.make_node("Identity", [output], [out_name], name=out_name))
    inputs = [helper.make_tensor_value_info("x", x_type, ["num_nodes", num_features]),
              helper.make_tensor_value_info("in_degree", TensorProto.INT64, ["num_nodes"])]
    for i in range(num_layers):
        inputs += [helper.make_tensor_value_info(f"indptr_{i}", TensorProto.INT64, [f"d{i}"]),
                   helper.make_tensor_value_info(f"src_{i}", TensorProto.INT64, [f"e{i}"])]
    graph = helper.make_graph(b.nodes, "engine_test", inputs,
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT,
                                                             ["batch", None])], b.inits)
    model = helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION,
                              functions=function_protos(graph.node))
    onnx.checker.check_model(model, full_check=True)
    return model


def int8_model(num_features: int, dims: list[int], *, task: str = "node", seed: int = 0,
               input_scale: float = 0.05, input_zero_point: int = 10) -> onnx.ModelProto:
    """An INT8 model of ``len(dims)`` layers (widths ``dims``), random weights and scales."""
    rng = np.random.default_rng(seed)
    b = _Builder()
    h, s_h, zp_h, width = "x", np.float32(input_scale), input_zero_point, num_features
    inv_sqrt = None
    for layer, out_dim in enumerate(dims):
        s_h_name, zp_h_name = b.const(s_h, "s_h"), b.const(np.uint8(zp_h), "zp_h")
        s_agg, zp_agg = np.float32(rng.uniform(0.02, 0.06)), int(rng.integers(60, 140))
        structure = [f"indptr_{layer}", f"src_{layer}"]
        if layer == 0:
            deg = b.op("Cast", ["in_degree"], "deg_f", to=TensorProto.FLOAT)
            inv_sqrt = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [
                deg, b.const(np.float32(1), "one")], "deg1")], "sqrt")], "inv_sqrt")
            w = b.op("Gather", [inv_sqrt, f"src_{layer}"], "edge_w", axis=0)
            s_w, zp_w = b.const(np.float32(1 / 255), "s_w"), b.const(np.uint8(0), "zp_w")
            w_q = b.op("QuantizeLinear", [w, s_w, zp_w], "w_q")
            agg = b.qgnn("QAggregate", [h, s_h_name, zp_h_name, *structure, w_q, s_w, zp_w,
                                        b.const(s_agg, "s_a"), b.const(np.uint8(zp_agg), "zp_a")],
                         "agg", reduce="sum")
        else:
            agg = b.qgnn("QAggregate", [h, s_h_name, zp_h_name, *structure, "", "", "",
                                        b.const(s_agg, "s_a"), b.const(np.uint8(zp_agg), "zp_a")],
                         "agg", reduce="mean")
        num_dst = b.op("Sub", [b.op("Shape", [f"indptr_{layer}"], "ip_len"),
                               b.const(np.array([1], np.int64), "one_i")], "num_dst")
        h_dst = b.op("Slice", [h, b.const(np.array([0], np.int64), "zero_i"), num_dst,
                               b.const(np.array([0], np.int64), "axis0")], "h_dst")
        w_agg = rng.integers(-127, 128, (width, out_dim)).astype(np.int8)
        w_self = rng.integers(-127, 128, (width, out_dim)).astype(np.int8)
        s_wa, s_ws = np.float32(0.01), np.float32(0.008)
        acc_a = b.op("MatMulInteger", [agg, b.const(w_agg, "W"), b.const(np.uint8(zp_agg),
                                                                          "zpa")], "acc_a")
        acc_s = b.op("MatMulInteger", [h_dst, b.const(w_self, "R"), b.const(np.uint8(zp_h),
                                                                            "zph")], "acc_s")
        acc_a_f = b.op("Mul", [b.op("Cast", [acc_a], "aaf", to=TensorProto.FLOAT),
                               b.const(np.float32(s_agg * s_wa), "ma")], "acc_a_f")
        acc_s_f = b.op("Mul", [b.op("Cast", [acc_s], "asf", to=TensorProto.FLOAT),
                               b.const(np.float32(s_h * s_ws), "ms")], "acc_s_f")
        total = b.op("Add", [acc_a_f, acc_s_f], "total")
        s_out = np.float32(rng.uniform(0.05, 0.2))
        zp_out = int(rng.integers(100, 156))
        out = b.op("QuantizeLinear", [total, b.const(s_out, "s_o"), b.const(np.uint8(zp_out),
                                                                            "zp_o")], "out")
        value = b.op("DequantizeLinear", [out, b.const(s_out, "s_o"),
                                          b.const(np.uint8(zp_out), "zp_o")], "out_f")
        if layer == len(dims) - 1:
            h = value
            break
        relu = b.op("Relu", [value], "relu")
        s_h, zp_h = np.float32(rng.uniform(0.05, 0.1)), 0
        h = b.op("QuantizeLinear", [relu, b.const(s_h, "s_x"), b.const(np.uint8(0), "zp_x")],
                 "h")
        width = out_dim
    del inv_sqrt
    name = "logits" if task == "node" else "embeddings"
    return _finish(b, len(dims), num_features, h, name, TensorProto.UINT8)


def float_model(num_features: int, dims: list[int], *, task: str = "node",
                seed: int = 0) -> onnx.ModelProto:
    """The float32 counterpart: mean ``Aggregate``, two ``MatMul``s, ReLU between layers."""
    rng = np.random.default_rng(seed)
    b = _Builder()
    h, width = "x", num_features
    for layer, out_dim in enumerate(dims):
        agg = b.qgnn("Aggregate", [h, f"indptr_{layer}", f"src_{layer}"], "agg", reduce="mean")
        num_dst = b.op("Sub", [b.op("Shape", [f"indptr_{layer}"], "ip_len"),
                               b.const(np.array([1], np.int64), "one_i")], "num_dst")
        h_dst = b.op("Slice", [h, b.const(np.array([0], np.int64), "zero_i"), num_dst,
                               b.const(np.array([0], np.int64), "axis0")], "h_dst")
        w_a = (rng.standard_normal((width, out_dim)) / np.sqrt(width)).astype(np.float32)
        w_s = (rng.standard_normal((width, out_dim)) / np.sqrt(width)).astype(np.float32)
        value = b.op("Add", [b.op("MatMul", [agg, b.const(w_a, "W")], "ma"),
                             b.op("MatMul", [h_dst, b.const(w_s, "R")], "ms")], "out")
        if layer < len(dims) - 1:
            value = b.op("Relu", [value], "relu")
        h, width = value, out_dim
    name = "logits" if task == "node" else "embeddings"
    return _finish(b, len(dims), num_features, h, name, TensorProto.FLOAT)


# ---------------------------------------------------------------------------------------------
# Graphs and bundles


def random_graph(num_nodes: int, num_edges: int, *, seed: int = 0, symmetric: bool = False,
                 hub: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) int64 edges without self-loops; ``hub`` gets many extra in-edges."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, num_nodes, num_edges)
    dst = rng.integers(0, num_nodes, num_edges)
    if hub is not None:
        extra = rng.integers(0, num_nodes, num_edges // 2)
        src, dst = np.concatenate([src, extra]), np.concatenate([dst, np.full(extra.size, hub)])
    keep = src != dst
    src, dst = src[keep], dst[keep]
    if symmetric:
        src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
    return src.astype(np.int64), dst.astype(np.int64)


def out_csr(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((dst, src))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, dst[order]


def in_csr(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(dst, kind="stable")
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
    return indptr, src[order]


def quantize_features(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    q = np.rint(x.astype(np.float32) / np.float32(scale)) + np.float32(zero_point)
    return np.clip(q, 0, 255).astype(np.uint8)


def write_test_bundle(path: Path, model: onnx.ModelProto, src: np.ndarray, dst: np.ndarray,
                      x: np.ndarray, *, task: str = "node", name: str = "toy",
                      input_scale: float = 0.05, input_zero_point: int = 10,
                      extra: dict | None = None, manifest_extra: dict | None = None) -> Path:
    """A bundle of ``model`` over the graph (out-CSR, as docs/bundle-format.md), features
    quantised for uint8 models (``x`` float32 (N, F))."""
    n = x.shape[0]
    indptr, indices = out_csr(src, dst, n)
    uint8 = model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    files: dict = {"model.onnx": model.SerializeToString(), GRAPH_INDPTR: indptr,
                   GRAPH_INDICES: indices}
    if uint8:
        files[GRAPH_FEATURES] = quantize_features(x, input_scale, input_zero_point)
        files[GRAPH_FEATURE_SCALE] = np.asarray(input_scale, np.float32)
        files[GRAPH_FEATURE_ZERO_POINT] = np.asarray(input_zero_point, np.uint8)
    else:
        files[GRAPH_FEATURES] = x.astype(np.float32)
    files.update(extra or {})
    spec = [{"name": i.name, "dtype": "int64", "shape": ["n"]} for i in model.graph.input]
    manifest = {
        "model": {"name": name, "version": 1, "task": task, "type": "test", "file": "model.onnx",
                  "format": "qgnn-onnx",
                  "inputs": spec, "outputs": [{"name": model.graph.output[0].name,
                                               "dtype": "float32", "shape": ["n", "c"]}]},
        "quantisation": {"bits": 8 if uint8 else 32, "method": "test", "num_sites": 0},
        "metrics": {}, "graph": {"num_nodes": n, "num_edges": int(src.size),
                                 "num_features": x.shape[1]},
        "versions": {}}
    manifest.update(manifest_extra or {})
    return write_bundle(path, manifest, files)


def quantize_table(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exporter's rule for the bundle's embedding table (docs/bundle-format.md): per row
    ``s = max|z| / 127`` (1 for a zero row), ``q = clip(rint(z / s), -127, 127)``."""
    z = z.astype(np.float32)
    top = np.abs(z).max(axis=1)
    scales = np.where(top > 0, top / np.float32(127), np.float32(1)).astype(np.float32)
    return np.clip(np.rint(z / scales[:, None]), -127, 127).astype(np.int8), scales


def embedding_files(values: np.ndarray, scales: np.ndarray) -> dict:
    return {EMBEDDINGS: values.astype(np.int8), EMBEDDING_SCALES: scales.astype(np.float32)}


# ---------------------------------------------------------------------------------------------
# Oracle


def reference_outputs(model: onnx.ModelProto, x: np.ndarray, src: np.ndarray, dst: np.ndarray,
                      num_layers: int) -> np.ndarray:
    """The model's output for every node of the full graph, by onnx's ReferenceEvaluator with
    the ai.qgnn numpy references. ``x`` in the model's input dtype."""
    n = x.shape[0]
    indptr, sources = in_csr(src, dst, n)
    feeds = {"x": x, "in_degree": np.bincount(dst, minlength=n).astype(np.int64)}
    for i in range(num_layers):
        feeds[f"indptr_{i}"], feeds[f"src_{i}"] = indptr, sources
    evaluator = ReferenceEvaluator(model, new_ops=reference_ops())
    return evaluator.run(None, feeds)[0]


def mlp_decoder(dim: int, hidden: int, seed: int = 0) -> tuple[onnx.ModelProto, dict]:
    """The exporter's MLP link decoder layout: ``score = W2 relu(W1 (h_src * h_dst) + b1) + b2``
    with inputs ``h_src``, ``h_dst`` (M, D) and output ``score`` (M,); returns the model and its
    weights for a numpy oracle."""
    rng = np.random.default_rng(seed)
    w = {"w1": rng.standard_normal((hidden, dim)).astype(np.float32),
         "b1": rng.standard_normal(hidden).astype(np.float32),
         "w2": rng.standard_normal((1, hidden)).astype(np.float32),
         "b2": rng.standard_normal(1).astype(np.float32)}
    nodes = [helper.make_node("Mul", ["h_src", "h_dst"], ["prod"]),
             helper.make_node("Gemm", ["prod", "w1", "b1"], ["hid"], transB=1),
             helper.make_node("Relu", ["hid"], ["act"]),
             helper.make_node("Gemm", ["act", "w2", "b2"], ["out"], transB=1),
             helper.make_node("Squeeze", ["out", "axis1"], ["score"])]
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    graph = helper.make_graph(nodes, "decoder", [
        helper.make_tensor_value_info("h_src", TensorProto.FLOAT, ["m", dim]),
        helper.make_tensor_value_info("h_dst", TensorProto.FLOAT, ["m", dim])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["m"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)],
                              ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model, w


def mlp_scores(w: dict, h_src: np.ndarray, h_dst: np.ndarray) -> np.ndarray:
    hidden = np.maximum((h_src * h_dst) @ w["w1"].T + w["b1"], 0)
    return (hidden @ w["w2"].T + w["b2"])[:, 0]


def export_calibrated(root: Path, graph: object, kind: str, task: str = "node", *,
                      layer_kwargs: dict | None = None, parity: bool = True,
                      **stack: object) -> Path:
    """A freshly initialised Degree-Quant INT8 stack (hidden 8, 2 layers unless ``stack``
    says otherwise) whose ranges were calibrated by three forward passes on ``graph``,
    checkpointed and exported by ``qgnn export`` like any run; training would only change the
    weights. Needs torch (the training extra)."""
    import torch
    from qgnn.exporter.export import export_run
    from qgnn.training.checkpoint import save_run
    from qgnn.training.nn.block import full_graph_block
    from qgnn.training.nn.models import ModelConfig, build_model
    from qgnn.training.presets import TrainConfig
    from qgnn.training.quant import QuantConfig, quant_state, quantize_model

    cfg = ModelConfig(model=kind, in_dim=int(graph.num_features),  # type: ignore[attr-defined]
                      out_dim=4 if task == "node" else 6, hidden=8,
                      layer_kwargs=layer_kwargs or {}, **{"num_layers": 2, **stack})
    quant = QuantConfig(bits=8)
    torch.manual_seed(0)
    if task == "node":
        model = build_model(cfg)
    else:
        from qgnn.training.tasks.link import build_link_model

        model = build_link_model(cfg, "dot", None)
    model = quantize_model(model, quant)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.from_numpy(graph.x), full_graph_block(graph))  # type: ignore[attr-defined]
    model.eval()
    run = root / f"run-{kind}-{task}"
    save_run(run, model, task=task, dataset="synthetic:powerlaw_communities", model_config=cfg,
             train_config=TrainConfig(), metrics={},
             extra={"quant": {"config": quant.to_dict(), "state": quant_state(model)}})
    return export_run(run, root / f"bundle-{kind}-{task}", graph=graph,  # type: ignore[arg-type]
                      parity=parity).bundle
