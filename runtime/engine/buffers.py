"""Reuse of an engine's large numpy buffers from one forward to the next (docs/engine.md,
"Buffer reuse").

Above glibc's mmap threshold every freed array is unmapped, so each whole-graph forward faults
in and zeroes all its large intermediates again. An engine's :class:`BufferPool` is the compiled
kernels' NEP 49 allocator (runtime/kernels/csrc/buffer_pool.c): while :meth:`BufferPool.active`
is entered, numpy arrays of at least ``min_block_bytes`` (those our kernels, numpy and the
onnxruntime bindings create on this thread) take a cached block that fits, and freed ones are
kept, up to ``max_bytes`` per engine. The handler is context-local (each thread installs its
own), and numpy hands a block back only when no array uses it, so a cached block never aliases
an array a caller holds. Without the compiled kernels there is no pool (``make_pool`` gives None).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from qgnn.runtime import kernels
from qgnn.runtime.kernels import _ext

# glibc maps blocks from 128 KiB up (its threshold then grows with freed maps, to at most
# 32 MiB); below 1 MiB the heap serves them well and caching them would only crowd the slots
MIN_BLOCK_BYTES = 1 << 20
HANDLER_NAME = "qgnn_buffer_pool"


class BufferPool:
    """A bounded cache of large numpy data blocks, shared by one engine's executors and threads.
    ``max_bytes`` caps what it keeps between forwards (0 keeps nothing)."""

    def __init__(self, max_bytes: int, min_block_bytes: int = MIN_BLOCK_BYTES) -> None:
        for name, value, low in (("max_bytes", max_bytes, 0),
                                 ("min_block_bytes", min_block_bytes, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"BufferPool.{name}: expected an int >= {low}, got {value!r}")
        self._pool: Any = _ext._baseline().BufferPool(max_bytes, min_block_bytes)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """numpy allocates through the pool in this context (this thread) until exit."""
        previous = self._pool.install()
        try:
            yield
        finally:
            self._pool.restore(previous)

    def stats(self) -> dict[str, int | bool]:
        """Counters: ``hits``/``misses`` (allocations of at least ``min_block_bytes``),
        ``evictions``, ``hit_bytes``, ``miss_bytes``, ``cached_bytes``, ``cached_blocks``,
        ``peak_cached_bytes``, ``max_bytes``, ``min_block_bytes``, ``closed``."""
        return dict(self._pool.stats())

    def clear(self) -> int:
        """Frees every cached block; the bytes freed."""
        return int(self._pool.clear())

    def close(self) -> int:
        """Frees the cache and keeps nothing from now on (arrays still held are freed normally
        when they die); the bytes freed."""
        return int(self._pool.close())


def make_pool(max_bytes: int) -> BufferPool | None:
    """An engine's pool, or None when ``max_bytes`` is 0 or the compiled kernels are missing."""
    if max_bytes == 0 or not kernels.available():
        return None
    return BufferPool(max_bytes, MIN_BLOCK_BYTES)


def pooled(pool: BufferPool | None) -> contextlib.AbstractContextManager[None]:
    """``pool.active()``, or nothing to do without a pool."""
    return contextlib.nullcontext() if pool is None else pool.active()
