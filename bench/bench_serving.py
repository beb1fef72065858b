"""Serving benchmark: ``qgnn serve`` against a plain FP32 PyTorch model behind a minimal grpcio
server (what users build today), both driven by the same closed-loop load generator over
loopback, each in its own process.

Scenarios per server: PredictNodes with one id per request and with 64 ids per request, from
``--clients`` concurrent clients (8) for ``--duration-s`` seconds each (after a warm-up). Reported:
p50/p90/p99 latency, requests/s and node predictions/s. Results go to
``bench/results/serving.json`` and a markdown table to ``bench/results/serving.md``.

The model served by qgnn: with ``--bundle`` an exported bundle (served by the inference engine,
qgnn.runtime.engine), otherwise a "mean-mlp" bundle built here on Cora and served by the numpy
test backend of tests/runtime/serving_testkit.py (h = [x, mean of in-neighbours' x], a 2-layer
MLP in onnxruntime). The PyTorch baseline computes the same function in FP32 (checked: the two
servers' answers agree) and, like a typical PyTorch/PyG server, recomputes the whole graph for
every request.

Run: ``python -m qgnn.bench.bench_serving`` (about a minute). Torch is only needed here, in the
baseline server process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.bench.harness import RESULTS_DIR, machine_info, markdown_table, write_result

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "tests" / "runtime"
HIDDEN = 64
WARMUP_S = 1.0


# ---------------------------------------------------------------------------------------------
# The model: a Cora bundle for the test backend, and the same weights for the torch baseline


def baseline_weights(out: Path, seed: int = 0) -> Path:
    """An .npz with Cora and a random mean-MLP's weights (latency does not depend on them): the
    PyTorch baseline's model, and the test backend's when no bundle is given."""
    from qgnn.graph.datasets import load_dataset

    g = load_dataset("cora")
    n, f = g.x.shape
    rng = np.random.default_rng(seed)
    c = int(g.y.max()) + 1
    weights = out / "baseline.npz"
    np.savez(weights, x=np.asarray(g.x, np.float32),
             src=np.repeat(np.arange(n), np.diff(g.indptr)).astype(np.int64),
             dst=np.asarray(g.indices, np.int64),
             w1=(rng.normal(size=(2 * f, HIDDEN)) / np.sqrt(f)).astype(np.float32),
             b1=np.zeros(HIDDEN, np.float32),
             w2=(rng.normal(size=(HIDDEN, c)) / np.sqrt(HIDDEN)).astype(np.float32),
             b2=np.zeros(c, np.float32))
    return weights


def build_test_bundle(out: Path, weights: Path) -> Path:
    """A mean-mlp bundle of the same weights for the numpy test backend (repository only)."""
    if not (KIT / "serving_testkit.py").is_file():
        raise SystemExit(f"bench serving: the default model needs the repository's test kit "
                         f"({KIT}/serving_testkit.py); from an installed package pass "
                         f"--bundle BUNDLE (e.g. the bundle `./run demo` exports)")
    sys.path.insert(0, str(KIT))
    import serving_testkit as tk

    w = np.load(weights, allow_pickle=False)
    params = tk.ModelParams(x=w["x"], src=w["src"], dst=w["dst"], w1=w["w1"], b1=w["b1"],
                            w2=w["w2"], b2=w["b2"], node_type=np.ones(w["x"].shape[0], np.int8))
    return tk.write_test_bundle(out / "cora-mean-mlp", params, name="cora")


# ---------------------------------------------------------------------------------------------
# The baseline server (torch imported only in this role)


def torch_server(port: int, weights: Path, threads: int) -> None:
    """A minimal grpcio server: qgnn.v1 PredictNodes over a plain FP32 PyTorch model that
    recomputes the full graph per request."""
    import torch
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc

    torch.set_num_threads(threads)
    w = np.load(weights, allow_pickle=False)
    x = torch.from_numpy(w["x"])
    n = x.shape[0]
    deg = np.bincount(w["dst"], minlength=n).astype(np.float32)
    values = torch.from_numpy(1.0 / deg[w["dst"]])
    adj = torch.sparse_coo_tensor(torch.from_numpy(np.stack([w["dst"], w["src"]])), values,
                                  (n, n)).coalesce()  # row v: mean over in-neighbours
    lin1 = torch.nn.Linear(*w["w1"].shape)
    lin2 = torch.nn.Linear(*w["w2"].shape)
    with torch.no_grad():
        lin1.weight.copy_(torch.from_numpy(w["w1"].T))
        lin1.bias.copy_(torch.from_numpy(w["b1"]))
        lin2.weight.copy_(torch.from_numpy(w["w2"].T))
        lin2.bias.copy_(torch.from_numpy(w["b2"]))
    model = torch.nn.Sequential(lin1, torch.nn.ReLU(), lin2).eval()

    class Servicer(pb_grpc.GraphInferenceServicer):
        def PredictNodes(self, request, context):
            ids = torch.tensor(list(request.node_ids), dtype=torch.long)
            with torch.inference_mode():
                h = torch.cat([x, torch.sparse.mm(adj, x)], dim=1)
                probs = torch.softmax(model(h), dim=1)[ids]
            return pb.PredictNodesResponse(
                model=pb.ModelRef(name=request.model.name, version=1),
                num_classes=probs.shape[1], probabilities=probs.flatten().tolist(),
                predicted_class=probs.argmax(dim=1).tolist())

    _serve_until_sigterm(Servicer(), port)


# ---------------------------------------------------------------------------------------------
# The load generator (its own process)


def load(target: str, model: str, ids_per_request: int, clients: int, duration_s: float,
         num_nodes: int) -> dict[str, Any]:
    """Closed loop: ``clients`` asyncio tasks, each with its own channel, send PredictNodes back
    to back; latencies after the warm-up are kept.

    One event loop rather than one thread per client: a threaded Python client spends most of
    a core on GIL hand-offs and tops out near 1,900 requests/s against a no-op server on 2
    cores, below the figures being measured (the no-op row of the table is this ceiling)."""
    import asyncio

    import grpc
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc

    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    async def client(i: int, measure_from: float, end: float) -> None:
        rng = np.random.default_rng(i)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.GraphInferenceStub(channel)
            while (now := time.perf_counter()) < end:
                request = pb.PredictNodesRequest(
                    model=pb.ModelRef(name=model),
                    node_ids=rng.integers(0, num_nodes, ids_per_request).tolist())
                try:
                    await stub.PredictNodes(request, timeout=30)
                except grpc.RpcError:
                    errors[i] += 1
                    continue
                done = time.perf_counter()
                if now >= measure_from:
                    latencies[i].append(done - now)

    async def main() -> None:
        start = time.perf_counter()
        measure_from, end = start + WARMUP_S, start + WARMUP_S + duration_s
        await asyncio.gather(*(client(i, measure_from, end) for i in range(clients)))

    asyncio.run(main())
    lat = np.concatenate([np.asarray(x) for x in latencies]) * 1e3
    requests = len(lat)
    return {"ids_per_request": ids_per_request, "clients": clients, "seconds": duration_s,
            "requests": requests, "errors": sum(errors),
            "requests_per_s": round(requests / duration_s, 1),
            "node_predictions_per_s": round(requests * ids_per_request / duration_s, 1),
            "latency_ms": {q: round(float(np.percentile(lat, p)), 3) if requests else None
                           for q, p in (("p50", 50), ("p90", 90), ("p99", 99))}}


def noop_server(port: int, num_classes: int) -> None:
    """A grpcio server whose PredictNodes answers a constant of the right shape at once: what
    the gRPC stack and this load generator cost on their own, the ceiling of any Python
    server measured here."""
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc

    class Servicer(pb_grpc.GraphInferenceServicer):
        def PredictNodes(self, request, context):
            n = len(request.node_ids)
            return pb.PredictNodesResponse(
                model=pb.ModelRef(name=request.model.name, version=1), num_classes=num_classes,
                probabilities=[1.0 / num_classes] * (n * num_classes), predicted_class=[0] * n)

    _serve_until_sigterm(Servicer(), port)


def noop_aio_server(port: int, num_classes: int) -> None:
    """The same constant answer from a ``grpc.aio`` server (handlers on one event loop, no
    thread pool): the other way to build a Python gRPC server, measured so the ceiling does not
    depend on picking the slower of the two."""
    import asyncio

    import grpc
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc

    class Servicer(pb_grpc.GraphInferenceServicer):
        async def PredictNodes(self, request, context):
            n = len(request.node_ids)
            return pb.PredictNodesResponse(
                model=pb.ModelRef(name=request.model.name, version=1), num_classes=num_classes,
                probabilities=[1.0 / num_classes] * (n * num_classes), predicted_class=[0] * n)

    async def serve() -> None:
        server = grpc.aio.server()
        pb_grpc.add_GraphInferenceServicer_to_server(Servicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await server.stop(1)

    asyncio.run(serve())


def _serve_until_sigterm(servicer: Any, port: int) -> None:
    import grpc
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_GraphInferenceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    server.stop(1).wait()


# ---------------------------------------------------------------------------------------------
# Orchestration


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], ready: Any, timeout: float = 120
             ) -> Iterator[subprocess.Popen]:
    """A server subprocess, waited for with ``ready()`` and stopped with SIGTERM."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        end = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"server did not start: {' '.join(args)}\n"
                                   f"{proc.stderr.read()[-3000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _answers(target: str, model: str, ids: list[int]) -> np.ndarray | None:
    import grpc
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc

    try:
        with grpc.insecure_channel(target) as channel:
            r = pb_grpc.GraphInferenceStub(channel).PredictNodes(
                pb.PredictNodesRequest(model=pb.ModelRef(name=model), node_ids=ids), timeout=5)
    except grpc.RpcError:
        return None
    return np.asarray(r.probabilities, np.float32).reshape(len(ids), -1)


