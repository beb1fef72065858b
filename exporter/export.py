"""Trained checkpoint -> ONNX model(s) -> a verified model bundle.

:func:`load_run_model` rebuilds the PyTorch model of a run (the Degree-Quant fake-quantised
model for quantised runs, whose ``extra["quant"]`` records the quantisation, see
docs/export.md); :func:`export_models` emits its INT8 (if quantised) and FP32 graphs;
:func:`export_run` does everything ``qgnn export`` does: emit, check, build the serving graph
store, run the model on the full graph, compare with PyTorch and write the bundle.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import ModelProto, TensorProto
from qgnn.exporter.emit.stack import EmittedModel, emit_stack
from qgnn.exporter.onnx_builder import GraphBuilder
from qgnn.exporter.ops import IR_VERSION, ONNX_OPSET_VERSION, QGNN_OPSET_VERSION
from qgnn.exporter.parity import ParityReport, compare_outputs
from qgnn.exporter.quant_params import LayerSites, read_sites
from qgnn.exporter.recsys import node_types_manifest, recommender_files
from qgnn.exporter.store import GraphStore, build_store, embedding_arrays
from qgnn.graph.container import Graph
from qgnn.graph.links import LinkData
from qgnn.runtime.bundle.layout import MODEL_FILE, MODEL_FORMAT
from qgnn.runtime.bundle.manifest import Manifest
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.bundle.writer import write_bundle
from qgnn.runtime.engine.executor import make_executor
from qgnn.runtime.engine.session import SessionConfig
from qgnn.training.checkpoint import Checkpoint, load_run
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.models import GNN
from torch import nn

FP32_FILE = "model_fp32.onnx"
DECODER_FILE = "decoder.onnx"
METHOD_NAMES = {"dq": "degree-quant", "qat": "qat"}
_DTYPE_NAMES = {TensorProto.FLOAT: "float32", TensorProto.UINT8: "uint8",
                TensorProto.INT64: "int64", TensorProto.INT8: "int8", TensorProto.INT32: "int32"}

Progress = Callable[[str], None]


@dataclass
class LoadedRun:
    """A checkpoint rebuilt as a PyTorch model in eval mode."""

    checkpoint: Checkpoint
    model: nn.Module  # GNN (node task) or LinkModel (link task); fake-quantised if quantised
    gnn: GNN  # the message-passing stack
    quant_config: Any | None  # qgnn.training.quant.QuantConfig of a quantised run
    quant_state: dict[str, Any] | None
    sites: list[LayerSites] | None
    site_prefix: str  # "" (node task) or "encoder." (link task)

    @property
    def task(self) -> str:
        return self.checkpoint.task

    @property
    def quantised(self) -> bool:
        return self.sites is not None


def _quant_record(extra: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """``(QuantConfig fields, quant_state or None)`` from a checkpoint's ``extra``, or None."""
    record = extra.get("quant")
    if record is None:
        return None
    if not isinstance(record, Mapping):
        raise ValueError(f"config.json: extra.quant must be an object, got "
                         f"{type(record).__name__}")
    config = record.get("config", {k: v for k, v in record.items() if k != "state"})
    state = record.get("state")
    if not isinstance(config, Mapping) or (state is not None and not isinstance(state, Mapping)):
        raise ValueError("config.json: extra.quant.config and extra.quant.state must be objects")
    return dict(config), None if state is None else dict(state)


