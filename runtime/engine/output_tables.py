"""Folds one-input float steps into the kernel before them, as byte tables.

A ``FloatStep`` with one uint8 input maps each value by a function of its column and its byte
alone, so it is a (F, 256) table (``qgnn.runtime.kernels.float_step_table`` runs the step on
every byte). GCN's layer output is two such steps in a row, ``out`` (the bias) and ``next_x``
(the ReLU), after the aggregate: three passes over the (N, F) tensor where one suffices. This
pass, run after the float steps are fused (float_step.py), merges

- a one-input ``FloatStep`` after another ``FloatStep`` into it (``params["then"]``: the later
  steps, in order): after a one-input step the two become one table; after a two-input step
  the kernel maps its output through the later steps' table in the same pass;
- one-input ``FloatStep``s after a ``QGCNAggregate`` or a fused ``QLinear`` into that kernel
  (``params["output_steps"]``), which maps each output byte through the composed table right
  after requantising it (GIN's hidden layer, SAGE's and GIN's layer outputs).

Only where the tensor in between has that one reader and is not a graph output. Each merged
step keeps the name of the tensor it produced as ``"output"`` (it is no longer computed). The
integers are those of running the steps one after another, by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from qgnn.contract.ops import QGNN_DOMAIN
from qgnn.runtime.engine.fusion import FusedLinear

TABLE_KERNELS = ("QGCNAggregate", "QLinear")  # kernels that take an output table


def one_input_step(node: Any) -> bool:
    """A fused ``FloatStep`` reading one tensor (no second input to combine)."""
    return (isinstance(node, FusedLinear) and node.op_type == "FloatStep"
            and len([n for n in node.input if n]) == 1)


def fold_output_steps(nodes: list[Any], readers: Mapping[str, int], outputs: set[str],
                      attributes: Callable[[Any], dict[str, Any]]) -> list[Any]:
    """``nodes`` with each foldable one-input ``FloatStep`` merged into its producer (module
    docstring); ``attributes`` reads an ``ai.qgnn`` node's attributes as a dict."""
    current: dict[str, int] = {}  # tensor -> position in out of the node now producing it
    out: list[Any] = []
    for node in nodes:
        src = node.input[0] if one_input_step(node) else None
        at = current.get(src) if src is not None else None
        if at is not None and src not in outputs and readers.get(src, 0) == 1:
            merged = _merged(out[at], node, attributes)
            if merged is not None:
                out[at] = merged
                current[node.output[0]] = at
                continue
        for name in node.output:
            current[name] = len(out)
        out.append(node)
    return out


def _merged(prev: Any, step: FusedLinear, attributes: Callable[[Any], dict[str, Any]]
            ) -> FusedLinear | None:
    later = {**step.params, "output": step.output[0]}  # the output it had, for inspection
    if isinstance(prev, FusedLinear) and prev.op_type == "FloatStep":
        params = {"output": prev.output[0], **prev.params,
                  "then": [*prev.params.get("then", []), later]}
        return FusedLinear(prev.name, list(prev.input), list(step.output), params, "FloatStep")
    if isinstance(prev, FusedLinear) and prev.op_type in TABLE_KERNELS:
        params = {**prev.params,
                  "output_steps": [*prev.params.get("output_steps", []), later]}
        return FusedLinear(prev.name, list(prev.input), list(step.output), params, prev.op_type)
    if prev.domain == QGNN_DOMAIN and prev.op_type in TABLE_KERNELS and len(prev.output) == 1:
        params = {**attributes(prev), "output_steps": [later]}
        return FusedLinear(prev.name, list(prev.input), list(step.output), params, prev.op_type)
    return None
