"""The switches that hold torch's FP32 libraries to the INT8 kernels' ISA level."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from qgnn.bench import bench_engine
from qgnn.bench import cpuid_mask as mask
from qgnn.bench.fp32_isa import ENV_NAMES, SWITCHES, constrained_env


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
    assert env["QGNN_CPUID_MASK"] == "avx2"
    assert constrained_env("avx512_vnni", base, cpuid_mask=lib) == base
    assert set(mask.LEVELS) == set(SWITCHES)
