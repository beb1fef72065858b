"""The extension is built at every level this host has, reports how, is optional at import, and
survives fork()."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
from qgnn.runtime import kernels
from qgnn.runtime.kernels import _ext


def test_extension_is_built_and_describes_itself(isa):
    assert kernels.available(), "the C extension did not build; see docs/kernels.md"
    info = kernels.build_info()
    assert info["isa"] == isa
    assert info["threads"].startswith("pthreads")
    assert info["max_threads"] == 256
    assert info["isa_supported"][0] == "baseline" and info["isa_built"][0] == "baseline"
    assert isa in info["isa_supported"] and isa in info["isa_built"]


def test_missing_extension_raises_a_clear_error(monkeypatch):
    monkeypatch.setattr(_ext, "_load", lambda level: "ImportError: no module")
    assert not kernels.available()
    with pytest.raises(kernels.KernelsUnavailableError, match="--portable"):
        kernels.qaggregate(np.zeros((1, 1), np.uint8), 0, [0, 0], [], 1.0, 0)


def _child(queue) -> None:
    x = np.ones((50_000, 16), np.float32)
    src = np.arange(50_000)
    out = kernels.aggregate_f32(x, np.array([0, 25_000, 50_000]), src, num_threads=2)
    queue.put(float(out.sum()))


def test_kernels_still_work_in_a_forked_child():
    """Threads are started per call, so a child forked after a parallel call does not hang
    (GNU OpenMP's pool would)."""
    x = np.ones((50_000, 16), np.float32)
    kernels.aggregate_f32(x, np.array([0, 25_000, 50_000]), np.arange(50_000), num_threads=2)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue,))
    proc.start()
    proc.join(timeout=30)
    if proc.is_alive():
        proc.kill()
        pytest.fail("kernel call in a forked child hung")
    assert queue.get(timeout=5) == 50_000 * 16
