"""qgnn.v1.GraphInference: protobuf <-> data plane, nothing else (docs/api.md)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
from qgnn.runtime import validation
from qgnn.runtime.bundle.manifest import TensorSpec
from qgnn.runtime.dataplane import DataPlane
from qgnn.runtime.messages import (
    GraphSummary,
    InductiveSpec,
    ModelKey,
    ModelSelector,
    RecommendUser,
    deadline_from,
    graph_summary,
    inductive_specs,
)
from qgnn.runtime.model_entry import ModelEntry, ModelState
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc
from qgnn.runtime.stepwise import Steps, stepwise

_TASKS = {"node": pb.TASK_NODE, "link": pb.TASK_LINK}
_STATES = {ModelState.LOADING: pb.MODEL_STATE_LOADING, ModelState.READY: pb.MODEL_STATE_READY,
           ModelState.UNLOADING: pb.MODEL_STATE_UNLOADING, ModelState.FAILED: pb.MODEL_STATE_FAILED}
_DTYPES = {"float32": pb.DATA_TYPE_FLOAT32, "float16": pb.DATA_TYPE_FLOAT16,
           "int64": pb.DATA_TYPE_INT64, "int32": pb.DATA_TYPE_INT32, "int8": pb.DATA_TYPE_INT8,
           "uint8": pb.DATA_TYPE_UINT8, "bool": pb.DATA_TYPE_BOOL}


def selector(ref: pb.ModelRef) -> ModelSelector:
    """The model a request names, checked like KServe's (qgnn.runtime.validation)."""
    return _selector(ref.name, ref.version if ref.HasField("version") else None)


@functools.lru_cache(maxsize=1024)
def _selector(name: str, version: int | None) -> ModelSelector:
    """Cached: every call names its model, and a refusal raises (never cached)."""
    return ModelSelector(validation.model_name(name), validation.version_number(version))


def model_ref(key: ModelKey) -> pb.ModelRef:
    return pb.ModelRef(name=key.name, version=key.version)


def deadline(context: grpc.ServicerContext) -> float | None:
    return deadline_from(context.time_remaining())


def _ids(values: Any) -> np.ndarray:
    return np.fromiter(values, np.int64, len(values))


def _inductive(nodes: Any) -> list[InductiveSpec]:
    return inductive_specs(nodes) if len(nodes) else []  # most requests have none


def _nodes_template(entry: ModelEntry, num_classes: int) -> pb.PredictNodesResponse:
    """PredictNodesResponse with the model and num_classes set, built once per version (a
    call copies it and adds its values)."""
    key = ("qgnn.v1.PredictNodesResponse", num_classes)
    template = entry.memo.get(key)
    if template is None:
        template = entry.memo[key] = pb.PredictNodesResponse(model=model_ref(entry.key),
                                                             num_classes=num_classes)
    return template


def graph_info(summary: GraphSummary) -> pb.GraphInfo:
    return pb.GraphInfo(num_nodes=summary.num_nodes, num_edges=summary.num_edges,
                        num_features=summary.num_features, num_classes=summary.num_classes,
                        revision=summary.revision)


def _tensor_specs(specs: Sequence[TensorSpec]) -> list[pb.TensorSpec]:
    return [pb.TensorSpec(name=s.name, dtype=_DTYPES.get(s.dtype, pb.DATA_TYPE_UNSPECIFIED),
                          shape=[pb.Dim(symbol=d) if isinstance(d, str) else pb.Dim(size=d)
                                 for d in s.shape]) for s in specs]


def model_info(entry: ModelEntry) -> pb.ModelInfo:
    """A repository entry as ModelInfo: the manifest typed, the graph as served now."""
    info = pb.ModelInfo(name=entry.name, version=entry.version, state=_STATES[entry.state],
                        error=entry.error)
    m = entry.manifest
    if m is None:  # a load that failed before the manifest could be read
        return info
    model, quant, graph = m.model, m.quantisation, m.graph
    info.task = _TASKS[model.task]
    info.model_type = model.type
    info.inputs.extend(_tensor_specs(model.inputs))
    info.outputs.extend(_tensor_specs(model.outputs))
    info.quantisation.CopyFrom(pb.Quantisation(bits=quant.bits, method=quant.method,
                                               num_sites=quant.num_sites))
    if entry.backend is not None and entry.state is ModelState.READY:
        info.graph.CopyFrom(graph_info(graph_summary(entry.backend)))
    else:
        info.graph.CopyFrom(pb.GraphInfo(
            num_nodes=graph.num_nodes, num_edges=graph.num_edges,
            num_features=graph.num_features, num_classes=graph.num_classes))
    info.metrics.update({k: float(v) for k, v in m.metrics.items()})
    info.created = m.created
    info.schema_version = m.schema_version
    info.software_versions.update(m.versions)
    return info


