"""A restricted unpickler for the Planetoid raw files (``ind.<name>.*``), without scipy.

The Planetoid files are Python-2 era pickles of scipy CSR matrices, numpy arrays and a
``collections.defaultdict`` adjacency. A plain ``pickle.load`` would run whatever callable a file
names, so :class:`RestrictedUnpickler` resolves only the handful of globals those files use and
refuses every other one *before* it is called. The scipy class is mapped onto :class:`CsrState`,
which only records the pickled arrays, so scipy is never imported.
"""

from __future__ import annotations

import builtins
import collections
import copyreg
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2 moved the array reconstructor; the files name the numpy 1 path.
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct


class UnsafePickleError(ValueError):
    """A pickle names a global outside the allow-list; nothing from it was called."""


class CsrState:
    """Stand-in for ``scipy.sparse.csr_matrix``: keeps the pickled CSR arrays and nothing else.

    ``shape`` is ``(rows, cols)``; row ``r`` holds ``data[indptr[r]:indptr[r+1]]`` at columns
    ``indices[indptr[r]:indptr[r+1]]``.
    """

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"csr_matrix state: expected a dict, got {type(state).__name__}")
        shape = state.get("_shape", state.get("shape"))
        missing = [k for k in ("data", "indices", "indptr") if k not in state]
        if shape is None:
            missing.append("_shape")
        if missing:
            raise ValueError(f"csr_matrix state: missing {', '.join(missing)}")
        if (not isinstance(shape, tuple) or len(shape) != 2
                or not all(isinstance(s, int) and s >= 0 for s in shape)):
            raise ValueError(f"csr_matrix state: shape must be two non-negative ints, got "
                             f"{shape!r}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.data = self._array("data", state["data"])
        self.indices = self._array("indices", state["indices"], integer=True)
        self.indptr = self._array("indptr", state["indptr"], integer=True)
        self._validate()

    @staticmethod
    def _array(name: str, value: Any, *, integer: bool = False) -> np.ndarray:
        if not isinstance(value, np.ndarray) or value.ndim != 1:
            raise ValueError(f"csr_matrix state: {name} must be a 1-D numpy array, got "
                             f"{type(value).__name__}")
        if integer and not np.issubdtype(value.dtype, np.integer):
            raise ValueError(f"csr_matrix state: {name} must hold integers, got {value.dtype}")
        if not integer and not (np.issubdtype(value.dtype, np.number)
                                or value.dtype == np.bool_):
            raise ValueError(f"csr_matrix state: data must be numeric, got {value.dtype}")
        return value.astype(np.int64, copy=False) if integer else value

    def _validate(self) -> None:
        rows, cols = self.shape
        if self.indptr.shape != (rows + 1,):
            raise ValueError(f"csr_matrix state: indptr has {self.indptr.size} entries, expected "
                             f"rows + 1 = {rows + 1}")
        nnz = self.indices.size
        if self.data.size != nnz:
            raise ValueError(f"csr_matrix state: {self.data.size} values but {nnz} column "
                             f"indices")
        if self.indptr[0] != 0 or self.indptr[-1] != nnz or (np.diff(self.indptr) < 0).any():
            raise ValueError("csr_matrix state: indptr must rise from 0 to the number of "
                             "stored values")
        if nnz and (self.indices.min() < 0 or self.indices.max() >= cols):
            raise ValueError(f"csr_matrix state: column index out of range [0, {cols})")

    def to_dense(self, dtype: type = np.float32) -> np.ndarray:
        """``(rows, cols)`` array; repeated (row, col) entries add up, as in scipy."""
        out = np.zeros(self.shape, dtype=dtype)
        rows = np.repeat(np.arange(self.shape[0], dtype=np.int64), np.diff(self.indptr))
        np.add.at(out, (rows, self.indices), self.data.astype(dtype, copy=False))
        return out


# (module, name) as written in the file -> the object it stands for. Both the Python 2 and the
# Python 3 spellings are listed because the subclass hook sees the names before any remapping.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("scipy.sparse.csr", "csr_matrix"): CsrState,
    ("scipy.sparse._csr", "csr_matrix"): CsrState,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "defaultdict"): collections.defaultdict,
    ("copy_reg", "_reconstructor"): copyreg._reconstructor,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    **{(mod, name): getattr(builtins, name)
       for mod in ("__builtin__", "builtins") for name in ("object", "list", "dict")},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose only reachable globals are :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused global '{module}.{name}': Planetoid pickles may only name scipy "
                f"csr_matrix, numpy arrays/dtypes, collections.defaultdict, copyreg._reconstructor "
                f"and builtins object/list/dict") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refused persistent id {pid!r}: not used by Planetoid files")


def load_pickle(path: str | Path) -> Any:
    """Unpickle one Planetoid file (latin1 for Python-2 byte strings) through the allow-list.

    Raises :class:`UnsafePickleError` for a refused global and ``ValueError`` naming the file for
    anything else that is wrong (missing, truncated, not a pickle, malformed matrix state).
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return RestrictedUnpickler(fh, encoding="latin1").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # corrupt pickles fail in arbitrary ways; report them uniformly
        raise ValueError(f"{path}: not a valid Planetoid pickle ({type(exc).__name__}: "
                         f"{exc})") from None
