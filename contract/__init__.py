"""The quantisation contract: the one definition of the integer arithmetic that training,
the exporter, the engine and the benchmarks share (docs/integer-formulation.md).

numpy only and dependent on nothing else in qgnn, so every stage imports it: the serving host
(no torch, no onnx) as much as training.
"""

from qgnn.contract.arithmetic import (
    mean_multiplier,
    multiplier,
    quantize_bias,
    requantise,
)
from qgnn.contract.attention import attention_matrix, head_scores, score_scale
from qgnn.contract.softmax import check_table, edge_softmax_q, softmax_table
from qgnn.contract.weights import (
    WEIGHT_STORAGE_OFFSET,
    weight_storage,
    weight_values,
)

__all__ = [
    "WEIGHT_STORAGE_OFFSET",
    "attention_matrix",
    "check_table",
    "edge_softmax_q",
    "head_scores",
    "mean_multiplier",
    "multiplier",
    "quantize_bias",
    "requantise",
    "score_scale",
    "softmax_table",
    "weight_storage",
    "weight_values",
]
