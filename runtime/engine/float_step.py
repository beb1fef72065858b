"""Recognises the exporter's elementwise float steps and hands them to the ``float_step`` kernel.

Rule 5 of docs/integer-formulation.md is written as

    DequantizeLinear(a_q, s_a, zp_a) [-> ops]  [Add  DequantizeLinear(b_q, s_b, zp_b) [-> ops]]
        -> ops -> QuantizeLinear(s_y, zp_y) [-> Clip(uint8 0, uint8 2^bits - 1)]

with ops from a small whitelist: Add/Sub/Mul with a float32 constant (scalar, (F,) or (1, F)),
Div by one, Relu, and the eval BatchNorm's ``Cast(float64) -> Mul(alpha) -> Add(beta) ->
Cast(float32)`` (qgnn.exporter.emit.norms). onnxruntime runs every node as its own pass over the
(N, F) tensor; ``qgnn.runtime.kernels.float_step_q8`` performs the same float operations in the
same order in one, so the partitioner replaces each chain by one engine-internal ``FloatStep``
kernel node when every link is exactly that: scalar scales and uint8 zero points that are
constants, constants where the chain has constants, each intermediate read by the next link only,
never a graph output. Anything else is left to onnxruntime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qgnn.runtime.engine.fusion import (
    FusedLinear,
    _attr_int,
    _Graph,
    _only_attrs,
    _positive,
    _scalar,
    fuse_chains,
    quantize_tail,
)

FLOAT, DOUBLE = 1, 11
_CONST_OPS = {"Add": ("add", "add"), "Mul": ("mul", "mul"), "Sub": ("sub", "rsub"),
              "Div": ("div", None)}  # op -> (name with the constant second, with it first)


@dataclass
class _Branch:
    """One input's dequantisation and the ops on it before the two inputs meet."""

    tensor: str
    scale: float
    zero_point: int
    ops: list[tuple[str, Any]] = field(default_factory=list)


def _constant(graph: _Graph, name: str, dtype: type) -> np.ndarray | None:
    """A finite scalar, (F,) or (1, F) constant of ``dtype``."""
    value = graph.const(name)
    if value is None or value.dtype != np.dtype(dtype) or not np.isfinite(value).all():
        return None
    if value.size == 1 or value.ndim == 1 or (value.ndim == 2 and value.shape[0] == 1):
        return value
    return None


def _link(graph: _Graph, tensor: str) -> Any | None:
    """The standard single-output node producing ``tensor``, if the one node that reads
    ``tensor`` is the next link (no other reader, not a graph output)."""
    if tensor in graph.outputs or graph.readers.get(tensor, 0) != 1:
        return None
    node = graph.producer.get(tensor)
    if node is None or node.domain or len(node.output) != 1:
        return None
    return node


def _dequantize(graph: _Graph, node: Any) -> _Branch | None:
    if len(node.input) != 3 or not _only_attrs(node, ("axis",)):
        return None
    scale = _scalar(graph.const(node.input[1]), np.float32)
    zp = _scalar(graph.const(node.input[2]), np.uint8)
    if not _positive(scale) or zp is None:
        return None
    return _Branch(node.input[0], float(scale), int(zp))


def _affine(graph: _Graph, cast: Any) -> tuple[str, Any, list[Any]] | None:
    """``Cast(float32) <- Add(beta) <- Mul(alpha) <- Cast(float64) <- x``: (x, (alpha, beta),
    the three inner nodes), float64 constants."""
    if _attr_int(cast, "to") != FLOAT:
        return None
    add = _link(graph, cast.input[0])
    if add is None or add.op_type != "Add" or len(add.input) != 2:
        return None
    mul_out, beta = _operand(graph, add, np.float64)
    mul = None if beta is None else _link(graph, mul_out)
    if mul is None or mul.op_type != "Mul" or len(mul.input) != 2:
        return None
    wide_out, alpha = _operand(graph, mul, np.float64)
    wide = None if alpha is None else _link(graph, wide_out)
    if wide is None or wide.op_type != "Cast" or _attr_int(wide, "to") != DOUBLE:
        return None
    return wide.input[0], (alpha, beta), [add, mul, wide]


