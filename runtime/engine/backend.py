"""The engine as the server's ``ModelBackend``: the loader the data plane resolves bundles to.

:class:`~qgnn.runtime.engine.engine.Engine` has every property and method of
``qgnn.runtime.dataplane.ModelBackend`` (name, version, task, graph sizes, revision,
predict_nodes, predict_links, recommend, embed, update_graph, close); the data plane's
``InductiveNodes`` carries the ``ids``/``features``/``edges`` the engine reads. Importing
``qgnn.runtime.engine`` registers :func:`load_backend` for bundles whose ``model.format`` is
``qgnn-onnx`` (what ``qgnn export`` writes), any task; the server imports the package on its
first model load. It is not a catch-all: a bundle of another format still finds no loader.
"""

from __future__ import annotations

from qgnn.runtime.backend import BackendOptions, ModelBackend
from qgnn.runtime.backend_loaders import register_backend_loader
from qgnn.runtime.bundle.layout import MODEL_FORMAT
from qgnn.runtime.bundle.reader import Bundle
from qgnn.runtime.engine.engine import Engine, EngineConfig


def load_backend(bundle: Bundle, options: BackendOptions) -> ModelBackend:
    """An :class:`Engine` for ``bundle`` with the server's threads, ``--portable`` flag, ISA
    level and metrics observer."""
    config = EngineConfig(threads=options.threads, portable=options.portable, isa=options.isa,
                          precompute=options.precompute)
    return Engine(bundle, config, observer=options.observer)




def register() -> None:
    """Registers :func:`load_backend` for ``qgnn export`` bundles."""
    register_backend_loader(load_backend, format=MODEL_FORMAT)
