"""A Python client for ``qgnn serve``: qgnn.v1 calls in, numpy arrays out.

```python
with QgnnClient("localhost:8500") as client:
    p = client.predict_nodes("cora-gcn", [0, 5, 7])
    p.probabilities        # float32 (3, C)
    p.predicted_class      # int64 (3,)
```

Errors are ``grpc.RpcError`` with the server's status code and message (see docs/api.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc

Pem = bytes | str | Path


@dataclass(frozen=True)
class NodePrediction:
    model: str
    version: int
    probabilities: np.ndarray  # float32 (n, C)
    predicted_class: np.ndarray  # int64 (n,)


@dataclass(frozen=True)
class LinkPrediction:
    model: str
    version: int
    scores: np.ndarray  # float32 (n,)


@dataclass(frozen=True)
class Recommendation:
    model: str
    version: int
    item_ids: np.ndarray  # int64 (<= k,)
    scores: np.ndarray  # float32 (<= k,)
    item_external_ids: list[str] = field(default_factory=list)  # empty: the bundle has none


@dataclass(frozen=True)
class Embedding:
    model: str
    version: int
    embeddings: np.ndarray  # float32 (n, D)


@dataclass(frozen=True)
class GraphUpdateResult:
    model: str
    version: int
    node_ids: np.ndarray  # int64 (m,)
    graph: dict[str, int]


def _pem(value: Pem | None) -> bytes | None:
    """PEM bytes from bytes, PEM text, or a path to a PEM file."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    return Path(value).read_bytes()


def _ref(model: str, version: int | None) -> pb.ModelRef:
    ref = pb.ModelRef(name=model)
    if version is not None:
        ref.version = version
    return ref


def _inductive(nodes: Iterable[Any]) -> list[pb.InductiveNode]:
    """InductiveNode messages from messages or dicts {id, features, neighbors, in_neighbors}."""
    out = []
    for node in nodes:
        if isinstance(node, pb.InductiveNode):
            out.append(node)
        else:
            out.append(pb.InductiveNode(
                id=int(node["id"]), features=np.asarray(node["features"], np.float32).tolist(),
                neighbors=[int(i) for i in node.get("neighbors", ())],
                in_neighbors=[int(i) for i in node.get("in_neighbors", ())]))
    return out


def _list(values: Any, dtype: type) -> list:
    return np.asarray(values, dtype).ravel().tolist()


