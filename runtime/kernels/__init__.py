"""qgnn's own compiled kernels for the ai.qgnn ops: INT8 in, int32 accumulation, fused requant.

onnxruntime's Python wheels ship no C headers, so the ai.qgnn custom ops cannot be a plugin op
library; the engine runs standard-op segments in onnxruntime and these kernels in between. The
C extension is built once per ISA level (docs/kernels.md); every function takes ``isa=`` to pick
one, else :func:`default_level` (``$QGNN_ISA`` or the best this host has). The extension is
optional: ``available()`` says whether it was built; without it every function raises
``KernelsUnavailableError`` and the engine uses the portable ONNX function bodies.
"""

from qgnn.runtime.kernels._ext import (
    KernelsUnavailableError,
    available,
    build_info,
    default_level,
    levels_built,
    levels_supported,
    resolve_level,
)
from qgnn.runtime.kernels.dense import qlinear, qlinear_pack
from qgnn.runtime.kernels.float_step import Program as FloatStepProgram
from qgnn.runtime.kernels.float_step import compile_program as compile_float_step
from qgnn.runtime.kernels.float_step import (
    compose_tables,
    float_step_pair_table,
    float_step_q8,
    float_step_table,
    lut2_u8,
    lut_u8,
    scalar_constants,
)
from qgnn.runtime.kernels.graph_ops import (
    aggregate_f32,
    aggregate_padded_f32,
    edge_softmax_f32,
    gat_logits,
    gcn_aggregate,
    head_scores,
    message_aggregate,
    q_edge_softmax,
    qaggregate,
    qaggregate_padded,
)
from qgnn.runtime.kernels.quantize import (
    dequantize_u8,
    quantize_s8,
    quantize_u8,
    requant_multiplier,
)
from qgnn.runtime.kernels.retrieval import int8_topk

__all__ = [
    "FloatStepProgram",
    "KernelsUnavailableError",
    "aggregate_f32",
    "aggregate_padded_f32",
    "available",
    "build_info",
    "compile_float_step",
    "compose_tables",
    "default_level",
    "dequantize_u8",
    "edge_softmax_f32",
    "float_step_pair_table",
    "float_step_q8",
    "float_step_table",
    "gat_logits",
    "gcn_aggregate",
    "head_scores",
    "int8_topk",
    "levels_built",
    "levels_supported",
    "lut2_u8",
    "lut_u8",
    "message_aggregate",
    "q_edge_softmax",
    "qaggregate",
    "qaggregate_padded",
    "qlinear",
    "qlinear_pack",
    "quantize_s8",
    "quantize_u8",
    "requant_multiplier",
    "resolve_level",
    "scalar_constants",
]