def _operand(graph: _Graph, node: Any, dtype: type) -> tuple[str, np.ndarray | None]:
    """(the variable input, the constant) of a commutative binary node."""
    a, b = node.input
    if graph.const(a) is None:
        return a, _constant(graph, b, dtype)
    if graph.const(b) is None:
        return b, _constant(graph, a, dtype)
    return "", None


def _walk(graph: _Graph, tensor: str, ops: list[tuple[str, Any]], nodes: list[Any]
          ) -> tuple[str, Any] | None:
    """Follows ``tensor`` back through whitelisted links, prepending their ops, to a
    ``("dq", _Branch)`` or a ``("add", node)`` of two variable inputs."""
    while True:
        node = _link(graph, tensor)
        if node is None:
            return None
        nodes.append(node)
        kind = node.op_type
        if kind == "DequantizeLinear":
            branch = _dequantize(graph, node)
            return None if branch is None else ("dq", branch)
        if kind == "Relu" and len(node.input) == 1 and not node.attribute:
            ops.insert(0, ("relu", None))
            tensor = node.input[0]
        elif kind == "Cast" and len(node.input) == 1:
            found = _affine(graph, node)
            if found is None:
                return None
            tensor, constants, inner = found
            ops.insert(0, ("affine_f64", constants))
            nodes += inner
        elif kind in _CONST_OPS and len(node.input) == 2 and not node.attribute:
            a, b = node.input
            ca, cb = graph.const(a), graph.const(b)
            if ca is None and cb is None:
                return ("add", node) if kind == "Add" and a != b else None
            second, first = _CONST_OPS[kind]
            name, tensor, constant = ((second, a, _constant(graph, b, np.float32)) if ca is None
                                      else (first, b, _constant(graph, a, np.float32)))
            if name is None or constant is None or (ca is not None and cb is not None):
                return None
            ops.insert(0, (name, constant))
        else:
            return None


def match(quantize: Any, graph: _Graph) -> tuple[FusedLinear, list[Any]] | None:
    """The ``FloatStep`` node and the nodes it replaces, if ``quantize`` ends a chain of the
    module docstring."""
    tail = quantize_tail(graph, quantize)
    if tail is None:
        return None
    links, y_scale, y_zp, bits = tail
    ops: list[tuple[str, Any]] = []
    nodes: list[Any] = []
    end = _walk(graph, quantize.input[0], ops, nodes)
    if end is None:
        return None
    branches = [end[1]] if end[0] == "dq" else []
    program: list[tuple[str, int, Any]] = []
    if end[0] == "add":
        for register, tensor in enumerate(end[1].input):
            branch_ops: list[tuple[str, Any]] = []
            found = _walk(graph, tensor, branch_ops, nodes)
            if found is None or found[0] != "dq":
                return None
            found[1].ops = branch_ops
            branches.append(found[1])
            program += [(name, register, c) for name, c in branch_ops]
        program.append(("add_b", 0, None))
    program += [(name, 0, c) for name, c in ops]
    shapes = [np.shape(c) for _, _, c in program if c is not None and not isinstance(c, tuple)]
    shapes += [np.shape(x) for _, _, c in program if isinstance(c, tuple) for x in c]
    a = branches[0]
    b = branches[1] if len(branches) > 1 else None
    params = {"a_scale": a.scale, "a_zero_point": a.zero_point,
              "b_scale": b.scale if b else 1.0, "b_zero_point": b.zero_point if b else 0,
              "ops": program, "const_shapes": shapes, "y_scale": y_scale, "y_zero_point": y_zp,
              "bits": bits}
    chain = nodes[::-1] + links
    fused = FusedLinear(quantize.name or quantize.output[0], [br.tensor for br in branches],
                        [links[-1].output[0]], params, op_type="FloatStep")
    return fused, chain


def fuse_float_steps(nodes: list[Any], constants: Mapping[str, np.ndarray],
                     readers: Mapping[str, int], outputs: set[str]) -> list[Any]:
    """``nodes`` (graph order) with every matched chain replaced, where its last link was, by
    one ``FloatStep`` node (arguments as :func:`qgnn.runtime.engine.fusion.fuse_linear`)."""
    return fuse_chains(nodes, constants, readers, outputs, "QuantizeLinear", match)
