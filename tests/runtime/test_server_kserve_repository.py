"""The KServe model repository extension through tritonclient, unchanged: the index, load
(a reload, or a version new under PATH) and unload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import serving_testkit as tk

tc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture
def repo(tmp_path: Path, node_params, link_params) -> Path:
    root = tmp_path / "repo"
    tk.write_test_bundle(root / "toy" / "1", node_params, name="toy")
    tk.write_test_bundle(root / "links" / "1", link_params, name="links", task="link")
    return root


@pytest.fixture
def triton(start_server, repo):
    server = start_server(repo)
    client = tc.InferenceServerClient(url=f"127.0.0.1:{server.grpc_port}")
    yield server, client
    client.close()


def _index(client, ready: bool = False) -> list[tuple[str, str, str]]:
    return [(m.name, m.version, m.state)
            for m in client.get_model_repository_index().models
            if not ready or m.state == "READY"]


def test_repository_index_lists_every_version_with_its_state(triton):
    _, client = triton
    assert _index(client) == [("links", "1", "READY"), ("toy", "1", "READY")]
    assert "model_repository" in client.get_server_metadata().extensions


def test_load_brings_in_a_new_version_and_unload_removes_the_model(triton, repo, node_params):
    _, client = triton
    tk.write_test_bundle(repo / "toy" / "2", node_params, name="toy", version=2)
    client.load_model("toy")
    assert _index(client) == [("links", "1", "READY"), ("toy", "1", "READY"),
                              ("toy", "2", "READY")]
    assert client.is_model_ready("toy", "2")
    client.unload_model("toy")
    assert _index(client) == [("links", "1", "READY")]
    assert not client.is_model_ready("toy")
    client.load_model("toy")  # back from PATH
    assert client.is_model_ready("toy", "1") and client.is_model_ready("toy", "2")
    x = tc.InferInput("node_ids", [2], "INT64")
    x.set_data_from_numpy(np.array([3, 4], np.int64))
    np.testing.assert_allclose(client.infer("toy", [x]).as_numpy("probabilities"),
                               tk.oracle_probabilities(node_params)[[3, 4]], atol=1e-5)


def test_load_and_unload_errors_are_the_clients_not_internal(triton):
    _, client = triton
    for call, status in ((lambda: client.load_model("nope"), "StatusCode.NOT_FOUND"),
                         (lambda: client.unload_model("nope"), "StatusCode.NOT_FOUND"),
                         (lambda: client.load_model("toy", config='{"x": 1}'),
                          "StatusCode.INVALID_ARGUMENT"),
                         (lambda: client.load_model("a" * 5000), "StatusCode.INVALID_ARGUMENT")):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == status, info.value.message()
