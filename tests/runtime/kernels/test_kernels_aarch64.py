"""The kernels' aarch64 builds run, under emulation, and answer every kernel call with the bytes
the host's build answers.

Users serve on ARM (Graviton, Ampere, Apple silicon under Linux); the brief's promise is the same
integers on every CPU. Cross-compiling (test_other_compilers.py) shows the code builds; this runs
it. kernel_driver.c puts every C kernel behind a byte protocol; it is built with setup.py's
flags for each aarch64 level (clang from the ``ziglang`` package, linked static against musl)
and run by ``unicorn`` (arm_emulator.py), and built natively for this host's level (conftest's
``isa``: every level this host has). driver_calls.py's requests (every kernel, the shapes where
their code paths divide, several parts, tables, 4-bit outputs, ties, NaN) must get the same
answers from all of them, and the native driver's must equal the installed extension's.
Slow (about two minutes of builds), and needs the compilers extra.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from qgnn.runtime import kernels
from qgnn.runtime.kernels._levels import COMPILE_FLAGS, KERNEL_SOURCES, LEVELS, PYTHON_SOURCES

sys.path.insert(0, str(Path(__file__).parent))

import driver_calls
import zig_clang

ROOT = Path(__file__).resolve().parents[3]
CSRC = ROOT / "runtime" / "kernels" / "csrc"
DRIVER = Path(__file__).parent / "kernel_driver.c"
# setup.py's sources and flags, less the two that need Python's headers; -fwrapv, -DNDEBUG and
# -Wall come from Python's own CFLAGS in setup.py's build
SOURCES = [DRIVER, *(CSRC / f"{name}.c" for name in KERNEL_SOURCES if name not in PYTHON_SOURCES)]
COMMON = [*COMPILE_FLAGS, "-fwrapv", "-DNDEBUG", "-Wall", "-I", str(CSRC)]

try:
    import arm_emulator
except ImportError:  # unicorn is in the compilers extra
    arm_emulator = None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(zig_clang.ziglang_dir() is None or arm_emulator is None,
                       reason="ziglang and unicorn are not installed (the aarch64 build and its "
                              "emulator; pip install -e '.[compilers]')"),
    pytest.mark.skipif(kernels._ext.ARCH != "x86_64",
                       reason="the emulated aarch64 run is checked against x86-64 hosts"),
]

# Kernels whose float32 results go through the C library's expf: the FP32 comparison route's
# edge softmax (served INT8 GAT takes the integer table, q_edge_softmax, exact everywhere).
# musl's expf (the emulated build's) and glibc's differ by up to 2 ulp on some outputs; an
# x86-64 musl build gives the aarch64 bits exactly, so the C library differs, not the CPU.
LIBM_DEPENDENT = ("edge_softmax_f32",)


def _compile_all(commands: list[list[str]], warnings: bool) -> None:
    """Runs the compiles in parallel; fails on an error, and on a warning unless ``warnings``."""
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        runs = list(pool.map(lambda c: subprocess.run(c, capture_output=True, text=True,
                                                      timeout=900), commands))
    bad = [(c[-1], r.stderr[-2000:]) for c, r in zip(commands, runs, strict=True)
           if r.returncode != 0 or (not warnings and "warning:" in r.stderr)]
    assert not bad, bad


@pytest.fixture(scope="module")
def arm_drivers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The driver built at each aarch64 level, static: level -> executable."""
    out = tmp_path_factory.mktemp("aarch64")
    commands, objects = [], {}
    for level, flags in LEVELS["aarch64"].items():
        for src in SOURCES:
            obj = out / f"{level}-{src.stem}.o"
            objects.setdefault(level, []).append(str(obj))
            commands.append(zig_clang.clang_command(
                [*COMMON, f"-DQGNN_LEVEL={level}", *flags, "-c", "-o", str(obj), str(src)],
                target=zig_clang.AARCH64_STATIC))
    _compile_all(commands, warnings=False)
    exes = {}
    for level, objs in objects.items():
        exe = out / f"driver-{level}"
        link = subprocess.run(zig_clang.static_link_command(objs, str(exe)),
                              capture_output=True, text=True, timeout=900)
        assert link.returncode == 0, link.stderr[-3000:]
        exes[level] = exe
    return exes


