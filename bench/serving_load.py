"""The serving benchmark's load generator: KServe v2 ModelInfer over loopback, its own process.

Two shapes of load, both bounded in time:

* closed loop (:func:`closed_loop`): ``clients`` asyncio tasks, each on its own channel, send
  requests back to back; latency and throughput after a warm-up.
* open loop (:func:`open_loop`): requests sent at a fixed rate whatever the answers, each with a
  deadline, for the overload scenario; every status code is counted.

One event loop rather than a thread per client: a threaded Python client spends most of a core
on GIL hand-offs and caps out below the no-op ceiling measured here. Run as
``python -m qgnn.bench.serving_load JSON`` (bench_serving.py does); prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import grpc
import numpy as np
from qgnn.runtime.proto_gen.inference import grpc_service_pb2 as kserve
from qgnn.runtime.proto_gen.inference import grpc_service_pb2_grpc as kserve_grpc

WARMUP_S = 1.0


def infer_request(model: str, ids: np.ndarray) -> kserve.ModelInferRequest:
    """ModelInfer of ``node_ids`` INT64 [n] as raw bytes, asking for both outputs."""
    request = kserve.ModelInferRequest(model_name=model)
    request.inputs.add(name="node_ids", datatype="INT64", shape=[len(ids)])
    request.outputs.add(name="probabilities")
    request.outputs.add(name="predicted_class")
    request.raw_input_contents.append(np.ascontiguousarray(ids, "<i8").tobytes())
    return request


def decode_response(response: kserve.ModelInferResponse) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, C) float32, predicted_class (n,) int64) from raw or typed outputs."""
    out: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(response.outputs):
        dtype = "<f4" if tensor.datatype == "FP32" else "<i8"
        if response.raw_output_contents:
            arr = np.frombuffer(response.raw_output_contents[i], dtype)
        elif tensor.datatype == "FP32":
            arr = np.asarray(tensor.contents.fp32_contents, np.float32)
        else:
            arr = np.asarray(tensor.contents.int64_contents, np.int64)
        out[tensor.name] = arr.reshape(tuple(tensor.shape))
    return out["probabilities"], out["predicted_class"].reshape(-1)


def _summary(latencies: list[float], seconds: float, ids: int) -> dict[str, Any]:
    lat = np.asarray(latencies) * 1e3
    n = len(lat)
    return {"requests": n, "requests_per_s": round(n / seconds, 1),
            "node_predictions_per_s": round(n * ids / seconds, 1),
            "latency_ms": {q: round(float(np.percentile(lat, p)), 3) if n else None
                           for q, p in (("p50", 50), ("p90", 90), ("p99", 99))}}


async def _closed(target: str, model: str, ids: int, clients: int, duration_s: float,
                  num_nodes: int) -> dict[str, Any]:
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    sent = [0]  # every call, warm-up included (for CPU per request)

    async def client(i: int, measure_from: float, end: float) -> None:
        rng = np.random.default_rng(i)
        async with grpc.aio.insecure_channel(target) as channel:
            infer = kserve_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            while (now := time.perf_counter()) < end:
                request = infer_request(model, rng.integers(0, num_nodes, ids))
                try:
                    await infer(request, timeout=30)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                done = time.perf_counter()
                sent[0] += 1
                if now >= measure_from:
                    codes[code] += 1
                    if code == "OK":
                        latencies.append(done - now)

    start, cpu = time.perf_counter(), time.process_time()
    measure_from, end = start + WARMUP_S, start + WARMUP_S + duration_s
    await asyncio.gather(*(client(i, measure_from, end) for i in range(clients)))
    return {"mode": "closed", "ids_per_request": ids, "clients": clients,
            "all_requests": sent[0], "client_cpu_s": round(time.process_time() - cpu, 4),
            "seconds": duration_s, "codes": dict(codes),
            "errors": sum(v for k, v in codes.items() if k != "OK"),
            **_summary(latencies, duration_s, ids)}


def _quantiles_ms(values: list[float]) -> dict[str, float | None]:
    arr = np.asarray(values) * 1e3
    return {q: round(float(np.percentile(arr, p)), 3) if len(arr) else None
            for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}


async def _loop_lag(stop: asyncio.Event, out: list[float], period_s: float = 0.005) -> None:
    """How late this event loop runs a callback that is due: an answer that has arrived is
    noticed (its completion time taken) that much later."""
    while not stop.is_set():
        due = time.perf_counter() + period_s
        await asyncio.sleep(period_s)
        out.append(max(time.perf_counter() - due, 0.0))


async def _open(target: str, model: str, ids: int, rate: float, duration_s: float,
                deadline_s: float, num_nodes: int, channels: int = 8, offset: int = 0
                ) -> dict[str, Any]:
    """Open loop: call ``i`` is due at ``start + i / rate``. Each call records when it was due
    (intended), when it was handed to gRPC (sent) and when its answer was seen (done): the
    generator's own lag (sent - intended) is reported apart from the latency it measures
    (done - sent), since at several thousand calls/s a Python generator falls behind."""
    codes: Counter[str] = Counter()
    rng = np.random.default_rng(offset)
    chans = [grpc.aio.insecure_channel(target) for _ in range(channels)]
    stubs = [kserve_grpc.GRPCInferenceServiceStub(c).ModelInfer for c in chans]
    details: dict[str, str] = {}
    calls: list[tuple[float, float, float, str]] = []  # (intended, sent, done, code)

    async def one(i: int, due: float) -> None:
        request = infer_request(model, rng.integers(0, num_nodes, ids))
        sent = time.perf_counter()
        try:
            await stubs[i % channels](request, timeout=deadline_s)
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
            details.setdefault(code, str(exc.details())[:200])
        calls.append((due, sent, time.perf_counter(), code))
        codes[code] += 1

    stop, lag = asyncio.Event(), []
    watcher = asyncio.ensure_future(_loop_lag(stop, lag))
    tasks = []
    start = time.perf_counter()
    i = 0
    while (now := time.perf_counter()) < start + duration_s:
        due = start + i / rate
        if due > now:
            await asyncio.sleep(due - now)
        tasks.append(asyncio.ensure_future(one(i, due)))
        i += 1
    await asyncio.gather(*tasks)
    stop.set()
    await watcher
    for c in chans:
        await c.close()
    ok = [c for c in calls if c[3] == "OK"]
    return {"mode": "open", "ids_per_request": ids, "rate_per_s": rate, "seconds": duration_s,
            "deadline_s": deadline_s, "sent": i, "codes": dict(codes), "details": details,
            "errors": sum(v for k, v in codes.items() if k != "OK"),
            **_summary([done - sent for _, sent, done, _ in ok], duration_s, ids),
            "ok_from_intended_ms": _quantiles_ms([done - due for due, _, done, _ in ok]),
            "ok_from_sent_ms": _quantiles_ms([done - sent for _, sent, done, _ in ok]),
            "send_lag_ms": _quantiles_ms([sent - due for due, sent, _, _ in calls]),
            "loop_lag_ms": _quantiles_ms(lag)}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """One scenario from its spec (bench_serving.py builds it)."""
    common = (spec["target"], spec["model"], spec["ids"])
    if spec.get("rate"):
        return asyncio.run(_open(*common, spec["rate"], spec["duration_s"], spec["deadline_s"],
                                 spec["num_nodes"], offset=spec.get("offset", 0)))
    return asyncio.run(_closed(*common, spec["clients"], spec["duration_s"], spec["num_nodes"]))


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
