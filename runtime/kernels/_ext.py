"""Finds the compiled kernel modules, one per ISA level, and picks the level a caller runs.

The kernels are built once per ISA level (runtime/kernels/_levels.py) as separate, optional
extension modules. The baseline module is imported first and asked which levels this CPU can run;
a higher level's module is imported only then, since initialising it may already execute its
instructions. Without any module (no C compiler at install) qgnn still installs and the serving
engine runs the portable ONNX function bodies instead.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import platform
from types import ModuleType
from typing import Any

from qgnn.runtime.kernels._levels import MODULE_PREFIX, architecture, levels_for

ENV_VAR = "QGNN_ISA"
PACKAGE = "qgnn.runtime.kernels"
LEVELS: tuple[str, ...] = tuple(levels_for(platform.machine()))
ARCH = architecture(platform.machine())


class KernelsUnavailableError(RuntimeError):
    """The compiled kernels were not built or cannot be loaded on this host."""


def module_name(level: str) -> str:
    return f"{PACKAGE}.{MODULE_PREFIX}{level}"


@functools.cache
def _load(level: str) -> ModuleType | str:
    """The level's module, or why it cannot be imported (cached: a failed import stays failed)."""
    try:
        return importlib.import_module(module_name(level))
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"


def _baseline() -> ModuleType:
    mod = _load("baseline")
    if isinstance(mod, str):
        raise KernelsUnavailableError(
            f"qgnn's compiled kernels ({module_name('baseline')}) are not available ({mod}). "
            "Reinstall qgnn where a C compiler and numpy>=2 headers are present "
            "(pip install --force-reinstall --no-deps .), or serve with --portable.")
    return mod


def available() -> bool:
    """Whether the compiled kernels can be called (else use the portable ONNX path)."""
    return not isinstance(_load("baseline"), str)


@functools.cache
def levels_supported() -> tuple[str, ...]:
    """The levels this CPU can run, lowest first (baseline only when no module is built)."""
    if not available():
        return ("baseline",)
    return tuple(level for level in LEVELS if _baseline().cpu_supports(level))


@functools.cache
def levels_built() -> tuple[str, ...]:
    """The levels whose module was compiled at install, lowest first (found, not imported)."""
    return tuple(level for level in LEVELS
                 if importlib.util.find_spec(module_name(level)) is not None)


def resolve_level(level: str, source: str = "isa") -> str:
    """``level`` if this host can run it, else ValueError naming it, the valid names or what the
    CPU has; KernelsUnavailableError when it is supported but its module is missing. ``source``
    names where the request came from (``QGNN_ISA``, ``--isa``, ``EngineConfig.isa``)."""
    if level not in LEVELS:
        raise ValueError(f"{source}: unknown ISA level {level!r}; valid on {ARCH}: "
                         f"{', '.join(LEVELS)}")
    _baseline()  # without it nothing is known about the CPU: say the kernels are missing
    if level not in levels_supported():
        raise ValueError(f"{source}: ISA level {level!r} is not supported by this CPU, which has "
                         f"{', '.join(levels_supported())}")
    if level not in levels_built():
        raise KernelsUnavailableError(
            f"{source}: ISA level {level!r} was not built (built: "
            f"{', '.join(levels_built()) or 'none'}); reinstall qgnn with a compiler that "
            f"accepts that level's flags, or pick another level")
    return level


def default_level() -> str:
    """``$QGNN_ISA`` when set (refused if this host cannot run it), else the best level this
    CPU supports and the install built."""
    requested = os.environ.get(ENV_VAR, "").strip()
    if requested:
        return resolve_level(requested, ENV_VAR)
    _baseline()  # baseline is supported everywhere, so it is usable once importable
    return [level for level in levels_supported() if level in levels_built()][-1]


def ext(level: str | None = None) -> ModuleType:
    """The module of ``level`` (None: :func:`default_level`), or KernelsUnavailableError naming
    the cause and the fix."""
    _baseline()
    name = default_level() if level is None else resolve_level(level)
    mod = _load(name)
    if isinstance(mod, str):
        raise KernelsUnavailableError(f"qgnn's kernels at ISA level {name!r} "
                                      f"({module_name(name)}) cannot be loaded ({mod})")
    return mod


def build_info(level: str | None = None) -> dict[str, Any]:
    """How the module of ``level`` (None: the default) was built, and which levels this host
    supports and has built."""
    info = dict(ext(level).build_info())
    info.update(isa_supported=list(levels_supported()), isa_built=list(levels_built()))
    return info
