"""End to end on loopback: a real Prometheus, configured from deploy/prometheus (its rules
included), scrapes a real ``qgnn serve`` process, and its HTTP API must count exactly the calls a
client made and give a finite p99 from the latency histogram.

Skips without the ``prometheus`` binary (deploy/ci/install-prometheus.sh), without ``qgnn serve``
or the client, and without a ``served_bundle`` fixture (a bundle or model repository path that
``qgnn serve`` can load, provided by the serving tests' conftest). Every process is stopped at the
end, and every wait is bounded.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (dev extra) reads deploy/prometheus")

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
ROUND = 12  # calls per round; two rounds, so the rate over the window is not zero
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus binary is not on "
                                "PATH (deploy/ci/install-prometheus.sh installs it)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check: Callable[[], Any], timeout: float, what: str, logs: list[Path]) -> Any:
    """Polls ``check`` until it returns a truthy value; fails naming ``what`` and the logs."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception as exc:
            value, last = None, exc
        else:
            last = None
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs
                              if p.exists())
            pytest.fail(f"timed out after {timeout:g} s waiting for {what} (last error: "
                        f"{last!r})\n{tails}")
        time.sleep(0.2)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Started processes, terminated (then killed) at the end whatever happens."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _spawn(args: list[str], log: Path, processes: list[subprocess.Popen]) -> subprocess.Popen:
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy(),
                                start_new_session=True)
    processes.append(proc)
    return proc


def _bundle(request: pytest.FixtureRequest) -> Path:
    try:
        return Path(request.getfixturevalue("served_bundle"))
    except pytest.FixtureLookupError:
        pytest.skip("no served_bundle fixture yet (a bundle `qgnn serve` can load; the serving "
                    "tests' conftest provides it)")


def _model(path: Path) -> tuple[str, str, int]:
    """(name, task, num_nodes) of a bundle, or of a repository's first model's newest version."""
    manifests = [path / "manifest.json"]
    if not manifests[0].is_file():
        manifests = sorted(path.glob("*/*/manifest.json"), key=lambda p: (p.parent.parent.name,
                                                                          -int(p.parent.name)))
    if not manifests or not manifests[0].is_file():
        pytest.fail(f"served_bundle {path} is neither a bundle nor a model repository")
    manifest = json.loads(manifests[0].read_text())
    model = manifest["model"]
    return model["name"], model["task"], int(manifest["graph"]["num_nodes"])


def _require_serving_stack() -> Any:
    try:
        cli = importlib.import_module("qgnn.cli")
        client = importlib.import_module("qgnn.runtime.client")
    except ImportError as exc:
        pytest.skip(f"the qgnn server or client is not importable yet ({exc})")
    (sub,) = [a for a in cli.build_parser()._actions if a.dest == "command"]
    if "serve" not in sub.choices:
        pytest.skip("`qgnn serve` is not registered yet")
    return client.QgnnClient


def _prometheus_config(metrics_port: int, out: Path) -> Path:
    """deploy/prometheus/prometheus.yml with the qgnn job pointed at the loopback server, 1 s
    scrapes and rule evaluations, and the rule files by absolute path."""
    source = ROOT / "deploy" / "prometheus"
    base = yaml.safe_load((source / "prometheus.yml").read_text())
    (job,) = [j for j in base["scrape_configs"] if j["job_name"] == "qgnn"]
    job = {**job, "scrape_interval": "1s", "scrape_timeout": "1s",
           "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
    rules = sorted(str(p) for pattern in base["rule_files"] for p in source.glob(pattern))
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": rules, "scrape_configs": [job]}
    out.write_text(yaml.safe_dump(config))
    return out


class _Api:
    """Prometheus' HTTP query API on loopback."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base + path, timeout=5) as response:
            return response.read()

    def query(self, expr: str) -> list[dict]:
        body = json.loads(self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None


def test_prometheus_counts_every_call_and_reads_a_p99(request, tmp_path, processes):
    client_cls = _require_serving_stack()
    bundle = _bundle(request)
    name, task, num_nodes = _model(bundle)
    grpc_port, metrics_port, web_port = _free_port(), _free_port(), _free_port()
    logs = [tmp_path / "qgnn.log", tmp_path / "prometheus.log"]

    server = _spawn([sys.executable, "-m", "qgnn.cli", "serve", str(bundle), "--host",
                     "127.0.0.1", "--grpc-port", str(grpc_port), "--metrics-port",
                     str(metrics_port), "--grace-period-s", "5"], logs[0], processes)
    config = _prometheus_config(metrics_port, tmp_path / "prometheus.yml")
    _spawn([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web_port}"], logs[1], processes)
    api = _Api(web_port)

    with client_cls(f"127.0.0.1:{grpc_port}", timeout=10.0) as client:
        _wait(lambda: client.health("") == "SERVING", 60, "qgnn serve to report SERVING", logs)
        _wait(lambda: api.get("/-/ready"), 30, "Prometheus to be ready", logs)
        if task == "node":
            method = "PredictNodes"
            def call(i: int) -> None:
                client.predict_nodes(name, [i % num_nodes])
        else:
            method = "PredictLinks"
            def call(i: int) -> None:
                client.predict_links(name, [i % num_nodes], [(i + 1) % num_nodes])
        sent = f'sum(qgnn_requests_total{{model="{name}", method="{method}"}})'
        slowest = 0.0
        for round_ in (1, 2):
            for i in range(ROUND):
                start = time.perf_counter()
                call(i)
                slowest = max(slowest, time.perf_counter() - start)
            _wait(lambda n=round_ * ROUND: api.scalar(sent) == n, 30,
                  f"Prometheus to count {round_ * ROUND} {method} calls", logs)

    selector = f'model="{name}", method="{method}"'
    assert api.scalar(f"sum(qgnn_requests_total{{{selector}, status=\"OK\"}})") == 2 * ROUND
    assert api.scalar(f"sum(qgnn_request_duration_seconds_count{{{selector}}})") == 2 * ROUND
    p99 = api.scalar("histogram_quantile(0.99, sum by (le) "
                     f"(rate(qgnn_request_duration_seconds_bucket{{{selector}}}[1m])))")
    assert p99 is not None and math.isfinite(p99) and p99 > 0
    # Interpolation stays inside the bucket that holds the slowest call the client saw.
    bounds = sorted(float(s["metric"]["le"]) for s in api.query(
        f"qgnn_request_duration_seconds_bucket{{{selector}}}"))
    assert p99 <= next(b for b in bounds if b >= slowest)
    overall = api.scalar("histogram_quantile(0.99, sum by (le) "
                         "(rate(qgnn_request_duration_seconds_bucket[1m])))")
    assert overall is not None and math.isfinite(overall)
    assert api.scalar(f'max(qgnn_model_ready{{model="{name}"}})') == 1
    assert api.scalar(f'count(qgnn_model_info{{model="{name}"}} == 1)') >= 1
    recorded = f"model_method:qgnn_request_duration_seconds:p99_rate5m{{{selector}}}"
    _wait(lambda: api.scalar(recorded) is not None, 15, "the p99 recording rule", logs)

    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=15) == 0, logs[0].read_text()[-3000:]