def load_run_model(directory: str | Path) -> LoadedRun:
    """Rebuild the run in ``directory`` (``qgnn.training.checkpoint`` layout) in eval mode."""
    from qgnn.training.quant import QuantConfig, quant_state, quantize_model

    ckpt = load_run(directory)
    record = _quant_record(ckpt.extra)
    if record is None:
        model = ckpt.build_model()
        config = state = sites = None
    else:
        try:
            config = QuantConfig.from_dict(record[0])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config.json: extra.quant.config: {exc}") from None
        model = _build_float(ckpt)
        quantize_model(model, config)
        try:
            model.load_state_dict(ckpt.state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"model.safetensors: weights do not fit the quantised model: "
                             f"{str(exc).splitlines()[0]}") from None
        model.eval()
        state = quant_state(model)
        if record[1] is not None and record[1] != state:
            raise ValueError("config.json: extra.quant.state disagrees with the quantisation "
                             "buffers in model.safetensors")
    gnn = model.encoder if ckpt.task == "link" else model
    if not isinstance(gnn, GNN):
        raise ValueError(f"checkpoint holds a {type(gnn).__name__}, expected a qgnn GNN stack")
    prefix = "encoder." if ckpt.task == "link" else ""
    if state is not None:
        sites = read_sites(state, prefix, len(gnn.layers))
    return LoadedRun(ckpt, model, gnn, config, state, sites, prefix)


def _build_float(ckpt: Checkpoint) -> nn.Module:
    if ckpt.task == "link":
        from qgnn.training.tasks.link import build_link_model

        return build_link_model(ckpt.model_config, ckpt.train_config.decoder,
                                ckpt.num_embeddings)
    from qgnn.training.nn.models import build_model

    return build_model(ckpt.model_config)


def export_models(run: LoadedRun, *, debug: bool = False,
                  name: str = "qgnn") -> tuple[EmittedModel, EmittedModel]:
    """``(main, fp32)``: the model to serve (INT8 for a quantised run, else FP32) and the FP32
    graph of the same float parameters (the reference for the size ratio)."""
    fp32 = emit_stack(run.gnn, None, task=run.task, debug=False, name=name)
    if run.sites is None:
        return (emit_stack(run.gnn, None, task=run.task, debug=debug, name=name)
                if debug else fp32), fp32
    return emit_stack(run.gnn, run.sites, task=run.task, debug=debug, name=name), fp32


def check_model(model: ModelProto) -> None:
    """onnx.checker (full check) and strict shape inference; raises on a malformed model."""
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)


@dataclass(frozen=True, eq=False)
class ServingData:
    """The graph a bundle serves, with float32 features as the model saw them in training."""

    graph: Graph
    features: np.ndarray  # (N, F) float32
    labels: np.ndarray | None = None
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    link: LinkData | None = None  # a link run's data (splits, node types, ids)
    weighted_graph: Graph | None = None  # the graph with its interaction weights (ratings)


def run_dataset(run: LoadedRun, dataset: str | None = None) -> str:
    """The dataset spec to export ``run`` with, its files checked against the sha256 recorded
    at training. ``dataset`` overrides the recorded spec: a full spec, or for interaction runs
    the training file's new path (the recorded options are kept)."""
    from qgnn.graph.datasets import interactions_spec, parse_interactions_spec
    from qgnn.graph.fingerprint import verify

    ckpt = run.checkpoint
    spec = ckpt.dataset
    if dataset is not None:
        if ckpt.dataset.startswith("interactions:") and not dataset.startswith(
                ("interactions:", "synthetic:")):
            _, options = parse_interactions_spec(ckpt.dataset)
            spec = interactions_spec(dataset, **options)
        else:
            spec = dataset
    recorded = ckpt.extra.get("dataset_files")
    if isinstance(recorded, list):
        verify(spec, recorded)
    return spec


