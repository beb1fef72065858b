"""The engine as the server's backend: loader registration, the ModelBackend protocol, and a
live gRPC server answering from engine bundles (checked against the numpy reference)."""

from __future__ import annotations

import shutil
from pathlib import Path

import engine_testkit as tk
import numpy as np
import pytest
from qgnn.runtime import kernels
from qgnn.runtime.backend import BackendOptions, ModelBackend
from qgnn.runtime.backend_loaders import resolve_loader
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.engine import Engine, load_backend, softmax
from qgnn.runtime.errors import BackendUnavailableError


def test_loader_is_registered_for_exported_bundles_only(int8_case) -> None:
    manifest = load_bundle(int8_case.bundle).manifest
    assert manifest.model.format == "qgnn-onnx"
    assert resolve_loader(manifest.model.format, manifest.model.task) is load_backend
    with pytest.raises(BackendUnavailableError):
        resolve_loader("something-else", manifest.model.task)


def test_engine_is_a_model_backend(int8_case) -> None:
    backend = load_backend(load_bundle(int8_case.bundle), BackendOptions(threads=1,
                                                                         portable=True))
    assert isinstance(backend, ModelBackend) and isinstance(backend, Engine)
    assert backend.mode == "portable" and backend.config.threads == 1
    assert (backend.name, backend.version, backend.task) == ("int8", 1, "node")
    assert (backend.num_nodes, backend.num_features, backend.num_classes) == (60, 12, 5)
    assert backend.num_edges == int8_case.src.size and backend.revision == 0


@pytest.fixture
def repo(tmp_path: Path, int8_case, link_case) -> Path:
    """int8 (full neighbourhoods, as ``qgnn export`` writes) and link, version 1 each."""
    root = tmp_path / "repo"
    tk.write_test_bundle(root / "int8" / "1", int8_case.model, int8_case.src, int8_case.dst,
                         int8_case.x, name="int8",
                         manifest_extra={"serving": {"fanouts": [-1, -1]}})
    shutil.copytree(link_case.bundle, root / "link" / "1")
    return root


def test_served_over_grpc(start_server, client_for, repo: Path, int8_case, link_case) -> None:
    server = start_server(repo)
    client = client_for(server)
    full = tk.reference_outputs(int8_case.model, int8_case.model_x(), int8_case.src,
                                int8_case.dst, 2)
    ids = [9, 0, 59, 9]
    answer = client.predict_nodes("int8", ids)
    np.testing.assert_allclose(answer.probabilities, softmax(full[ids]), atol=1e-6)
    np.testing.assert_array_equal(answer.predicted_class, full[ids].argmax(axis=1))
    n = int8_case.num_nodes
    feats = np.random.default_rng(3).standard_normal((1, 12)).astype(np.float32)
    with_new = client.predict_nodes("int8", [n, 4], inductive_nodes=[
        {"id": n, "features": feats[0], "neighbors": [4, 7]}])
    update = client.update_graph("int8", features=feats, edge_src=[4, 7], edge_dst=[n, n],
                                 undirected=True)
    assert update.node_ids.tolist() == [n] and update.graph["revision"] == 1
    after = client.predict_nodes("int8", [n, 4])
    np.testing.assert_array_equal(with_new.probabilities, after.probabilities)
    top = client.recommend("link", 5, 4, exclude_seen=True)
    assert len(top.item_ids) == 4 and 5 not in top.item_ids.tolist()
    assert np.all(np.diff(top.scores) <= 0)


def test_server_reports_the_isa_level_in_model_info(start_server, repo: Path) -> None:
    if not kernels.available():
        pytest.skip("compiled kernels not built")
    server = start_server(repo, isa="baseline")
    assert server.isa == "baseline"
    sample = server.metrics.registry.get_sample_value
    assert sample("qgnn_model_info", {"model": "int8", "version": "1", "task": "node",
                                      "quant": "int8", "isa": "baseline"}) == 1
    portable = start_server(repo, portable=True)
    assert portable.isa == "portable"
    assert portable.metrics.registry.get_sample_value(
        "qgnn_model_info", {"model": "int8", "version": "1", "task": "node", "quant": "int8",
                            "isa": "portable"}) == 1


def test_server_refuses_an_unknown_isa_at_start(start_server, repo: Path) -> None:
    with pytest.raises(ValueError, match=r"--isa: unknown ISA level 'avx3'"):
        start_server(repo, isa="avx3")
