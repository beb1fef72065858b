"""The server under load: admission sheds early with RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED
(never CANCELLED), counts every refusal, bounds bytes in flight; SIGTERM under load loses no
accepted call and answers the shutdown window UNAVAILABLE."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import serving_testkit as tk
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc
from qgnn.runtime.server import QgnnServer

NUM_NODES = 30


def _slow_repo(root: Path, delay_s: float) -> Path:
    params = tk.random_params(num_nodes=NUM_NODES, seed=4)
    tk.write_test_bundle(root / "slow" / "1", params, name="slow", delay_s=delay_s)
    return root


class Hammer:
    """``clients`` threads sending PredictNodes back to back on their own channels, each call
    with ``timeout_s``; every status code is counted."""

    def __init__(self, port: int, clients: int, timeout_s: float, ids: int = 1) -> None:
        self.codes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._port, self._timeout, self._ids = port, timeout_s, ids
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(clients)]

    def _run(self, i: int) -> None:
        rng = np.random.default_rng(i)
        with grpc.insecure_channel(f"127.0.0.1:{self._port}") as channel:
            stub = pb_grpc.GraphInferenceStub(channel)
            while not self._stop.is_set():
                request = pb.PredictNodesRequest(
                    model=pb.ModelRef(name="slow"),
                    node_ids=rng.integers(0, NUM_NODES, self._ids).tolist())
                try:
                    stub.PredictNodes(request, timeout=self._timeout)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                with self._lock:
                    self.codes[code] += 1

    def __enter__(self) -> Hammer:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def _sample(server: QgnnServer, name: str, labels: dict[str, str]) -> float:
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


def _server_codes(server: QgnnServer, method: str = "PredictNodes") -> Counter[str]:
    """qgnn_requests_total of ``method`` by status, over every model label."""
    out: Counter[str] = Counter()
    for metric in server.metrics.registry.collect():
        if metric.name == "qgnn_requests":
            for s in metric.samples:
                if s.name == "qgnn_requests_total" and s.labels["method"] == method:
                    out[s.labels["status"]] += int(s.value)
    return out


def test_overload_sheds_with_resource_exhausted_or_deadline_and_counts_every_refusal(
        start_server, tmp_path: Path):
    # capacity: one 20 ms call at a time (1-id requests, no merging); 24 clients keep ~12x
    # that in flight, and at most 60 ms of queue is allowed
    server = start_server(_slow_repo(tmp_path, 0.02), max_queue_ms=60, max_batch_size=1)
    with Hammer(server.grpc_port, clients=24, timeout_s=0.5) as load:
        time.sleep(2.0)
    assert set(load.codes) <= {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}, load.codes
    assert load.codes["OK"] > 10 and load.codes["RESOURCE_EXHAUSTED"] > 10
    seen = _server_codes(server)
    # every answer the clients saw, the server counted; an answer (OK or a refusal) that reached
    # the client after its own deadline is the client's DEADLINE_EXCEEDED, so the server's counts
    # exceed the client's by at most those
    late = load.codes["DEADLINE_EXCEEDED"]
    for code in ("OK", "RESOURCE_EXHAUSTED"):
        assert load.codes[code] <= seen[code] <= load.codes[code] + late, (code, seen, load.codes)
    assert (seen["OK"] + seen["RESOURCE_EXHAUSTED"]
            <= load.codes["OK"] + load.codes["RESOURCE_EXHAUSTED"] + late), (seen, load.codes)
    # every RESOURCE_EXHAUSTED here is a shed request, counted under its reason; a
    # DEADLINE_EXCEEDED is a shed only when qgnn refused it (a call gRPC dropped before the
    # handler, or an answer computed too late, is counted in requests_total alone)
    shed = {r: _sample(server, "qgnn_requests_shed_total", {"reason": r})
            for r in ("queue_time", "queue_full", "deadline", "inflight_requests")}
    # (a shed call whose client left before the refusal reached it, which the asyncio server
    # sees as a cancelled task, is recorded under the client's CANCELLED)
    shed_busy = shed["queue_time"] + shed["queue_full"] + shed["inflight_requests"]
    assert seen["RESOURCE_EXHAUSTED"] <= shed_busy <= \
        seen["RESOURCE_EXHAUSTED"] + seen["CANCELLED"], (shed, seen)
    assert shed["deadline"] <= seen["DEADLINE_EXCEEDED"], (shed, seen)
    # an OK answer never queued past --max-queue-ms (+ its own call)
    assert _sample(server, "qgnn_queue_duration_seconds_bucket",
                   {"model": "slow", "le": "+Inf"}) > 0


def test_bytes_in_flight_are_bounded_a_big_request_is_shed_and_counted(start_server,
                                                                        tmp_path: Path):
    server = start_server(_slow_repo(tmp_path, 0.0), max_inflight_bytes=65536,
                          max_ids_per_request=4096)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GraphInferenceStub(channel)
        small = stub.PredictNodes(pb.PredictNodesRequest(model=pb.ModelRef(name="slow"),
                                                         node_ids=[1, 2]), timeout=5)
        assert len(small.predicted_class) == 2
        big = pb.PredictNodesRequest(model=pb.ModelRef(name="slow"),
                                     node_ids=[3] * 4000)  # its answer: ~4000 x 3 floats x 3
        try:
            stub.PredictNodes(big, timeout=5)
            raise AssertionError("a request over the byte budget was answered")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max-inflight-bytes" in exc.details()
    assert _sample(server, "qgnn_requests_shed_total", {"reason": "inflight_bytes"}) == 1
    assert server.admission.inflight_bytes == 0


def test_a_message_over_max_message_bytes_is_refused_by_qgnn_and_counted(start_server,
                                                                         tmp_path: Path):
    server = start_server(_slow_repo(tmp_path, 0.0), max_message_bytes=2048)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GraphInferenceStub(channel)
        too_big = pb.PredictNodesRequest(model=pb.ModelRef(name="slow"),
                                         node_ids=[2**40 + 1] * 600)  # ~3.6 kB of varints
        big_answer = pb.PredictNodesRequest(model=pb.ModelRef(name="slow"), node_ids=[1] * 600)
        for request, what in ((too_big, "request bytes"), (big_answer, "response bytes")):
            try:
                stub.PredictNodes(request, timeout=5)
                raise AssertionError("an oversized request or answer went through")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert what in exc.details() and "max-message-bytes" in exc.details()
    assert _sample(server, "qgnn_requests_shed_total", {"reason": "message_bytes"}) == 2


def test_sigterm_under_load_loses_no_accepted_call_and_never_cancels(start_server,
                                                                     tmp_path: Path):
    server = start_server(_slow_repo(tmp_path, 0.01), grace_period_s=10)
    with Hammer(server.grpc_port, clients=16, timeout_s=10) as load:
        time.sleep(0.8)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        stopper.join(30)
        time.sleep(0.3)  # calls keep coming after the port closed
    assert set(load.codes) <= {"OK", "UNAVAILABLE"}, load.codes
    assert load.codes["OK"] > 20 and load.codes["UNAVAILABLE"] > 0
    seen = _server_codes(server)
    assert seen["OK"] == load.codes["OK"]  # every call the server accepted was answered
    assert seen["UNAVAILABLE"] >= 1  # the shutdown window answered by qgnn, counted
    assert _sample(server, "qgnn_requests_shed_total", {"reason": "shutdown"}) == \
        seen["UNAVAILABLE"]



def _open_loop(port: int, rate: float, seconds: float, deadline_s: float) -> dict:
    """The serving benchmark's open-loop generator in its own process (as a real client is):
    KServe ModelInfer of one id at ``rate`` calls/s for ``seconds``, whatever the answers."""
    spec = {"target": f"127.0.0.1:{port}", "model": "slow", "ids": 1, "rate": rate,
            "duration_s": seconds, "deadline_s": deadline_s, "num_nodes": NUM_NODES}
    out = subprocess.run([sys.executable, "-m", "qgnn.bench.serving_load", json.dumps(spec)],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_overload_beyond_what_python_can_take_gets_no_cancelled_and_every_call_is_counted(
        start_server, tmp_path: Path):
    # an open loop far above what the server's Python side can even take off the transport:
    # gRPC core used to keep 1,000 waiting calls for the server and cancel the rest unseen
    # (the client got CANCELLED, qgnn counted nothing: issue 17's overload finding)
    server = start_server(_slow_repo(tmp_path, 0.01), max_queue_ms=100, max_batch_size=1,
                          max_inflight_requests=24)
    load = _open_loop(server.grpc_port, rate=4000, seconds=2.0, deadline_s=1.0)
    codes, sent = Counter(load["codes"]), load["sent"]
    assert sum(codes.values()) == sent
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}, load
    # qgnn counts every call that reached it: answered, shed, refused by gRPC's concurrency
    # limit, or dropped by gRPC while it waited to be taken (recorded when qgnn takes it). On a
    # loaded host a share of the calls never gets that far (their deadline passes inside the
    # client before they are sent, or gRPC core discards them before it has read their
    # headers): 6-25% in runs on the shared 2-core host, so only half are required here.
    end = time.monotonic() + 30
    while sum(_server_codes(server, "ModelInfer").values()) < sent and time.monotonic() < end:
        time.sleep(0.2)
    seen = _server_codes(server, "ModelInfer")
    assert 0.5 * sent <= sum(seen.values()) <= sent, (seen, codes)
    assert codes["RESOURCE_EXHAUSTED"] <= seen["RESOURCE_EXHAUSTED"], (seen, codes, load)
    assert codes["OK"] <= seen["OK"], (seen, codes)
    # calls answered before their request was read (refused as they arrived, on gRPC's
    # polling thread, or dropped by gRPC while they waited) are in the counts, with no model
    # label
    unread = sum(_sample(server, "qgnn_requests_total", {"model": "", "method": "ModelInfer",
                                                         "status": s})
                 for s in ("RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "CANCELLED"))
    assert unread > 0, seen