def _dict(message: Any) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class QgnnClient:
    """A channel to one server. TLS when ``tls`` (or any certificate) is given: ``root_ca`` to
    verify the server (default: system roots), ``client_cert``/``client_key`` for mutual TLS;
    ``token`` is sent as ``authorization: Bearer`` on every call. ``timeout`` (seconds) is the
    default deadline of each call."""

    def __init__(self, target: str, *, tls: bool = False, root_ca: Pem | None = None,
                 client_cert: Pem | None = None, client_key: Pem | None = None,
                 server_name: str | None = None, token: str | None = None,
                 timeout: float | None = 30.0, max_message_bytes: int = 4 * 2**20) -> None:
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if tls or root_ca is not None or client_cert is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=_pem(root_ca),
                                                 private_key=_pem(client_key),
                                                 certificate_chain=_pem(client_cert))
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.inference = pb_grpc.GraphInferenceStub(self.channel)
        self.admin = pb_grpc.ModelAdminStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        return method(request, timeout=self.timeout if timeout is None else timeout,
                      metadata=self._metadata)

    # -- predictions -----------------------------------------------------------------------------

    def predict_nodes(self, model: str, node_ids: Sequence[int] | np.ndarray, *,
                      version: int | None = None, inductive_nodes: Iterable[Any] = (),
                      timeout: float | None = None) -> NodePrediction:
        """Class probabilities (n, C) and argmax classes (n,) for ``node_ids``."""
        r = self._call(self.inference.PredictNodes, pb.PredictNodesRequest(
            model=_ref(model, version), node_ids=_list(node_ids, np.int64),
            inductive_nodes=_inductive(inductive_nodes)), timeout)
        probs = np.asarray(r.probabilities, np.float32).reshape(-1, max(r.num_classes, 1))
        return NodePrediction(r.model.name, r.model.version, probs,
                              np.asarray(r.predicted_class, np.int64))

    def predict_links(self, model: str, src_ids: Sequence[int] | np.ndarray,
                      dst_ids: Sequence[int] | np.ndarray, *, version: int | None = None,
                      inductive_nodes: Iterable[Any] = (),
                      timeout: float | None = None) -> LinkPrediction:
        """Edge probabilities (n,) of the pairs (src_ids[i], dst_ids[i])."""
        r = self._call(self.inference.PredictLinks, pb.PredictLinksRequest(
            model=_ref(model, version), src_ids=_list(src_ids, np.int64),
            dst_ids=_list(dst_ids, np.int64), inductive_nodes=_inductive(inductive_nodes)),
            timeout)
        return LinkPrediction(r.model.name, r.model.version, np.asarray(r.scores, np.float32))

    def recommend(self, model: str, user_id: int | None = None, k: int = 10, *,
                  exclude_seen: bool = False,
                  candidate_ids: Sequence[int] | np.ndarray = (), version: int | None = None,
                  inductive_nodes: Iterable[Any] = (), user_external_id: str | None = None,
                  candidate_external_ids: Sequence[str] = (),
                  new_user_item_ids: Sequence[int] | np.ndarray = (),
                  new_user_item_external_ids: Sequence[str] = (),
                  timeout: float | None = None) -> Recommendation:
        """The best <= k items, best first, for one of: ``user_id`` (a user node id),
        ``user_external_id`` (the dataset's user id), or a cold-start user given by its items
        (``new_user_item_ids`` and/or ``new_user_item_external_ids``; no features needed)."""
        if isinstance(user_id, str):
            raise ValueError(f"user_id: a node id (int), got the string {user_id!r}; give the "
                             f"dataset's own id as user_external_id")
        for name, values in (("candidate_external_ids", candidate_external_ids),
                             ("new_user_item_external_ids", new_user_item_external_ids)):
            if isinstance(values, str):
                raise ValueError(f"{name}: a list of ids, got the string {values!r}")
        request = pb.RecommendRequest(
            model=_ref(model, version), user_id=int(user_id or 0), k=int(k),
            exclude_seen=exclude_seen, candidate_ids=_list(candidate_ids, np.int64),
            inductive_nodes=_inductive(inductive_nodes),
            candidate_external_ids=[str(v) for v in candidate_external_ids],
            new_user_item_ids=_list(new_user_item_ids, np.int64),
            new_user_item_external_ids=[str(v) for v in new_user_item_external_ids])
        if user_external_id is not None:
            request.user_external_id = str(user_external_id)
        r = self._call(self.inference.Recommend, request, timeout)
        return Recommendation(r.model.name, r.model.version, np.asarray(r.item_ids, np.int64),
                              np.asarray(r.scores, np.float32), list(r.item_external_ids))

    def embed(self, model: str, node_ids: Sequence[int] | np.ndarray, *,
              version: int | None = None, inductive_nodes: Iterable[Any] = (),
              timeout: float | None = None) -> Embedding:
        """Node embeddings (n, D), float32."""
        r = self._call(self.inference.Embed, pb.EmbedRequest(
            model=_ref(model, version), node_ids=_list(node_ids, np.int64),
            inductive_nodes=_inductive(inductive_nodes)), timeout)
        emb = np.asarray(r.embeddings, np.float32).reshape(-1, max(r.dim, 1))
        return Embedding(r.model.name, r.model.version, emb)

    def update_graph(self, model: str, *, features: np.ndarray | Sequence[Sequence[float]] = (),
                     edge_src: Sequence[int] | np.ndarray = (),
                     edge_dst: Sequence[int] | np.ndarray = (), undirected: bool = False,
                     expected_num_nodes: int | None = None, version: int | None = None,
                     timeout: float | None = None) -> GraphUpdateResult:
        """Adds nodes (rows of ``features``) and edges; returns the new ids and graph size."""
        request = pb.UpdateGraphRequest(
            model=_ref(model, version),
            add_nodes=[pb.NewNode(features=np.asarray(row, np.float32).tolist())
                       for row in features],
            edge_src=_list(edge_src, np.int64), edge_dst=_list(edge_dst, np.int64),
            undirected=undirected)
        if expected_num_nodes is not None:
            request.expected_num_nodes = expected_num_nodes
        r = self._call(self.inference.UpdateGraph, request, timeout)
        return GraphUpdateResult(r.model.name, r.model.version, np.asarray(r.node_ids, np.int64),
                                 {k: int(v) for k, v in _dict(r.graph).items()})

    # -- models ----------------------------------------------------------------------------------

    def list_models(self, name: str = "", *, timeout: float | None = None) -> list[dict]:
        """Every loaded (name, version) as a ModelInfo dict."""
        r = self._call(self.inference.ListModels, pb.ListModelsRequest(name=name), timeout)
        return [_dict(m) for m in r.models]

    def get_model(self, model: str, *, version: int | None = None,
                  timeout: float | None = None) -> tuple[dict, str]:
        """(ModelInfo dict, the bundle's manifest.json text)."""
        r = self._call(self.inference.GetModel, pb.GetModelRequest(model=_ref(model, version)),
                       timeout)
        return _dict(r.info), r.manifest_json

    def load_model(self, path: str, *, timeout: float | None = None) -> dict:
        r = self._call(self.admin.LoadModel, pb.LoadModelRequest(path=str(path)), timeout)
        return _dict(r.info)

    def reload_model(self, model: str, *, version: int | None = None,
                     timeout: float | None = None) -> dict:
        r = self._call(self.admin.ReloadModel,
                       pb.ReloadModelRequest(model=_ref(model, version)), timeout)
        return _dict(r.info)

    def unload_model(self, model: str, *, version: int | None = None,
                     timeout: float | None = None) -> list[tuple[str, int]]:
        r = self._call(self.admin.UnloadModel,
                       pb.UnloadModelRequest(model=_ref(model, version)), timeout)
        return [(m.name, m.version) for m in r.unloaded]

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """'SERVING', 'NOT_SERVING' or 'SERVICE_UNKNOWN' for the server ('') or a model name."""
        r = self._health.Check(health_pb2.HealthCheckRequest(service=service),
                               timeout=self.timeout if timeout is None else timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> QgnnClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connection_kwargs(args: Mapping[str, Any]) -> dict[str, Any]:
    """QgnnClient keyword arguments from the CLI's connection flags."""
    token = None
    if args.get("token_file"):
        token = Path(args["token_file"]).read_text().strip()
    return {"tls": bool(args.get("tls")), "root_ca": args.get("tls_ca"),
            "client_cert": args.get("tls_cert"), "client_key": args.get("tls_key"),
            "server_name": args.get("tls_server_name"), "token": token,
            "timeout": args.get("timeout")}
