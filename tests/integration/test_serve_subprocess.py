"""``qgnn serve`` as a real subprocess: start-up output, refusals, and graceful SIGTERM under
load (health NOT_SERVING, new calls UNAVAILABLE, accepted calls finish, exit code 0)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

KIT = Path(__file__).resolve().parents[1] / "runtime"
sys.path.insert(0, str(KIT))

import serving_testkit as tk  # noqa: E402
from qgnn.runtime.client import QgnnClient  # noqa: E402

# The test backend is not installed: $QGNN_BACKEND_MODULES imports it from PYTHONPATH, as a
# deployment would plug in a backend of its own.
BACKEND_ENV = {"QGNN_BACKEND_MODULES": "serving_testkit",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(KIT),
                                                           os.environ.get("PYTHONPATH")]))}
READY = re.compile(r"qgnn serve: serving grpc=[^:]+:(\d+) metrics=http://[^:]+:(\d+)/metrics")


class ServeProcess:
    """`qgnn serve PATH ARGS` in a subprocess; waits for its 'serving' line."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qgnn.cli", "serve", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **BACKEND_ENV, **(env or {})})
        self.lines: list[str] = []

    def wait_ready(self, timeout: float = 60.0) -> tuple[int, int]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            match = READY.search(line)
            if match:
                return int(match[1]), int(match[2])
        self.proc.kill()
        raise AssertionError(f"qgnn serve did not start: {self.lines} {self.proc.stderr.read()}")

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "".join(self.lines) + out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


@pytest.fixture
def serve_process():
    procs: list[ServeProcess] = []

    def start(*args: str, **kw) -> ServeProcess:
        proc = ServeProcess(*args, **kw)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()


def _args(path: Path, *extra: str) -> list[str]:
    return [str(path), "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", *extra]


def _inflight(metrics_port: int, model: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
        text = page.read().decode()
    match = re.search(rf'qgnn_inflight_requests{{model="{model}"}} ([0-9.]+)', text)
    return float(match[1]) if match else 0.0


def test_startup_prints_the_config_without_secrets_and_sigterm_exits_0(serve_process,
                                                                       tmp_path: Path):
    tk.write_test_bundle(tmp_path / "toy", tk.random_params(num_nodes=20), name="toy")
    token = tmp_path / "token"
    token.write_text("very-secret-token\n")
    proc = serve_process(*_args(tmp_path / "toy", "--auth-token-file", str(token),
                                "--allow-insecure-token"), env={"QGNN_MAX_BATCH_SIZE": "77"})
    port, _ = proc.wait_ready()
    with QgnnClient(f"127.0.0.1:{port}", token="very-secret-token", timeout=10) as client:
        assert client.health() == "SERVING"
        assert client.predict_nodes("toy", [1]).probabilities.shape == (1, 3)
    proc.proc.send_signal(signal.SIGTERM)
    code, out, err = proc.finish()
    assert code == 0, err
    assert '"max_batch_size": 77' in out and str(token) in out
    assert "very-secret-token" not in out + err
    assert "qgnn serve: stopped" in out


def test_sigterm_under_load_finishes_accepted_calls_and_refuses_new_ones(serve_process,
                                                                        tmp_path: Path):
    params = tk.random_params(num_nodes=20, seed=3)
    tk.write_test_bundle(tmp_path / "slow", params, name="slow", delay_s=0.3)
    proc = serve_process(*_args(tmp_path / "slow", "--grace-period-s", "20"))
    port, metrics_port = proc.wait_ready()
    expected = tk.oracle_probabilities(params)
    target = f"127.0.0.1:{port}"
    accepted: list[tuple[int, object]] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        with QgnnClient(target, timeout=30) as client:
            try:
                result = client.predict_nodes("slow", [i]).probabilities
            except grpc.RpcError as exc:
                result = exc
        with lock:
            accepted.append((i, result))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    end = time.monotonic() + 30
    while _inflight(metrics_port, "slow") < 6:  # all six are inside the server now
        assert time.monotonic() < end
        time.sleep(0.01)

    later: list[str] = []
    stop_load = threading.Event()

    def keep_calling() -> None:
        with QgnnClient(target, timeout=30) as client:
            while not stop_load.is_set():
                try:
                    client.predict_nodes("slow", [0])
                    later.append("OK")
                except grpc.RpcError as exc:
                    later.append(exc.code().name)
                    time.sleep(0.01)

    load = [threading.Thread(target=keep_calling) for _ in range(3)]
    for t in load:
        t.start()
    time.sleep(0.05)
    sent_term = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    with QgnnClient(target, timeout=10) as client:  # a new call during the drain
        with pytest.raises(grpc.RpcError) as info:
            client.predict_nodes("slow", [1])
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    for t in threads:
        t.join(30)
    code, out, err = proc.finish()
    stop_load.set()
    for t in load:
        t.join(30)
    assert code == 0, err
    assert time.monotonic() - sent_term < 20
    assert len(accepted) == 6
    for i, result in accepted:  # every accepted call finished, with the right answer
        assert isinstance(result, np.ndarray), result
        np.testing.assert_allclose(result, expected[[i]], atol=1e-5)
    assert set(later) <= {"OK", "UNAVAILABLE"}, later
    assert "shutting down" in out
