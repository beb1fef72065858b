"""Putting ai.qgnn ops into models: validated nodes, their function bodies, one-op test models."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from onnx import FunctionProto, ModelProto, NodeProto, OperatorSetIdProto, helper
from qgnn.exporter.ops.body import Variant
from qgnn.exporter.ops.domain import IR_VERSION, ONNX_OPSET_VERSION, QGNN_DOMAIN, QGNN_OPSET_VERSION
from qgnn.exporter.ops.registry import ATTRIBUTE_CHOICES, OPS, OpSpec

Shape = Sequence[int | str | None]


def opset_imports() -> list[OperatorSetIdProto]:
    """The two opsets every model using ai.qgnn ops imports."""
    return [helper.make_opsetid("", ONNX_OPSET_VERSION),
            helper.make_opsetid(QGNN_DOMAIN, QGNN_OPSET_VERSION)]


def _spec(op_type: str) -> OpSpec:
    if op_type not in OPS:
        raise ValueError(f"op_type {op_type!r} is not an {QGNN_DOMAIN} op; known: {sorted(OPS)}")
    return OPS[op_type]


def _check_attributes(spec: OpSpec, attributes: Mapping[str, object]) -> dict[str, object]:
    for key, value in attributes.items():
        if key not in spec.attributes:
            raise ValueError(f"{spec.name}: unknown attribute {key!r}; expected one of "
                             f"{sorted(spec.attributes)}")
        if value not in ATTRIBUTE_CHOICES[key]:
            raise ValueError(f"{spec.name}: attribute {key} must be one of "
                             f"{ATTRIBUTE_CHOICES[key]}, got {value!r}")
    return dict(attributes)


def _present(spec: OpSpec, inputs: Sequence[str]) -> frozenset[str]:
    """Formal names of the given inputs, after checking arity and the optional group."""
    if len(inputs) > len(spec.inputs):
        raise ValueError(f"{spec.name}: {len(inputs)} inputs given, at most {len(spec.inputs)} "
                         f"({', '.join(spec.inputs)})")
    given = dict(zip(spec.inputs, inputs, strict=False))
    present = frozenset(k for k, v in given.items() if v)
    missing = [k for k in spec.inputs if k not in spec.optional and k not in present]
    if missing:
        raise ValueError(f"{spec.name}: required inputs {missing} are missing "
                         f"(inputs are {', '.join(spec.inputs)})")
    some = present & set(spec.optional)
    if some and some != set(spec.optional):
        raise ValueError(f"{spec.name}: optional inputs {list(spec.optional)} come together; "
                         f"got only {sorted(some)}")
    return present


def make_op_node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], *,
                 name: str | None = None, **attributes: object) -> NodeProto:
    """A validated ai.qgnn node; "" marks an absent optional input. The node's overload names
    the function body its attributes and inputs select (see :func:`function_protos`).
    """
    spec = _spec(op_type)
    attrs = _check_attributes(spec, attributes)
    variant = spec.variant(attrs, _present(spec, inputs))
    if len(outputs) != 1 or not outputs[0]:
        raise ValueError(f"{op_type}: exactly one output name expected, got {list(outputs)}")
    return helper.make_node(op_type, list(inputs), list(outputs), name=name, domain=QGNN_DOMAIN,
                            overload=variant.overload, **attrs)


def function_protos(nodes: Iterable[NodeProto]) -> list[FunctionProto]:
    """The function bodies (one per op and overload) the ai.qgnn ``nodes`` call, in a stable
    order, for ``ModelProto.functions``. Nodes of other domains are skipped.
    """
    wanted: dict[tuple[str, str], Variant] = {}
    for node in nodes:
        if node.domain != QGNN_DOMAIN:
            continue
        spec = _spec(node.op_type)
        match = {v.overload: v for v in spec.variants()}
        if node.overload not in match:
            raise ValueError(f"{node.op_type}: node {node.name!r} has overload "
                             f"{node.overload!r}; expected one of {sorted(match)}")
        wanted[node.op_type, node.overload] = match[node.overload]
    return [OPS[op].build_function(wanted[op, ov]) for op, ov in sorted(wanted)]


def make_op_model(op_type: str, input_types: Mapping[str, tuple[int, Shape]],
                  output_shape: Shape | None = None, **attributes: object) -> ModelProto:
    """A model running one ai.qgnn op, with its function attached.

    ``input_types`` maps the op's formal input names to (ONNX element type, shape); absent
    optional inputs are left out. The graph inputs carry the formal names, the output is "y"
    (shape ``output_shape``, default: the op's rank with unknown dimensions).
    """
    spec = _spec(op_type)
    unknown = set(input_types) - set(spec.inputs)
    if unknown:
        raise ValueError(f"{op_type}: unknown inputs {sorted(unknown)}; expected {spec.inputs}")
    inputs = [k if k in input_types else "" for k in spec.inputs]
    while inputs and not inputs[-1]:
        inputs.pop()
    node = make_op_node(op_type, inputs, ["y"], name=op_type, **attributes)
    graph = helper.make_graph(
        [node], f"{op_type}_model",
        [helper.make_tensor_value_info(k, *input_types[k]) for k in spec.inputs
         if k in input_types],
        [helper.make_tensor_value_info(
            "y", spec.output_type,
            [None] * spec.output_rank if output_shape is None else output_shape)])
    return helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION,
                             functions=function_protos([node]))