@pytest.fixture(scope="module")
def native_drivers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The driver built natively by the compiler setup.py uses, at every x86-64 level."""
    out = tmp_path_factory.mktemp("native")
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    exes = {}
    commands = []
    for level, flags in LEVELS["x86_64"].items():
        exe = out / f"driver-{level}"
        commands.append([cc, *COMMON, f"-DQGNN_LEVEL={level}", *flags, "-o", str(exe),
                         *map(str, SOURCES), "-lm"])
        exes[level] = exe
    # GCC 12's -Wmaybe-uninitialized misreads qlinear's partly stored tiles; the extension's
    # build prints the same, and clang (above, test_other_compilers.py) is held warning-free
    _compile_all(commands, warnings=True)
    return exes


def _native(exe: Path, request: bytes) -> bytes:
    run = subprocess.run([str(exe)], input=request, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    return run.stdout


@pytest.fixture(scope="module")
def requests() -> tuple[list[driver_calls.Case], bytes]:
    cases = driver_calls.cases()
    assert len({name for name, _, _ in cases}) == len(cases)
    return cases, b"".join(driver_calls.encode(op, args) for _, op, args in cases)


@pytest.mark.parametrize("arm_level", ["baseline", "dotprod"])
def test_aarch64_build_answers_every_kernel_call_as_the_host_does(
        arm_level: str, isa: str, arm_drivers, native_drivers, requests) -> None:
    cases, request = requests
    want = driver_calls.split(_native(native_drivers[isa], request), cases)
    result = arm_emulator.run(arm_drivers[arm_level], request,
                              hwcap=arm_emulator.HWCAP_FP | arm_emulator.HWCAP_ASIMD
                              | arm_emulator.HWCAP_ASIMDDP)
    assert result.exit_code == 0, result.stderr
    got = driver_calls.split(result.stdout, cases)
    differ = [name for name in want if got[name] != want[name] and name not in LIBM_DEPENDENT]
    assert not differ, f"aarch64 {arm_level} differs from x86-64 {isa} on {differ}"
    for name in LIBM_DEPENDENT:  # the same up to the C libraries' expf
        (rc_got, bufs_got), (rc_want, bufs_want) = got[name], want[name]
        assert rc_got == rc_want and bufs_got[:-1] == bufs_want[:-1]
        ulps = np.abs(np.frombuffer(bufs_got[-1], np.int32).astype(np.int64)
                      - np.frombuffer(bufs_want[-1], np.int32))
        assert ulps.max() <= 2, (name, ulps.max())
    # the requests did work: outputs written, sentinels of real kernels not all zero
    assert sum(any(b.strip(b"\0") for b in bufs[-2:]) for _, bufs in got.values()) > len(cases) // 2


def test_the_driver_answers_as_the_installed_extension(isa: str, native_drivers) -> None:
    """The native driver is the extension's C: its qlinear and qaggregate equal the module's
    (which the rest of this folder holds to the numpy oracles)."""
    rng = np.random.default_rng(3)
    x, w = rng.integers(0, 256, (37, 130), dtype=np.uint8), rng.integers(-128, 128, (130, 70),
                                                                         dtype=np.int8)
    bias = rng.integers(-5000, 5000, 70, dtype=np.int32)
    mult = (rng.random(70) * 2e-3).astype(np.float32)
    args = [x, 37, 130, 9, w, 70, bias, mult, 100, 8, None, 0, np.zeros((37, 70), np.uint8), 2]
    answer = _native(native_drivers[isa], driver_calls.encode(1, args))
    _, bufs, _ = driver_calls.decode(answer, args)
    want = kernels.qlinear(x, 9, w, bias, mult, 100, num_threads=2, isa=isa)
    assert bufs[-1] == want.tobytes()


def test_the_emulated_cpu_check_reads_hwcap(arm_drivers) -> None:
    """dotprod is reported exactly when the kernel says the core has it (AT_HWCAP), so a plain
    ARMv8-A core never loads the dotprod module."""
    name, op, args = driver_calls.cpu_case("dotprod")
    base = driver_calls.encode(op, args)
    for hwcap, want in ((arm_emulator.HWCAP_FP | arm_emulator.HWCAP_ASIMD, 0),
                        (arm_emulator.HWCAP_FP | arm_emulator.HWCAP_ASIMD
                         | arm_emulator.HWCAP_ASIMDDP, 1)):
        result = arm_emulator.run(arm_drivers["baseline"], base, hwcap=hwcap)
        assert result.exit_code == 0
        assert driver_calls.decode(result.stdout, args)[0] == want, name
