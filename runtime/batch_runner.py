"""How merged requests become one backend call, and the checks on what a backend returns
(a wrong shape is a backend bug, answered INTERNAL).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
from qgnn.runtime.backend import ModelBackend


def checked_output(out: Any, dtype: type, shape: tuple[int | None, ...], what: str) -> np.ndarray:
    """A backend's output as ``dtype``, refusing a wrong shape (a backend bug: INTERNAL)."""
    if type(out) is np.ndarray and out.shape == shape and out.dtype == dtype:
        return out  # the usual answer, checked in one comparison
    arr = np.asarray(out)
    if arr.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, arr.shape,
                                                                            strict=True)):
        raise RuntimeError(f"backend returned {what} of shape {arr.shape}, expected {shape}")
    return arr.astype(dtype, copy=False)



def checked_top(answer: Any, top: int) -> tuple[np.ndarray, np.ndarray]:
    """A backend's (item ids, scores) checked: at most ``top``, aligned, right dtypes."""
    ids, scores = answer
    ids = checked_output(ids, np.int64, (None,), "item ids")
    scores = checked_output(scores, np.float32, (len(ids),), "scores")
    if len(ids) > top:
        raise RuntimeError(f"backend returned {len(ids)} items for k={top}")
    return ids, scores


def make_batch_runner(backend: ModelBackend) -> Callable[[Hashable | None, list[Any]], list[Any]]:
    """The batcher's ``run`` for one backend. Mergeable keys are 'nodes', 'links' and 'embed',
    whose payloads are id arrays (pairs for links), concatenated into one call and split back;
    key None payloads are zero-argument callables run alone."""

    def run(key: Hashable | None, payloads: list[Any]) -> list[Any]:
        if key is None:
            return [payload() for payload in payloads]
        merged = payloads[0] if len(payloads) == 1 else np.concatenate(payloads)
        n = len(merged)
        if key == "nodes":
            out = checked_output(backend.predict_nodes(merged), np.float32,
                           (n, backend.num_classes), "probabilities")
        elif key == "links":
            out = checked_output(backend.predict_links(merged), np.float32, (n,), "scores")
        elif key == "embed":
            out = checked_output(backend.embed(merged), np.float32, (n, None), "embeddings")
        else:
            raise RuntimeError(f"unknown batch key {key!r}")
        if len(payloads) == 1:
            return [out]
        return np.split(out, np.cumsum([len(p) for p in payloads])[:-1])

    return run