def serving_data(run: LoadedRun, graph: Graph | LinkData | None = None,
                 dataset: str | None = None) -> ServingData:
    """The training graph of the run (its dataset spec reloaded, checked and possibly moved:
    see :func:`run_dataset`; or ``graph``), with the features transformed as in training (row
    normalisation); link runs serve the message-passing graph of their edge split, featureless
    ones their learned embedding table."""
    from qgnn.graph.datasets import load_dataset
    from qgnn.graph.links import LinkData, split_edges
    from qgnn.training.tasks.node import prepare_features

    ckpt = run.checkpoint
    data = load_dataset(run_dataset(run, dataset)) if graph is None else graph
    if ckpt.task == "node":
        if not isinstance(data, Graph):
            raise ValueError(f"dataset {ckpt.dataset!r} holds link pairs, not a node task graph")
        g = prepare_features(data, ckpt.train_config).with_split(ckpt.train_config.split)
        if g.x is None:
            raise ValueError(f"dataset {ckpt.dataset!r}: node classification needs features")
        masks = {k: getattr(g, f"{k}_mask") for k in ("train", "val", "test")
                 if getattr(g, f"{k}_mask") is not None}
        return ServingData(g, g.x.astype(np.float32), g.y, masks)
    if isinstance(data, Graph) and graph is None:
        data = split_edges(data, seed=ckpt.train_config.split)
    if isinstance(data, LinkData):
        from qgnn.training.tasks.link import data_for_model

        data = data_for_model(data, run.gnn.cfg.model)
    link = data if isinstance(data, LinkData) else None
    g = data.graph if isinstance(data, LinkData) else data
    weighted = None
    if link is not None and link.bipartite and g.edge_weight is not None:
        # user-item ratings ride along to the bundle; message passing ignores them (training's
        # link task strips them too, docs/recommenders.md)
        from qgnn.training.tasks.link import message_graph

        weighted, g = g, message_graph(link, g)
    if g.x is None:
        embedding = getattr(run.model, "embedding", None)
        if embedding is None:
            raise ValueError("link run without node features has no embedding table")
        features = embedding.weight.detach().cpu().numpy().astype(np.float32)
    else:
        g = prepare_features(g, ckpt.train_config)
        features = g.x.astype(np.float32)
    return ServingData(g, features, link=link, weighted_graph=weighted)


def torch_output(run: LoadedRun, data: ServingData) -> np.ndarray:
    """The PyTorch model's full-graph output (logits or embeddings), eval mode."""
    block = full_graph_block(data.graph)
    x = None if run.task == "link" and getattr(run.model, "embedding", None) is not None \
        else torch.from_numpy(data.features)
    run.model.eval()
    with torch.no_grad():
        return run.model(x, block).numpy()


def tensor_specs(values: Any) -> list[dict[str, Any]]:
    """Manifest ``{name, dtype, shape}`` of ONNX graph inputs or outputs."""
    specs = []
    for value in values:
        tensor = value.type.tensor_type
        shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in tensor.shape.dim]
        specs.append({"name": value.name, "dtype": _DTYPE_NAMES[tensor.elem_type],
                      "shape": shape})
    return specs


