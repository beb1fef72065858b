from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_NODE: _ClassVar[Task]
    TASK_LINK: _ClassVar[Task]

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_LOADING: _ClassVar[ModelState]
    MODEL_STATE_READY: _ClassVar[ModelState]
    MODEL_STATE_UNLOADING: _ClassVar[ModelState]
    MODEL_STATE_FAILED: _ClassVar[ModelState]

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    DATA_TYPE_FLOAT32: _ClassVar[DataType]
    DATA_TYPE_FLOAT16: _ClassVar[DataType]
    DATA_TYPE_INT64: _ClassVar[DataType]
    DATA_TYPE_INT32: _ClassVar[DataType]
    DATA_TYPE_INT8: _ClassVar[DataType]
    DATA_TYPE_UINT8: _ClassVar[DataType]
    DATA_TYPE_BOOL: _ClassVar[DataType]
TASK_UNSPECIFIED: Task
TASK_NODE: Task
TASK_LINK: Task
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_LOADING: ModelState
MODEL_STATE_READY: ModelState
MODEL_STATE_UNLOADING: ModelState
MODEL_STATE_FAILED: ModelState
DATA_TYPE_UNSPECIFIED: DataType
DATA_TYPE_FLOAT32: DataType
DATA_TYPE_FLOAT16: DataType
DATA_TYPE_INT64: DataType
DATA_TYPE_INT32: DataType
DATA_TYPE_INT8: DataType
DATA_TYPE_UINT8: DataType
DATA_TYPE_BOOL: DataType

class ModelRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class Dim(_message.Message):
    __slots__ = ("size", "symbol")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    size: int
    symbol: str
    def __init__(self, size: _Optional[int] = ..., symbol: _Optional[str] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DataType
    shape: _containers.RepeatedCompositeFieldContainer[Dim]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[_Union[Dim, _Mapping]]] = ...) -> None: ...

class Quantisation(_message.Message):
    __slots__ = ("bits", "method", "num_sites")
    BITS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    NUM_SITES_FIELD_NUMBER: _ClassVar[int]
    bits: int
    method: str
    num_sites: int
    def __init__(self, bits: _Optional[int] = ..., method: _Optional[str] = ..., num_sites: _Optional[int] = ...) -> None: ...

class GraphInfo(_message.Message):
    __slots__ = ("num_nodes", "num_edges", "num_features", "num_classes", "revision")
    NUM_NODES_FIELD_NUMBER: _ClassVar[int]
    NUM_EDGES_FIELD_NUMBER: _ClassVar[int]
    NUM_FEATURES_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    num_nodes: int
    num_edges: int
    num_features: int
    num_classes: int
    revision: int
    def __init__(self, num_nodes: _Optional[int] = ..., num_edges: _Optional[int] = ..., num_features: _Optional[int] = ..., num_classes: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "task", "model_type", "state", "error", "inputs", "outputs", "quantisation", "graph", "metrics", "created", "schema_version", "software_versions")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class SoftwareVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    QUANTISATION_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    task: Task
    model_type: str
    state: ModelState
    error: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    quantisation: Quantisation
    graph: GraphInfo
    metrics: _containers.ScalarMap[str, float]
    created: str
    schema_version: int
    software_versions: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., task: _Optional[_Union[Task, str]] = ..., model_type: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., error: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., quantisation: _Optional[_Union[Quantisation, _Mapping]] = ..., graph: _Optional[_Union[GraphInfo, _Mapping]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., created: _Optional[str] = ..., schema_version: _Optional[int] = ..., software_versions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class InductiveNode(_message.Message):
    __slots__ = ("id", "features", "neighbors", "in_neighbors")
    ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    IN_NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    id: int
    features: _containers.RepeatedScalarFieldContainer[float]
    neighbors: _containers.RepeatedScalarFieldContainer[int]
    in_neighbors: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[int] = ..., features: _Optional[_Iterable[float]] = ..., neighbors: _Optional[_Iterable[int]] = ..., in_neighbors: _Optional[_Iterable[int]] = ...) -> None: ...

class PredictNodesRequest(_message.Message):
    __slots__ = ("model", "node_ids", "inductive_nodes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    INDUCTIVE_NODES_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    node_ids: _containers.RepeatedScalarFieldContainer[int]
    inductive_nodes: _containers.RepeatedCompositeFieldContainer[InductiveNode]
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., node_ids: _Optional[_Iterable[int]] = ..., inductive_nodes: _Optional[_Iterable[_Union[InductiveNode, _Mapping]]] = ...) -> None: ...

class PredictNodesResponse(_message.Message):
    __slots__ = ("model", "num_classes", "probabilities", "predicted_class")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    num_classes: int
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    predicted_class: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., num_classes: _Optional[int] = ..., probabilities: _Optional[_Iterable[float]] = ..., predicted_class: _Optional[_Iterable[int]] = ...) -> None: ...

