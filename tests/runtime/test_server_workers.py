"""``qgnn serve --workers N``: worker processes on one port (SO_REUSEPORT) with the parent's
config, graph updates refused (they would reach one worker), SIGTERM drains every worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import serving_testkit as tk
from qgnn.runtime.client import QgnnClient
from qgnn.runtime.config import ServeConfig
from qgnn.runtime.workers import decode, encode, worker_config


def test_a_worker_gets_the_parents_config_with_its_own_metrics_port(tmp_path: Path):
    config = ServeConfig(path=tmp_path, grpc_port=8600, metrics_port=9500, workers=3,
                         max_inflight_bytes=2**20, max_queue_ms=250.0, precompute="on",
                         tls_cert=None, isa=None)
    second = decode(encode(worker_config(config, 1)))
    assert second == ServeConfig(**{**config.__dict__, "metrics_port": 9501})
    assert decode(encode(worker_config(ServeConfig(path=tmp_path, metrics_port=0,
                                                   workers=2), 1))).metrics_port == 0


def test_workers_need_a_fixed_port(tmp_path: Path):
    from qgnn.runtime.workers import run_workers

    with pytest.raises(ValueError, match="fixed --grpc-port"):
        run_workers(ServeConfig(path=tmp_path, grpc_port=0, workers=2))


def test_with_several_workers_graph_updates_are_refused_naming_the_flag(start_server,
                                                                        repo_dir, client_for):
    port = _free_port()
    server = start_server(repo_dir, workers=2, grpc_port=port)
    client = client_for(server)
    with pytest.raises(grpc.RpcError) as info:
        client.update_graph("toy", edge_src=[0], edge_dst=[1])
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--workers" in info.value.details()
    assert len(client.predict_nodes("toy", [0, 1]).predicted_class) == 2


def test_a_worker_loads_its_models_before_it_takes_connections(start_server, repo_dir,
                                                              monkeypatch):
    """With SO_REUSEPORT a listening worker gets connections; one still loading would answer
    UNAVAILABLE where a loaded peer could serve, so a worker binds only once loaded."""
    from qgnn.runtime.repository import ModelRepository
    from qgnn.runtime.server import QgnnServer

    order: list[str] = []
    scan, bind = ModelRepository.scan, QgnnServer._start_grpc
    monkeypatch.setattr(ModelRepository, "scan",
                        lambda self, *a, **k: (order.append("load"), scan(self, *a, **k))[1])
    monkeypatch.setattr(QgnnServer, "_start_grpc",
                        lambda self: (order.append("bind"), bind(self))[1])
    start_server(repo_dir, workers=2, grpc_port=_free_port())
    assert order[:2] == ["load", "bind"]
    order.clear()
    start_server(repo_dir)  # one process: bind first, health NOT_SERVING while it loads
    assert order[:2] == ["bind", "load"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_worker_processes_answer_on_one_port_and_stop_on_sigterm(repo_dir, node_params):
    port = _free_port()
    env = {**os.environ, "QGNN_BACKEND_MODULES": "serving_testkit",
           "PYTHONPATH": os.pathsep.join([str(Path(tk.__file__).parent),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "qgnn.cli", "serve", str(repo_dir), "--host",
                             "127.0.0.1", "--grpc-port", str(port), "--metrics-port", "0",
                             "--workers", "2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        expected = tk.oracle_probabilities(node_params)[[3, 4]]
        end = time.monotonic() + 120
        answers = 0
        while answers < 20:  # new connections spread over the workers; each must answer
            assert time.monotonic() < end and proc.poll() is None
            try:
                with QgnnClient(f"127.0.0.1:{port}", timeout=5) as client:
                    got = client.predict_nodes("toy", [3, 4]).probabilities
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
                answers += 1
            except grpc.RpcError:
                time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "2 workers" in out and out.count("qgnn serve: stopped") == 2
    finally:
        if proc.poll() is None:
            proc.kill()
