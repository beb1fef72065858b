"""Runs a process as if on a CPU of a lower x86-64 level: every library in it sees that CPUID.

qgnn's kernels can be forced to a level (``QGNN_ISA``), but onnxruntime's MLAS picks its kernels
from CPUID when it loads and has no switch, and neither has numpy's or torch's cpuinfo. So on a
VNNI machine the suite never ran onnxruntime's AVX2 ``u8 x s8`` kernel, the one that saturates
(issue 15), and a benchmark at ``QGNN_ISA=baseline`` set SSE2 INT8 against AVX-512 FP32.

Where Linux offers CPUID faulting (``cpuid_fault`` in /proc/cpuinfo), ``csrc/cpuid_mask.c``,
preloaded, traps every CPUID of the process and answers with the bits above the level cleared
(see that file for what each level clears). It is compiled at run time with the system C
compiler. ``python -m qgnn.bench.cpuid_mask avx2 -- CMD ...`` runs CMD that way;
``--check`` only says whether this machine can, ``--below-best`` which levels it can give
(``./run test`` runs the onnxruntime parity tests once at each).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).parent / "csrc" / "cpuid_mask.c"
# Levels the mask knows, lowest first; each clears the feature bits above it.
LEVELS = ("baseline", "avx2", "avx512")
ENV_LEVEL = "QGNN_CPUID_MASK"


def unavailable() -> str | None:
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


def build(out_dir: Path) -> Path:
    """Compiles the preload into ``out_dir`` (rebuilt when the source is newer); raises
    RuntimeError naming the reason when the machine cannot mask CPUID or the compiler fails."""
    reason = unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    out = Path(out_dir) / "cpuid_mask.so"
    if out.exists() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.so")
    cmd = [str(_compiler()), "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE), "-ldl"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building cpuid_mask failed: {done.stderr.strip()[:500]}")
    tmp.replace(out)
    return out


def refused(library: Path) -> str | None:
    """Why a process masked with ``library`` does not start (a kernel or sandbox that lists
    ``cpuid_fault`` but refuses the call, say), or None when it does."""
    done = subprocess.run([sys.executable, "-c", "pass"], capture_output=True, text=True,
                          env=masked_env(LEVELS[0], library), timeout=60, check=False)
    if done.returncode == 0:
        return None
    return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else \
        f"a masked process exited with {done.returncode}"


def ready(build_dir: Path) -> tuple[Path | None, str | None]:
    """(the built preload, None) when a masked process starts here, else (None, why not)."""
    try:
        library = build(build_dir)
    except RuntimeError as exc:
        return None, str(exc)
    reason = refused(library)
    return (None, reason) if reason else (library, None)


def levels_below_best() -> list[str]:
    """The mask's levels under the best one qgnn's dispatch finds on this CPU (a CPU at a
    level, less what it has above: AVX-512 without VNNI, AVX2 without AVX-512, SSE only)."""
    from qgnn.runtime import kernels

    native = list(kernels.levels_supported())
    return [level for level in LEVELS if level in native[:-1]]


def masked_env(level: str, library: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this environment) for a child that preloads ``library`` masked to
    ``level``."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; the mask knows {', '.join(LEVELS)}")
    env = dict(os.environ if base is None else base)
    preload = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{library}:{preload}" if preload else str(library)
    env[ENV_LEVEL] = level
    return env


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    head = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m qgnn.bench.cpuid_mask",
                                     usage="%(prog)s [--build-dir DIR] LEVEL -- COMMAND ... "
                                           "| %(prog)s --check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("level", choices=LEVELS, nargs="?")
    parser.add_argument("--check", action="store_true",
                        help="exit 0 if a masked process starts here, else print why and exit 1")
    parser.add_argument("--below-best", action="store_true",
                        help="print the levels the mask can give below this CPU's best "
                             "(none, with the reason on stderr, where it cannot mask)")
    parser.add_argument("--build-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / f"qgnn-cpuid-mask-{os.getuid()}")
    args = parser.parse_args(head)
    if args.check or args.below_best:
        _, reason = ready(args.build_dir)
        if args.check:
            print(reason or "CPUID masking available")
            return 1 if reason else 0
        if reason:
            print(f"cpuid_mask: {reason}", file=sys.stderr)
        print(" ".join([] if reason else levels_below_best()))
        return 0
    if args.level is None or not command:
        parser.error("give a level and, after --, a command")
    try:
        library = build(args.build_dir)
    except RuntimeError as exc:
        print(f"cpuid_mask: {exc}", file=sys.stderr)
        return 1
    return subprocess.run(command, env=masked_env(args.level, library), check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
