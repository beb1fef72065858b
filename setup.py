"""Maps the top-level source folders onto the one ``qgnn`` import namespace.

The repository keeps the design's layout (``graph/ training/ exporter/ runtime/ bench/``) while the
installed distribution exposes them as ``qgnn.graph``, ``qgnn.training`` and so on, never as bare
top-level modules in site-packages.
"""

import platform
import runpy
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
FOLDERS = {"qgnn": "qgnn", "qgnn.contract": "contract", "qgnn.graph": "graph",
           "qgnn.training": "training", "qgnn.exporter": "exporter", "qgnn.runtime": "runtime",
           "qgnn.bench": "bench"}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages, package_dir = [], {}
    for name, folder in FOLDERS.items():
        package_dir[name] = folder
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder)
            packages.append(".".join([name, *rel.parts]))
    return packages, package_dir


class _BuildKernels(build_ext):
    """Compiles qgnn's C kernels once per ISA level, against the numpy headers of the build
    environment.

    Every level module is optional: if numpy's headers or a C compiler are missing, or one level
    fails to compile (an old compiler without -march=x86-64-v4, say), the install still succeeds;
    the loader reports which levels are missing and the runtime uses the levels that were built,
    or the portable ONNX path when none was.
    """

    def build_extensions(self) -> None:
        try:
            import numpy
        except ImportError:
            print("qgnn: numpy not importable at build time; skipping the compiled kernels")
            return
        gcc_like = self.compiler.compiler_type == "unix"
        if not gcc_like:  # the -march flags are GCC/Clang's; elsewhere build the baseline only
            self.extensions = [e for e in self.extensions if e.name.endswith("_baseline")]
        for ext in self.extensions:
            ext.include_dirs.append(numpy.get_include())
            if gcc_like:
                ext.extra_compile_args += [*_levels["COMPILE_FLAGS"], *LEVEL_FLAGS[ext.name]]
                ext.extra_link_args += ["-pthread"]
        super().build_extensions()

    def build_extension(self, ext: Extension) -> None:
        """Each level gets its own object folder: the levels share source files, and objects of
        one level must never be linked into another."""
        base = self.build_temp
        self.build_temp = str(Path(base) / ext.name.rsplit(".", 1)[-1])
        try:
            super().build_extension(ext)
        finally:
            self.build_temp = base


KERNEL_DIR = "runtime/kernels/csrc"
_levels = runpy.run_path(str(ROOT / "runtime/kernels/_levels.py"))
KERNEL_SOURCES: tuple[str, ...] = _levels["KERNEL_SOURCES"]
LEVEL_FLAGS: dict[str, tuple[str, ...]] = {}
kernels: list[Extension] = []
for level, flags in _levels["levels_for"](platform.machine()).items():
    name = f"qgnn.runtime.kernels.{_levels['MODULE_PREFIX']}{level}"
    LEVEL_FLAGS[name] = flags
    kernels.append(Extension(
        name, sources=[f"{KERNEL_DIR}/{source}.c" for source in KERNEL_SOURCES],
        depends=[f"{KERNEL_DIR}/qgnn_kernels.h", f"{KERNEL_DIR}/simd.h",
                 f"{KERNEL_DIR}/message_q8.h", f"{KERNEL_DIR}/qlinear_narrow.h"],
        define_macros=[("QGNN_LEVEL", level)], optional=True))

packages, package_dir = _packages()
# The bundled datasets travel with the package, so `qgnn train --dataset cora` works from a wheel
# (graph/datasets.py looks for them beside the qgnn.graph package, at qgnn/data).
packages.append("qgnn.data")
package_dir["qgnn.data"] = "data"
setup(packages=packages, package_dir=package_dir,
      package_data={"qgnn.runtime": ["proto_gen/**/*.py", "proto_gen/**/*.pyi"],
                    "qgnn.data": ["*.md", "*/*"],
                    # bench_engine --fp32-isa matched compiles the CPUID mask at run time
                    "qgnn.bench": ["csrc/*.c"]},
      exclude_package_data={"qgnn.runtime.kernels": ["csrc/*"]},
      ext_modules=kernels, cmdclass={"build_ext": _BuildKernels})
