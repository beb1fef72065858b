"""Rewrites a model's int8 ``MatMulInteger`` weights to the exact uint8 storage at load.

Bundles written before the exporter stored weights as ``w + 128`` (qgnn.contract.weights) hold
int8 constants, which onnxruntime's uint8 x int8 kernel gets wrong on AVX2 and on AVX-512
without VNNI (saturating 16-bit pair sums). Loading them through this rewrite gives the same
integers on every CPU: each int8 constant weight ``B`` (zero point ``zp_b``, absent = 0) becomes
uint8 ``B + 128`` with zero point ``zp_b + 128``, so ``B - zp_b`` is unchanged. A weight that is
not a constant (computed in the graph) is left alone and reported, since its values are only
known at run time.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from qgnn.contract import weight_storage
from qgnn.runtime.engine import onnx_proto as op

log = logging.getLogger("qgnn.runtime.engine")

INT8, UINT8 = 3, 2


def _tensor(name: str, values: np.ndarray) -> Any:
    tensor = op.TensorProto(name=name, data_type=UINT8, raw_data=values.tobytes())
    tensor.dims.extend(values.shape)
    return tensor


def _constant_int8(name: str, initializers: dict[str, Any],
                   constants: dict[str, Any]) -> np.ndarray | None:
    tensor = initializers.get(name)
    if tensor is None and name in constants:
        node = constants[name]
        tensor = next((a.t for a in node.attribute if a.name == "value"), None)
    if tensor is None or tensor.data_type != INT8:
        return None
    return op.tensor_to_array(tensor)


def _uint8_zero_point(node: Any, initializers: dict[str, Any],
                      constants: dict[str, Any]) -> bool:
    """True when ``node``'s weight zero point is a uint8 constant: ONNX gives ``B`` and its zero
    point one type, so a computed weight is then uint8 (EGC's mixing step), which every
    onnxruntime CPU kernel multiplies exactly."""
    name = node.input[3] if len(node.input) > 3 else ""
    tensor = initializers.get(name)
    if tensor is None and name in constants:
        tensor = next((a.t for a in constants[name].attribute if a.name == "value"), None)
    return tensor is not None and tensor.data_type == UINT8


def store_weights_as_uint8(model_bytes: bytes) -> bytes:
    """``model_bytes`` with every int8 constant weight of a top-level ``MatMulInteger`` stored
    as uint8 ``w + 128`` (the bytes unchanged when there is none)."""
    model = op.load_model(model_bytes)
    return model.SerializeToString() if rewrite_weights_as_uint8(model) else model_bytes


def rewrite_weights_as_uint8(model: Any) -> bool:
    """:func:`store_weights_as_uint8` in place on a parsed onnx_proto ModelProto, so a loader
    that already parsed the model need not parse it again; True when something changed. A
    second call finds no int8 weight left and changes nothing."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n for n in graph.node
                 if n.op_type == "Constant" and not n.domain and len(n.output) == 1}
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    changed = False
    for node in graph.node:
        if node.op_type != "MatMulInteger" or node.domain or len(node.input) < 2:
            continue
        weight = _constant_int8(node.input[1], initializers, constants)
        if weight is None:
            if (node.input[1] not in initializers and node.input[1] not in constants
                    and not _uint8_zero_point(node, initializers, constants)):
                log.warning("MatMulInteger %r: its weight %r is computed in the graph; if it is "
                            "int8 it may saturate on CPUs without AVX-512 VNNI", node.name,
                            node.input[1])
            continue
        zp_name = node.input[3] if len(node.input) > 3 else ""
        zp = np.zeros((), np.int8)
        if zp_name:
            zp_value = _constant_int8(zp_name, initializers, constants)
            if zp_value is None:
                continue  # a computed or non-int8 zero point: leave the node as it is
            zp = zp_value
        base = f"{node.input[1]}_u8"
        w_name, zp_out = base, f"{base}_zero_point"
        suffix = 0
        while w_name in taken or zp_out in taken:
            suffix += 1
            w_name, zp_out = f"{base}_{suffix}", f"{base}_{suffix}_zero_point"
        taken |= {w_name, zp_out}
        graph.initializer.append(_tensor(w_name, weight_storage(weight)))
        graph.initializer.append(_tensor(zp_out, weight_storage(zp)))
        inputs = list(node.input) + [""] * (4 - len(node.input))
        inputs[1], inputs[3] = w_name, zp_out
        del node.input[:]
        node.input.extend(inputs)
        changed = True
    if changed:
        _drop_unread(graph)
    return changed


def _drop_unread(graph: Any) -> None:
    """Removes initializers no node (nor graph output) reads any more: the old int8 copies."""
    read = {name for node in graph.node for name in node.input}
    read |= {o.name for o in graph.output}
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                read |= {name for n in sub.node for name in n.input}
    keep = [t for t in graph.initializer if t.name in read]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)
