"""Fixtures for the engine tests: small graphs, real ONNX models and bundles (engine_testkit)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import engine_testkit as tk


@dataclass
class GraphCase:
    """A graph, float features, a model and the bundle serving them."""

    src: np.ndarray
    dst: np.ndarray
    x: np.ndarray  # float32 (N, F)
    model: onnx.ModelProto
    bundle: Path
    num_layers: int

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    def model_x(self) -> np.ndarray:
        """Features as the model takes them (quantised for uint8 models)."""
        if self.model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8:
            return tk.quantize_features(self.x, 0.05, 10)
        return self.x


def _case(root: Path, name: str, model: onnx.ModelProto, *, n: int = 60, edges: int = 260,
          seed: int = 3, symmetric: bool = False, task: str = "node", hub: int | None = None,
          extra: dict | None = None) -> GraphCase:
    src, dst = tk.random_graph(n, edges, seed=seed, symmetric=symmetric, hub=hub)
    num_features = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    x = np.random.default_rng(seed).standard_normal((n, num_features)).astype(np.float32)
    path = tk.write_test_bundle(root / name, model, src, dst, x, task=task, name=name,
                                extra=extra)
    return GraphCase(src, dst, x, model, path, len(model.graph.input) // 2 - 1)


@pytest.fixture(scope="session")
def int8_case(tmp_path_factory: pytest.TempPathFactory) -> GraphCase:
    """A directed graph with a hub (node 0), a 2-layer INT8 node model."""
    return _case(tmp_path_factory.mktemp("int8"), "int8", tk.int8_model(12, [16, 5]), hub=0)


@pytest.fixture(scope="session")
def float_case(tmp_path_factory: pytest.TempPathFactory) -> GraphCase:
    """A symmetric graph and a 2-layer FP32 node model."""
    return _case(tmp_path_factory.mktemp("fp32"), "fp32", tk.float_model(10, [8, 4]),
                 symmetric=True)


@pytest.fixture(scope="session")
def link_case(tmp_path_factory: pytest.TempPathFactory) -> GraphCase:
    """A symmetric graph, a 2-layer INT8 link model and its exact embedding table."""
    model = tk.int8_model(12, [16, 8], task="link", seed=5)
    root = tmp_path_factory.mktemp("link")
    src, dst = tk.random_graph(70, 200, seed=11, symmetric=True)
    x = np.random.default_rng(11).standard_normal((70, 12)).astype(np.float32)
    z = tk.reference_outputs(model, tk.quantize_features(x, 0.05, 10), src, dst, 2)
    values, scales = tk.quantize_table(z)
    path = tk.write_test_bundle(root / "link", model, src, dst, x, task="link", name="link",
                                extra=tk.embedding_files(values, scales))
    return GraphCase(src, dst, x, model, path, 2)
