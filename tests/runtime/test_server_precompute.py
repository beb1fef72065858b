"""``qgnn serve --precompute on|off``: the served answers (qgnn.v1 and KServe, before and after
UpdateGraph) are the same bit for bit; lookups are counted in ModelStatistics."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from qgnn.runtime.proto_gen.inference import grpc_service_pb2 as kserve
from qgnn.runtime.proto_gen.inference import grpc_service_pb2_grpc as kserve_grpc

sys.path.insert(0, str(Path(__file__).parent / "engine"))
import engine_testkit as ek


def _bundle(root: Path) -> Path:
    src, dst = ek.random_graph(50, 220, seed=5, hub=0)
    x = np.random.default_rng(5).standard_normal((50, 12)).astype(np.float32)
    return ek.write_test_bundle(root / "m" / "1", ek.int8_model(12, [16, 5]), src, dst, x,
                                name="m")


def _infer(client, ids: list[int]) -> bytes:
    request = kserve.ModelInferRequest(model_name="m")
    request.inputs.add(name="node_ids", datatype="INT64", shape=[len(ids)])
    request.raw_input_contents.append(np.asarray(ids, "<i8").tobytes())
    stub = kserve_grpc.GRPCInferenceServiceStub(client.channel)
    return stub.ModelInfer(request, timeout=10).raw_output_contents[0]


def test_precomputed_and_per_request_servers_answer_the_same_before_and_after_updates(
        start_server, client_for, tmp_path: Path):
    _bundle(tmp_path)
    on = client_for(start_server(tmp_path, precompute="on"))
    off = client_for(start_server(tmp_path, precompute="off"))
    ids = [*list(range(50)), 0, 7, 7]
    feats = np.random.default_rng(1).standard_normal((1, 12)).astype(np.float32)
    for step in range(2):
        a, b = on.predict_nodes("m", ids), off.predict_nodes("m", ids)
        np.testing.assert_array_equal(a.probabilities, b.probabilities)
        np.testing.assert_array_equal(a.predicted_class, b.predicted_class)
        assert _infer(on, ids) == _infer(off, ids)
        if step == 0:
            for client in (on, off):
                got = client.update_graph("m", features=feats, edge_src=[50, 3],
                                          edge_dst=[4, 50])
                assert list(got.node_ids) == [50]
            ids = [*ids, 50]
    stats = kserve_grpc.GRPCInferenceServiceStub(on.channel).ModelStatistics(
        kserve.ModelStatisticsRequest(name="m"), timeout=10).model_stats[0]
    assert stats.inference_count >= 4  # lookups answered inline are counted
