"""Recognises GAT's attention-logit chain and hands it to the ``gat_logits`` kernel.

The exporter (qgnn.exporter.emit.gat) writes the logits of every quantised GAT layer as

    score_src = Mul(Cast(MatMulInteger(lin_q, A_src, zp_lin, 128), FLOAT), c_src)     (N, H)
    score_dst = the same of lin_q's first D rows with A_dst, c_dst                    (D, H)
    Gather(score_src, src) + Gather(score_dst, dst) -> LeakyRelu(alpha)
        -> QuantizeLinear(s, zp) [-> Clip] [-> DequantizeLinear(s, zp)]               (E, H)

with ``A`` block-diagonal (H*C, H): one int8 attention vector per head, zeros elsewhere
(qgnn.contract.attention). onnxruntime runs a dense (H*C, H) product per side and five or six
passes over (E, H) float32 tensors; the ``head_scores`` and ``gat_logits`` kernels compute the
same floats with C multiply-adds per head and one pass over the edges. The partitioner replaces
the chain by one engine-internal node when every link is exactly that: scalar scale and uint8
zero point constants, each intermediate read by the next link only, never a graph output.

* ``GatLogits`` writes the uint8 logits (what ``QEdgeSoftmax`` reads in current exports);
  ``GatLogitsF32`` also takes in a trailing ``DequantizeLinear`` (what ``EdgeSoftmax`` reads in
  bundles exported before the exact softmax) when it has the quantiser's own scale and zero
  point and the uint8 logits have no other reader, and writes the dequantised floats.
* When both scores are such products (constant block-diagonal ``A``, constant scalar or (H,)
  ``c``), the node reads the two uint8 ``lin`` tensors; otherwise it reads the two float score
  tensors and only the edge part is fused.

The exact softmax of those logits (``QEdgeSoftmax``) is followed by the ``QuantizeLinear`` [->
``Clip``] of the edge weights; when the alphas have no other reader, the two become one
``QEdgeSoftmaxQ`` node whose kernel quantises each alpha as it computes it (the same float32
division and half-to-even rounding), so no float (E, H) tensor and no onnxruntime call remain
between the logits and ``QMessageAggregate``.

Anything else is left to onnxruntime.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from qgnn.contract.ops import QGNN_DOMAIN
from qgnn.runtime.engine.float_step import _link
from qgnn.runtime.engine.fusion import (
    FLOAT,
    FusedLinear,
    _attr_int,
    _Graph,
    _only_attrs,
    _per_column,
    _scalar,
    _weight,
    fuse_chains,
    quantize_tail,
)

LEAKY_RELU_DEFAULT_ALPHA = 0.01  # the ONNX default


def _attr_float(node: Any, name: str, default: float) -> float:
    for attr in node.attribute:
        if attr.name == name:
            return float(attr.f)
    return default


def _gather(graph: _Graph, tensor: str) -> tuple[str, str] | None:
    """(data, indices) of the axis-0 ``Gather`` producing ``tensor`` (read once)."""
    node = _link(graph, tensor)
    if (node is None or node.op_type != "Gather" or len(node.input) != 2
            or not _only_attrs(node, ("axis",)) or (_attr_int(node, "axis") or 0) != 0
            or any(graph.const(n) is not None for n in node.input)):
        return None
    return node.input[0], node.input[1]


def _head_scores(graph: _Graph, tensor: str) -> tuple[str, dict[str, Any], list[Any]] | None:
    """(uint8 input, kernel constants, nodes) of ``tensor = Mul(Cast(MatMulInteger(x, A, zp,
    zp_A), FLOAT), c)`` with a block-diagonal constant ``A`` (module docstring)."""
    mul = _link(graph, tensor)
    if mul is None or mul.op_type != "Mul" or len(mul.input) != 2 or mul.attribute:
        return None
    variable = [n for n in mul.input if graph.const(n) is None]
    if len(variable) != 1:
        return None
    cast = _link(graph, variable[0])
    if cast is None or cast.op_type != "Cast" or _attr_int(cast, "to") != FLOAT:
        return None
    matmul = _link(graph, cast.input[0])
    if matmul is None or matmul.op_type != "MatMulInteger" or len(matmul.input) != 4:
        return None
    x, w_name, zp_name, w_zp_name = matmul.input
    w = _weight(graph, w_name, w_zp_name)
    zp = _scalar(graph.const(zp_name), np.uint8) if zp_name else np.uint8(0)
    if w is None or zp is None or w.shape[0] % w.shape[1]:
        return None
    heads, dim = w.shape[1], w.shape[0] // w.shape[1]
    blocks = w.reshape(heads, dim, heads)
    att = np.ascontiguousarray(blocks[np.arange(heads), :, np.arange(heads)])  # (H, C)
    off = blocks.copy()
    off[np.arange(heads), :, np.arange(heads)] = 0
    scale = _per_column(graph.other(mul, variable[0]), np.float32, heads)
    if off.any() or scale is None or not np.isfinite(scale).all():
        return None
    return x, {"x_zero_point": int(zp), "att": att.astype(np.int8), "scale": scale}, \
        [mul, cast, matmul]


def _dequantize_tail(graph: _Graph, tensor: str, scale: float, zp: int) -> Any | None:
    """The one ``DequantizeLinear`` reading ``tensor`` with the same scalar scale and zp."""
    node = graph.only_reader(tensor, "DequantizeLinear")
    if node is None or len(node.input) != 3 or node.input[0] != tensor \
            or not _only_attrs(node, ("axis",)):
        return None
    s = _scalar(graph.const(node.input[1]), np.float32)
    z = _scalar(graph.const(node.input[2]), np.uint8)
    return node if s is not None and z is not None and float(s) == scale and int(z) == zp \
        else None


def match(quantize: Any, graph: _Graph) -> tuple[FusedLinear, list[Any]] | None:
    """The ``GatLogits`` node and the nodes it replaces, if ``quantize`` ends the chain of the
    module docstring."""
    tail = quantize_tail(graph, quantize)
    if tail is None:
        return None
    links, scale, zp, bits = tail
    leaky = _link(graph, quantize.input[0])
    if leaky is None or leaky.op_type != "LeakyRelu" or len(leaky.input) != 1 \
            or not _only_attrs(leaky, ("alpha",)):
        return None
    add = _link(graph, leaky.input[0])
    if add is None or add.op_type != "Add" or len(add.input) != 2 or add.attribute:
        return None
    a, b = _gather(graph, add.input[0]), _gather(graph, add.input[1])
    if a is None or b is None:
        return None
    inputs = [a[0], b[0], a[1], b[1]]
    scores = [_head_scores(graph, a[0]), _head_scores(graph, b[0])]
    nodes = [graph.producer[add.input[0]], graph.producer[add.input[1]], add, leaky, *links]
    if scores[0] is not None and scores[1] is not None:
        inputs[:2] = [scores[0][0], scores[1][0]]
        nodes = scores[0][2] + scores[1][2] + nodes
    dq = _dequantize_tail(graph, links[-1].output[0], scale, zp)
    if dq is not None:
        nodes.append(dq)
    params = {"slope": np.float32(_attr_float(leaky, "alpha", LEAKY_RELU_DEFAULT_ALPHA)),
              "scale": scale, "zero_point": zp, "bits": bits, "dequantize": dq is not None,
              "scores": (None if inputs[0] == a[0] else (scores[0][1], scores[1][1]))}
    fused = FusedLinear(quantize.name or quantize.output[0], inputs,
                        [nodes[-1].output[0]], params,
                        op_type="GatLogitsF32" if dq is not None else "GatLogits")
    return fused, nodes


def fuse_gat_logits(nodes: list[Any], constants: Mapping[str, np.ndarray],
                    readers: Mapping[str, int], outputs: set[str]) -> list[Any]:
    """``nodes`` (graph order) with every matched chain replaced, where its last link was, by
    one ``GatLogits`` node (arguments as :func:`qgnn.runtime.engine.fusion.fuse_linear`)."""
    return fuse_chains(nodes, constants, readers, outputs, "QuantizeLinear", match)


def match_softmax(quantize: Any, graph: _Graph) -> tuple[FusedLinear, list[Any]] | None:
    """The ``QEdgeSoftmaxQ`` node and the nodes it replaces, if ``quantize`` (with its Clip)
    quantises the output of a ``QEdgeSoftmax`` that nothing else reads."""
    tail = quantize_tail(graph, quantize)
    alpha = quantize.input[0]
    if tail is None or alpha in graph.outputs or graph.readers.get(alpha, 0) != 1:
        return None
    softmax = graph.producer.get(alpha)
    if (softmax is None or softmax.op_type != "QEdgeSoftmax" or softmax.domain != QGNN_DOMAIN
            or len(softmax.input) != 3 or not all(softmax.input) or softmax.attribute):
        return None
    links, scale, zp, bits = tail
    fused = FusedLinear(quantize.name or quantize.output[0], list(softmax.input),
                        [links[-1].output[0]], {"scale": scale, "zero_point": zp, "bits": bits},
                        op_type="QEdgeSoftmaxQ")
    return fused, [softmax, *links]


def fuse_edge_softmax(nodes: list[Any], constants: Mapping[str, np.ndarray],
                      readers: Mapping[str, int], outputs: set[str]) -> list[Any]:
    """``nodes`` with every ``QEdgeSoftmax -> QuantizeLinear [-> Clip]`` replaced by one
    ``QEdgeSoftmaxQ`` node (arguments as :func:`fuse_gat_logits`)."""
    return fuse_chains(nodes, constants, readers, outputs, "QuantizeLinear", match_softmax)
