"""The engine benchmark's smoke run: exported bundles only, and its answers hold.

A ``--quick`` run on tiny power-law graphs writes the JSON the docs describe, and the checks it
makes before timing pass: INT8 engine = INT8 stock onnxruntime bit for bit, the FP32 export,
torch.sparse and torch_geometric within 1e-4 of the PyTorch model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

from qgnn.bench import bench_engine
from qgnn.runtime import kernels

needs_kernels = pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench-engine")
    assert bench_engine.main(["--quick", "--sections", "whole,latency,topk", "--models",
                              "gcn,gat", "--results-dir", str(out), "--name", "smoke"]) == 0
    assert (out / "smoke.md").read_text().startswith("Machine: ")
    return json.loads((out / "smoke.json").read_text())


@needs_kernels
def test_quick_run_writes_the_expected_keys(quick_run: dict) -> None:
    results = quick_run["results"]
    assert set(results["cpu_flags"]) == {"avx2", "avx512f", "avx512_vnni"}
    assert "dispatch" in results["kernels"] or "isa" in results["kernels"]
    assert results["sections"] == ["latency", "topk", "whole"]
    runs = results["whole"]["runs"]
    assert [(r["model"], r["graph"]) for r in runs] == [
        (m, g[0]) for g in bench_engine.QUICK_GRAPHS for m in ("gcn", "gat")]
    for r in runs:
        assert set(r["median_s"]) >= {"int8_engine", "int8_executor", "int8_stock",
                                      "fp32_executor", "fp32_stock", "pyg"}
        assert ("torch_sparse" in r["median_s"]) == (r["model"] != "gat")
        assert r["export_s"] > 0 and r["int8_steps"] and r["targets"] is not None
        assert r["best_fp32"] in bench_engine.FP32_ROUTES
    assert {r["model"] for r in results["latency"].values()} == set(bench_engine.LATENCY_MODELS)
    assert 0.0 <= results["topk"]["recall_at_k"] <= 1.0


@needs_kernels
def test_quick_run_answers_hold(quick_run: dict) -> None:
    for r in quick_run["results"]["whole"]["runs"]:
        checks = r["checks"]
        assert checks["int8_engine_equals_stock"], r["model"]
        assert checks["int8_engine_equals_executor"], r["model"]
        assert max(checks["fp32_max_rel_vs_pytorch"].values()) <= bench_engine.FP32_RTOL
        assert checks["int8_vs_fp32_argmax_agreement"] > 0.5
        assert checks["passed"]


def test_unknown_section_or_model_is_refused(tmp_path: Path) -> None:
    for flag in ("--sections", "--models"):
        with pytest.raises(SystemExit):
            bench_engine.main([flag, "nope", "--results-dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())
