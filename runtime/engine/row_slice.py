"""Takes the exporter's ``x[:num_dst]`` row slices out of onnxruntime when only kernels read them.

Every SAGE, GIN and EGC layer reads its destinations' own rows as ``Slice(x, [0], num_dst, [0])``
(qgnn.exporter.emit.common ``rows``). onnxruntime copies the slice: on a whole graph, where
``num_dst`` is every node, that is a copy of all of ``x`` per layer (1.1-1.5 ms per 100k x 128
uint8 layer on the Zen 4, about 2% of SAGE's INT8 forward) for a tensor whose readers are the
engine's own kernels. The ``RowSlice`` node that replaces it returns a view of the first rows
instead: a C-contiguous prefix of a C-contiguous array is one, so the kernels read it in place.

The view lives only as long as the run's tensors, which keep ``x`` alive too. The slice is
replaced only when every reader is a kernel node (an ``ai.qgnn`` op or a fused engine node) and
it is not a graph output: a segment reading it would need it as an onnxruntime input, and taking
the slice out of a segment that also reads it could add an onnxruntime call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from qgnn.contract.ops import QGNN_DOMAIN
from qgnn.runtime.engine.fusion import FusedLinear

ENGINE_DOMAIN = FusedLinear.domain  # the fused engine nodes' domain


def _const_equals(constants: Mapping[str, np.ndarray], name: str, value: int) -> bool:
    arr = constants.get(name) if name else None
    return (arr is not None and arr.dtype.kind == "i" and arr.size == 1
            and int(arr.reshape(-1)[0]) == value)


def _leading_rows(node: Any, constants: Mapping[str, np.ndarray]) -> bool:
    """A standard Slice of axis 0 from row 0, step 1, to a (computed or constant) end."""
    if node.op_type != "Slice" or node.domain or len(node.output) != 1:
        return False
    inputs = list(node.input) + [""] * (5 - len(node.input))
    _, starts, ends, axes, steps = inputs[:5]
    return (len(node.input) in (4, 5) and bool(ends) and _const_equals(constants, starts, 0)
            and _const_equals(constants, axes, 0)
            and (not steps or _const_equals(constants, steps, 1)))


def fuse_row_slices(nodes: list[Any], constants: Mapping[str, np.ndarray], outputs: set[str],
                    reads: Callable[[Any], list[str]]) -> list[Any]:
    """``nodes`` (after the other fusions) with each leading-row Slice that only kernels read
    replaced in its place by a ``RowSlice`` engine node (inputs data and end). ``reads(node)``:
    every tensor a node reads, its subgraphs' outer-scope names included
    (partition.node_reads)."""
    readers: dict[str, list[Any]] = {}
    for node in nodes:
        for name in reads(node):
            readers.setdefault(name, []).append(node)
    out = []
    for node in nodes:
        target = node.output[0] if len(node.output) == 1 else ""
        users = readers.get(target, [])
        if (_leading_rows(node, constants) and target not in outputs and users
                and all(u.domain in (QGNN_DOMAIN, ENGINE_DOMAIN) for u in users)):
            out.append(FusedLinear(node.name, [node.input[0], node.input[2]], [target], {},
                                   op_type="RowSlice"))
        else:
            out.append(node)
    return out


def row_slice(data: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``data[:count]`` as ONNX Slice computes it (a negative end counts from the last row,
    then the end is clamped to [0, rows]), as a view."""
    ends = np.asarray(count)
    if ends.dtype.kind != "i" or ends.size != 1:
        raise ValueError(f"RowSlice: the end must be one integer, got {ends.dtype} "
                         f"{ends.shape}")
    if np.ndim(data) < 1:
        raise ValueError("RowSlice: data must have at least one dimension")
    rows = data.shape[0]
    end = int(ends.reshape(-1)[0])
    end = end + rows if end < 0 else end
    return data[:min(max(end, 0), rows)]
