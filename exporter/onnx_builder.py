"""A small deterministic ONNX graph builder: the same model gives the same bytes, every time.

Tensor names are derived from what produces them (``<scope>/<hint>``, made unique with a
``.2``, ``.3`` suffix only on a clash; nodes stay unnamed, their output names them), attributes are
written in sorted order (``onnx.helper.make_node`` sorts keyword attributes) and initializers
keep their insertion order. Constants shared by many nodes (axes, zero, one) are stored once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from onnx import ModelProto, NodeProto, TensorProto, ValueInfoProto, helper
from onnx.numpy_helper import from_array
from qgnn.exporter.ops import IR_VERSION, QGNN_DOMAIN, function_protos, make_op_node, opset_imports

Shape = Sequence[int | str | None]

# ONNX element type of each numpy dtype the exporter writes.
ELEM_TYPES: dict[np.dtype, int] = {
    np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.bool_): TensorProto.BOOL,
}


class GraphBuilder:
    """Collects inputs, initializers, nodes and outputs of one ONNX graph."""

    def __init__(self) -> None:
        self.nodes: list[NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.inputs: list[ValueInfoProto] = []
        self.outputs: list[ValueInfoProto] = []
        self._names: set[str] = set()
        self._shared: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        self._scope: list[str] = []

    @contextmanager
    def scope(self, name: str, *, absolute: bool = False) -> Iterator[None]:
        """Prefix every name made inside with ``name/``; scopes nest unless ``absolute``."""
        saved = self._scope
        self._scope = [name] if absolute else [*saved, name]
        try:
            yield
        finally:
            self._scope = saved

    def _name(self, hint: str) -> str:
        base = "/".join([*self._scope, hint])
        name, k = base, 1
        while name in self._names:
            k += 1
            name = f"{base}.{k}"
        self._names.add(name)
        return name

    def input(self, name: str, elem_type: int, shape: Shape) -> str:
        """A graph input named exactly ``name`` (symbolic dimensions as strings)."""
        if name in self._names:
            raise ValueError(f"GraphBuilder: input name {name!r} is already used")
        self._names.add(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def output(self, value: str, name: str, elem_type: int, shape: Shape | None) -> str:
        """Expose ``value`` as the graph output ``name`` (through an Identity when renamed)."""
        if value != name:
            if name in self._names:
                raise ValueError(f"GraphBuilder: output name {name!r} is already used")
            self._names.add(name)
            self.nodes.append(helper.make_node("Identity", [value], [name]))
        self.outputs.append(helper.make_tensor_value_info(
            name, elem_type, None if shape is None else list(shape)))
        return name

    def const(self, value: np.ndarray, hint: str) -> str:
        """An initializer holding ``value`` (its dtype kept) named after ``hint`` in scope."""
        array = np.ascontiguousarray(value)
        if array.dtype not in ELEM_TYPES:
            raise ValueError(f"GraphBuilder: unsupported initializer dtype {array.dtype}")
        name = self._name(hint)
        self.initializers.append(from_array(array, name))
        return name

    def shared(self, value: np.ndarray | float | int, dtype: type) -> str:
        """A small constant stored once per (dtype, value), outside any scope."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.tobytes(), array.shape)
        if key not in self._shared:
            flat = "_".join(str(v) for v in array.reshape(-1).tolist())
            hint = f"{array.dtype.name}{'' if array.ndim else 's'}_{flat}"
            with self.scope("c", absolute=True):
                self._shared[key] = self.const(array, hint)
        return self._shared[key]

    def op(self, op_type: str, inputs: Sequence[str], hint: str, **attributes: object) -> str:
        """One standard single-output node; returns its output's name."""
        out = self._name(hint)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attributes))
        return out

    def qgnn(self, op_type: str, inputs: Sequence[str], hint: str, **attributes: object) -> str:
        """One validated ``ai.qgnn`` node (its function body is attached by :meth:`model`)."""
        out = self._name(hint)
        self.nodes.append(make_op_node(op_type, inputs, [out], **attributes))
        return out

    def model(self, graph_name: str, doc: str = "") -> ModelProto:
        """The finished model: IR 10, opset 21 + ai.qgnn 1, the ai.qgnn functions attached."""
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs,
                                  self.initializers, doc_string=doc)
        model = helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION,
                                  functions=function_protos(
                                      n for n in self.nodes if n.domain == QGNN_DOMAIN),
                                  producer_name="qgnn.exporter")
        return model