def _run_load(target: str, model: str, ids: int, args: argparse.Namespace, num_nodes: int
              ) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "qgnn.bench.bench_serving", "--role", "load", "--target", target,
         "--model", model, "--ids", str(ids), "--clients", str(args.clients), "--duration-s",
         str(args.duration_s), "--num-nodes", str(num_nodes)],
        capture_output=True, text=True, timeout=args.duration_s + 120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _batch_totals(metrics_port: int) -> tuple[float, float]:
    """(ids computed, model calls) so far, from the server's qgnn_batch_size histogram."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
        text = page.read().decode()
    found = {m[1]: float(m[2]) for m in re.finditer(
        r"^qgnn_batch_size_(sum|count)\{[^}]*\} (\S+)", text, flags=re.MULTILINE)}
    return found.get("sum", 0.0), found.get("count", 0.0)


def _run_qgnn_load(target: str, model: str, ids: int, args: argparse.Namespace,
                   num_nodes: int, metrics_port: int) -> dict[str, Any]:
    """A load run plus the mean dynamic batch (ids per model call) the server formed."""
    rows0, calls0 = _batch_totals(metrics_port)
    result = _run_load(target, model, ids, args, num_nodes)
    rows1, calls1 = _batch_totals(metrics_port)
    if calls1 > calls0:
        result["mean_ids_per_model_call"] = round((rows1 - rows0) / (calls1 - calls0), 1)
    return result


def machine() -> dict[str, Any]:
    """The harness's machine block plus the load average: on a shared host, other tenants take
    CPU from both servers and the load generator."""
    return {**machine_info(), "load_average_1m": round(os.getloadavg()[0], 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import importlib.util

    with tempfile.TemporaryDirectory(prefix="qgnn-bench-serving-") as tmp:
        tmp_path = Path(tmp)
        weights = baseline_weights(tmp_path)
        served = Path(args.bundle) if args.bundle else build_test_bundle(tmp_path, weights)
        manifest = json.loads((served / "manifest.json").read_text())
        name, num_nodes = manifest["model"]["name"], manifest["graph"]["num_nodes"]
        test_backend = manifest["model"].get("format") == "qgnn-test-numpy"
        env = dict(os.environ)
        if test_backend:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(KIT), env.get("PYTHONPATH")]))
            env["QGNN_BACKEND_MODULES"] = "serving_testkit"
        backend = ("numpy test backend (tests/runtime/serving_testkit.py, mean-mlp on Cora, "
                   "FP32)" if test_backend else
                   f"inference engine (qgnn.runtime.engine) on {served}")
        ids_probe = list(range(0, num_nodes, max(num_nodes // 16, 1)))[:16]
        results: dict[str, Any] = {"backend": backend, "threads": args.threads,
                                   "clients": args.clients, "duration_s": args.duration_s,
                                   "warmup_s": WARMUP_S, "servers": {}}

        port, metrics = _free_port(), _free_port()
        target = f"127.0.0.1:{port}"
        qgnn_args = [sys.executable, "-m", "qgnn.cli", "serve", str(served), "--host",
                     "127.0.0.1", "--grpc-port", str(port), "--metrics-port", str(metrics),
                     "--threads", str(args.threads)]
        with _process(qgnn_args, env, lambda: _answers(target, name, [0]) is not None):
            reference = _answers(target, name, ids_probe)
            results["servers"]["qgnn"] = [
                _run_qgnn_load(target, name, k, args, num_nodes, metrics) for k in (1, args.ids)]

        port = _free_port()
        target = f"127.0.0.1:{port}"
        num_classes = 0 if reference is None else int(reference.shape[1])
        noop_args = [sys.executable, "-m", "qgnn.bench.bench_serving", "--role", "noop-server",
                     "--port", str(port), "--num-classes", str(max(num_classes, 1))]
        with _process(noop_args, env, lambda: _answers(target, name, [0]) is not None):
            results["servers"]["grpcio-noop (ceiling)"] = [
                _run_load(target, name, k, args, num_nodes) for k in (1, args.ids)]

        port = _free_port()
        target = f"127.0.0.1:{port}"
        noop_args = [sys.executable, "-m", "qgnn.bench.bench_serving", "--role",
                     "noop-aio-server", "--port", str(port), "--num-classes",
                     str(max(num_classes, 1))]
        with _process(noop_args, env, lambda: _answers(target, name, [0]) is not None):
            results["servers"]["grpcio-aio-noop (ceiling)"] = [
                _run_load(target, name, k, args, num_nodes) for k in (1, args.ids)]

        if not args.no_torch and importlib.util.find_spec("torch") is not None:
            port = _free_port()
            target = f"127.0.0.1:{port}"
            torch_args = [sys.executable, "-m", "qgnn.bench.bench_serving", "--role",
                          "torch-server", "--port", str(port), "--weights", str(weights),
                          "--threads", str(args.threads)]
            with _process(torch_args, env, lambda: _answers(target, name, [0]) is not None):
                baseline = _answers(target, name, ids_probe)
                if test_backend and reference is not None and baseline is not None:
                    results["max_abs_diff_vs_baseline"] = float(np.abs(reference -
                                                                       baseline).max())
                results["servers"]["pytorch-fp32-grpcio"] = [
                    _run_load(target, name, k, args, num_nodes) for k in (1, args.ids)]
    return results


def markdown(results: dict[str, Any], host: dict[str, Any]) -> str:
    """The results table and the notes that say what was measured where."""
    headers = ("server", "ids/request", "clients", "p50 ms", "p90 ms", "p99 ms", "requests/s",
               "node predictions/s", "ids per model call", "errors")
    rows = [(server, s["ids_per_request"], s["clients"], s["latency_ms"]["p50"],
             s["latency_ms"]["p90"], s["latency_ms"]["p99"], f"{s['requests_per_s']:,.0f}",
             f"{s['node_predictions_per_s']:,.0f}", s.get("mean_ids_per_model_call", "-"),
             s["errors"]) for server, scenarios in results["servers"].items()
            for s in scenarios]
    notes = [f"qgnn backend: {results['backend']}.",
             f"Machine: {host['cpu']}, {host['usable_cores']} usable cores (load average "
             f"{host['load_average_1m']} at the start), Python {host['python']}; servers use "
             f"{results['threads']} intra-op threads; {results['duration_s']:g} s per scenario "
             f"after {results['warmup_s']:g} s warm-up; load generator (asyncio, one channel per "
             f"client) in its own process on loopback. grpcio-noop (thread-pool server) and "
             f"grpcio-aio-noop (asyncio server) answer a constant at once: the ceiling the gRPC "
             f"stack and the generator leave on this machine."]
    if "max_abs_diff_vs_baseline" in results:
        notes.append(f"Answers of the two servers agree to "
                     f"{results['max_abs_diff_vs_baseline']:.1e} (max abs difference of "
                     f"probabilities).")
    table = markdown_table(headers, rows, align=["l"] + ["r"] * (len(headers) - 1))
    return table + "\n\n" + "\n".join(notes) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, help="an exported bundle to serve (default: a "
                                                    "Cora bundle for the test backend)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument("--ids", type=int, default=64, help="ids per request in the batch "
                                                            "scenario (64)")
    parser.add_argument("--duration-s", type=float, default=5.0, help="seconds per scenario")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads per server")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """``qgnn bench serving`` (for qgnn.bench.cli FAMILIES)."""
    parser = sub.add_parser("serving", help="gRPC serving latency and throughput vs PyTorch")
    add_arguments(parser)
    parser.set_defaults(func=bench_main)
    return parser


def bench_main(args: argparse.Namespace) -> int:
    host = machine()
    results = run(args)
    write_result("serving", results, results_dir=args.out, machine=host,
                 command="python -m qgnn.bench.bench_serving " + " ".join(
                     f"--{k.replace('_', '-')} {v}" for k, v in (
                         ("clients", args.clients), ("ids", args.ids),
                         ("duration_s", args.duration_s), ("threads", args.threads))))
    table = markdown(results, host)
    (args.out / "serving.md").write_text(table)
    print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--role", choices=("run", "load", "torch-server", "noop-server",
                                           "noop-aio-server"),
                        default="run",
                        help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--num-nodes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--num-classes", type=int, default=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "load":
        print(json.dumps(load(args.target, args.model, args.ids, args.clients, args.duration_s,
                              args.num_nodes)))
        return 0
    if args.role == "noop-server":
        noop_server(args.port, args.num_classes)
        return 0
    if args.role == "noop-aio-server":
        noop_aio_server(args.port, args.num_classes)
        return 0
    if args.role == "torch-server":
        torch_server(args.port, args.weights, args.threads)
        return 0
    return bench_main(args)


if __name__ == "__main__":
    sys.exit(main())
