"""Fuzzing a live server over both protocols, with properties, not only status codes.

``qgnn bench serving_fuzz`` (or ``python -m qgnn.bench.serving_fuzz``) serves PATH in this
process (default: an untrained INT8 GCN exported on Cora, which needs the training extra) and
sends N seeded random requests, one at a time, then writes the counts to
``bench/results/serving-fuzz.json`` and a markdown table. tests/runtime/test_server_fuzz.py
runs the same fuzzer against the test backend.

Each request is one of:

* **id property** (ModelInfer with ids in a random integer datatype, raw bytes or typed
  contents): when every id is valid the answer must equal PredictNodes (PredictLinks) for the
  same ids as int64; when one id is invalid (negative, >= num_nodes, out of the datatype's
  range, past int64) the request must be refused with INVALID_ARGUMENT. Anything else is a
  *silent wrong answer* or a *wrong refusal*.
* **hostile** (every RPC of both protocols): non-ASCII versions, shapes of rank 65 or with
  dimensions of 2**63 - 1, raw bytes that do not match, long names, truncated or bit-flipped
  messages, unknown methods. Any status but INTERNAL or UNKNOWN is acceptable.

Counted: requests by status, INTERNAL, UNKNOWN, silent wrong answers, wrong refusals and the
property checks made. The issue-17 target is 0 INTERNAL, 0 UNKNOWN, 0 silent wrong answers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ALLOWED = frozenset({"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION",
                     "RESOURCE_EXHAUSTED", "UNIMPLEMENTED"})
HOSTILE_VERSIONS = ("", "1", "2", "0", "-1", "x", "²", "³", "١", "７", "1²", " 1", "9" * 30)
INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class Model:
    """What the fuzzer knows about a served model (from ListModels)."""

    name: str
    task: str  # "node" or "link"
    num_nodes: int


@dataclass
class FuzzCounts:
    """The outcome of a run; ``failures`` keeps the first few offending cases."""

    requests: int = 0
    by_status: Counter = field(default_factory=Counter)
    internal: int = 0
    unknown: int = 0
    silent_wrong: int = 0
    wrongly_refused: int = 0
    property_checks: int = 0
    refused_as_expected: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(what)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "by_status": dict(sorted(self.by_status.items())),
                "internal": self.internal, "unknown": self.unknown,
                "silent_wrong_answers": self.silent_wrong,
                "wrongly_refused": self.wrongly_refused,
                "property_checks": self.property_checks,
                "refused_as_expected": self.refused_as_expected, "failures": self.failures}


def served_models(channel: grpc.Channel) -> list[Model]:
    """The READY models of the server, with their task and graph size."""
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc

    listing = pb_grpc.GraphInferenceStub(channel).ListModels(pb.ListModelsRequest(), timeout=30)
    return [Model(m.name, "node" if m.task == pb.TASK_NODE else "link", m.graph.num_nodes)
            for m in listing.models if m.state == pb.MODEL_STATE_READY]


class Fuzzer:
    """Seeded random requests and their expected outcome."""

    def __init__(self, models: list[Model], seed: int) -> None:
        from qgnn.runtime import validation
        from qgnn.runtime.proto_gen.inference import grpc_service_pb2 as kserve
        from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb

        self.models, self.rng = models, np.random.default_rng(seed)
        self.kserve, self.pb, self.validation = kserve, pb, validation

    def pick(self, values: Any) -> Any:
        return values[int(self.rng.integers(len(values)))]

    # -- id properties -----------------------------------------------------------------------

    def _valid_ids(self, model: Model, dt: Any, n: int) -> np.ndarray:
        top = min(model.num_nodes, int(np.iinfo(dt.dtype).max) + 1)
        ids = self.rng.integers(0, top, n)
        edges = [v for v in (0, top - 1) if v >= 0]
        for i in range(min(n, 2)):
            if self.rng.random() < 0.3:
                ids[i] = self.pick(edges)
        return ids.astype(np.int64)

    def _invalid_id(self, model: Model, dt: Any, typed: bool) -> int | None:
        """An id this datatype can carry (in raw bytes, or typed contents when ``typed``) that
        the server must refuse; None when the datatype cannot carry one."""
        info = np.iinfo(dt.dtype)
        options = []
        if info.min < 0:
            options += [-1, int(info.min)]
        if info.max >= model.num_nodes:
            options += [model.num_nodes, int(min(info.max, 2**62))]
        if dt.dtype == np.uint64:
            options += [2**63, 2**64 - 1]
        if typed:
            wide = np.iinfo(dt.field_dtype)
            if wide.max > info.max:  # e.g. 300 as UINT8, 65580 as INT16: must never wrap
                options += [int(info.max) + 1, int(info.max) + int(self.rng.integers(2, 1000)),
                            int(wide.max)]
            if wide.min < info.min:
                options += [int(info.min) - 1, int(wide.min)]
        return int(self.pick(options)) if options else None

    def property_case(self) -> tuple[str, bytes, dict[str, Any]]:
        model = self.pick(self.models)
        dt = self.validation.DATATYPES[self.pick(self.validation.ID_DATATYPES)]
        typed = bool(self.rng.random() < 0.5)
        width = 1 if model.task == "node" else 2
        rows = int(self.pick([1, 1, 2, 5, 17]))
        ids = self._valid_ids(model, dt, rows * width)
        bad = None
        if self.rng.random() < 0.4:
            bad = self._invalid_id(model, dt, typed)
        values: list[int] = [int(v) for v in ids]
        if bad is not None:
            values[int(self.rng.integers(len(values)))] = bad
        name = "node_ids" if model.task == "node" else "pairs"
        shape = [rows] if model.task == "node" else [rows, 2]
        tensor = self.kserve.ModelInferRequest.InferInputTensor(name=name, datatype=dt.name,
                                                               shape=shape)
        request = self.kserve.ModelInferRequest(model_name=model.name)
        if typed:
            getattr(tensor.contents, dt.contents_field).extend(values)
        else:  # untyped invalid ids are all in the datatype's range (_invalid_id)
            request.raw_input_contents.append(np.array(values, dt.dtype).tobytes())
        request.inputs.append(tensor)
        expect = {"model": model, "ids": None if bad is not None else ids.reshape(shape),
                  "refuse": bad is not None}
        return INFER, request.SerializeToString(), expect

    # -- hostile requests --------------------------------------------------------------------

    def _name(self) -> str:
        names = [m.name for m in self.models]
        roll = self.rng.random()
        if roll < 0.7:
            return self.pick(names)
        return self.pick(["", "nope", "to y", "x" * 129, "m" * 16_384, "١", "../etc"])

    def _shape(self) -> list[int]:
        return [int(v) for v in self.pick([[1] * 65, [0, 2**63 - 1], [2**63 - 1, 2**63 - 1, 0, 1],
                                           [2**62, 2**62, 4], [3], [2, 2], [], [-1], [1, 2, 3],
                                           [10**12]])]

    def hostile_case(self) -> tuple[str, bytes, dict[str, Any]]:
        k, pb = self.kserve, self.pb
        roll = self.rng.random()
        name, version = self._name(), self.pick(HOSTILE_VERSIONS)
        if roll < 0.35:
            method = INFER
            tensors = []
            for _ in range(int(self.pick([0, 1, 1, 2]))):
                t = k.ModelInferRequest.InferInputTensor(
                    name=self.pick(["node_ids", "pairs", "x", ""]),
                    datatype=self.pick(["INT64", "UINT64", "INT8", "UINT8", "INT16", "FP32",
                                        "BOOL", "BYTES", ""]), shape=self._shape())
                if self.rng.random() < 0.5:
                    t.contents.int64_contents.extend(int(v) for v in self.rng.integers(-3, 40, 3))
                if self.rng.random() < 0.3:
                    t.contents.uint_contents.extend([300, 65580, 2**32 - 1][: int(
                        self.rng.integers(1, 4))])
                tensors.append(t)
            raw = [self.rng.bytes(int(self.pick([0, 1, 8, 16, 24]))) for _ in range(
                int(self.pick([0, 0, len(tensors), 3])))]
            message = k.ModelInferRequest(model_name=name, model_version=version,
                                          inputs=tensors, raw_input_contents=raw)
        elif roll < 0.6:
            method, kind = self.pick([
                ("/inference.GRPCInferenceService/ModelReady", k.ModelReadyRequest),
                ("/inference.GRPCInferenceService/ModelMetadata", k.ModelMetadataRequest),
                ("/inference.GRPCInferenceService/ModelConfig", k.ModelConfigRequest),
                ("/inference.GRPCInferenceService/ModelStatistics", k.ModelStatisticsRequest)])
            message = kind(name=name, version=version)
        elif roll < 0.65:
            method = "/inference.GRPCInferenceService/RepositoryIndex"
            message = k.RepositoryIndexRequest(ready=bool(self.rng.random() < 0.5))
        elif roll < 0.85:
            method, kind = self.pick([
                ("/qgnn.v1.GraphInference/PredictNodes", pb.PredictNodesRequest),
                ("/qgnn.v1.GraphInference/Embed", pb.EmbedRequest),
                ("/qgnn.v1.GraphInference/PredictLinks", pb.PredictLinksRequest),
                ("/qgnn.v1.GraphInference/GetModel", pb.GetModelRequest),
                ("/qgnn.v1.GraphInference/ListModels", pb.ListModelsRequest)])
            ref = pb.ModelRef(name=name)
            if self.rng.random() < 0.3:
                ref.version = int(self.pick([0, 1, 2, -5, 2**62]))
            ids = [int(v) for v in self.rng.integers(-2, 60, int(self.pick([0, 1, 3])))]
            if kind is pb.ListModelsRequest:
                message = kind(name=name)
            elif kind is pb.GetModelRequest:
                message = kind(model=ref)
            elif kind is pb.PredictLinksRequest:
                message = kind(model=ref, src_ids=ids, dst_ids=ids[::-1])
            else:
                message = kind(model=ref, node_ids=ids)
        else:
            method = self.pick([INFER, "/qgnn.v1.GraphInference/PredictNodes",
                                "/inference.GRPCInferenceService/ModelReady",
                                "/qgnn.v1.GraphInference/Nope", "/no.Such/Method"])
            data = self.rng.bytes(int(self.pick([0, 1, 5, 64])))
            return method, data, {}
        data = message.SerializeToString()
        if data and self.rng.random() < 0.15:  # truncated and bit-flipped
            cut = bytearray(data[: int(self.rng.integers(1, len(data) + 1))])
            cut[int(self.rng.integers(len(cut)))] ^= 1 << int(self.rng.integers(8))
            data = bytes(cut)
        return method, data, {}

    def case(self) -> tuple[str, bytes, dict[str, Any]]:
        return self.property_case() if self.rng.random() < 0.5 else self.hostile_case()


def _reference(channel: grpc.Channel, model: Model, ids: np.ndarray) -> list[np.ndarray]:
    """What qgnn.v1 answers for the same ids (int64), as KServe's raw outputs would read."""
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
    from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc

    stub = pb_grpc.GraphInferenceStub(channel)
    ref = pb.ModelRef(name=model.name)
    if model.task == "node":
        r = stub.PredictNodes(pb.PredictNodesRequest(model=ref, node_ids=ids.tolist()),
                              timeout=30)
        return [np.asarray(r.probabilities, np.float32).reshape(len(ids), r.num_classes),
                np.asarray(r.predicted_class, np.int64)]
    r = stub.PredictLinks(pb.PredictLinksRequest(model=ref, src_ids=ids[:, 0].tolist(),
                                                 dst_ids=ids[:, 1].tolist()), timeout=30)
    return [np.asarray(r.scores, np.float32)]


