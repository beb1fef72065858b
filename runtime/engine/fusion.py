"""Recognises the requantised integer linear layer and hands it to the ``qlinear`` kernel.

Exported INT8 models write every ``nn.Linear`` as the contract's chain (docs/integer-formulation.md
rule 2, qgnn.exporter.emit.common ``requantize``):

    acc = MatMulInteger(x_q, W, zp_x, 128)         W a constant (K, J) uint8, ``w + 128``
                                                   (qgnn.contract.weights; or int8, zp 0)
    acc = Add(acc, bias_q)                         optional int32 constant (J,)
    y   = QuantizeLinear(Mul(Cast(acc, FLOAT), M), 1.0, zp_y)    [-> Clip(0, 2^bits - 1)]

or with the tail ``Cast(Clip(Add(Round(...), zp_y), 0, 2^bits - 1), UINT8)``. onnxruntime runs
that as four to seven passes over the (N, J) tensor; ``qgnn.runtime.kernels.qlinear``
computes the same integers in one (float32 ``acc * M``, round half to even, zero point, clamp),
so the partitioner replaces the chain by one engine-internal ``QLinear`` kernel node when every
link is exactly that: constants where the chain has constants, each intermediate read by the
next link only, never a graph output. Anything else is left to onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qgnn.contract import weight_values

FLOAT, UINT8 = 1, 2


@dataclass(eq=False)
class FusedLinear:
    """A recognised chain, shaped like a NodeProto for the partitioner (one input, one output,
    no attributes) plus the kernel's constants in ``params``."""

    name: str
    input: list[str]
    output: list[str]
    params: dict[str, Any]
    op_type: str = "QLinear"
    domain: str = "qgnn.engine"
    attribute: list[Any] = field(default_factory=list)


def _attr_int(node: Any, name: str) -> int | None:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return None


class _Graph:
    def __init__(self, nodes: list[Any], constants: Mapping[str, np.ndarray],
                 readers: Mapping[str, int], outputs: set[str]) -> None:
        self.constants = constants
        self.readers = readers
        self.outputs = outputs
        self.producer = {out: node for node in nodes for out in node.output if out}
        self.by_input: dict[str, list[Any]] = {}
        for node in nodes:
            for name in node.input:
                if name:
                    self.by_input.setdefault(name, []).append(node)

    def only_reader(self, tensor: str, op_type: str) -> Any | None:
        """The single standard node reading ``tensor``, if it is an ``op_type`` and nothing
        else (no other node, subgraph or graph output) reads the tensor."""
        if tensor in self.outputs or self.readers.get(tensor, 0) != 1:
            return None
        nodes = self.by_input.get(tensor, [])
        if len(nodes) != 1 or nodes[0].op_type != op_type or nodes[0].domain:
            return None
        return nodes[0]

    def const(self, name: str) -> np.ndarray | None:
        return self.constants.get(name)

    def other(self, node: Any, tensor: str) -> np.ndarray | None:
        """The constant operand of a binary node whose other operand is ``tensor``."""
        if len(node.input) != 2:
            return None
        a, b = node.input
        return self.const(b) if a == tensor else self.const(a) if b == tensor else None


def _scalar(value: np.ndarray | None, dtype: type) -> Any:
    if value is None or value.dtype != np.dtype(dtype) or value.size != 1:
        return None
    return value.reshape(())[()]


def _per_column(value: np.ndarray | None, dtype: type, columns: int) -> np.ndarray | None:
    """A scalar or (J,)/(1, J) constant as a (J,) array, else None."""
    if value is None or value.dtype != np.dtype(dtype):
        return None
    if value.size == 1:
        return np.full(columns, value.reshape(())[()], dtype)
    if value.shape in ((columns,), (1, columns)):
        return value.reshape(columns).copy()
    return None


