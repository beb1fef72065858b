"""Splits an ONNX model at its ``ai.qgnn`` nodes into standard-op segments and kernel nodes.

Phases alternate: kernel phase 0 (``ai.qgnn`` nodes in the compiled kernels), segment 0 (one
onnxruntime session of standard nodes), kernel phase 1, segment 1, ... Every node goes to the
earliest phase of its kind that comes after the phases producing its inputs; nodes of the same
phase may feed each other (a session runs its nodes in order, and so do the kernels of a phase,
taken in topological order). So kernel phase 0 holds the ``ai.qgnn`` nodes that read only graph
inputs (``EdgeDst`` of a layer's ``indptr``), and a model needs one onnxruntime call per
alternation its data flow forces, e.g. 3 for a 2-layer GCN. ``Constant`` nodes and initializers
belong to no phase: they are copied into every segment that reads them and handed to the kernel
nodes as numpy values (so requantisation multipliers are computed once, at load).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qgnn.contract.ops import QGNN_DOMAIN
from qgnn.runtime.engine import onnx_proto as op
from qgnn.runtime.engine.float_step import fuse_float_steps
from qgnn.runtime.engine.fusion import FusedLinear, fuse_linear
from qgnn.runtime.engine.gat_fusion import fuse_edge_softmax, fuse_gat_logits
from qgnn.runtime.engine.output_tables import fold_output_steps
from qgnn.runtime.engine.row_slice import fuse_row_slices

# Output element type and rank of each ai.qgnn op (docs/onnx-ops.md).
KERNEL_OUTPUTS: dict[str, tuple[int, int | None]] = {
    "Aggregate": (1, 2), "QAggregate": (2, 2), "AggregatePadded": (1, 2),
    "QAggregatePadded": (2, 2), "QMessageAggregate": (2, 2), "QGCNAggregate": (2, 2),
    "EdgeSoftmax": (1, 2), "QEdgeSoftmax": (1, 2), "EdgeDst": (7, 1), "LoopedIndptr": (7, 1),
    "LoopedSrc": (7, 1),
    "QLinear": (2, None),  # QLinear: the fused requantised linear layer (fusion.py)
    "FloatStep": (2, None),  # FloatStep: a fused elementwise float step (float_step.py)
    "GatLogits": (2, None), "GatLogitsF32": (1, None),  # GAT's logits (gat_fusion.py)
    "QEdgeSoftmaxQ": (2, 2),  # QEdgeSoftmax and the edge weights' QuantizeLinear (gat_fusion.py)
    # x[:num_dst] as a view (row_slice.py); only kernels read it, so no segment needs its type
    "RowSlice": (0, None)}


class PartitionError(ValueError):
    """A model the partitioned executor cannot run (the portable path still can)."""


@dataclass(frozen=True)
class KernelNodeSpec:
    """One ``ai.qgnn`` node: op, formal inputs ("" = absent), output and attributes."""

    op_type: str
    name: str
    inputs: tuple[str, ...]
    output: str
    attributes: dict[str, Any]


@dataclass
class SegmentSpec:
    """Standard nodes of one segment: run as one onnxruntime session."""

    level: int
    nodes: list[Any] = field(default_factory=list)  # NodeProto, graph order
    inputs: list[str] = field(default_factory=list)  # fed at run time
    outputs: list[str] = field(default_factory=list)  # needed later
    constants: list[str] = field(default_factory=list)  # initializers / Constant outputs read


@dataclass
class Plan:
    """The partition of one model: alternating segments and kernel nodes, plus what they need."""

    model: Any  # onnx_proto.ModelProto
    segments: list[SegmentSpec]
    kernels: list[list[KernelNodeSpec]]  # kernels[k] runs before segments[k]
    constants: dict[str, np.ndarray]  # numpy values of every constant a kernel node reads
    graph_inputs: list[str]
    graph_outputs: list[str]
    input_infos: dict[str, Any]  # graph input name -> ValueInfoProto
    value_infos: dict[str, Any]  # typed intermediate tensors (graph value_info)
    constant_nodes: dict[str, Any]  # output name -> Constant NodeProto
    initializers: dict[str, Any]  # name -> TensorProto

    def segment_model(self, segment: SegmentSpec, types: dict[str, tuple[int, int | None]]
                      ) -> bytes:
        """Serialized ModelProto of one segment. ``types`` gives (elem type, rank) of inputs
        that are neither graph inputs nor typed in the graph's value_info (outputs of kernels
        and earlier segments)."""
        model = op.ModelProto(ir_version=self.model.ir_version,
                              producer_name="qgnn.runtime.engine partition")
        for opset in self.model.opset_import:
            if opset.domain != QGNN_DOMAIN:
                model.opset_import.add().CopyFrom(opset)
        for function in self.model.functions:
            if function.domain != QGNN_DOMAIN:
                model.functions.add().CopyFrom(function)
        graph = model.graph
        graph.name = f"segment_{segment.level}"
        constant_outputs = [n for n in segment.constants if n in self.constant_nodes]
        for name in constant_outputs:
            graph.node.add().CopyFrom(self.constant_nodes[name])
        for node in segment.nodes:
            graph.node.add().CopyFrom(node)
        for name in segment.constants:
            if name in self.initializers:
                graph.initializer.add().CopyFrom(self.initializers[name])
        for name in segment.inputs:
            if name in self.input_infos:
                graph.input.add().CopyFrom(self.input_infos[name])
            elif name in self.value_infos:
                graph.input.add().CopyFrom(self.value_infos[name])
            elif name in types:
                graph.input.add().CopyFrom(op.value_info(name, *types[name]))
            else:
                raise PartitionError(f"segment {segment.level}: the type of input {name!r} is "
                                     f"unknown")
        for name in segment.outputs:
            graph.output.add(name=name)
        return model.SerializeToString()


def _subgraphs(node: Any) -> Iterable[Any]:
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def _implicit_inputs(graph: Any) -> set[str]:
    """Outer-scope names a subgraph (Loop/If/Scan body) reads without declaring them."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        for sub in _subgraphs(node):
            used |= _implicit_inputs(sub)
        defined.update(node.output)
    return used - defined


