"""Building blocks of the function bodies: a node collector and the shared graph fragments.

Every fragment uses standard ONNX ops only and is correct at any intra-op thread count: segment
sums go through CumSum over the destination-sorted edges (never ScatterND with a reduction,
which onnxruntime 1.32 computes wrongly with repeated indices and more than one thread), segment
maxima through a log-depth segmented scan in a Loop. Shapes in comments: E edges, D = num_dst
destinations, F features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import AttributeProto, FunctionProto, GraphProto, NodeProto, TensorProto, helper
from onnx.numpy_helper import from_array
from qgnn.exporter.ops.domain import ONNX_OPSET_VERSION, QGNN_DOMAIN

INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Variant:
    """What selects a function body: the ``reduce`` attribute and whether the op's optional
    input group (edge weights for most ops) is present. Its :attr:`overload` names the body
    (FunctionProto/NodeProto overload); ``tag`` is the group's word in it.
    """

    reduce: str | None = None
    weighted: bool = False
    tag: str = "weighted"

    @property
    def overload(self) -> str:
        return "_".join([*([self.reduce] if self.reduce else []),
                         *([self.tag] if self.weighted else [])])


class Body:
    """Collects the nodes of one function body (or Loop body) and names their outputs uniquely."""

    def __init__(self, prefix: str = "t") -> None:
        self.nodes: list[NodeProto] = []
        self._prefix = prefix
        self._count = 0

    def fresh(self) -> str:
        self._count += 1
        return f"{self._prefix}{self._count}"

    def op(self, op_type: str, *inputs: str, **attributes: object) -> str:
        """One single-output node; returns its output name."""
        return self.op_n(op_type, inputs, 1, **attributes)[0]

    def op_n(self, op_type: str, inputs: tuple[str, ...] | list[str], n_outputs: int,
             **attributes: object) -> list[str]:
        outputs = [self.fresh() for _ in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, **attributes))
        return outputs

    def const(self, value: np.ndarray | float | int, dtype: type | np.dtype) -> str:
        """A Constant node holding ``value`` as a ``dtype`` tensor (0-d values stay scalars)."""
        return self.op("Constant", value=from_array(np.asarray(value, dtype=dtype)))

    def attribute(self, name: str, kind: AttributeProto.AttributeType) -> str:
        """A Constant whose value is the calling node's attribute ``name`` (a 0-d tensor)."""
        field = {AttributeProto.INT: "value_int", AttributeProto.FLOAT: "value_float"}[kind]
        out = self.fresh()
        node = helper.make_node("Constant", [], [out])
        node.attribute.append(helper.make_attribute_ref(field, kind, ref_attr_name=name))
        self.nodes.append(node)
        return out

    def rename_output(self, value: str, name: str) -> None:
        """Make ``name`` (a formal output) an alias of ``value``."""
        self.nodes.append(helper.make_node("Identity", [value], [name]))


def make_function(name: str, variant: Variant, inputs: tuple[str, ...],
                  outputs: tuple[str, ...], body: Body,
                  attributes: dict[str, object]) -> FunctionProto:
    """Wrap ``body`` as the model-local function ``ai.qgnn::name`` for one variant (overload);
    ``attributes`` are the op's attributes with their defaults.
    """
    return helper.make_function(
        QGNN_DOMAIN, name, list(inputs), list(outputs), body.nodes,
        [helper.make_opsetid("", ONNX_OPSET_VERSION)],
        attribute_protos=[helper.make_attribute(k, v) for k, v in attributes.items()],
        doc_string=f"{QGNN_DOMAIN}::{name} overload {variant.overload!r}, standard ops only "
                   f"(spec: qgnn.exporter.ops)", overload=variant.overload)


class Degrees:
    """Per-destination helpers shared by both neighbour layouts; ``deg`` is the (D,) in-degree."""

    b: Body
    deg: str

    def deg_column(self, dtype: int) -> str:
        """(D, 1) in-degree clamped to >= 1, cast to ``dtype``, for a per-destination divide."""
        b = self.b
        clamped = b.op("Max", self.deg, b.const(1, np.int64))
        return b.op("Unsqueeze", b.op("Cast", clamped, to=dtype), b.const([1], np.int64))

    def has_edges(self) -> str:
        """(D, 1) bool: the destination has at least one edge."""
        b = self.b
        return b.op("Unsqueeze", b.op("Greater", self.deg, b.const(0, np.int64)),
                    b.const([1], np.int64))


