"""The C kernels built by clang, not only GCC: every x86-64 level built with setup.py's own flags,
loaded beside the GCC install and run on the same inputs with the same bits out; every source
cross-compiled for both aarch64 levels without a warning or a fused multiply-add.

Users build with clang (macOS, many distributions' Pythons) and on aarch64, where a compiler
that contracts a*b+c or warns about a real bug breaks the bit-exact contract. clang comes from
the ``ziglang`` package (the compilers extra; tests/runtime/kernels/zig_clang.py). Slow: one
build of the four levels takes about a minute. Like every test in this folder each test runs
once per ISA level this host has (conftest's ``isa``).
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from qgnn.runtime import kernels
from qgnn.runtime.kernels import _ext
from qgnn.runtime.kernels._levels import COMPILE_FLAGS, LEVELS

sys.path.insert(0, str(Path(__file__).parent))

import zig_clang

ROOT = Path(__file__).resolve().parents[3]
CSRC = ROOT / "runtime" / "kernels" / "csrc"
DIAGNOSTIC = re.compile(r"\.[ch]:\d+:\d+: (warning|error):")
FUSED_ARM = re.compile(r"^\s*(fmla|fmls|fmadd|fmsub|fnmadd|fnmsub)\s", re.MULTILINE)
f32 = np.float32

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(zig_clang.ziglang_dir() is None,
                       reason="ziglang is not installed (its clang builds the kernels here; "
                              "pip install -e '.[compilers]')"),
    pytest.mark.skipif(_ext.ARCH != "x86_64", reason="the clang build is run on x86-64 hosts"),
]


@pytest.fixture(scope="module")
def clang_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """setup.py's build_ext with clang as CC: (folder of the level modules, build output)."""
    out = tmp_path_factory.mktemp("clang")
    env = {k: v for k, v in os.environ.items() if k not in ("CFLAGS", "LDSHARED", "LDFLAGS")}
    env["CC"] = f"{sys.executable} {zig_clang.__file__}"
    run = subprocess.run([sys.executable, "setup.py", "build_ext", "-b", str(out / "lib"),
                          "-t", str(out / "tmp")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out / "lib" / "qgnn" / "runtime" / "kernels", run.stdout + run.stderr


def _import_from(folder: Path, level: str) -> ModuleType:
    """The clang module of ``level`` imported under its real name without displacing the GCC
    module in sys.modules (a single-phase extension registers itself there)."""
    name = _ext.module_name(level)
    [path] = folder.glob(f"{_ext.MODULE_PREFIX}{level}.*")
    saved = sys.modules.get(name)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = saved
    return module


@pytest.fixture
def on_clang(clang_build: tuple[Path, str], isa: str,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    """Calling it routes every later kernel call at ``isa`` to the clang module."""
    module = _import_from(clang_build[0], isa)
    gcc_load = _ext._load

    def switch() -> None:
        monkeypatch.setattr(_ext, "_load", lambda level: module if level == isa else
                            gcc_load(level))
    yield switch


def test_clang_builds_every_level_without_a_warning(clang_build: tuple[Path, str]) -> None:
    folder, log = clang_build
    built = {p.name.split(".")[0] for p in folder.glob(f"{_ext.MODULE_PREFIX}*")}
    assert built == {f"{_ext.MODULE_PREFIX}{lvl}" for lvl in LEVELS["x86_64"]}, log[-3000:]
    assert not DIAGNOSTIC.findall(log), "\n".join(
        line for line in log.splitlines() if DIAGNOSTIC.search(line))


def test_clang_module_says_clang_and_sees_the_cpu_gcc_sees(clang_build, isa) -> None:
    """Its CPU check must find the same levels: zig's compiler-rt stubs __builtin_cpu_supports
    to "nothing", which left a clang install at baseline before cpu.c asked CPUID itself."""
    module = _import_from(clang_build[0], isa)
    info = module.build_info()
    assert info["compiler"].startswith("clang") and info["isa"] == isa
    gcc = _ext.ext("baseline")
    assert "clang" not in gcc.build_info()["compiler"], "the install under test is not GCC's"
    for level in LEVELS["x86_64"]:
        assert module.cpu_supports(level) == gcc.cpu_supports(level), level


def _bits(value: object) -> list[np.ndarray]:
    """Every array in a result, as raw bytes (NaN payloads and -0.0 compare too)."""
    arrays = value if isinstance(value, tuple) else (value,)
    return [np.ascontiguousarray(a).view(np.uint8) for a in arrays]


def _csr(rng: np.random.Generator, num_dst: int, num_edges: int, num_src: int):
    dst = np.sort(rng.integers(0, num_dst, num_edges))
    indptr = np.zeros(num_dst + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=num_dst), out=indptr[1:])
    return indptr, rng.integers(0, num_src, num_edges).astype(np.int64), dst.astype(np.int64)


def _cases(isa: str) -> dict[str, Callable[[], object]]:
    """A few kernels of every kind (float chains, float requantisation, integer gathers, the
    tables), on inputs wide enough for each level's vector paths and two threads."""
    rng = np.random.default_rng(7)
    n, feats = 300, 130
    indptr, src, dst = _csr(rng, n, 4000, n)
    x_q = rng.integers(0, 256, (n, feats), dtype=np.uint8)
    x = rng.standard_normal((n, feats)).astype(f32)
    w_edge = rng.standard_normal(src.size).astype(f32)
    w_q = rng.integers(0, 256, src.size, dtype=np.uint8)
    heads = 4
    logits = (rng.standard_normal((src.size, heads)) * 8).astype(f32)
    s, t = (rng.standard_normal((n, heads)).astype(f32) for _ in range(2))
    inv = (1 / np.sqrt(rng.integers(1, 50, n).astype(f32))).astype(f32)
    cols = rng.standard_normal(feats).astype(f32)
    w_lin = rng.integers(-128, 128, (feats, 70), dtype=np.int8)
    bias = rng.integers(-5000, 5000, 70).astype(np.int32)
    att = rng.integers(-128, 128, (2, feats // 2), dtype=np.int8)
    ops = [("mul", 0, cols), ("add", 0, f32(0.1)), ("div", 0, f32(3.0)), ("relu", 0, None),
           ("affine_f64", 0, (cols.astype(np.float64), cols[::-1].astype(np.float64)))]
    k = {"isa": isa, "num_threads": 2}
    return {
        "float_step_q8": lambda: kernels.float_step_q8(x_q, 0.05, 7, ops, 0.04, 120, **k),
        "aggregate_f32 weighted mean": lambda: kernels.aggregate_f32(
            x, indptr, src, "mean", w_edge, **k),
        "aggregate_f32 max": lambda: kernels.aggregate_f32(x, indptr, src, "max", **k),
        "edge_softmax_f32": lambda: kernels.edge_softmax_f32(logits, indptr, **k),
        "gat_logits": lambda: kernels.gat_logits(s, t, src, dst, 0.2, 0.05, 128,
                                                 dequantize=True, **k),
        "head_scores": lambda: kernels.head_scores(x_q, 9, att, np.array([0.01, 0.3], f32),
                                                   **k),
        "qaggregate weighted mean": lambda: kernels.qaggregate(
            x_q, 3, indptr, src, 0.0173, 11, "mean", w_q, 100, **k),
        "message_aggregate": lambda: kernels.message_aggregate(
            x_q, 3, indptr, src, w_q, 100, 0.0091, 20, 0.0431, 7, "sum", **k),
        "gcn_aggregate": lambda: kernels.gcn_aggregate(
            x_q, 3, indptr, src, inv, 0.004, 120, 0.021, 9, 0.37, 5, **k),
        "qlinear": lambda: kernels.qlinear(x_q, 71, w_lin, bias, 0.00123, 128, **k),
        # the narrow path (M <= 8 / 16 by level: qlinear_narrow.c), an odd width included
        "qlinear narrow 8": lambda: kernels.qlinear(x_q, 71, w_lin[:, :8].copy(), bias[:8],
                                                    0.00123, 128, **k),
        "qlinear narrow 13": lambda: kernels.qlinear(x_q, 71, w_lin[:, :13].copy(), bias[:13],
                                                     0.00123, 128, **k),
        "quantize_u8": lambda: kernels.quantize_u8(x * 40, 0.37, 128, **k),
        "dequantize_u8": lambda: kernels.dequantize_u8(x_q, 0.0371, 17, **k),
        "int8_topk": lambda: kernels.int8_topk(w_lin[:, 0], w_lin.T.copy(), 9, **k),
    }


def test_clang_kernels_equal_gcc_bit_for_bit(isa: str, on_clang: Callable[[], None]) -> None:
    gcc = {name: _bits(run()) for name, run in _cases(isa).items()}
    on_clang()
    assert "clang" in _ext.ext(isa).build_info()["compiler"]
    differ = [name for name, run in _cases(isa).items()
              if not all(np.array_equal(a, b) for a, b in zip(_bits(run()), gcc[name],
                                                               strict=True))]
    assert not differ, f"clang's {isa} module differs from GCC's in {differ}"


def _arm_args(level: str, flags: tuple[str, ...], source: Path, contract_off: bool) -> list[str]:
    """setup.py's flags for one aarch64 level, to assembly (no binutils needed to read it)."""
    common = [f for f in COMPILE_FLAGS if contract_off or f != "-ffp-contract=off"]
    return [*common, "-fwrapv", "-Wall", "-fPIC", "-DNDEBUG", f"-DQGNN_LEVEL={level}", *flags,
            "-I", np.get_include(), "-I", sysconfig.get_paths()["include"],
            "-S", "-o", "-", str(source)]


def _arm_compile(level: str, source: Path, contract_off: bool = True):
    cmd = zig_clang.clang_command(_arm_args(level, LEVELS["aarch64"][level], source,
                                            contract_off), target=zig_clang.AARCH64)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def arm_builds() -> dict[tuple[str, str], subprocess.CompletedProcess]:
    """Every kernel source at every aarch64 level, as (level, file) -> the compile."""
    jobs = [(level, src) for level in LEVELS["aarch64"] for src in sorted(CSRC.glob("*.c"))]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        done = pool.map(lambda job: _arm_compile(*job), jobs)
        return {(level, src.name): run for (level, src), run in zip(jobs, done, strict=True)}


def test_every_source_cross_compiles_for_aarch64_without_a_warning(arm_builds) -> None:
    assert {level for level, _ in arm_builds} == {"baseline", "dotprod"}
    failed = {key: run.stderr[-2000:] for key, run in arm_builds.items()
              if run.returncode != 0 or run.stderr.strip()}
    assert not failed, failed


def test_aarch64_code_has_no_fused_multiply_add(arm_builds) -> None:
    """-ffp-contract=off holds on aarch64 too; without it clang does fuse (the control), so the
    search would see a contraction if one came back."""
    fused = [key for key, run in arm_builds.items() if FUSED_ARM.search(run.stdout)]
    assert not fused, f"fused multiply-adds in {fused}"
    control = _arm_compile("dotprod", CSRC / "float_step_q8.c", contract_off=False)
    assert control.returncode == 0 and FUSED_ARM.search(control.stdout)
