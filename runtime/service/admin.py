"""qgnn.v1.ModelAdmin: load, reload and unload bundles on the running server."""

from __future__ import annotations

import grpc
from qgnn.runtime import validation
from qgnn.runtime.dataplane import DataPlane
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc
from qgnn.runtime.service.qgnn_v1 import model_info, model_ref, selector


class ModelAdminService(pb_grpc.ModelAdminServicer):
    """Operator calls; the deployment restricts who may reach them (token, network policy)."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def LoadModel(self, request: pb.LoadModelRequest, context: grpc.ServicerContext
                  ) -> pb.LoadModelResponse:
        entry = self.plane.repository.load(validation.bundle_path(request.path))
        return pb.LoadModelResponse(info=model_info(entry))

    def ReloadModel(self, request: pb.ReloadModelRequest, context: grpc.ServicerContext
                    ) -> pb.ReloadModelResponse:
        entry = self.plane.repository.reload(selector(request.model))
        return pb.ReloadModelResponse(info=model_info(entry))

    def UnloadModel(self, request: pb.UnloadModelRequest, context: grpc.ServicerContext
                    ) -> pb.UnloadModelResponse:
        keys = self.plane.repository.unload(selector(request.model))
        return pb.UnloadModelResponse(unloaded=[model_ref(k) for k in keys])