def node_reads(node: Any) -> list[str]:
    """Every tensor a node reads: its inputs and its subgraphs' outer-scope names."""
    names = [n for n in node.input if n]
    for sub in _subgraphs(node):
        names.extend(sorted(_implicit_inputs(sub)))
    return names


def constant_value(node: Any) -> np.ndarray | None:
    """The value of a ``Constant`` node, or None when it uses an attribute form not decoded
    here (it then stays an ordinary node)."""
    for attr in node.attribute:
        if attr.ref_attr_name:
            return None
        if attr.name == "value":
            return op.tensor_to_array(attr.t)
        if attr.name == "value_float":
            return np.asarray(attr.f, np.float32)
        if attr.name == "value_int":
            return np.asarray(attr.i, np.int64)
    return None


def _topological(nodes: list[Any], available: set[str]) -> list[Any]:
    """Nodes in an order where each one's inputs come first (ONNX graphs are usually sorted
    already; this also accepts ones that are not). Raises PartitionError on a cycle or an
    input nobody produces."""
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    order: list[Any] = []
    state = [0] * len(nodes)  # 0 new, 1 on stack, 2 done
    for start in range(len(nodes)):
        stack = [(start, iter(node_reads(nodes[start])))]
        if state[start]:
            continue
        state[start] = 1
        while stack:
            index, pending = stack[-1]
            for name in pending:
                if name in available:
                    continue
                dep = producer.get(name)
                if dep is None:
                    raise PartitionError(f"node {nodes[index].name or nodes[index].op_type!r} "
                                         f"reads {name!r}, which no node, input or "
                                         f"initializer provides")
                if state[dep] == 1:
                    raise PartitionError(f"the graph has a cycle through {name!r}")
                if state[dep] == 0:
                    state[dep] = 1
                    stack.append((dep, iter(node_reads(nodes[dep]))))
                    break
            else:
                stack.pop()
                state[index] = 2
                order.append(nodes[index])
    return order


def _kernel_spec(node: Any) -> KernelNodeSpec:
    attrs: dict[str, Any] = {}
    for attr in node.attribute:
        if attr.ref_attr_name:
            raise PartitionError(f"ai.qgnn node {node.name!r} takes attribute {attr.name!r} "
                                 f"by reference, which only a function body may do")
        if attr.type == op.ATTR_STRING:
            attrs[attr.name] = attr.s.decode()
        elif attr.type == op.ATTR_INT:
            attrs[attr.name] = int(attr.i)
        elif attr.type == op.ATTR_FLOAT:
            attrs[attr.name] = float(attr.f)
        else:
            raise PartitionError(f"ai.qgnn node {node.name!r}: attribute {attr.name!r} has "
                                 f"unsupported type {attr.type}")
    if len(node.output) != 1:
        raise PartitionError(f"ai.qgnn node {node.name!r} has {len(node.output)} outputs; the "
                             f"ops have exactly one")
    return KernelNodeSpec(node.op_type, node.name, tuple(node.input), node.output[0], attrs)


class _Constants(Mapping[str, np.ndarray]):
    """Initializer and Constant values, decoded on first access (weights are only read when a
    fusion looks at them)."""

    def __init__(self, initializers: Mapping[str, Any], values: Mapping[str, np.ndarray]
                 ) -> None:
        self._initializers = initializers
        self._values = dict(values)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._values:
            self._values[name] = op.tensor_to_array(self._initializers[name])
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter({*self._initializers, *self._values})

    def __len__(self) -> int:
        return len({*self._initializers, *self._values})


