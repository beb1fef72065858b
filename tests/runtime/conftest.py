"""Fixtures for the serving tests: test bundles, live in-process servers and clients."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import serving_testkit as tk
from prometheus_client import CollectorRegistry
from qgnn.runtime.client import QgnnClient
from qgnn.runtime.config import GRPC_SERVERS, ServeConfig
from qgnn.runtime.server import QgnnServer


@pytest.fixture(scope="session")
def node_params() -> tk.ModelParams:
    return tk.random_params(num_nodes=30, num_features=6, hidden=8, num_classes=3, seed=1)


@pytest.fixture(scope="session")
def link_params() -> tk.ModelParams:
    return tk.random_params(num_nodes=40, num_features=5, hidden=6, task="link", seed=2,
                            num_users=10)


@pytest.fixture(scope="session")
def repo_dir(tmp_path_factory: pytest.TempPathFactory, node_params: tk.ModelParams,
             link_params: tk.ModelParams) -> Path:
    """A read-only repository: toy v1 (node), links v1 (link)."""
    root = tmp_path_factory.mktemp("repo")
    tk.write_test_bundle(root / "toy" / "1", node_params, name="toy")
    tk.write_test_bundle(root / "links" / "1", link_params, name="links", task="link")
    return root


@pytest.fixture(params=GRPC_SERVERS)
def grpc_server(request: pytest.FixtureRequest) -> str:
    """Each live-server test runs on both front ends (--grpc-server aio and sync): they must
    answer, refuse and count the same calls the same way."""
    return request.param


@pytest.fixture
def start_server(grpc_server: str) -> Iterator[Callable[..., QgnnServer]]:
    """Starts QgnnServers on free loopback ports with fresh metric registries; stops them all
    at the end of the test."""
    servers: list[QgnnServer] = []

    def start(path: Path | None, **overrides: Any) -> QgnnServer:
        # a loaded test host can hold a call for a thread past the 500 ms default and shed it;
        # tests of admission set their own limit
        settings = {"host": "127.0.0.1", "grpc_port": 0, "metrics_port": 0,
                    "grace_period_s": 5.0, "max_queue_ms": 10_000.0, "grpc_server": grpc_server,
                    **overrides}
        server = QgnnServer(ServeConfig(path=path, **settings), registry=CollectorRegistry())
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop(grace=1.0)


@pytest.fixture
def client_for() -> Iterator[Callable[..., QgnnClient]]:
    clients: list[QgnnClient] = []

    def make(server: QgnnServer, **kwargs: Any) -> QgnnClient:
        client = QgnnClient(f"127.0.0.1:{server.grpc_port}", timeout=10.0, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def served(start_server: Callable[..., QgnnServer], client_for: Callable[..., QgnnClient],
           repo_dir: Path) -> tuple[QgnnServer, QgnnClient]:
    """A server on the shared repository and a client to it."""
    server = start_server(repo_dir)
    return server, client_for(server)