class GraphInferenceService(pb_grpc.GraphInferenceServicer):
    """Predictions, embeddings, recommendations, graph updates and model listing."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    @stepwise
    def PredictNodes(self, request: pb.PredictNodesRequest, context: grpc.ServicerContext
                     ) -> Steps:
        sel, ids = selector(request.model), _ids(request.node_ids)
        inductive = _inductive(request.inductive_nodes)
        with self.plane.lease(sel) as entry:
            r = yield from self.plane.predict_nodes_steps(entry, ids, inductive,
                                                          deadline=deadline(context))
            response = pb.PredictNodesResponse()
            response.CopyFrom(_nodes_template(entry, r.probabilities.shape[1]))
        response.probabilities.extend(r.probabilities.ravel().tolist())
        response.predicted_class.extend(r.predicted_class.tolist())
        return response

    @stepwise
    def PredictLinks(self, request: pb.PredictLinksRequest, context: grpc.ServicerContext
                     ) -> Steps:
        sel = selector(request.model)
        src, dst = _ids(request.src_ids), _ids(request.dst_ids)
        inductive = _inductive(request.inductive_nodes)
        with self.plane.lease(sel) as entry:
            r = yield from self.plane.predict_links_steps(entry, src, dst, inductive,
                                                          deadline=deadline(context))
        return pb.PredictLinksResponse(model=model_ref(r.model), scores=r.scores.tolist())

    def Recommend(self, request: pb.RecommendRequest, context: grpc.ServicerContext
                  ) -> pb.RecommendResponse:
        who = RecommendUser(
            request.user_external_id if request.HasField("user_external_id") else None,
            list(request.candidate_external_ids), _ids(request.new_user_item_ids),
            list(request.new_user_item_external_ids))
        r = self.plane.recommend(selector(request.model), request.user_id, request.k,
                                 request.exclude_seen, _ids(request.candidate_ids),
                                 _inductive(request.inductive_nodes),
                                 deadline=deadline(context), who=who)
        return pb.RecommendResponse(model=model_ref(r.model), item_ids=r.item_ids.tolist(),
                                    scores=r.scores.tolist(),
                                    item_external_ids=r.item_external_ids or [])

    @stepwise
    def Embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> Steps:
        sel, ids = selector(request.model), _ids(request.node_ids)
        inductive = _inductive(request.inductive_nodes)
        with self.plane.lease(sel) as entry:
            r = yield from self.plane.embed_steps(entry, ids, inductive,
                                                  deadline=deadline(context))
        return pb.EmbedResponse(model=model_ref(r.model), dim=r.embeddings.shape[1],
                                embeddings=r.embeddings.ravel().tolist())

    def UpdateGraph(self, request: pb.UpdateGraphRequest, context: grpc.ServicerContext
                    ) -> pb.UpdateGraphResponse:
        expected = (request.expected_num_nodes if request.HasField("expected_num_nodes")
                    else None)
        r = self.plane.update_graph(selector(request.model),
                                    [node.features for node in request.add_nodes],
                                    _ids(request.edge_src), _ids(request.edge_dst),
                                    request.undirected, expected)
        return pb.UpdateGraphResponse(model=model_ref(r.model), node_ids=r.node_ids.tolist(),
                                      graph=graph_info(r.graph))

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext
                   ) -> pb.ListModelsResponse:
        name = validation.model_name(request.name, "name", required=False)
        return pb.ListModelsResponse(models=[model_info(e) for e in self.plane.list_models(name)])

    def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext
                 ) -> pb.GetModelResponse:
        entry = self.plane.repository.find(selector(request.model))
        text = entry.bundle.manifest_json() if entry.bundle is not None else ""
        return pb.GetModelResponse(info=model_info(entry), manifest_json=text)
