"""Reproducer of issue 17's overload CANCELLED with no qgnn code: a plain grpcio server.

A synchronous grpcio server takes calls off gRPC core one at a time, on its polling thread.
Under an open-loop flood the calls that arrived but were not taken yet wait in gRPC core's
queue of pending calls; past ``grpc.server.max_pending_requests`` (default 1,000) core drops new
ones at random, and past ``grpc.server.max_pending_requests_hard_limit`` (default 3,000) all of
them, by cancelling the call before any handler sees it. The client gets ``CANCELLED`` (details
"CANCELLED") within a millisecond or two of sending, and the server application hears nothing.
With ``GRPC_TRACE=call_error`` on the server each such call logs ``CancelWithError SVR
CANCELLED:CANCELLED``, one per client CANCELLED.

``python -m qgnn.bench.grpc_pending_calls`` runs a 16-thread server whose handler sleeps 10 ms
(about 1,600 calls/s at best) and an asyncio client sending ``--rate`` calls/s with 1 s
deadlines, once per pending-call limit given (``--limits default,20,100000``), and prints the
status codes the client saw and how fast the CANCELLED ones came back. Timing-dependent: the
default limit drops calls only when the server falls more than 1,000 calls behind, which the
shared 2-core host reaches in about half the runs; a small limit (20) shows it every time, a
large one (100,000) never. qgnn's server sets the limit to 16,384 (runtime/server.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from concurrent import futures
from typing import Any

import grpc

METHOD = "/repro.Echo/Call"


def serve(port: int, limit: int | None) -> None:
    def handler(request: bytes, context: Any) -> bytes:
        time.sleep(0.01)  # releases the GIL, like a model call
        return request

    options = [] if limit is None else [("grpc.server.max_pending_requests", limit),
                                        ("grpc.server.max_pending_requests_hard_limit", limit)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options,
                         handlers=[grpc.method_handlers_generic_handler(
                             "repro.Echo", {"Call": grpc.unary_unary_rpc_method_handler(handler)})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


async def flood(port: int, rate: float, seconds: float, deadline_s: float) -> dict[str, Any]:
    codes: Counter[str] = Counter()
    cancelled_after: list[float] = []
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(8)]
    calls = [c.unary_unary(METHOD) for c in channels]

    async def one(i: int) -> None:
        sent = time.perf_counter()
        try:
            await calls[i % len(calls)](b"x" * 512, timeout=deadline_s)
            codes["OK"] += 1
        except grpc.RpcError as exc:
            codes[exc.code().name] += 1
            if exc.code() == grpc.StatusCode.CANCELLED:
                cancelled_after.append(time.perf_counter() - sent)

    tasks, start, i = [], time.perf_counter(), 0
    while (now := time.perf_counter()) < start + seconds:
        if start + i / rate > now:
            await asyncio.sleep(start + i / rate - now)
        tasks.append(asyncio.ensure_future(one(i)))
        i += 1
    await asyncio.gather(*tasks)
    for c in channels:
        await c.close()
    cancelled_after.sort()
    return {"sent": i, "codes": dict(codes), "cancelled_median_ms": round(
        1e3 * cancelled_after[len(cancelled_after) // 2], 2) if cancelled_after else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limits", default="default,20,100000",
                        help="pending-call limits to try, comma-separated ('default': unset)")
    parser.add_argument("--rate", type=float, default=3000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=50419)
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # internal: the server process
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.port, None if args.serve == "default" else int(args.serve))
        return 0
    for at, limit in enumerate(args.limits.split(",")):
        port = args.port + at
        server = subprocess.Popen([sys.executable, "-m", "qgnn.bench.grpc_pending_calls",
                                   "--serve", limit, "--port", str(port)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            server.stdout.readline()  # "ready"
            result = asyncio.run(flood(port, args.rate, args.seconds, 1.0))
        finally:
            server.terminate()
            server.wait(10)
        print(json.dumps({"pending_limit": limit, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
