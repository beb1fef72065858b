"""``qgnn serve --workers N``: N server processes on one port (SO_REUSEPORT, Linux).

Why processes: a Python gRPC server spends most of a request in the interpreter (protobuf,
grpcio's handler threads), under one GIL; N processes use N cores for that part. The kernel
spreads new connections over the processes listening on the port (SO_REUSEPORT), so each
client connection stays with one worker. Bundles are memory-mapped, so the graph's base arrays
are shared through the page cache; each worker still holds its own sessions, compiled kernels
and precomputed outputs (docs/serving.md has the measured trade-off).

The parent only supervises: it starts the workers (fresh interpreters, never fork: gRPC does not
survive it), forwards SIGTERM/SIGINT so each drains its accepted calls, and exits non-zero when a
worker dies. Worker ``i`` serves metrics on ``--metrics-port + i``. Graph updates are refused
with FAILED_PRECONDITION: they would reach one worker's graph only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from qgnn.runtime.config import OPTIONS, ServeConfig, convert

WORKER_ENV = "QGNN_WORKER_CONFIG"  # a worker's whole config, as JSON


def worker_config(config: ServeConfig, index: int) -> ServeConfig:
    """Worker ``index``'s config: the same port, its own metrics port."""
    metrics = config.metrics_port + index if config.metrics_port else 0
    return dataclasses.replace(config, metrics_port=metrics)


def encode(config: ServeConfig) -> str:
    return json.dumps(config.describe())


def decode(text: str) -> ServeConfig:
    """The config a parent encoded (flags are already resolved: nothing is read again)."""
    raw: dict[str, Any] = json.loads(text)
    values: dict[str, Any] = {"path": None if raw.get("path") is None else Path(raw["path"])}
    for option in OPTIONS:
        values[option.name] = convert(option, raw.get(option.name), option.name)
    return ServeConfig(**values)


def run_workers(config: ServeConfig) -> int:
    """Starts ``config.workers`` worker processes and supervises them until SIGTERM/SIGINT."""
    if config.grpc_port == 0:
        raise ValueError("--workers > 1 needs a fixed --grpc-port (with 0 every worker would "
                         "pick its own)")
    if config.metrics_port and config.metrics_port + config.workers - 1 > 65535:
        raise ValueError(f"--metrics-port {config.metrics_port}: workers need ports up to "
                         f"{config.metrics_port + config.workers - 1}")
    stopping = [False]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        stopping[0] = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    procs: list[subprocess.Popen] = []
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for i in range(config.workers):
            env = {**os.environ, WORKER_ENV: encode(worker_config(config, i))}
            procs.append(subprocess.Popen([sys.executable, "-m", "qgnn.runtime.workers"],
                                          env=env))
        print(f"qgnn serve: {config.workers} workers on {config.host}:{config.grpc_port} "
              f"(pids {', '.join(str(p.pid) for p in procs)})", flush=True)
        while not stopping[0]:
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.5)
        if not stopping[0]:  # a worker died: stop the rest, report failure
            on_signal(signal.SIGTERM, None)
            stopping[0] = False
        codes = [p.wait() for p in procs]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return 0 if stopping[0] and not any(codes) else 1


def main() -> int:
    """A worker's entry point (the parent sets :data:`WORKER_ENV`)."""
    from qgnn.runtime.server import serve_main

    text = os.environ.get(WORKER_ENV)
    if not text:
        print(f"qgnn.runtime.workers: started without ${WORKER_ENV}; use qgnn serve --workers N",
              file=sys.stderr)
        return 2
    return serve_main(decode(text), worker=True)


if __name__ == "__main__":
    sys.exit(main())
