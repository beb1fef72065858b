"""The torch-free inference engine: partitioned ONNX execution, k-hop subgraphs, INT8 retrieval.

``Engine(bundle, EngineConfig(...))`` serves one model bundle; importing this package registers
it as the server's default backend loader (qgnn.runtime.dataplane). See docs/engine.md.
"""

from qgnn.runtime.engine.backend import load_backend, register
from qgnn.runtime.engine.embeddings import EmbeddingIndex, quantize_rows
from qgnn.runtime.engine.engine import Engine, EngineConfig, Inductive, softmax
from qgnn.runtime.engine.executor import (
    PartitionedExecutor,
    PortableExecutor,
    make_executor,
)
from qgnn.runtime.engine.partition import PartitionError, partition
from qgnn.runtime.engine.session import SessionConfig, make_session
from qgnn.runtime.engine.sharded import register as register_sharded
from qgnn.runtime.engine.sharded_links import register as register_sharded_links
from qgnn.runtime.engine.store import GraphStore, Snapshot
from qgnn.runtime.engine.subgraph import Extractor, Subgraph

register()
register_sharded()
register_sharded_links()

__all__ = [
    "EmbeddingIndex",
    "Engine",
    "EngineConfig",
    "Extractor",
    "GraphStore",
    "Inductive",
    "PartitionError",
    "PartitionedExecutor",
    "PortableExecutor",
    "SessionConfig",
    "Snapshot",
    "Subgraph",
    "load_backend",
    "make_executor",
    "make_session",
    "partition",
    "quantize_rows",
    "register",
    "softmax",
]
