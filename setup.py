"""Maps the top-level source folders onto the one ``qgnn`` import namespace.

The repository keeps the design's layout (``graph/ training/ exporter/ runtime/ bench/``) while the
installed distribution exposes them as ``qgnn.graph``, ``qgnn.training`` and so on, never as bare
top-level modules in site-packages.
"""

from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
FOLDERS = {"qgnn": "qgnn", "qgnn.graph": "graph", "qgnn.training": "training",
           "qgnn.exporter": "exporter", "qgnn.runtime": "runtime", "qgnn.bench": "bench"}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages, package_dir = [], {}
    for name, folder in FOLDERS.items():
        package_dir[name] = folder
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder)
            packages.append(".".join([name, *rel.parts]))
    return packages, package_dir


class _BuildKernels(build_ext):
    """Compiles qgnn's C kernels against the numpy headers of the build environment.

    The extension is optional: if numpy's headers or a C compiler are missing, or compilation
    fails, the install still succeeds and the runtime uses the portable ONNX path.
    """

    def build_extensions(self) -> None:
        try:
            import numpy
        except ImportError:
            print("qgnn: numpy not importable at build time; skipping the compiled kernels")
            return
        gcc_like = self.compiler.compiler_type == "unix"
        for ext in self.extensions:
            ext.include_dirs.append(numpy.get_include())
            if gcc_like:
                ext.extra_compile_args += ["-O3", "-pthread", "-ffp-contract=off",
                                           "-fvisibility=hidden"]
                ext.extra_link_args += ["-pthread"]
        super().build_extensions()


KERNEL_DIR = "runtime/kernels/csrc"
kernels = Extension(
    "qgnn.runtime.kernels._qgnn_kernels",
    sources=[f"{KERNEL_DIR}/{name}.c" for name in (
        "_qgnn_kernels", "parallel", "aggregate_q8", "message_aggregate_q8", "aggregate_f32",
        "edge_softmax", "qlinear", "topk", "quantize", "cpu")],
    depends=[f"{KERNEL_DIR}/qgnn_kernels.h", f"{KERNEL_DIR}/simd.h"],
    optional=True,
)

packages, package_dir = _packages()
# The bundled datasets travel with the package, so `qgnn train --dataset cora` works from a wheel
# (graph/datasets.py looks for them beside the qgnn.graph package, at qgnn/data).
packages.append("qgnn.data")
package_dir["qgnn.data"] = "data"
setup(packages=packages, package_dir=package_dir,
      package_data={"qgnn.runtime": ["proto_gen/**/*.py", "proto_gen/**/*.pyi"],
                    "qgnn.data": ["*.md", "*/*"]},
      exclude_package_data={"qgnn.runtime.kernels": ["csrc/*"]},
      ext_modules=[kernels], cmdclass={"build_ext": _BuildKernels})
