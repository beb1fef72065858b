"""Which backend loads a bundle: a registry from ``model.format`` / ``model.task`` to a loader.

A loader is ``(bundle, options) -> ModelBackend``. The engine registers its loaders when imported;
``$QGNN_BACKEND_MODULES`` names more modules to import, so third-party backends plug in without
the server knowing them.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
from collections.abc import Callable

from qgnn.runtime.backend import BackendOptions, ModelBackend
from qgnn.runtime.bundle.reader import Bundle
from qgnn.runtime.errors import (
    BackendUnavailableError,
)

log = logging.getLogger("qgnn.runtime.dataplane")  # the name these logs had before the split


ENGINE_MODULE = "qgnn.runtime.engine"  # imported on first use; it registers its loader(s)
BACKEND_MODULES_ENV = "QGNN_BACKEND_MODULES"  # more modules that register loaders


BackendLoader = Callable[[Bundle, BackendOptions], ModelBackend]
_LOADERS: dict[tuple[str | None, str | None], BackendLoader] = {}
_LOADERS_LOCK = threading.Lock()
_ENGINE_PROBLEM: str | None = None  # None: not tried yet


def register_backend_loader(loader: BackendLoader, *, format: str | None = None,
                            task: str | None = None) -> BackendLoader:
    """Registers ``loader`` for bundles whose manifest has ``model.format == format`` and
    ``model.task == task`` (None: any). The most specific registration wins: (format, task),
    then (format, any), (any, task), (any, any). Registering the same key again replaces it.
    Returns the loader, so it works as a decorator through functools.partial."""
    with _LOADERS_LOCK:
        _LOADERS[(format, task)] = loader
    return loader


def unregister_backend_loader(*, format: str | None = None, task: str | None = None) -> None:
    """Removes a registration (tests)."""
    with _LOADERS_LOCK:
        _LOADERS.pop((format, task), None)


def import_backends(env: dict[str, str] | None = None) -> str:
    """Imports, once, the modules whose import registers backend loaders: those named in
    ``$QGNN_BACKEND_MODULES`` (comma-separated, from PYTHONPATH; one that fails to import raises
    ValueError, so the server refuses to start) and the inference engine if installed. A broken
    engine only logs: other backends still serve. Returns why the engine is unavailable ('' if
    it is), for the error of a bundle that nothing serves."""
    global _ENGINE_PROBLEM
    spec = (os.environ if env is None else env).get(BACKEND_MODULES_ENV, "")
    for name in filter(None, (part.strip() for part in spec.split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"{BACKEND_MODULES_ENV}: cannot import {name!r} ({exc}); is it on "
                             f"PYTHONPATH?") from None
    if _ENGINE_PROBLEM is None:
        _ENGINE_PROBLEM = ""
        try:
            if importlib.util.find_spec(ENGINE_MODULE) is None:
                _ENGINE_PROBLEM = f"{ENGINE_MODULE} is not installed"
            else:
                importlib.import_module(ENGINE_MODULE)
        except Exception as exc:
            _ENGINE_PROBLEM = f"importing {ENGINE_MODULE} failed: {type(exc).__name__}: {exc}"
            log.exception("importing the inference engine failed")
    return _ENGINE_PROBLEM


def resolve_loader(fmt: str | None, task: str | None) -> BackendLoader:
    """The loader for a bundle whose manifest says ``model.format == fmt`` and
    ``model.task == task``."""
    problem = import_backends()
    with _LOADERS_LOCK:
        for key in ((fmt, task), (fmt, None), (None, task), (None, None)):
            if key in _LOADERS:
                return _LOADERS[key]
    why = problem or f"{ENGINE_MODULE} registers no loader for it"
    raise BackendUnavailableError(
        f"no backend can serve model.format={fmt!r} model.task={task!r} ({why}; other "
        f"backends can be added with ${BACKEND_MODULES_ENV})")

