"""inference.GRPCInferenceService (KServe v2 / Open Inference Protocol) over the data plane.

Node-classification models take ``node_ids`` INT64 [-1] and give ``probabilities`` FP32 [-1, C],
``predicted_class`` INT64 [-1] and, when asked for by name, ``embeddings`` FP32 [-1, D];
link-prediction models take ``pairs`` INT64 [-1, 2] and give ``scores`` FP32 [-1] (docs/api.md).
Ids may come in any integer datatype, as typed ``contents`` or ``raw_input_contents``
(little-endian, row-major), checked by qgnn.runtime.validation before any cast; outputs go out in
``raw_output_contents``, which is what tritonclient reads. The model repository extension is in
qgnn.runtime.service.kserve_repository.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from qgnn.runtime import validation
from qgnn.runtime.dataplane import DataPlane
from qgnn.runtime.errors import InvalidRequestError, ModelNotFoundError
from qgnn.runtime.messages import ModelSelector
from qgnn.runtime.model_entry import ModelEntry, ModelState
from qgnn.runtime.proto_gen.inference import grpc_service_pb2 as kserve
from qgnn.runtime.proto_gen.inference import grpc_service_pb2_grpc as kserve_grpc
from qgnn.runtime.proto_gen.inference import model_config_pb2 as mc
from qgnn.runtime.service import kserve_repository
from qgnn.runtime.service.qgnn_v1 import deadline
from qgnn.runtime.stepwise import Steps, stepwise

from qgnn import __version__

PLATFORM = "onnxruntime_onnx"
# KServe datatype -> (little-endian numpy dtype, typed-contents field): validation.DATATYPES
DATATYPES = {name: (d.dtype.str, d.contents_field) for name, d in validation.DATATYPES.items()}
ID_DATATYPES = validation.ID_DATATYPES
_CONFIG_TYPES = {"INT64": mc.TYPE_INT64, "FP32": mc.TYPE_FP32}


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]


def model_tensors(entry: ModelEntry) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """The KServe signature of a model: (inputs, outputs)."""
    b = entry.backend
    return _signature(entry.manifest.model.task, int(b.num_classes), int(b.embedding_dim))


@functools.lru_cache(maxsize=256)
def _signature(task: str, num_classes: int, embedding_dim: int
               ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Built once per shape of model: every ModelInfer reads it."""
    if task == "node":
        return ((Tensor("node_ids", "INT64", (-1,)),),
                (Tensor("probabilities", "FP32", (-1, num_classes)),
                 Tensor("predicted_class", "INT64", (-1,)),
                 Tensor("embeddings", "FP32", (-1, embedding_dim))))
    return (Tensor("pairs", "INT64", (-1, 2)),), (Tensor("scores", "FP32", (-1,)),)


# Response templates kept per model version: one per (outputs asked for, their shapes), so a
# server answering every batch size up to --max-ids-per-request keeps at most this many.
_MAX_TEMPLATES = 64


class _InferPlan:
    """What ModelInfer reads from a model version on every call, built once per version (kept
    in its entry's memo): the outputs by name, the default ones, and response templates (model
    name, version and output metadata already set; a call copies one and adds its bytes)."""

    def __init__(self, entry: ModelEntry) -> None:
        _, outputs = model_tensors(entry)
        self.name, self.version = entry.name, str(entry.version)
        self.node_task = entry.manifest.model.task == "node"
        self.outputs = {t.name: t for t in outputs}
        self.default = [t.name for t in outputs if t.name != "embeddings"]
        # little-endian numpy dtype per output (tobytes() writes C order)
        self._dtypes = {t.name: DATATYPES[t.datatype][0] for t in outputs}
        self._templates: dict[tuple[Any, ...], kserve.ModelInferResponse] = {}

    @staticmethod
    def of(entry: ModelEntry) -> _InferPlan:
        plan = entry.memo.get("kserve_infer")
        if plan is None:
            plan = entry.memo["kserve_infer"] = _InferPlan(entry)
        return plan

    def response(self, wanted: list[str], arrays: dict[str, np.ndarray], request_id: str
                 ) -> kserve.ModelInferResponse:
        """The answer: the outputs ``wanted`` in order, as raw little-endian bytes."""
        shapes = tuple([arrays[name].shape for name in wanted])
        key = (*wanted, shapes)
        template = self._templates.get(key)
        if template is None:
            template = kserve.ModelInferResponse(model_name=self.name, model_version=self.version)
            for name, shape in zip(wanted, shapes, strict=True):
                template.outputs.add(name=name, datatype=self.outputs[name].datatype,
                                     shape=shape)
            if len(self._templates) < _MAX_TEMPLATES:
                self._templates[key] = template
        response = kserve.ModelInferResponse()
        response.CopyFrom(template)
        if request_id:
            response.id = request_id
        dtypes = self._dtypes
        response.raw_output_contents.extend(
            [arrays[name].astype(dtypes[name], copy=False).tobytes() for name in wanted])
        return response