def _weight(graph: _Graph, w_name: str, w_zp_name: str) -> np.ndarray | None:
    """The (K, J) int8 values of a constant weight: uint8 ``w + 128`` storage with zero point
    128, or int8 with zero point 0 (absent or all zeros); None for anything else."""
    w = graph.const(w_name)
    if w is None or w.ndim != 2:
        return None
    zp = graph.const(w_zp_name) if w_zp_name else np.zeros((), w.dtype)
    if zp is None or zp.size not in (1, w.shape[1]):
        return None
    if w.dtype == np.uint8:
        return weight_values(w, zp)
    if w.dtype == np.int8 and zp.dtype == np.int8 and not np.any(zp):
        return w
    return None


def _positive(value: Any) -> bool:
    return value is not None and bool(np.isfinite(value)) and value > 0


def _only_attrs(node: Any, allowed: tuple[str, ...]) -> bool:
    return all(a.name in allowed for a in node.attribute)


def quantize_tail(graph: _Graph, node: Any) -> tuple[list[Any], float, int, int] | None:
    """``QuantizeLinear(s_y, uint8 zp) [-> Clip(uint8 0, uint8 2^bits - 1)]`` with constant
    scalar scale and zero point, starting at ``node``: (nodes, s_y, zp_y, bits). The end of
    both the requantised linear chain (s_y = 1) and a float step (float_step.py)."""
    if len(node.input) != 3 or node.domain or not _only_attrs(node, ("axis", "saturate")):
        return None
    scale = _scalar(graph.const(node.input[1]), np.float32)
    zp = _scalar(graph.const(node.input[2]), np.uint8)
    if not _positive(scale) or zp is None:
        return None
    chain, bits = [node], 8
    clip = graph.only_reader(node.output[0], "Clip")
    if clip is not None and len(clip.input) == 3 and clip.input[0] == node.output[0]:
        low = _scalar(graph.const(clip.input[1]), np.uint8)
        high = _scalar(graph.const(clip.input[2]), np.uint8)
        found = next((b for b in range(1, 8) if high == 2**b - 1), None)
        if low == 0 and found is not None and zp <= high:
            chain.append(clip)
            bits = found
    return chain, float(scale), int(zp), bits


def _requant_tail(graph: _Graph, tensor: str) -> tuple[list[Any], int, int] | None:
    """The nodes after ``Mul(M)`` that round, add the zero point and saturate, with
    (zp_y, bits): ``QuantizeLinear(scale 1.0, uint8 zp) [-> Clip(uint8 0, uint8 2^bits - 1)]``
    or ``Round -> Add(float zp) -> Clip(0, 2^bits - 1) -> Cast(uint8)``."""
    node = graph.only_reader(tensor, "QuantizeLinear")
    if node is not None:
        tail = quantize_tail(graph, node) if node.input[0] == tensor else None
        if tail is None or tail[1] != 1.0:
            return None
        chain, _, y_zp, bits = tail
        return chain, y_zp, bits
    chain = []
    node = graph.only_reader(tensor, "Round")
    if node is None:
        return None
    chain.append(node)
    tensor = node.output[0]
    node = graph.only_reader(tensor, "Add")
    y_zp = None if node is None else _scalar(graph.other(node, tensor), np.float32)
    if y_zp is None or not (0 <= y_zp <= 255 and float(y_zp).is_integer()):
        return None
    chain.append(node)
    tensor = node.output[0]
    node = graph.only_reader(tensor, "Clip")
    if node is None or len(node.input) != 3 or node.input[0] != tensor:
        return None
    low = _scalar(graph.const(node.input[1]), np.float32)
    high = _scalar(graph.const(node.input[2]), np.float32)
    bits = next((b for b in range(1, 9) if high == 2**b - 1), None)
    if low != 0 or bits is None or y_zp > high:
        return None
    chain.append(node)
    tensor = node.output[0]
    node = graph.only_reader(tensor, "Cast")
    if node is None or _attr_int(node, "to") != UINT8:
        return None
    chain.append(node)
    return chain, int(y_zp), bits


