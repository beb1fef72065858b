"""Maps the top-level source folders onto the one ``qgnn`` import namespace.

The repository keeps the design's layout (``graph/ training/ exporter/ runtime/ bench/``) while the
installed distribution exposes them as ``qgnn.graph``, ``qgnn.training`` and so on, never as bare
top-level modules in site-packages.
"""

from pathlib import Path

from setuptools import setup

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


packages, package_dir = _packages()
setup(packages=packages, package_dir=package_dir,
      package_data={"qgnn.runtime": ["proto_gen/**/*.py"]})
