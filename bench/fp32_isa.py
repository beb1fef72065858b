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
  Linux offers CPUID faulting, the child preloads the CPUID mask of
  :mod:`qgnn.bench.cpuid_mask`, so MLAS (and torch's cpuinfo, numpy, qgnn's own dispatch) see
  a CPU of that level. Without it MLAS keeps the CPU's best and the matched ratio stays
  conservative for INT8; the result file says which.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qgnn.bench.cpuid_mask import ENV_LEVEL, LEVELS, masked_env

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


def constrained_env(level: str, base: dict[str, str] | None = None,
                    cpuid_mask: Path | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the switches that hold torch's
    libraries to ``level``; levels without a narrower setting (VNNI, ARM) change nothing.
    With ``cpuid_mask`` (from :func:`qgnn.bench.cpuid_mask.build`) the child also preloads it,
    masked to ``level``, which holds onnxruntime's MLAS as well."""
    env = dict(os.environ if base is None else base)
    env.pop("MKL_CBWR", None)  # a reproducibility mode would also change MKL's code path
    for name, value in zip(ENV_NAMES, SWITCHES.get(level, ()), strict=False):
        env[name] = value
    if cpuid_mask is not None and level in LEVELS:
        env = masked_env(level, cpuid_mask, env)
    return env


def fp32_isa_state() -> dict[str, Any]:
    """What the FP32 libraries of this process run at, for the result file."""
    import torch

    state: dict[str, Any] = {name: os.environ.get(name) for name in ENV_NAMES}
    state["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    state["torch_mkl"] = bool(torch.backends.mkl.is_available())
    masked = os.environ.get(ENV_LEVEL)
    state["cpuid_mask"] = masked
    state["onnxruntime"] = MLAS_MASKED_NOTE.format(level=masked) if masked else MLAS_NOTE
    from qgnn.runtime import kernels

    state["kernel_levels_supported"] = list(kernels.levels_supported())
    return state
