"""The switches that hold torch's FP32 libraries to the INT8 kernels' ISA level."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from qgnn.bench import bench_engine
from qgnn.bench.fp32_isa import (
    ENV_NAMES,
    MASK_LEVELS,
    SWITCHES,
    build_cpuid_mask,
    constrained_env,
    cpuid_mask_unavailable,
)


def test_baseline_takes_each_librarys_lowest_setting() -> None:
    env = constrained_env("baseline", {"PATH": "/bin", "MKL_CBWR": "AVX2"})
    assert env["ATEN_CPU_CAPABILITY"] == "default"
    assert env["MKL_ENABLE_INSTRUCTIONS"] == "SSE4_2"
    assert env["ONEDNN_MAX_CPU_ISA"] == "SSE41"
    assert env["PATH"] == "/bin" and "MKL_CBWR" not in env


def test_levels_without_a_narrower_setting_change_nothing() -> None:
    base = {"PATH": "/bin"}
    assert constrained_env("avx512_vnni", base) == base
    assert set(SWITCHES) == {"baseline", "avx2", "avx512"}
    assert all(len(v) == len(ENV_NAMES) for v in SWITCHES.values())


def test_torch_reports_the_constrained_capability() -> None:
    pytest.importorskip("torch")
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", code], env=constrained_env("baseline"),
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "DEFAULT"


def test_matched_needs_a_level_below_the_best(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.setattr(bench_engine.kernels, "build_info", lambda: {"isa": "avx512_vnni"})
    with pytest.raises(SystemExit):
        bench_engine.main(["--quick", "--sections", "whole", "--fp32-isa", "matched",
                           "--results-dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_the_cpuid_mask_is_preloaded_only_for_levels_it_knows(tmp_path: Path) -> None:
    lib = tmp_path / "cpuid_mask.so"
    base = {"PATH": "/bin", "LD_PRELOAD": "/opt/other.so", "PYTHONFAULTHANDLER": "1"}
    env = constrained_env("avx2", base, cpuid_mask=lib)
    assert env["LD_PRELOAD"] == f"{lib}:/opt/other.so"
    assert env["QGNN_CPUID_MASK"] == "avx2" and "PYTHONFAULTHANDLER" not in env
    assert constrained_env("avx512_vnni", base, cpuid_mask=lib) == base
    assert set(MASK_LEVELS) == set(SWITCHES)


_PROBE = """
import json, sys
import numpy as np, onnx, onnxruntime as ort, torch
from onnx import TensorProto, helper, numpy_helper
from qgnn.runtime import kernels
rng = np.random.default_rng(0)
a = rng.standard_normal((256, 128), dtype=np.float32)
b = rng.standard_normal((128, 64), dtype=np.float32)
graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "g",
    [helper.make_tensor_value_info("a", TensorProto.FLOAT, [256, 128])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 64])],
    [numpy_helper.from_array(b, "b")])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
np.save(sys.argv[1], sess.run(None, {"a": a})[0])
np.save(sys.argv[1] + ".ref", a.astype(np.float64) @ b.astype(np.float64))
print(json.dumps({"levels": list(kernels.levels_supported()),
                  "torch": torch.backends.cpu.get_cpu_capability()}))
"""


def _probe(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[dict, np.ndarray, np.ndarray]:
    out = tmp_path / f"{name}.npy"
    done = subprocess.run([sys.executable, "-c", _PROBE, str(out)], env=env,
                          capture_output=True, text=True, check=True)
    return (json.loads(done.stdout.strip().splitlines()[-1]), np.load(out),
            np.load(f"{out}.ref.npy"))


@pytest.fixture(scope="module")
def cpuid_mask(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = cpuid_mask_unavailable()
    if reason is not None:
        pytest.skip(reason)
    return build_cpuid_mask(tmp_path_factory.mktemp("cpuid-mask"))


def test_masked_cpuid_holds_onnxruntime_torch_and_qgnn_to_the_level(
        tmp_path: Path, cpuid_mask: Path) -> None:
    """What every library of the child sees: qgnn's own CPUID probe reports the level only,
    torch falls to its SSE build without being told, and MLAS's SGEMM is another kernel (other
    rounding than the FMA kernels of the CPU's best level) with the same product."""
    pytest.importorskip("torch")
    native, y_native, ref = _probe(tmp_path, "native", dict(os.environ))
    if native["levels"] == ["baseline"]:
        pytest.skip("this CPU has nothing above baseline to mask")
    env = constrained_env("baseline", cpuid_mask=cpuid_mask)
    env.pop("ATEN_CPU_CAPABILITY")  # torch must follow CPUID alone
    masked, y_masked, _ = _probe(tmp_path, "masked", env)
    assert masked == {"levels": ["baseline"], "torch": "DEFAULT"}
    assert not np.array_equal(y_masked, y_native)
    np.testing.assert_allclose(y_masked, ref, rtol=1e-4, atol=1e-4)
    avx2, _, _ = _probe(tmp_path, "avx2", constrained_env("avx2", cpuid_mask=cpuid_mask))
    assert avx2["levels"] == [lv for lv in native["levels"] if lv in ("baseline", "avx2")]


def test_the_mask_passes_other_faults_on_and_refuses_unknown_levels(cpuid_mask: Path) -> None:
    env = constrained_env("baseline", cpuid_mask=cpuid_mask)
    crash = subprocess.run([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"],
                           env=env, capture_output=True, timeout=60, check=False)
    assert crash.returncode == -signal.SIGSEGV
    env["QGNN_CPUID_MASK"] = "sse9"
    bad = subprocess.run([sys.executable, "-c", "pass"], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "unknown level sse9" in bad.stderr
