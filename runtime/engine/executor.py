"""Runs a model: partitioned (onnxruntime segments + compiled kernels) or portable (stock ORT).

The partitioned executor walks the plan of :mod:`qgnn.runtime.engine.partition`: the
``ai.qgnn`` nodes of kernel phase 0 in the C kernels, segment 0 in its own onnxruntime session,
kernel phase 1, segment 1, and so on, passing named numpy arrays (onnxruntime reads contiguous
numpy inputs in place; the kernels release the GIL). Sessions and kernel closures are built
once, at load. The portable executor hands the whole file to onnxruntime, which inlines the
ops' function bodies: slower, but needs nothing compiled. Both first store int8 weights as
uint8 (weight_storage.py), so older bundles give exact integers on every CPU too. Both take
and return the model's graph inputs/outputs by name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from qgnn.runtime import kernels
from qgnn.runtime.engine import onnx_proto as op
from qgnn.runtime.engine.buffers import BufferPool, pooled
from qgnn.runtime.engine.kernel_ops import KernelFn, compile_kernel
from qgnn.runtime.engine.partition import KERNEL_OUTPUTS, KernelNodeSpec, partition
from qgnn.runtime.engine.session import SessionConfig, make_session
from qgnn.runtime.engine.weight_storage import rewrite_weights_as_uint8

log = logging.getLogger("qgnn.runtime.engine")


class Executor(Protocol):
    """Runs one model on named numpy inputs."""

    mode: str  # "partitioned" or "portable"
    input_names: list[str]
    output_names: list[str]
    input_dtypes: dict[str, np.dtype]

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
            timings: dict[str, float] | None = None) -> dict[str, np.ndarray]: ...


class PortableExecutor:
    """The whole model in one onnxruntime session (function bodies inlined by onnxruntime)."""

    mode = "portable"
    buffers: BufferPool | None = None  # the engine's buffer pool, active while run() runs

    def __init__(self, model: bytes | Any, config: SessionConfig) -> None:
        """``model``: serialized, or a parsed onnx_proto ModelProto (see :func:`_parsed`)."""
        self.session = make_session(_parsed(model).SerializeToString(), config)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_dtypes = {i.name: op.DTYPES[op.elem_type_of(i.type)]
                             for i in self.session.get_inputs()}

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
            timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs or self.output_names)
        start = time.perf_counter()
        with pooled(self.buffers):
            values = self.session.run(names, {k: feeds[k] for k in self.input_names})
        if timings is not None:
            timings["onnxruntime"] = timings.get("onnxruntime", 0.0) + time.perf_counter() - start
        return dict(zip(names, values, strict=True))


@dataclass
class _Segment:
    session: ort.InferenceSession
    inputs: list[str]
    outputs: list[str]
    label: str


@dataclass
class _Kernel:
    fn: KernelFn
    output: str
    label: str
    spec: KernelNodeSpec


class PartitionedExecutor:
    """Standard-op segments in onnxruntime, ``ai.qgnn`` nodes in qgnn's C kernels."""

    mode = "partitioned"
    buffers: BufferPool | None = None  # the engine's buffer pool, active while run() runs

    def __init__(self, model: bytes | Any, config: SessionConfig, isa: str | None = None
                 ) -> None:
        """``model``: serialized, or a parsed onnx_proto ModelProto (see :func:`_parsed`);
        ``isa``: the kernels' ISA level (None: :func:`qgnn.runtime.kernels.default_level`)."""
        isa = kernels.default_level() if isa is None else isa
        plan = partition(_parsed(model))
        self.isa = isa
        self.plan = plan
        self.constants = plan.constants
        self.input_names = plan.graph_inputs
        self.output_names = plan.graph_outputs
        self.input_dtypes = {name: op.DTYPES[info.type.tensor_type.elem_type]
                             for name, info in plan.input_infos.items()}
        self.steps: list[_Segment | _Kernel] = []
        types: dict[str, tuple[int, int | None]] = {}
        for level, (phase_kernels, segment) in enumerate(zip(plan.kernels, plan.segments,
                                                             strict=True)):
            for spec in phase_kernels:
                types[spec.output] = KERNEL_OUTPUTS[spec.op_type]
                label = f"{spec.op_type}:{spec.name or spec.output}"
                self.steps.append(_Kernel(compile_kernel(spec, plan.constants, config.threads,
                                                         isa),
                                          spec.output, label, spec))
            if segment.nodes and segment.outputs:
                session = make_session(plan.segment_model(segment, types), config)
                for out in session.get_outputs():
                    rank = len(out.shape) if isinstance(out.shape, list) else None
                    types[out.name] = (op.elem_type_of(out.type), rank)
                self.steps.append(_Segment(session, segment.inputs, segment.outputs,
                                           f"segment{level}"))

    @property
    def num_sessions(self) -> int:
        return sum(isinstance(s, _Segment) for s in self.steps)

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
            timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"model inputs {missing} were not given")
        with pooled(self.buffers):
            return self._run(feeds, outputs, timings)

    def _run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None,
             timings: dict[str, float] | None) -> dict[str, np.ndarray]:
        tensors: dict[str, np.ndarray] = dict(self.constants)
        tensors.update(feeds)
        for step in self.steps:
            start = time.perf_counter() if timings is not None else 0.0
            if isinstance(step, _Segment):
                values = step.session.run(step.outputs, {n: tensors[n] for n in step.inputs})
                tensors.update(zip(step.outputs, values, strict=True))
            else:
                tensors[step.output] = step.fn(tensors)
            if timings is not None:
                timings[step.label] = timings.get(step.label, 0.0) + time.perf_counter() - start
        return {name: tensors[name] for name in (outputs or self.output_names)}


def _parsed(model: bytes | Any) -> Any:
    """The model parsed once, its int8 ``MatMulInteger`` weights stored as uint8 (exact on every
    onnxruntime kernel). A ModelProto passed in is rewritten in place (idempotent), so the
    loader that parsed it reads the same graph the executor runs and parses nothing again."""
    proto = op.load_model(bytes(model)) if isinstance(model, bytes | bytearray | memoryview) \
        else model
    rewrite_weights_as_uint8(proto)
    return proto


def make_executor(model: bytes | Any, config: SessionConfig, *, portable: bool = False,
                  isa: str | None = None, buffers: BufferPool | None = None) -> Executor:
    """The fast partitioned executor with the kernels of ISA level ``isa`` (None: the default
    level), or the portable one when asked or when the compiled kernels are missing (logged as a
    warning: the model still serves, more slowly). ``buffers``: the pool its runs allocate
    from (buffers.py)."""
    executor: PortableExecutor | PartitionedExecutor
    if portable:
        executor = PortableExecutor(model, config)
    elif not kernels.available():
        log.warning("qgnn's compiled kernels are not available on this host; serving with the "
                    "portable onnxruntime path (stock function bodies, slower). Reinstall qgnn "
                    "with a C compiler to enable them.")
        executor = PortableExecutor(model, config)
    else:
        executor = PartitionedExecutor(model, config, isa)
    executor.buffers = buffers
    return executor
