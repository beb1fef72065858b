"""TLS, mutual TLS and the bearer token (health and reflection exempt)."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import serving_testkit as tk
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qgnn.runtime.client import QgnnClient
from qgnn.runtime.config import ServeConfig

TOKEN = "s3cret-token-value"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    made = tk.make_certificates(tmp_path_factory.mktemp("tls"))
    if made is None:
        pytest.skip("TLS tests need the openssl command (to make a throwaway CA); install "
                    "openssl to run them")
    return made


def _token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_tls_server_answers_clients_that_trust_its_ca_only(start_server, repo_dir, certs,
                                                          node_params):
    server = start_server(repo_dir, tls_cert=certs["server.pem"], tls_key=certs["server.key"])
    target = f"localhost:{server.grpc_port}"
    with QgnnClient(target, root_ca=certs["ca.pem"], timeout=10) as client:
        r = client.predict_nodes("toy", [1])
        np.testing.assert_allclose(r.probabilities, tk.oracle_probabilities(node_params)[[1]],
                                   atol=1e-5)
    with QgnnClient(target, timeout=3) as plaintext:
        assert _code(lambda: plaintext.predict_nodes("toy", [1])) == grpc.StatusCode.UNAVAILABLE
    with QgnnClient(target, tls=True, timeout=3) as untrusting:  # system roots only
        assert _code(lambda: untrusting.predict_nodes("toy", [1])) == \
            grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(start_server, repo_dir,
                                                                     certs):
    server = start_server(repo_dir, tls_cert=certs["server.pem"], tls_key=certs["server.key"],
                          tls_client_ca=certs["ca.pem"])
    target = f"localhost:{server.grpc_port}"
    with QgnnClient(target, root_ca=certs["ca.pem"], client_cert=certs["client.pem"],
                    client_key=certs["client.key"], timeout=10) as client:
        assert client.predict_nodes("toy", [1]).probabilities.shape == (1, 3)
    with QgnnClient(target, root_ca=certs["ca.pem"], timeout=3) as anonymous:
        assert _code(lambda: anonymous.predict_nodes("toy", [1])) == \
            grpc.StatusCode.UNAVAILABLE


def test_the_bearer_token_is_required_on_every_rpc_but_health_and_reflection(
        start_server, repo_dir, certs, tmp_path):
    server = start_server(repo_dir, tls_cert=certs["server.pem"], tls_key=certs["server.key"],
                          auth_token_file=_token_file(tmp_path))
    target = f"localhost:{server.grpc_port}"
    with QgnnClient(target, root_ca=certs["ca.pem"], token=TOKEN, timeout=10) as client:
        assert client.predict_nodes("toy", [1]).version == 1
        assert client.list_models()
    for token in (None, "wrong", TOKEN + "x"):
        with QgnnClient(target, root_ca=certs["ca.pem"], token=token, timeout=10) as client:
            assert _code(lambda c=client: c.predict_nodes("toy", [1])) == \
                grpc.StatusCode.UNAUTHENTICATED
            assert _code(lambda c=client: c.load_model("/tmp")) == \
                grpc.StatusCode.UNAUTHENTICATED
            assert client.health() == "SERVING"  # exempt: orchestrators probe without it
    creds = grpc.ssl_channel_credentials(certs["ca.pem"].read_bytes())
    with grpc.secure_channel(target, creds) as channel:
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )

        assert "qgnn.v1.GraphInference" in ProtoReflectionDescriptorDatabase(channel) \
            .get_services()
        stub = health_pb2_grpc.HealthStub(channel)
        assert stub.Check(health_pb2.HealthCheckRequest(service="toy"), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
    assert server.metrics.registry.get_sample_value(
        "qgnn_request_errors_total",
        {"model": "toy", "method": "PredictNodes", "code": "UNAUTHENTICATED"}) == 3


def test_a_token_without_tls_is_refused_unless_explicitly_allowed(start_server, repo_dir,
                                                                  tmp_path):
    token = _token_file(tmp_path)
    with pytest.raises(ValueError, match="clear text"):
        ServeConfig(path=repo_dir, auth_token_file=token)
    server = start_server(repo_dir, auth_token_file=token, allow_insecure_token=True)
    with QgnnClient(f"127.0.0.1:{server.grpc_port}", token=TOKEN, timeout=10) as client:
        assert client.predict_nodes("toy", [2]).version == 1
    with QgnnClient(f"127.0.0.1:{server.grpc_port}", timeout=10) as client:
        assert _code(lambda: client.predict_nodes("toy", [2])) == \
            grpc.StatusCode.UNAUTHENTICATED


def test_an_empty_token_file_is_refused(repo_dir, tmp_path):
    from qgnn.runtime.interceptors import read_token

    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_token(empty)
