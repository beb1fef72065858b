"""The load check: a bundle is good only once its model parses, checks and answers.

Hashes prove a bundle's files are the ones its manifest lists, not that the model in them
works: a garbage, truncated or bit-flipped ``model.onnx`` with the manifest re-hashed passes
every hash. So ``qgnn inspect``, ``qgnn serve``, LoadModel, ReloadModel and polling all run
the same three steps before calling a bundle good:

1. **Structure**: onnxruntime parses the file and resolves the graph (protobuf decoding,
   topological order, every input defined, types inferred, every op known to its opset or
   given as an ONNX function) with optimisations off; its inputs and outputs must be the ones
   the manifest declares. ``onnx.checker`` would need the training-only ``onnx`` package;
   onnxruntime's own graph resolution is the check the serving host can run, and the one that
   matters, since it is what serves the file.
2. **Load**: the backend loader builds the model (any error becomes a :class:`BundleError`).
3. **Trial run**: the backend answers one tiny request (node 0, or the pair (0, 0); a shard
   replica asks about its first node instead), and the answer must have the right shape and
   be finite (probabilities in [0, 1]).

Each failure is one :class:`BundleError` naming the file and the reason (INVALID_ARGUMENT on
the admin RPCs, one line and exit code 2 on the command line), never a traceback or INTERNAL;
the server keeps serving the version it had.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
from qgnn.runtime.bundle.reader import Bundle
from qgnn.runtime.errors import BundleError, ServingError
from qgnn.runtime.metrics import MetricsObserver

_REASON_CHARS = 300


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > _REASON_CHARS:
        text = text[:_REASON_CHARS] + "..."
    return f"{type(exc).__name__}: {text}"


def check_structure(bundle: Bundle) -> None:
    """Step 1: onnxruntime parses and resolves the model file, whose inputs and outputs must be
    the manifest's."""
    import onnxruntime as ort

    model = bundle.manifest.model
    rel = model.file
    data = bundle.read_bytes(rel)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # the error is raised and reported; no stderr noise
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BundleError(rel, f"is not a valid ONNX model ({_short(exc)})") from None
    for kind, declared, actual in (
            ("inputs", [s.name for s in model.inputs],
             [i.name for i in session.get_inputs()]),
            ("outputs", [s.name for s in model.outputs],
             [o.name for o in session.get_outputs()])):
        if set(declared) - set(actual):
            raise BundleError(rel, f"the manifest declares model {kind} {sorted(declared)} but "
                                   f"the ONNX graph has {sorted(actual)}")


def _finite(arr: Any, what: str, shape: tuple[int | None, ...]) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape,
                                                                              strict=False)):
        raise ValueError(f"{what} has shape {list(arr.shape)}, expected "
                         f"{[s if s is not None else 'any' for s in shape]}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{what} is not finite")
    return arr


def trial_run(backend: Any) -> None:
    """Step 3: one tiny request through the backend; raises ValueError on a wrong answer."""
    if int(backend.num_nodes) < 1:
        return  # an empty graph has nothing to ask about; the structure check still ran
    # a backend that serves only some nodes (a shard replica) names one it serves
    node = int(getattr(backend, "trial_node", 0))
    ids = np.full(1, node, np.int64)
    if backend.task == "node":
        probs = _finite(backend.predict_nodes(ids), f"probabilities of node {node}",
                        (1, int(backend.num_classes)))
        if (probs < 0).any() or (probs > 1).any():
            raise ValueError(f"probabilities of node {node} are outside [0, 1]")
    else:
        pair = f"({node}, {node})"
        scores = _finite(backend.predict_links(np.full((1, 2), node, np.int64)),
                         f"score of the pair {pair}", (1,))
        if (scores < 0).any() or (scores > 1).any():
            raise ValueError(f"score of the pair {pair} is outside [0, 1]")
    if int(backend.embedding_dim) > 0:  # 0: the backend serves no embeddings (sharded bundles)
        _finite(backend.embed(ids), f"embedding of node {node}", (1, None))


def open_checked(bundle: Bundle, load: Callable[[Bundle], Any],
                 observer: MetricsObserver | None = None) -> Any:
    """The backend ``load(bundle)`` builds, after the structure check and before a trial run;
    every failure is a BundleError (a ServingError, e.g. no backend for the format, passes as
    it is). The caller owns the bundle; a backend that fails its trial is closed here. The
    backend's metrics ``observer`` is muted for the trial."""
    check_structure(bundle)
    rel = bundle.manifest.model.file
    try:
        backend = load(bundle)
    except (ServingError, BundleError):
        raise
    except Exception as exc:
        raise BundleError(rel, f"the model does not load ({_short(exc)})") from None
    try:
        with observer.muted() if observer is not None else contextlib.nullcontext():
            trial_run(backend)
    except Exception as exc:
        backend.close()
        if isinstance(exc, ServingError | BundleError):
            raise
        raise BundleError(rel, f"the model fails a trial run on one input ({_short(exc)})"
                          ) from None
    return backend
