"""Holds the FP32 comparators' libraries to the instruction-set level the INT8 kernels run at.

``QGNN_ISA=baseline`` drops only qgnn's kernels to SSE2; torch (ATen's vectorised kernels, MKL,
oneDNN) and onnxruntime (MLAS) still pick the widest vectors the CPU has. A user whose CPU has
only 128-bit vectors runs both at that width, so a fair INT8 / FP32 ratio at a lower level needs
the comparators constrained too. Each library reads its switch once, when it loads, so the
constrained routes run in a child process started with :func:`constrained_env`.

What each library offers (the lowest setting of each is used for ``baseline``):

- ATen: ``ATEN_CPU_CAPABILITY`` = ``default`` | ``avx2`` | ``avx512`` picks the build of its
  vectorised kernels (``default`` is built without AVX flags: SSE2 on x86-64); checked with
  ``torch.backends.cpu.get_cpu_capability()``.
- MKL (dense GEMM and the sparse CSR x dense product behind ``torch.sparse.mm``):
  ``MKL_ENABLE_INSTRUCTIONS`` caps its code path; its lowest value is ``SSE4_2`` (128-bit, a
  superset of SSE2, so the FP32 side never gets less than INT8 has).
- oneDNN: ``ONEDNN_MAX_CPU_ISA``; lowest ``SSE41``.
- onnxruntime's MLAS: no switch. ``MLAS_PLATFORM``'s constructor (``core/mlas/lib/platform.cpp``)
  reads CPUID and XGETBV directly and has no environment variable or session option. Where
  Linux offers CPUID faulting (``cpuid_fault`` in /proc/cpuinfo), the child is started with
  ``bench/csrc/cpuid_mask.c`` preloaded: every CPUID of the process traps and answers with the
  feature bits above the level cleared, so MLAS (and torch's cpuinfo, numpy, qgnn's own
  dispatch) see a CPU of that level. Without it MLAS keeps the CPU's best and the matched ratio
  stays conservative for INT8; the result file says which.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

# INT8 level -> (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA)
SWITCHES: dict[str, tuple[str, str, str]] = {
    "baseline": ("default", "SSE4_2", "SSE41"),
    "avx2": ("avx2", "AVX2", "AVX2"),
    "avx512": ("avx512", "AVX512", "AVX512_CORE"),
}
ENV_NAMES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
MLAS_NOTE = ("onnxruntime (MLAS) has no ISA switch: it dispatches on CPUID at load, so the "
             "FP32 export on onnxruntime and the MatMuls in qgnn's FP32 executor stay at the "
             "CPU's best level")
MLAS_MASKED_NOTE = ("onnxruntime (MLAS) held too: CPUID masked to {level} by the preloaded "
                    "cpuid_mask (CPUID faulting), so every library dispatches as on a CPU of "
                    "that level")
CPUID_MASK_SOURCE = Path(__file__).parent / "csrc" / "cpuid_mask.c"
# Levels the CPUID mask knows; each clears the feature bits above it (see cpuid_mask.c).
MASK_LEVELS = ("baseline", "avx2", "avx512")


def cpuid_mask_unavailable() -> str | None:
    """Why this machine cannot mask CPUID for a child process, or None when it can."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        here = f"{platform.system()} {platform.machine()}"
        return f"CPUID masking needs Linux on x86-64 (this is {here})"
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8").split()
    except OSError as exc:
        return f"cannot read /proc/cpuinfo: {exc}"
    if "cpuid_fault" not in flags:
        return "the CPU or hypervisor offers no CPUID faulting (no cpuid_fault in /proc/cpuinfo)"
    if _compiler() is None:
        return "no C compiler (cc, gcc or clang) to build bench/csrc/cpuid_mask.c"
    return None


def _compiler() -> str | None:
    for name in (os.environ.get("CC", ""), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def build_cpuid_mask(out_dir: Path) -> Path:
    """Compiles the CPUID-masking preload into ``out_dir``; raises RuntimeError naming the
    reason when the machine cannot mask CPUID or the compiler fails."""
    reason = cpuid_mask_unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    out = Path(out_dir) / "cpuid_mask.so"
    cmd = [str(_compiler()), "-O2", "-shared", "-fPIC", "-o", str(out), str(CPUID_MASK_SOURCE)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building cpuid_mask failed: {done.stderr.strip()[:500]}")
    return out


def constrained_env(level: str, base: dict[str, str] | None = None,
                    cpuid_mask: Path | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the switches that hold torch's
    libraries to ``level``; levels without a narrower setting (VNNI, ARM) change nothing.
    With ``cpuid_mask`` (from :func:`build_cpuid_mask`) the child also preloads it, masked to
    ``level``, which holds onnxruntime's MLAS as well."""
    env = dict(os.environ if base is None else base)
    env.pop("MKL_CBWR", None)  # a reproducibility mode would also change MKL's code path
    for name, value in zip(ENV_NAMES, SWITCHES.get(level, ()), strict=False):
        env[name] = value
    if cpuid_mask is not None and level in MASK_LEVELS:
        preload = env.get("LD_PRELOAD", "")
        env["LD_PRELOAD"] = f"{cpuid_mask}:{preload}" if preload else str(cpuid_mask)
        env["QGNN_CPUID_MASK"] = level
        env.pop("PYTHONFAULTHANDLER", None)  # its SIGSEGV handler would report every CPUID
    return env


def fp32_isa_state() -> dict[str, Any]:
    """What the FP32 libraries of this process run at, for the result file."""
    import torch

    state: dict[str, Any] = {name: os.environ.get(name) for name in ENV_NAMES}
    state["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    state["torch_mkl"] = bool(torch.backends.mkl.is_available())
    masked = os.environ.get("QGNN_CPUID_MASK")
    state["cpuid_mask"] = masked
    state["onnxruntime"] = MLAS_MASKED_NOTE.format(level=masked) if masked else MLAS_NOTE
    from qgnn.runtime import kernels

    state["kernel_levels_supported"] = list(kernels.levels_supported())
    return state