def match(start: Any, graph: _Graph) -> tuple[FusedLinear, list[Any]] | None:
    """The fused node and the nodes it replaces, if ``start`` (a MatMulInteger) begins the
    chain of the module docstring."""
    inputs = list(start.input) + [""] * (4 - len(start.input))
    x_name, w_name, x_zp_name, w_zp_name = inputs[:4]
    w = _weight(graph, w_name, w_zp_name)
    if w is None:
        return None
    x_zp = 0 if not x_zp_name else _scalar(graph.const(x_zp_name), np.uint8)
    if x_zp is None:
        return None
    columns = int(w.shape[1])
    chain = [start]
    tensor = start.output[0]
    bias = None
    node = graph.only_reader(tensor, "Add")
    if node is not None:
        bias = _per_column(graph.other(node, tensor), np.int32, columns)
        if bias is None:
            return None
        chain.append(node)
        tensor = node.output[0]
    node = graph.only_reader(tensor, "Cast")
    if node is None or _attr_int(node, "to") != FLOAT:
        return None
    chain.append(node)
    tensor = node.output[0]
    node = graph.only_reader(tensor, "Mul")
    multiplier = None if node is None else _per_column(graph.other(node, tensor), np.float32,
                                                       columns)
    if multiplier is None or not (np.isfinite(multiplier).all() and (multiplier > 0).all()):
        return None
    chain.append(node)
    tail = _requant_tail(graph, node.output[0])
    if tail is None:
        return None
    links, y_zp, bits = tail
    chain += links
    fused = FusedLinear(start.name or start.output[0], [x_name], [chain[-1].output[0]],
                        {"weight": np.ascontiguousarray(w), "x_zero_point": int(x_zp),
                         "bias": bias, "multiplier": multiplier, "y_zero_point": int(y_zp),
                         "bits": bits})
    return fused, chain


def fuse_linear(nodes: list[Any], constants: Mapping[str, np.ndarray],
                readers: Mapping[str, int], outputs: set[str]) -> list[Any]:
    """``nodes`` (graph order) with every matched chain replaced, where its last link was, by
    one :class:`FusedLinear`. ``readers`` counts, per tensor, the nodes (and subgraphs) that
    read it; ``outputs`` are the graph outputs."""
    return fuse_chains(nodes, constants, readers, outputs, "MatMulInteger", match)


Matcher = Callable[[Any, "_Graph"], "tuple[FusedLinear, list[Any]] | None"]


def fuse_chains(nodes: list[Any], constants: Mapping[str, np.ndarray],
                readers: Mapping[str, int], outputs: set[str], anchor: str,
                matcher: Matcher) -> list[Any]:
    """The driver every fusion shares: ``matcher`` tries each standard-domain ``anchor`` node
    not already inside a matched chain; each match is spliced in where its last link was."""
    graph = _Graph(nodes, constants, readers, outputs)
    replaced: dict[int, FusedLinear | None] = {}
    for node in nodes:
        if node.op_type == anchor and not node.domain and id(node) not in replaced:
            found = matcher(node, graph)
            if found is not None:
                mark_replaced(replaced, *found)
    return splice(nodes, replaced)


def mark_replaced(replaced: dict[int, FusedLinear | None], fused: FusedLinear,
                  chain: list[Any]) -> None:
    """Records that ``chain`` goes and ``fused`` takes the place of its last link."""
    replaced.update({id(n): None for n in chain})
    replaced[id(chain[-1])] = fused


def splice(nodes: list[Any], replaced: Mapping[int, FusedLinear | None]) -> list[Any]:
    """``nodes`` in order with the recorded replacements made (removed links dropped)."""
    out = []
    for node in nodes:
        if id(node) not in replaced:
            out.append(node)
        elif replaced[id(node)] is not None:
            out.append(replaced[id(node)])
    return out