def _decode(response: bytes) -> list[np.ndarray]:
    from qgnn.runtime.proto_gen.inference import grpc_service_pb2 as kserve

    r = kserve.ModelInferResponse.FromString(response)
    out = []
    for tensor, raw in zip(r.outputs, r.raw_output_contents, strict=True):
        dtype = "<f4" if tensor.datatype == "FP32" else "<i8"
        out.append(np.frombuffer(raw, dtype).reshape(tuple(tensor.shape)))
    return out


def run_fuzz(address: str, count: int, seed: int, *,
             progress: Callable[[int], None] | None = None) -> FuzzCounts:
    """Sends ``count`` fuzzed requests to the server at ``address``, one at a time, and checks
    each against its expectation (module docstring)."""
    counts = FuzzCounts()
    with grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", 64 * 2**20),
            ("grpc.max_receive_message_length", 64 * 2**20)]) as channel:
        models = served_models(channel)
        if not models:
            raise ValueError(f"the server at {address} serves no model to fuzz")
        fuzzer = Fuzzer(models, seed)
        for i in range(count):
            method, data, expect = fuzzer.case()
            call = channel.unary_unary(method)
            try:
                response, status, details = call(data, timeout=30), "OK", ""
            except grpc.RpcError as exc:
                response, status, details = None, exc.code().name, exc.details() or ""
            counts.requests += 1
            counts.by_status[status] += 1
            counts.internal += status == "INTERNAL"
            counts.unknown += status == "UNKNOWN"
            if status not in ALLOWED:
                counts.fail(f"{method}: {status}: {details[:200]}")
            if expect.get("refuse"):
                if status == "OK":
                    counts.silent_wrong += 1
                    counts.fail(f"{method}: an invalid id answered OK ({data[:80]!r})")
                elif status == "INVALID_ARGUMENT":
                    counts.refused_as_expected += 1
                else:
                    counts.fail(f"{method}: invalid id got {status}: {details[:200]}")
            elif expect.get("ids") is not None:
                model, ids = expect["model"], expect["ids"]
                if status != "OK":
                    counts.wrongly_refused += 1
                    counts.fail(f"{method}: valid ids {ids.tolist()[:8]} got {status}: "
                                f"{details[:200]}")
                else:
                    got = _decode(response)
                    want = _reference(channel, model, ids)
                    counts.property_checks += 1
                    same = len(got) == len(want) and all(
                        g.shape == w.shape and np.allclose(g, w, atol=1e-6, rtol=0)
                        for g, w in zip(got, want, strict=False))
                    if not same:
                        counts.silent_wrong += 1
                        counts.fail(f"{method}: ModelInfer differs from qgnn.v1 for "
                                    f"{ids.tolist()[:8]}")
            if progress is not None and (i + 1) % 1000 == 0:
                progress(i + 1)
    return counts


