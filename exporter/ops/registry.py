"""The registry of ``ai.qgnn`` ops: what each one takes, how its body is built, its reference."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType

from onnx import FunctionProto, TensorProto
from onnx.reference.op_run import OpRun
from qgnn.exporter.ops import (
    aggregate,
    aggregate_padded,
    edge_dst,
    edge_softmax,
    q_aggregate,
    q_aggregate_padded,
    q_edge_softmax,
    q_gcn_aggregate,
    q_message_aggregate,
    self_loops,
)
from qgnn.exporter.ops.body import Variant
from qgnn.exporter.ops.numeric import REDUCES

# Allowed values of every attribute an ai.qgnn op may carry.
ATTRIBUTE_CHOICES: dict[str, tuple[object, ...]] = {"reduce": REDUCES, "bits": tuple(range(1, 9)),
                                                    "msg_bits": tuple(range(1, 9)),
                                                    "w_bits": tuple(range(1, 9)),
                                                    "drop_existing": (0, 1)}


@dataclass(frozen=True)
class OpSpec:
    """One op: formal inputs (optional ones present all together or not at all, named
    ``optional_tag`` in overloads), attributes with defaults, the output element type, the body
    builder and the numpy reference.
    """

    name: str
    inputs: tuple[str, ...]
    optional: tuple[str, ...]
    output_type: int
    output_rank: int
    build_function: Callable[[Variant], FunctionProto]
    reference: type[OpRun]
    attributes: Mapping[str, object] = field(default_factory=dict)
    optional_tag: str = "weighted"

    def variant(self, attributes: Mapping[str, object], present: frozenset[str]) -> Variant:
        """The body variant a node with these (validated) attributes and inputs needs."""
        reduce = attributes.get("reduce", self.attributes.get("reduce"))
        return Variant(reduce=None if reduce is None else str(reduce),
                       weighted=bool(self.optional) and set(self.optional) <= present,
                       tag=self.optional_tag)

    def variants(self) -> tuple[Variant, ...]:
        reduces = REDUCES if "reduce" in self.attributes else (None,)
        weights = (False, True) if self.optional else (False,)
        return tuple(Variant(r, w, self.optional_tag) for r in reduces for w in weights)


def _spec(module: ModuleType, output_type: int, output_rank: int) -> OpSpec:
    return OpSpec(name=module.NAME, inputs=module.INPUTS, optional=module.OPTIONAL,
                  output_type=output_type, output_rank=output_rank,
                  build_function=module.build_function,
                  reference=getattr(module, module.NAME), attributes=module.ATTRIBUTES,
                  optional_tag=getattr(module, "OPTIONAL_TAG", "weighted"))


OPS: dict[str, OpSpec] = {spec.name: spec for spec in (
    _spec(aggregate, TensorProto.FLOAT, 2),
    _spec(q_aggregate, TensorProto.UINT8, 2),
    _spec(aggregate_padded, TensorProto.FLOAT, 2),
    _spec(q_aggregate_padded, TensorProto.UINT8, 2),
    _spec(q_message_aggregate, TensorProto.UINT8, 2),
    _spec(q_gcn_aggregate, TensorProto.UINT8, 2),
    _spec(edge_softmax, TensorProto.FLOAT, 2),
    _spec(q_edge_softmax, TensorProto.FLOAT, 2),
    _spec(edge_dst, TensorProto.INT64, 1),
    *(OpSpec(name=name, inputs=self_loops.INPUTS, optional=(), output_type=TensorProto.INT64,
             output_rank=1, build_function=build, reference=reference,
             attributes=self_loops.ATTRIBUTES)
      for name, build, reference in (
          (self_loops.INDPTR_NAME, self_loops.build_indptr_function, self_loops.LoopedIndptr),
          (self_loops.SRC_NAME, self_loops.build_src_function, self_loops.LoopedSrc))),
)}


def reference_ops() -> list[type[OpRun]]:
    """The reference classes, for ``ReferenceEvaluator(model, new_ops=reference_ops())``."""
    return [spec.reference for spec in OPS.values()]