class PredictLinksRequest(_message.Message):
    __slots__ = ("model", "src_ids", "dst_ids", "inductive_nodes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SRC_IDS_FIELD_NUMBER: _ClassVar[int]
    DST_IDS_FIELD_NUMBER: _ClassVar[int]
    INDUCTIVE_NODES_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    src_ids: _containers.RepeatedScalarFieldContainer[int]
    dst_ids: _containers.RepeatedScalarFieldContainer[int]
    inductive_nodes: _containers.RepeatedCompositeFieldContainer[InductiveNode]
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., src_ids: _Optional[_Iterable[int]] = ..., dst_ids: _Optional[_Iterable[int]] = ..., inductive_nodes: _Optional[_Iterable[_Union[InductiveNode, _Mapping]]] = ...) -> None: ...

class PredictLinksResponse(_message.Message):
    __slots__ = ("model", "scores")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., scores: _Optional[_Iterable[float]] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("model", "user_id", "k", "exclude_seen", "candidate_ids", "inductive_nodes", "user_external_id", "candidate_external_ids", "new_user_item_ids", "new_user_item_external_ids")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_IDS_FIELD_NUMBER: _ClassVar[int]
    INDUCTIVE_NODES_FIELD_NUMBER: _ClassVar[int]
    USER_EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_EXTERNAL_IDS_FIELD_NUMBER: _ClassVar[int]
    NEW_USER_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    NEW_USER_ITEM_EXTERNAL_IDS_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    user_id: int
    k: int
    exclude_seen: bool
    candidate_ids: _containers.RepeatedScalarFieldContainer[int]
    inductive_nodes: _containers.RepeatedCompositeFieldContainer[InductiveNode]
    user_external_id: str
    candidate_external_ids: _containers.RepeatedScalarFieldContainer[str]
    new_user_item_ids: _containers.RepeatedScalarFieldContainer[int]
    new_user_item_external_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., user_id: _Optional[int] = ..., k: _Optional[int] = ..., exclude_seen: _Optional[bool] = ..., candidate_ids: _Optional[_Iterable[int]] = ..., inductive_nodes: _Optional[_Iterable[_Union[InductiveNode, _Mapping]]] = ..., user_external_id: _Optional[str] = ..., candidate_external_ids: _Optional[_Iterable[str]] = ..., new_user_item_ids: _Optional[_Iterable[int]] = ..., new_user_item_external_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("model", "item_ids", "scores", "item_external_ids")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ITEM_EXTERNAL_IDS_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    item_external_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., item_ids: _Optional[_Iterable[int]] = ..., scores: _Optional[_Iterable[float]] = ..., item_external_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("model", "node_ids", "inductive_nodes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    INDUCTIVE_NODES_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    node_ids: _containers.RepeatedScalarFieldContainer[int]
    inductive_nodes: _containers.RepeatedCompositeFieldContainer[InductiveNode]
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., node_ids: _Optional[_Iterable[int]] = ..., inductive_nodes: _Optional[_Iterable[_Union[InductiveNode, _Mapping]]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("model", "dim", "embeddings")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    dim: int
    embeddings: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., dim: _Optional[int] = ..., embeddings: _Optional[_Iterable[float]] = ...) -> None: ...

class NewNode(_message.Message):
    __slots__ = ("features",)
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, features: _Optional[_Iterable[float]] = ...) -> None: ...

class UpdateGraphRequest(_message.Message):
    __slots__ = ("model", "add_nodes", "edge_src", "edge_dst", "undirected", "expected_num_nodes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ADD_NODES_FIELD_NUMBER: _ClassVar[int]
    EDGE_SRC_FIELD_NUMBER: _ClassVar[int]
    EDGE_DST_FIELD_NUMBER: _ClassVar[int]
    UNDIRECTED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_NUM_NODES_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    add_nodes: _containers.RepeatedCompositeFieldContainer[NewNode]
    edge_src: _containers.RepeatedScalarFieldContainer[int]
    edge_dst: _containers.RepeatedScalarFieldContainer[int]
    undirected: bool
    expected_num_nodes: int
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., add_nodes: _Optional[_Iterable[_Union[NewNode, _Mapping]]] = ..., edge_src: _Optional[_Iterable[int]] = ..., edge_dst: _Optional[_Iterable[int]] = ..., undirected: _Optional[bool] = ..., expected_num_nodes: _Optional[int] = ...) -> None: ...

class UpdateGraphResponse(_message.Message):
    __slots__ = ("model", "node_ids", "graph")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    node_ids: _containers.RepeatedScalarFieldContainer[int]
    graph: GraphInfo
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., node_ids: _Optional[_Iterable[int]] = ..., graph: _Optional[_Union[GraphInfo, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("info", "manifest_json")
    INFO_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    info: ModelInfo
    manifest_json: str
    def __init__(self, info: _Optional[_Union[ModelInfo, _Mapping]] = ..., manifest_json: _Optional[str] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: ModelInfo
    def __init__(self, info: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class ReloadModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class ReloadModelResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: ModelInfo
    def __init__(self, info: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("unloaded",)
    UNLOADED_FIELD_NUMBER: _ClassVar[int]
    unloaded: _containers.RepeatedCompositeFieldContainer[ModelRef]
    def __init__(self, unloaded: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ...) -> None: ...
