"""qgnn: quantised graph neural networks, from training to serving."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qgnn")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"
