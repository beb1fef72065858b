"""clang from the ``ziglang`` package, usable as setuptools' ``CC`` and as a cross-compiler.

Run as ``CC="python tests/runtime/kernels/zig_clang.py" python setup.py build_ext ...``.
Compile steps go to the real clang driver (``python -m ziglang clang``), so setup.py's flags
reach clang exactly as a user's clang sees them; ``zig cc`` would not do: it reads ``-march``
as a zig CPU name (``x86-64-v3`` fails), rejects ``-mtune=generic`` and turns ``-O3`` into
``-O2``. The package puts clang's own headers (stddef.h, immintrin.h, arm_neon.h) where the
driver does not look, hence ``-resource-dir``. Link steps (``-shared``) go to ``zig cc``,
which brings a linker, glibc stubs and compiler-rt, whose memset and memcpy the kernels then
call: it links for the generic CPU of the host's architecture, since zig's default (the build
host's own CPU) put AVX-512 code into the baseline module on an AVX-512 host.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

AARCH64 = "aarch64-linux-gnu"
# Static executables for the emulator (arm_emulator.py) link musl: zig ships it for static links.
AARCH64_STATIC = "aarch64-linux-musl"
# The glibc version zig's generic headers are configured for when cross-compiling (they need
# __GLIBC_MINOR__ from the driver, as zig cc passes it); 2.17 is the oldest aarch64 glibc.
_AARCH64_GLIBC_MINOR = 17


def ziglang_dir() -> Path | None:
    """The installed ziglang package folder, or None when ziglang is not installed."""
    try:
        import ziglang
    except ImportError:
        return None
    return Path(ziglang.__file__).parent


def _zig(*args: str) -> list[str]:
    return [sys.executable, "-m", "ziglang", *args]


def clang_command(args: list[str], target: str | None = None) -> list[str]:
    """The clang driver with ``args``: the host target (its system headers) when ``target`` is
    None, else ``target`` with zig's bundled glibc headers for it."""
    zig = ziglang_dir()
    if zig is None:
        raise RuntimeError("ziglang is not installed (pip install ziglang)")
    cmd = _zig("clang", f"-resource-dir={zig / 'lib'}")
    if target is not None:
        libc = zig / "lib" / "libc" / "include"
        arch, abi = target.split("-", 1)[0], target.rsplit("-", 1)[-1]
        cmd += [f"--target={target}", "-nostdinc", "-isystem", str(zig / "lib" / "include")]
        if abi == "musl":
            folders = (f"{arch}-linux-musl", "generic-musl", f"{arch}-linux-any",
                       "any-linux-any")
        else:
            cmd += ["-D", f"__GLIBC_MINOR__={_AARCH64_GLIBC_MINOR}"]
            folders = (f"{arch}-linux-gnu", "generic-glibc", f"{arch}-linux-any",
                       "any-linux-any")
        for folder in folders:
            cmd += ["-isystem", str(libc / folder)]
    return cmd + args


def version() -> str:
    """clang's first ``--version`` line, e.g. ``clang version 22.1.8``."""
    out = subprocess.run(clang_command(["--version"]), capture_output=True, text=True,
                         check=True)
    return out.stdout.splitlines()[0].strip()


def link_command(args: list[str]) -> list[str]:
    """zig cc linking ``args`` for the host architecture's generic CPU."""
    return _zig("cc", "-target", f"{platform.machine()}-linux-gnu", *args)


def static_link_command(objects: list[str], out: str, target: str = AARCH64_STATIC
                        ) -> list[str]:
    """zig cc linking ``objects`` into a static executable for ``target`` (musl)."""
    return _zig("cc", "-target", target, "-static", "-o", out, *objects)


def main(args: list[str]) -> int:
    cmd = link_command(args) if "-shared" in args else clang_command(args)
    return subprocess.run(cmd, env=os.environ).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