class Csr(Degrees):
    """Names of the CSR-derived tensors a body needs, computed once from ``indptr`` (D + 1,)."""

    def __init__(self, b: Body, indptr: str) -> None:
        self.b = b
        self.indptr = indptr
        self.starts = b.op("Slice", indptr, b.const([0], np.int64), b.const([-1], np.int64))
        self.ends = b.op("Slice", indptr, b.const([1], np.int64), b.const([INT64_MAX], np.int64))
        self.deg = b.op("Sub", self.ends, self.starts)  # (D,)
        self.num_edges = b.op("Slice", indptr, b.const([-1], np.int64),
                              b.const([INT64_MAX], np.int64))  # (1,) E = indptr[D]
        self._dst: str | None = None

    @property
    def dst(self) -> str:
        """(E,) destination of each edge, np.repeat(arange(D), deg).

        One mark at each destination's first edge (a 1-D ScatterElements add over D - 1
        positions: marks of empty destinations pile up at the same position, which the add
        reduction counts correctly at any thread count), then a running count.
        """
        if self._dst is None:
            b = self.b
            size = b.op("Add", self.num_edges, b.const([1], np.int64))
            zeros = b.op("ConstantOfShape", size,
                         value=from_array(np.zeros(1, np.int64)))  # (E + 1,)
            inner = b.op("Slice", self.indptr, b.const([1], np.int64), b.const([-1], np.int64))
            ones = b.op("Expand", b.const(1, np.int64), b.op("Shape", inner))
            marks = b.op("ScatterElements", zeros, inner, ones, axis=0, reduction="add")
            counts = b.op("CumSum", marks, b.const(0, np.int64))
            self._dst = b.op("Slice", counts, b.const([0], np.int64), self.num_edges)
        return self._dst


class Fanout(Degrees):
    """Names of the tensors a padded fixed-fanout body needs from ``nbr`` (D, K), -1 = padding."""

    def __init__(self, b: Body, nbr: str) -> None:
        self.b = b
        self.mask = b.op("GreaterOrEqual", nbr, b.const(0, np.int64))  # (D, K)
        self.rows = b.op("Add", nbr, b.const(1, np.int64))  # row in the zero-row-padded x
        self.deg = b.op("ReduceSum", b.op("Cast", self.mask, to=TensorProto.INT64),
                        b.const([1], np.int64), keepdims=0)  # (D,)

    def mask3(self) -> str:
        """(D, K, 1) mask, broadcasting over features."""
        return self.b.op("Unsqueeze", self.mask, self.b.const([2], np.int64))


def pad_front(b: Body, values: str, rank: int) -> str:
    """Prepend one zero row along axis 0."""
    pads = [1] + [0] * (2 * rank - 1)
    return b.op("Pad", values, b.const(pads, np.int64))


def gather_rows(b: Body, x: str, src: str) -> str:
    """(E + 1, F) rows of ``x`` (N, F) per edge behind one zero row: the layout the segmented
    reductions index, row e + 1 = edge e. Padding x (N rows) instead of the gathered block
    (E rows) keeps the extra copy small, and an empty x still works.
    """
    rows = b.op("Concat", b.const([0], np.int64), b.op("Add", src, b.const(1, np.int64)), axis=0)
    return b.op("Gather", pad_front(b, x, 2), rows, axis=0)


def segment_sum(b: Body, padded: str, csr: Csr) -> str:
    """(D, F) sums of the rows of ``padded`` (E + 1, F) (row 0 a dummy, row e + 1 edge e) per
    destination, as differences of a running sum: exact for integers, and for floats when
    ``padded`` is float64 (the caller casts back). The dummy row cancels in every difference.
    """
    running = b.op("CumSum", padded, b.const(0, np.int64))
    upper = b.op("Gather", running, csr.ends, axis=0)
    lower = b.op("Gather", running, csr.starts, axis=0)
    return b.op("Sub", upper, lower)