# ---------------------------------------------------------------------------------------------
# The command


def _default_bundles(tmp: Path) -> Path:
    """An untrained INT8 GCN exported on Cora (bench_engine's recipe), as a single bundle."""
    from qgnn.bench.bench_engine import export_untrained
    from qgnn.graph.datasets import load_dataset

    out = tmp / "cora-gcn"
    export_untrained("gcn", load_dataset("cora"), out)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry
    from qgnn.runtime.config import ServeConfig
    from qgnn.runtime.server import QgnnServer

    with tempfile.TemporaryDirectory() as tmp:
        path = args.path if args.path is not None else _default_bundles(Path(tmp))
        server = QgnnServer(ServeConfig(path=path, host="127.0.0.1", grpc_port=0,
                                        metrics_port=0, threads=args.threads),
                            registry=CollectorRegistry()).start()
        try:
            started = time.perf_counter()
            counts = run_fuzz(f"127.0.0.1:{server.grpc_port}", args.count, args.seed,
                              progress=lambda n: print(f"  {n} requests", flush=True))
            seconds = time.perf_counter() - started
            after = run_fuzz(f"127.0.0.1:{server.grpc_port}", 50, args.seed + 1)
            rejected: Counter = Counter()
            for metric in server.metrics.requests_rejected.collect():
                for sample in metric.samples:
                    if sample.name.endswith("_total"):
                        rejected[sample.labels["reason"]] += int(sample.value)
        finally:
            server.stop(grace=1.0)
    result = {"path": "untrained INT8 GCN on Cora (exported here)" if args.path is None
              else str(args.path), "seed": args.seed, "seconds": round(seconds, 2),
              **counts.as_dict(),
              "afterwards": {"property_checks": after.property_checks,
                             "silent_wrong_answers": after.silent_wrong,
                             "wrongly_refused": after.wrongly_refused},
              "rejected_by_reason": dict(sorted(rejected.items()))}
    return result


