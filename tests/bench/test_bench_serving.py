"""The serving benchmark's parts work end to end: a server process, the asyncio load
generator, its counts and percentiles (timings themselves are not asserted)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from qgnn.bench import bench_serving as bs


@pytest.mark.parametrize("role", ["noop-server", "noop-aio-server"])
def test_load_generator_drives_the_noop_server_and_counts_every_answer(monkeypatch, role):
    monkeypatch.setattr(bs, "WARMUP_S", 0.1)
    port = bs._free_port()
    target = f"127.0.0.1:{port}"
    args = [sys.executable, "-m", "qgnn.bench.bench_serving", "--role", role,
            "--port", str(port), "--num-classes", "3"]
    with bs._process(args, dict(os.environ), lambda: bs._answers(target, "m", [0]) is not None):
        answer = bs._answers(target, "m", [4, 5])
        result = bs.load(target, "m", ids_per_request=4, clients=3, duration_s=0.4,
                         num_nodes=10)
    np.testing.assert_allclose(answer, np.full((2, 3), 1 / 3), rtol=1e-6)
    assert result["errors"] == 0 and result["requests"] > 3
    assert result["node_predictions_per_s"] == result["requests_per_s"] * 4
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