def segment_max(b: Body, padded: str, csr: Csr, elem_type: int) -> str:
    """(D, F) maxima of the rows of ``padded`` (E + 1, F) of ONNX type ``elem_type`` per
    destination; rows of empty destinations hold garbage (callers mask them with
    :meth:`Degrees.has_edges`).

    Segmented Hillis-Steele scan: after the step with shift s, row e holds the max over the
    last 2s edges of its segment up to e, so ceil(log2(max degree)) steps leave each segment's
    max on its last edge. Each step is one row Gather and one Max over E x F (rows whose
    partner e - s lies outside their segment gather themselves). Memory stays O(E F), unlike a
    padded [D, max degree] grid, which a single hub blows up.
    """
    rows = b.op("Range", b.const(0, np.int64), b.op("Squeeze", b.op(
        "Add", csr.num_edges, b.const([1], np.int64))), b.const(1, np.int64))  # (E + 1,)
    first = b.op("Concat", b.const([0], np.int64),
                 b.op("Add", b.op("Gather", csr.starts, csr.dst, axis=0),
                      b.const(1, np.int64)), axis=0)  # padded row of each edge's segment start
    offset = b.op("Sub", rows, first)  # (E + 1,) position within the segment; 0 for the dummy
    max_deg = b.op("ReduceMax", b.op("Concat", b.const([0], np.int64), csr.deg, axis=0),
                   keepdims=0)
    one = b.const(1, np.int64)
    go = b.op("Less", one, max_deg)
    _, scanned = b.op_n("Loop", ["", go, one, padded], 2,
                        body=_max_scan_step(rows, offset, max_deg, elem_type))
    return b.op("Gather", scanned, csr.ends, axis=0)  # last edge e -> padded row e + 1


def _max_scan_step(rows: str, offset: str, max_deg: str, elem_type: int) -> GraphProto:
    """One doubling step: v[e] = max(v[e], v[e - s]) where e - s is in e's segment; s *= 2."""
    b = Body("s")
    shift, values = "shift_in", "values_in"
    partner = b.op("Where", b.op("GreaterOrEqual", offset, shift), b.op("Sub", rows, shift), rows)
    b.rename_output(b.op("Max", values, b.op("Gather", values, partner, axis=0)), "values_out")
    doubled = b.op("Mul", shift, b.const(2, np.int64))
    b.rename_output(doubled, "shift_out")
    b.rename_output(b.op("Less", doubled, max_deg), "go_out")
    scalar: list[int] = []
    matrix = [None, None]
    return helper.make_graph(
        b.nodes, "max_scan_step",
        [helper.make_tensor_value_info("iteration", TensorProto.INT64, scalar),
         helper.make_tensor_value_info("go_in", TensorProto.BOOL, scalar),
         helper.make_tensor_value_info("shift_in", TensorProto.INT64, scalar),
         helper.make_tensor_value_info("values_in", elem_type, matrix)],
        [helper.make_tensor_value_info("go_out", TensorProto.BOOL, scalar),
         helper.make_tensor_value_info("shift_out", TensorProto.INT64, scalar),
         helper.make_tensor_value_info("values_out", elem_type, matrix)])


def requantise(b: Body, acc: str, multiplier: str, y_zero_point: str, bits: str) -> str:
    """uint8 saturate(round_half_even(float32(acc) * multiplier) + zp_y) to [0, 2^bits - 1].

    ``multiplier`` is a float32 scalar or a (D, 1) column (mean). ONNX Round is half-to-even;
    adding the zero point to the integral float is exact below 2^24 and beyond that the value
    clips to the same bound, so the Clip/Cast give the contract's integers exactly.
    """
    scaled = b.op("Mul", b.op("Cast", acc, to=TensorProto.FLOAT), multiplier)
    shifted = b.op("Add", b.op("Round", scaled), b.op("Cast", y_zero_point, to=TensorProto.FLOAT))
    qmax = b.op("Sub", b.op("Pow", b.const(2.0, np.float32), b.op(
        "Cast", bits, to=TensorProto.FLOAT)), b.const(1.0, np.float32))
    clipped = b.op("Clip", shifted, b.const(0.0, np.float32), qmax)
    return b.op("Cast", clipped, to=TensorProto.UINT8)