def default_name(directory: str | Path) -> str:
    """A bundle model name from a run directory (``runs/cora-gcn`` -> ``cora-gcn``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(directory).resolve().name).strip("-._")
    return name[:128] or "model"


def decoder_model(run: LoadedRun) -> ModelProto | None:
    """FP32 ONNX of an MLP link decoder (``h_src``, ``h_dst`` (M, D) -> ``score`` (M,)), or
    None for the dot-product decoder (the manifest says which)."""
    decoder = getattr(run.model, "decoder", None)
    mlp = getattr(decoder, "mlp", None)
    if mlp is None:
        return None
    from qgnn.exporter.emit.common import Emitter, to_numpy

    g = GraphBuilder()
    em = Emitter(g)
    dim = run.gnn.cfg.out_dim
    a = g.input("h_src", TensorProto.FLOAT, ["num_pairs", dim])
    b = g.input("h_dst", TensorProto.FLOAT, ["num_pairs", dim])
    first, last = mlp[0], mlp[2]
    hidden = g.op("Relu", [em.float_linear(g.op("Mul", [a, b], "product"), to_numpy(
        first.weight), to_numpy(first.bias), "hidden")], "relu")
    score = g.op("Squeeze", [em.float_linear(hidden, to_numpy(last.weight), to_numpy(
        last.bias), "out"), em.i64([1])], "score")
    g.output(score, "score", TensorProto.FLOAT, ["num_pairs"])
    return g.model("qgnn_link_decoder", doc="qgnn MLP link decoder: score(MLP(h_src * h_dst))")


@dataclass
class ExportSummary:
    """What :func:`export_run` wrote and measured."""

    bundle: Path
    precision: str  # "int8" or "fp32"
    files: dict[str, int]  # bundle path -> bytes
    model_bytes: int
    fp32_bytes: int
    parity: ParityReport | None
    manifest: Manifest  # as the written bundle reads back

    @property
    def size_ratio(self) -> float:
        """Size of the served model over the FP32 model of the same parameters."""
        return self.model_bytes / self.fp32_bytes


def _versions() -> dict[str, str]:
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__, "numpy": np.__version__,
            "onnx_ir": str(IR_VERSION), "onnx_opset": str(ONNX_OPSET_VERSION),
            "ai.qgnn_opset": str(QGNN_OPSET_VERSION)}


def _metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The checkpoint's numeric metrics (the manifest allows finite numbers only)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)
            and not isinstance(v, bool) and math.isfinite(v)}


def _quantisation(run: LoadedRun) -> dict[str, Any]:
    if run.quant_state is None or run.quant_config is None:
        return {"bits": 32, "method": "none", "num_sites": 0}
    by_role: dict[str, int] = {}
    for entry in run.quant_state.values():
        by_role[entry["role"]] = by_role.get(entry["role"], 0) + 1
    cfg = run.quant_config
    return {"bits": cfg.bits, "method": METHOD_NAMES.get(cfg.method, cfg.method),
            "num_sites": len(run.quant_state), "sites_by_role": dict(sorted(by_role.items())),
            "per_channel": cfg.per_channel}


def build_manifest(run: LoadedRun, main: EmittedModel, store: GraphStore, *, name: str,
                   version: int, parity: ParityReport | None, fp32_file: str | None,
                   decoder_file: str | None, embedding_dim: int | None,
                   num_classes: int | None,
                   node_types: dict[str, int] | None = None) -> dict[str, Any]:
    """The bundle manifest (docs/bundle-format.md, plus this exporter's extra fields)."""
    cfg, ckpt = run.gnn.cfg, run.checkpoint
    graph = main.model.graph
    model: dict[str, Any] = {
        "name": name, "version": version, "task": run.task, "type": cfg.model,
        "file": MODEL_FILE, "format": MODEL_FORMAT,
        "precision": "int8" if run.quantised else "fp32",
        "inputs": tensor_specs(graph.input), "outputs": tensor_specs(graph.output),
        "num_layers": main.num_layers, "config": cfg.to_dict(),
        "input": {"dtype": main.input_dtype}}
    if main.input_site is not None:
        scale, zero_point = main.input_site.activation_params()
        model["input"].update({"scale": float(scale), "zero_point": int(zero_point)})
    if fp32_file is not None:
        model["fp32_file"] = fp32_file
    manifest: dict[str, Any] = {
        "model": model, "quantisation": _quantisation(run), "metrics": _metrics(ckpt.metrics),
        "graph": {"num_nodes": store.num_nodes, "num_edges": store.num_edges,
                  "num_features": int(store.features.shape[1]), "adjacency": "in",
                  "dataset": ckpt.dataset},
        "serving": {"fanouts": [-1] * main.num_layers},
        "training": {"dataset": ckpt.dataset, "qgnn_version": ckpt.qgnn_version,
                     "config": ckpt.train_config.to_dict(),
                     "quant": None if run.quant_config is None else run.quant_config.to_dict()},
        "versions": _versions()}
    if num_classes is not None:
        manifest["graph"]["num_classes"] = num_classes
    if node_types is not None:
        manifest["graph"]["node_types"] = node_types
    if run.task == "link":
        manifest["link"] = {"decoder": ckpt.train_config.decoder, "embedding_dim": embedding_dim}
        if decoder_file is not None:
            manifest["link"]["decoder_file"] = decoder_file
    if parity is not None:
        manifest["parity"] = parity.to_dict()
    return manifest


def export_run(checkpoint: str | Path, out: str | Path, *, name: str | None = None,
               version: int = 1, include_fp32: bool = False, parity: bool = True,
               overwrite: bool = False, graph: Graph | LinkData | None = None, threads: int = 1,
               progress: Progress | None = None, dataset: str | None = None) -> ExportSummary:
    """Export the run in ``checkpoint`` as a verified bundle in ``out``.

    ``graph`` replaces the dataset named in the checkpoint (same nodes and features as in
    training; a link run's LinkData keeps its splits, node types and ids); ``dataset`` is the
    dataset's spec or new path when it moved (its files must hash as recorded at training);
    ``include_fp32`` adds the FP32 model as ``model_fp32.onnx``;
    ``parity`` compares the exported model with PyTorch on the full graph and records the
    figures.
    """
    say = progress or (lambda _msg: None)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version: expected an integer >= 1, got {version!r}")
    name = name if name is not None else default_name(checkpoint)
    say(f"loading checkpoint {checkpoint}")
    run = load_run_model(checkpoint)
    precision = "int8" if run.quantised else "fp32"
    say(f"loading dataset {dataset or run.checkpoint.dataset!r}")
    data = serving_data(run, graph, dataset)
    say(f"building the {precision} ONNX graph ({run.gnn.cfg.model}, "
        f"{len(run.gnn.layers)} layers)")
    main, fp32 = export_models(run, name=name)
    for emitted in [main] if main is fp32 else [main, fp32]:
        check_model(emitted.model)
    decoder = decoder_model(run) if run.task == "link" else None
    if decoder is not None:
        check_model(decoder)
    store = build_store(data.graph, data.features, main.input_site, labels=data.labels,
                        masks=data.masks)
    say(f"running the exported model on the full graph ({store.num_nodes} nodes, "
        f"{store.num_edges} edges)")
    # the serving engine's executor: the path `qgnn serve` runs, and the compiled kernels make
    # a large graph's export take seconds (stock onnxruntime when they are not built)
    executor = make_executor(main.model.SerializeToString(), SessionConfig(threads=threads))
    onnx_out = executor.run(store.full_graph_feeds(main.num_layers), [main.output])[main.output]
    report = None
    if parity:
        say("comparing with PyTorch")
        step = None
        if run.sites is not None:
            step = float(np.max(run.sites[-1]["out"].scale))
        report = compare_outputs(torch_output(run, data), onnx_out, step=step,
                                 labels=data.labels, mask=data.masks.get("test"))
    model_bytes = main.model.SerializeToString()
    files: dict[str, Any] = {MODEL_FILE: model_bytes, **store.arrays()}
    fp32_bytes = fp32.model.SerializeToString()
    if include_fp32 and run.quantised:
        files[FP32_FILE] = fp32_bytes
    if run.task == "link":
        files.update(embedding_arrays(onnx_out))
        if data.link is not None:
            files.update(recommender_files(data.link, data.weighted_graph or data.graph))
    if decoder is not None:
        files[DECODER_FILE] = decoder.SerializeToString()
    manifest = build_manifest(
        run, main, store, name=name, version=version, parity=report,
        fp32_file=FP32_FILE if FP32_FILE in files else None,
        decoder_file=DECODER_FILE if decoder is not None else None,
        embedding_dim=int(onnx_out.shape[1]) if run.task == "link" else None,
        num_classes=run.gnn.cfg.out_dim if run.task == "node" else None,
        node_types=node_types_manifest(data.link))
    say(f"writing bundle {out}")
    write_bundle(out, manifest, files, overwrite=overwrite)
    with load_bundle(out, verify=True) as bundle:
        sizes = {rel: int(entry["bytes"]) for rel, entry in sorted(bundle.files.items())}
        manifest = bundle.manifest
    return ExportSummary(Path(out), precision, sizes, len(model_bytes), len(fp32_bytes), report,
                         manifest)