@functools.lru_cache(maxsize=1024)
def parse_version(name: str, version: str, fields: tuple[str, str] = ("name", "version")
                  ) -> ModelSelector:
    """'' is the newest version; anything else must be ASCII decimal digits (validation).
    Cached: every call names its model, and a refusal raises (never cached)."""
    return ModelSelector(validation.model_name(name, fields[0]),
                         validation.version_text(version, fields[1]))


def _where(i: int, name: str) -> str:
    return f"inputs[{i}]({validation.clip(name)})"


def decode_inputs(request: kserve.ModelInferRequest, max_elements: int) -> dict[str, np.ndarray]:
    """The request's input tensors by name, from raw bytes or typed contents, checked against
    their declared datatype and shape before anything is cast or allocated (validation). Field
    names for error messages are built only when there is an error (every call decodes)."""
    raw = request.raw_input_contents
    tensors = request.inputs
    if raw and len(raw) != len(tensors):
        raise InvalidRequestError("raw_input_contents", len(raw),
                                  f"needs one entry per input ({len(tensors)})")
    out: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(tensors):
        name = tensor.name
        if name in out:
            raise InvalidRequestError(f"{_where(i, name)}.name", validation.clip(name),
                                      "input given twice")
        dt = validation.DATATYPES.get(tensor.datatype) or validation.datatype(
            tensor.datatype, f"{_where(i, name)}.datatype")
        dims = tensor.shape
        size = validation.vector_length(dims, max_elements)
        if size is None:
            shape, count = validation.tensor_shape(dims, f"{_where(i, name)}.shape",
                                                   max_elements)
        else:
            shape, count = (size,), size
        # an unset contents message has no values (HasField spares reading eight fields)
        given = [f for f in validation.CONTENTS_FIELDS
                 if len(getattr(tensor.contents, f))] if tensor.HasField("contents") else []
        if raw:
            if given:
                raise InvalidRequestError(f"{_where(i, name)}.contents.{given[0]}", "values",
                                          "give an input's values in contents or in "
                                          "raw_input_contents, not both")
            arr = validation.raw_contents(raw[i], dt, count, shape, f"raw_input_contents[{i}]")
        else:
            where = _where(i, name)
            wrong = [f for f in given if f != dt.contents_field]
            if wrong:
                raise InvalidRequestError(f"{where}.contents.{wrong[0]}", "values",
                                          f"a {dt.name} tensor carries its values in "
                                          f"contents.{dt.contents_field}")
            values = getattr(tensor.contents, dt.contents_field)
            if len(values) != count:
                raise InvalidRequestError(f"{where}.contents.{dt.contents_field}", len(values),
                                          f"shape {list(shape)} needs {count} values")
            arr = validation.typed_contents(values, dt, f"{where}.contents.{dt.contents_field}")
        out[name] = arr if len(shape) == 1 else arr.reshape(shape)
    return out


def _ids_input(inputs: dict[str, np.ndarray], name: str, ndim: int, width: int | None
               ) -> np.ndarray:
    if name not in inputs:
        raise InvalidRequestError("inputs", [validation.clip(n) for n in sorted(inputs)],
                                  f"this model needs input {name!r}")
    arr = inputs[name]
    if arr.dtype.kind not in "iu":
        raise InvalidRequestError(f"inputs({name}).datatype", str(arr.dtype),
                                  f"ids must be one of {', '.join(ID_DATATYPES)}")
    if arr.ndim != ndim or (width is not None and arr.shape[-1] != width):
        want = "[n]" if ndim == 1 else f"[n, {width}]"
        raise InvalidRequestError(f"inputs({name}).shape", list(arr.shape), f"must be {want}")
    extra = sorted(set(inputs) - {name}) if len(inputs) > 1 else None
    if extra:
        raise InvalidRequestError("inputs", [validation.clip(n) for n in extra],
                                  f"unknown input(s); this model takes only {name!r}")
    return arr


