"""``qgnn.runtime`` (the serving install) must never import torch."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import importlib, pkgutil, sys
import qgnn.runtime
names = [m.name for m in pkgutil.walk_packages(qgnn.runtime.__path__, "qgnn.runtime.")]
for name in names:
    importlib.import_module(name)
assert "qgnn.runtime.engine.engine" in sys.modules, "the engine was not imported"
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "qgnn.training",
                                                                     "qgnn.exporter")))
print(len(names), bad)
sys.exit(1 if bad else 0)
"""


def test_runtime_imports_no_torch() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert int(done.stdout.split()[0]) > 20  # every runtime module was imported
