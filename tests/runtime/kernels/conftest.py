"""Shared fixtures for the compiled-kernel tests: random destination-sorted graphs, and the ISA
level every test here runs at: each one runs once per level this machine supports and the
install built (baseline always), through ``$QGNN_ISA``, so calls without ``isa=`` use it."""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from qgnn.runtime import kernels

Csr = tuple[np.ndarray, np.ndarray, np.ndarray]  # indptr (D+1,), src (E,), dst (E,)


def _csr(rng: np.random.Generator, num_dst: int, num_edges: int, num_src: int,
         empty_frac: float = 0.0) -> Csr:
    """Edges sorted by destination; roughly ``empty_frac`` of destinations get no edge."""
    allowed = np.flatnonzero(rng.random(num_dst) >= empty_frac) if num_dst else np.zeros(0, int)
    if num_edges and allowed.size == 0:
        allowed = np.arange(num_dst)
    dst = np.sort(rng.choice(allowed, size=num_edges)) if num_edges else np.zeros(0, np.int64)
    src = rng.integers(0, num_src, size=num_edges) if num_edges else np.zeros(0, np.int64)
    indptr = np.zeros(num_dst + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=num_dst), out=indptr[1:])
    return indptr, src.astype(np.int64), dst.astype(np.int64)


@pytest.fixture
def make_csr() -> Callable[..., Csr]:
    rng = np.random.default_rng(1234)
    return lambda num_dst, num_edges, num_src, empty_frac=0.0: _csr(
        rng, num_dst, num_edges, num_src, empty_frac)


def usable_levels() -> list[str]:
    """Levels this CPU supports and the install built, lowest first."""
    if not kernels.available():
        return ["baseline"]
    return [lvl for lvl in kernels.levels_supported() if lvl in kernels.levels_built()]


@pytest.fixture(autouse=True, params=usable_levels())
def isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ISA level of this run of the test, made the default through ``$QGNN_ISA``."""
    monkeypatch.setenv("QGNN_ISA", request.param)
    return request.param


@pytest.fixture
def parts_used(isa: str) -> Callable[[], int]:
    """Threads the latest kernel call ran on: thread-count tests assert they really split."""
    return kernels._ext.ext(isa)._last_parts


@pytest.fixture
def guarded() -> Iterator[Callable[[np.ndarray], np.ndarray]]:
    """Copies of arrays whose last byte sits right before an inaccessible page, so a kernel that
    reads even one byte past an input crashes the test instead of passing by luck."""
    libc = ctypes.CDLL(None, use_errno=True)
    keep: list[object] = []

    def make(arr: np.ndarray) -> np.ndarray:
        arr = np.ascontiguousarray(arr)
        page = mmap.PAGESIZE
        size = (arr.nbytes // page + 1) * page
        region = mmap.mmap(-1, size + page)
        base = ctypes.addressof((ctypes.c_char * len(region)).from_buffer(region))
        if libc.mprotect(ctypes.c_void_p(base + size), ctypes.c_size_t(page), 0) != 0:
            pytest.skip(f"mprotect failed (errno {ctypes.get_errno()})")
        out = np.frombuffer(region, dtype=arr.dtype, count=arr.size,
                            offset=size - arr.nbytes).reshape(arr.shape)
        out[...] = arr
        keep.append(region)
        return out

    yield make