def partition(model_bytes: bytes | Any, *, fuse: bool = True) -> Plan:
    """Analyses a model, serialized or an already parsed onnx_proto ModelProto (read, never
    changed); see the module docstring for the split rule. ``fuse``
    hands requantised integer linear layers to the qlinear kernel (fusion.py), elementwise
    float steps to the float_step kernel (float_step.py) and GAT's attention logits to the
    gat_logits kernel (gat_fusion.py), then folds one-input float steps into the step or
    aggregate before them as byte tables (output_tables.py) and hands leading-row slices that
    only kernels read to ``RowSlice`` (row_slice.py)."""
    model = op.load_model(bytes(model_bytes)) if isinstance(
        model_bytes, bytes | bytearray | memoryview) else model_bytes
    graph = model.graph
    if len(graph.sparse_initializer):
        raise PartitionError("sparse initializers are not supported by the partitioned path")
    initializers = {t.name: t for t in graph.initializer}
    input_infos = {i.name: i for i in graph.input if i.name not in initializers}
    value_infos = {v.name: v for v in graph.value_info if v.type.tensor_type.elem_type}
    constant_nodes, constants, others = {}, {}, []
    for node in graph.node:
        value = constant_value(node) if node.op_type == "Constant" and not node.domain else None
        if value is not None and len(node.output) == 1:
            constant_nodes[node.output[0]] = node
            constants[node.output[0]] = value
        else:
            others.append(node)
    graph_outputs = [o.name for o in graph.output]
    if fuse:
        readers: dict[str, int] = {}
        for node in others:
            for name in node_reads(node):
                readers[name] = readers.get(name, 0) + 1
        values = _Constants(initializers, constants)
        others = fuse_linear(others, values, readers, set(graph_outputs))
        others = fuse_float_steps(others, values, readers, set(graph_outputs))
        others = fuse_gat_logits(others, values, readers, set(graph_outputs))
        others = fuse_edge_softmax(others, values, readers, set(graph_outputs))
        others = fold_output_steps(others, readers, set(graph_outputs),
                                   lambda node: dict(_kernel_spec(node).attributes))
        others = fuse_row_slices(others, values, set(graph_outputs), node_reads)
    available = set(input_infos) | set(initializers) | set(constant_nodes)
    order = _topological(others, available)

    # phase of each tensor's producer: -1 for graph inputs, 2k for kernel phase k, 2k + 1 for
    # segment k; constants are absent (ready everywhere)
    phase = dict.fromkeys(input_infos, -1)
    consumers: dict[str, set[int]] = {}  # tensor -> segments reading it
    kernel_reads: set[str] = set()
    segments: dict[int, SegmentSpec] = {}
    kernels: dict[int, list[KernelNodeSpec]] = {}
    for node in order:
        reads = node_reads(node)
        kernel = node.domain == QGNN_DOMAIN or isinstance(node, FusedLinear)
        # the earliest phase of the node's kind at or after which every input is ready
        ready = -1
        for name in reads:
            p = phase.get(name)
            if p is not None:
                same_kind = (p % 2 == 0) == kernel
                ready = max(ready, p if same_kind else p + 1)
        at = max(ready, 0)
        if (at % 2 == 1) == kernel:
            at += 1
        if kernel:
            if node.op_type not in KERNEL_OUTPUTS:
                raise PartitionError(f"unknown ai.qgnn op {node.op_type!r} (node {node.name!r})")
            spec = (KernelNodeSpec(node.op_type, node.name, tuple(node.input), node.output[0],
                                   node.params) if isinstance(node, FusedLinear)
                    else _kernel_spec(node))
            kernels.setdefault(at // 2, []).append(spec)
            phase[spec.output] = at
            kernel_reads.update(n for n in spec.inputs if n)
            continue
        seg = segments.setdefault(at // 2, SegmentSpec(at // 2))
        seg.nodes.append(node)
        for name in reads:
            consumers.setdefault(name, set()).add(at // 2)
        for out in node.output:
            if out:
                phase[out] = at
    for seg in segments.values():
        own = {out for node in seg.nodes for out in node.output if out}
        reads = {n for node in seg.nodes for n in node_reads(node)}
        seg.constants = sorted(n for n in reads - own if n in initializers or n in constant_nodes)
        seg.inputs = sorted(n for n in reads - own if n not in seg.constants)
        seg.outputs = sorted(n for n in own if n in kernel_reads or n in graph_outputs
                             or consumers.get(n, set()) - {seg.level})
    for name in kernel_reads | set(graph_outputs):
        if name in initializers:
            constants[name] = op.tensor_to_array(initializers[name])
    top = max([*segments, *kernels, 0])
    seg_list = [segments.get(k, SegmentSpec(k)) for k in range(top + 1)]
    kernel_list = [kernels.get(k, []) for k in range(top + 1)]
    return Plan(model=model, segments=seg_list, kernels=kernel_list,
                constants={k: v for k, v in constants.items() if k in kernel_reads
                           or k in graph_outputs},
                graph_inputs=list(input_infos), graph_outputs=graph_outputs,
                input_infos=input_infos, value_infos=value_infos,
                constant_nodes=constant_nodes, initializers=initializers)
