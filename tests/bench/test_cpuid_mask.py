"""The CPUID mask: a child process on this machine behaves as on a CPU of a lower level, down to
the onnxruntime kernels the suite could otherwise only emulate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlas_emulation
import numpy as np
import pytest
from qgnn.bench import cpuid_mask

_PROBE = """
import json, sys
import numpy as np, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from qgnn.runtime import kernels

def run(op, a, b, out_type):
    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("a", helper.np_dtype_to_tensor_dtype(a.dtype),
                                       list(a.shape))],
        [helper.make_tensor_value_info("y", out_type, None)], [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"a": a})[0]

data = np.load(sys.argv[1])
np.savez(sys.argv[2], sgemm=run("MatMul", data["fa"], data["fb"], TensorProto.FLOAT),
         u8s8=run("MatMulInteger", data["ua"], data["sb"], TensorProto.INT32))
levels = list(kernels.levels_supported())
try:
    import torch
    capability = torch.backends.cpu.get_cpu_capability()
except ImportError:
    capability = None
print(json.dumps({"levels": levels, "torch": capability, "numpy_avx2":
                  bool(np._core._multiarray_umath.__cpu_features__.get("AVX2"))}))
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = cpuid_mask.unavailable()
    if reason is not None:
        pytest.skip(reason)
    return cpuid_mask.build(tmp_path_factory.mktemp("cpuid-mask"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    data = {"fa": rng.standard_normal((256, 128), dtype=np.float32),
            "fb": rng.standard_normal((128, 64), dtype=np.float32),
            # large activations against full-range int8 weights: pairs overflow int16
            "ua": rng.integers(200, 256, (32, 64)).astype(np.uint8),
            "sb": rng.choice(np.array([-128, -100, 100, 127], np.int8), (64, 16))}
    path = tmp_path_factory.mktemp("mask-inputs") / "inputs.npz"
    np.savez(path, **data)
    return path, data


def _probe(tmp_path: Path, inputs: Path, env: dict[str, str]) -> tuple[dict, dict]:
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}.npz"
    done = subprocess.run([sys.executable, "-c", _PROBE, str(inputs), str(out)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(out) as got:
        return json.loads(done.stdout.strip().splitlines()[-1]), dict(got)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("QGNN_ISA", "ATEN_CPU_CAPABILITY")}
    return {**env, **extra}


def test_every_library_in_the_child_sees_the_masked_cpu(
        tmp_path: Path, library: Path, inputs: tuple[Path, dict[str, np.ndarray]]) -> None:
    """qgnn's own CPUID probe, torch's cpuinfo and numpy's dispatch all report the level, and
    MLAS runs another SGEMM (SSE multiply then add, not fused FMAs: other rounding) with the
    same product."""
    path, data = inputs
    native, native_out = _probe(tmp_path, path, _env())
    if native["levels"] == ["baseline"]:
        pytest.skip("this CPU has nothing above baseline to mask")
    masked, masked_out = _probe(tmp_path, path, cpuid_mask.masked_env("baseline", library,
                                                                      _env()))
    assert masked["levels"] == ["baseline"] and not masked["numpy_avx2"]
    assert masked["torch"] in (None, "DEFAULT")
    assert not np.array_equal(masked_out["sgemm"], native_out["sgemm"])
    reference = data["fa"].astype(np.float64) @ data["fb"].astype(np.float64)
    np.testing.assert_allclose(masked_out["sgemm"], reference, rtol=1e-4, atol=1e-4)
    avx2, _ = _probe(tmp_path, path, cpuid_mask.masked_env("avx2", library, _env()))
    assert avx2["levels"] == [lv for lv in native["levels"] if lv in ("baseline", "avx2")]


@pytest.mark.parametrize("level", ["avx2", "avx512"])
def test_masked_onnxruntime_saturates_exactly_as_the_suites_emulation(
        tmp_path: Path, library: Path, inputs: tuple[Path, dict[str, np.ndarray]],
        level: str) -> None:
    """Issue 15's failure, for real on this machine: without VNNI, onnxruntime's u8 x s8
    MatMulInteger adds byte pairs in saturating int16. The masked child gets exactly the
    integers mlas_emulation predicts, so the emulation the engine tests rely on is the kernel."""
    path, data = inputs
    native, _ = _probe(tmp_path, path, _env())
    if level not in native["levels"]:
        pytest.skip(f"this CPU has no {level}")
    _, out = _probe(tmp_path, path, cpuid_mask.masked_env(level, library, _env()))
    exact = mlas_emulation.matmul_integer_exact(data["ua"], data["sb"])
    saturating = mlas_emulation.matmul_integer_saturating(data["ua"], data["sb"])
    assert (out["u8s8"] != exact).mean() > 0.5
    np.testing.assert_array_equal(out["u8s8"], saturating)


def test_other_faults_still_crash_and_unknown_levels_are_refused(library: Path) -> None:
    env = cpuid_mask.masked_env("baseline", library, _env())
    crash = subprocess.run([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"],
                           env=env, capture_output=True, timeout=60, check=False)
    assert crash.returncode == -signal.SIGSEGV
    env[cpuid_mask.ENV_LEVEL] = "sse9"
    bad = subprocess.run([sys.executable, "-c", "pass"], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "unknown level sse9" in bad.stderr
    with pytest.raises(ValueError, match="unknown level"):
        cpuid_mask.masked_env("avx512_vnni", library)


def test_the_command_line_runs_a_command_masked(tmp_path: Path, library: Path) -> None:
    code = "from qgnn.runtime import kernels; print(kernels.levels_supported())"
    done = subprocess.run(
        [sys.executable, "-m", "qgnn.bench.cpuid_mask", "baseline", "--build-dir",
         str(library.parent), "--", sys.executable, "-c", code],
        env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "('baseline',)"
    check = subprocess.run([sys.executable, "-m", "qgnn.bench.cpuid_mask", "--check"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0 and "available" in check.stdout


def test_without_cpuid_faulting_the_reason_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpuid_mask.platform, "machine", lambda: "aarch64")
    assert "x86-64" in (cpuid_mask.unavailable() or "")
    with pytest.raises(RuntimeError, match="x86-64"):
        cpuid_mask.build(Path("/nonexistent"))


def test_a_later_sigsegv_handler_is_chained_not_installed(library: Path) -> None:
    """Python's faulthandler (pytest and torch's spawner enable it) installs its own SIGSEGV
    handler after the mask: CPUIDs after that still answer masked, and a real crash still gets
    faulthandler's report and the default action."""
    env = cpuid_mask.masked_env("avx2", library, _env())
    code = ("import faulthandler; faulthandler.enable(); import numpy;"
            "from qgnn.runtime import kernels; print(kernels.levels_supported())")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "avx512" not in done.stdout
    crash = subprocess.run([sys.executable, "-X", "faulthandler", "-c",
                            "import ctypes; ctypes.string_at(0)"], env=env, capture_output=True,
                           text=True, timeout=60, check=False)
    assert crash.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in crash.stderr
    handled = subprocess.run(
        [sys.executable, "-c", "import os, signal; signal.signal(signal.SIGSEGV, lambda *a: "
         "os._exit(7)); os.kill(os.getpid(), signal.SIGSEGV)"], env=env, capture_output=True,
        timeout=60, check=False)
    assert handled.returncode == 7


def test_a_machine_that_refuses_the_mask_is_named_not_run(tmp_path: Path, library: Path) -> None:
    """A kernel or sandbox can list cpuid_fault and still refuse it: the mask's constructor then
    exits, and `--below-best` (what ./run test loops over) must then list no level."""
    assert cpuid_mask.refused(library) is None
    source = tmp_path / "refuse.c"
    source.write_text('#include <stdio.h>\n#include <unistd.h>\n'
                      '__attribute__((constructor)) static void refuse(void) {\n'
                      '  fputs("qgnn cpuid_mask: CPUID faulting is not available", stderr);\n'
                      '  _exit(3);\n}\n')
    fake = tmp_path / "refuse.so"
    subprocess.run([cpuid_mask._compiler() or "cc", "-shared", "-fPIC", "-o", str(fake),
                    str(source)], check=True, timeout=120)
    assert "not available" in (cpuid_mask.refused(fake) or "")
    levels = subprocess.run(
        [sys.executable, "-m", "qgnn.bench.cpuid_mask", "--below-best", "--build-dir",
         str(library.parent)], env=_env(), capture_output=True, text=True, timeout=120,
        check=True).stdout.split()
    assert levels == cpuid_mask.levels_below_best()
