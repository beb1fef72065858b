"""The main job on the embedded default: train -> export -> serve -> real requests -> metrics.

Each stage runs as the user would run it: ``qgnn train``, ``qgnn export`` and ``qgnn serve`` as
subprocesses, then the Python client against the live server. ``./run demo`` calls this.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MODEL = "cora-gcn"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _qgnn(*args: str) -> list[str]:
    return [sys.executable, "-m", "qgnn.cli", *args]


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _run(cmd: list[str]) -> None:
    print("$ qgnn " + " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True)


def _wait_serving(client: object, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"qgnn serve exited early with code {proc.returncode}")
        try:
            if client.health() == "SERVING":  # type: ignore[attr-defined]
                return
        except Exception:  # not up yet: any transport error means retry
            pass
        time.sleep(0.2)
    raise RuntimeError("qgnn serve did not become SERVING in time")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qgnn.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--retrain", action="store_true",
                        help="train again even if runs/demo/run exists")
    args = parser.parse_args(argv)
    run_dir, bundle = args.out / "run", args.out / "bundle"

    _step("1/4 train: Degree-Quant INT8 GCN on Cora (bundled data/cora)")
    if args.retrain or not (run_dir / "config.json").exists():
        _run(_qgnn("train", "--dataset", "cora", "--model", "gcn", "--quant", "int8",
                   "--method", "dq", "--epochs", str(args.epochs), "--out", str(run_dir)))
    else:
        print(f"reusing {run_dir} (pass --retrain to train again)")

    _step("2/4 export: INT8 ONNX with ai.qgnn ops + verified bundle")
    _run(_qgnn("export", str(run_dir), "--out", str(bundle), "--name", MODEL, "--overwrite"))

    _step("3/4 serve: qgnn serve on loopback")
    from qgnn.runtime.client import QgnnClient

    grpc_port, metrics_port = _free_port(), _free_port()
    proc = subprocess.Popen(_qgnn("serve", str(bundle), "--host", "127.0.0.1", "--grpc-port",
                                  str(grpc_port), "--metrics-port", str(metrics_port)))
    client = QgnnClient(f"127.0.0.1:{grpc_port}")
    try:
        _wait_serving(client, proc)
        _step("4/4 requests: node predictions over gRPC")
        labels = np.load(bundle / "graph" / "labels.npy")
        test_ids = np.flatnonzero(np.load(bundle / "graph" / "test_mask.npy"))
        pred = client.predict_nodes(MODEL, test_ids)
        accuracy = float((pred.predicted_class == labels[test_ids]).mean())
        print(f"PredictNodes on the {test_ids.size} test nodes in one request: served "
              f"accuracy {accuracy:.4f}")
        latencies = []
        for node in test_ids[:200]:
            start = time.perf_counter()
            client.predict_nodes(MODEL, [int(node)])
            latencies.append(time.perf_counter() - start)
        p50, p99 = np.percentile(np.array(latencies) * 1e3, [50, 99])
        print(f"200 single-node requests, one client: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        models = client.list_models()
        print(f"ListModels: {[(m.get('name'), m.get('version')) for m in models]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        counts = [line for line in text.splitlines()
                  if line.startswith("qgnn_requests_total{") and 'method="PredictNodes"' in line]
        print("metrics: " + "; ".join(counts))
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        print(f"qgnn serve stopped on SIGTERM with exit code {code}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