def table(result: dict[str, Any]) -> str:
    from qgnn.bench.harness import markdown_table

    rows = [("requests", result["requests"]), ("INTERNAL", result["internal"]),
            ("UNKNOWN", result["unknown"]),
            ("silent wrong answers", result["silent_wrong_answers"]),
            ("valid requests refused", result["wrongly_refused"]),
            ("property checks (ModelInfer == qgnn.v1)", result["property_checks"]),
            ("invalid ids refused", result["refused_as_expected"])]
    rows += [(f"status {k}", v) for k, v in result["by_status"].items()]
    return markdown_table(["", "count"], rows, ["l", "r"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", type=Path, help="bundle or repository to serve (default: an "
                                                  "untrained INT8 GCN exported on Cora)")
    parser.add_argument("--count", type=int, default=10_000, help="requests (10000)")
    parser.add_argument("--seed", type=int, default=17, help="generator seed (17)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (2)")
    parser.add_argument("--out", type=Path, default=None, help="results directory")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser("serving_fuzz", help="fuzz a live server over both protocols",
                            description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.set_defaults(func=bench_main)
    return parser


def bench_main(args: argparse.Namespace) -> int:
    from qgnn.bench.harness import machine_info, write_result

    result = run(args)
    machine = machine_info()
    text = (table(result) + f"\n\n{result['requests']} requests in {result['seconds']} s on "
            f"{machine.get('cpu')} ({machine.get('usable_cores', '?')} CPUs usable; the host may "
            f"be shared, so the time is indicative only; the counts do not depend on it).")
    path = write_result("serving-fuzz", result, results_dir=args.out, machine=machine)
    path.with_suffix(".md").write_text(text + "\n")
    print(text)
    print(f"wrote {path}")
    bad = result["internal"] + result["unknown"] + result["silent_wrong_answers"]
    return 0 if bad == 0 and result["afterwards"]["silent_wrong_answers"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return bench_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