class KServeService(kserve_grpc.GRPCInferenceServiceServicer):
    """The Open Inference Protocol front end."""

    def __init__(self, plane: DataPlane, *, serving: Any = lambda: True) -> None:
        self.plane = plane
        self._serving = serving  # callable: False once shutdown starts

    def _entry(self, name: str, version: str, *, ready: bool = True,
               fields: tuple[str, str] = ("name", "version")) -> ModelEntry:
        sel = parse_version(name, version, fields)
        repo = self.plane.repository
        return repo.resolve(sel) if ready else repo.find(sel)

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        return kserve.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return kserve.ServerReadyResponse(ready=bool(self._serving()) and self.plane.is_ready())

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        sel = parse_version(request.name, request.version)
        return kserve.ModelReadyResponse(ready=self.plane.is_ready(sel))

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return kserve.ServerMetadataResponse(name="qgnn", version=__version__,
                                             extensions=["model_repository"])

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        entry = self._entry(request.name, request.version)
        inputs, outputs = model_tensors(entry)
        meta = kserve.ModelMetadataResponse.TensorMetadata
        versions = [str(e.version) for e in self.plane.list_models(entry.name)
                    if e.state is ModelState.READY]
        return kserve.ModelMetadataResponse(
            name=entry.name, versions=versions, platform=PLATFORM,
            inputs=[meta(name=t.name, datatype=t.datatype, shape=t.shape) for t in inputs],
            outputs=[meta(name=t.name, datatype=t.datatype, shape=t.shape) for t in outputs])

    def ModelConfig(self, request: Any, context: grpc.ServicerContext) -> Any:
        entry = self._entry(request.name, request.version)
        inputs, outputs = model_tensors(entry)
        m = entry.manifest
        config = mc.ModelConfig(
            name=entry.name, platform=PLATFORM, backend="onnxruntime", max_batch_size=0,
            default_model_filename=m.model.file,
            input=[mc.ModelInput(name=t.name, data_type=_CONFIG_TYPES[t.datatype], dims=t.shape)
                   for t in inputs],
            output=[mc.ModelOutput(name=t.name, data_type=_CONFIG_TYPES[t.datatype],
                                   dims=t.shape) for t in outputs])
        params = {"task": m.model.task, "model_type": m.model.type,
                  "quantisation_bits": str(m.quantisation.bits),
                  "quantisation_method": m.quantisation.method}
        for key, value in params.items():
            config.parameters[key].string_value = value
        return kserve.ModelConfigResponse(config=config)

    def ModelStatistics(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.name:
            sel = parse_version(request.name, request.version)
            entries = [self.plane.repository.find(sel)] if sel.version is not None else \
                self.plane.list_models(sel.name)
            if not entries:
                raise ModelNotFoundError(f"no model named {request.name!r} is loaded")
        else:
            entries = self.plane.list_models()
        duration = kserve.StatisticDuration
        stats = []
        for e in entries:
            if e.batcher is None:
                continue
            s = e.batcher.stats
            stats.append(kserve.ModelStatistics(
                name=e.name, version=str(e.version), last_inference=s.last_inference_ms,
                inference_count=s.inference_count, execution_count=s.execution_count,
                inference_stats=kserve.InferStatistics(
                    success=duration(count=s.inference_count, ns=s.success_ns),
                    fail=duration(count=s.fail_count, ns=s.fail_ns),
                    queue=duration(count=s.inference_count + s.fail_count, ns=s.queue_ns),
                    compute_infer=duration(count=s.execution_count, ns=s.compute_ns))))
        return kserve.ModelStatisticsResponse(model_stats=stats)

    def RepositoryIndex(self, request: Any, context: grpc.ServicerContext) -> Any:
        return kserve_repository.repository_index(self.plane.repository, request.ready)

    def RepositoryModelLoad(self, request: Any, context: grpc.ServicerContext) -> Any:
        kserve_repository.load_model(self.plane.repository, request.model_name,
                                     request.parameters)
        return kserve.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request: Any, context: grpc.ServicerContext) -> Any:
        kserve_repository.unload_model(self.plane.repository, request.model_name)
        return kserve.RepositoryModelUnloadResponse()

    @stepwise
    def ModelInfer(self, request: kserve.ModelInferRequest, context: grpc.ServicerContext
                   ) -> Steps:
        sel = parse_version(request.model_name, request.model_version,
                            ("model_name", "model_version"))
        with self.plane.lease(sel) as entry:  # every output from this one version
            plan = _InferPlan.of(entry)
            known = plan.outputs
            asked = request.outputs
            wanted = [o.name for o in asked] if len(asked) else plan.default
            for i, name in enumerate(wanted):
                if name not in known:
                    raise InvalidRequestError(f"outputs[{i}].name", name,
                                              f"unknown output; this model has "
                                              f"{', '.join(known)}")
            inputs = decode_inputs(request, self.plane.limits.max_ids_per_request * 2)
            when = deadline(context)
            arrays: dict[str, np.ndarray] = {}
            if plan.node_task:
                ids = _ids_input(inputs, "node_ids", 1, None)
                if "probabilities" in wanted or "predicted_class" in wanted:
                    r = yield from self.plane.predict_nodes_steps(entry, ids, deadline=when)
                    arrays["probabilities"], arrays["predicted_class"] = (r.probabilities,
                                                                          r.predicted_class)
                if "embeddings" in wanted:
                    e = yield from self.plane.embed_steps(entry, ids, deadline=when)
                    arrays["embeddings"] = e.embeddings
            else:
                pairs = _ids_input(inputs, "pairs", 2, 2)
                links = yield from self.plane.predict_links_steps(
                    entry, pairs[:, 0], pairs[:, 1], deadline=when,
                    fields=("pairs[:, 0]", "pairs[:, 1]"))
                arrays["scores"] = links.scores
            return plan.response(wanted, arrays, request.id)
