"""The ISA levels the kernels are compiled at, per machine architecture, lowest first.

Each level is the whole kernel set built as its own extension module
(``qgnn.runtime.kernels._qgnn_kernels_<level>``) with the listed GCC/Clang flags. setup.py reads
this file with ``runpy`` (the package is not importable while it builds), so it imports nothing
and the loader and the build can never disagree on names or order.
"""

from __future__ import annotations

MODULE_PREFIX = "_qgnn_kernels_"

# The C sources every level module compiles (runtime/kernels/csrc): a new kernel is one more
# name here. The first and last need Python's and numpy's headers (the module itself and the
# NEP 49 allocator); the others are plain C, which the tests also build without Python.
KERNEL_SOURCES = ("_qgnn_kernels", "parallel", "aggregate_q8", "message_aggregate_q8",
                  "gcn_aggregate_q8", "aggregate_f32", "edge_softmax", "qlinear", "qlinear_narrow",
                  "topk", "quantize", "cpu", "self_loops", "float_step_q8", "gat_logits", "lut_u8",
                  "buffer_pool")
PYTHON_SOURCES = ("_qgnn_kernels", "buffer_pool")
# GCC/Clang flags of every level, before its own: no a*b+c contraction (the bit-exact contract),
# threads, and only the module init exported.
COMPILE_FLAGS = ("-O3", "-pthread", "-ffp-contract=off", "-fvisibility=hidden")

LEVELS: dict[str, dict[str, tuple[str, ...]]] = {
    "x86_64": {
        "baseline": ("-march=x86-64", "-mtune=generic"),
        "avx2": ("-march=x86-64-v3", "-mtune=generic"),
        "avx512": ("-march=x86-64-v4", "-mtune=generic"),
        "avx512_vnni": ("-march=x86-64-v4", "-mavx512vnni", "-mtune=generic"),
    },
    "aarch64": {
        "baseline": ("-march=armv8-a",),
        "dotprod": ("-march=armv8.2-a+dotprod",),
    },
}

_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


def architecture(machine: str) -> str:
    """``platform.machine()`` as a key of LEVELS (AMD64 and arm64 spelled the Linux way)."""
    lowered = machine.lower()
    return _ALIASES.get(lowered, lowered)


def levels_for(machine: str) -> dict[str, tuple[str, ...]]:
    """Level name -> compiler flags on ``machine``, lowest first; other machines get the
    compiler's default target only."""
    return LEVELS.get(architecture(machine), {"baseline": ()})
