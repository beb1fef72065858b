"""Runs ``ai.qgnn`` nodes in qgnn's compiled kernels (qgnn.runtime.kernels).

Each node is compiled once, at load, into a closure over the tensors dictionary of a run:
constant scales and zero points are read from the model then, so the requantisation multiplier
``M = float32(float32(s_x [* s_w]) / s_y)`` (the convention of docs/onnx-ops.md) is computed
once per node, not per request. Scales that the graph computes at run time are read per run.

The CSR ops call the extension module directly: its C layer checks every buffer (dtype, order,
shapes, CSR structure, index ranges) and raises ValueError, and the tensors here are already
what it takes (onnxruntime outputs, int64 structure), so the Python wrappers' conversions would
only add ~30 us per node to a sub-millisecond request. Each node is bound at compile time to the
extension module of the engine's ISA level, so engines at different levels coexist in a process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import numpy as np
from qgnn.contract.ops import OP_INPUTS
from qgnn.contract.softmax import check_table
from qgnn.runtime import kernels
from qgnn.runtime.engine.partition import KernelNodeSpec, PartitionError
from qgnn.runtime.engine.row_slice import row_slice
from qgnn.runtime.kernels._checks import REDUCE_CODES
from qgnn.runtime.kernels._ext import ext

KernelFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]

# Formal inputs per op (docs/onnx-ops.md); a node lists them positionally, "" = absent.
FORMAL: dict[str, tuple[str, ...]] = {
    **OP_INPUTS,
    "QLinear": ("x_q",),  # engine-internal: the fused requantised linear layer (fusion.py)
    "FloatStep": ("a_q", "b_q"),  # engine-internal: a fused elementwise float step
    # engine-internal: GAT's attention logits, uint8 / dequantised float32 (gat_fusion.py)
    "GatLogits": ("score_src", "score_dst", "src", "dst"),
    "GatLogitsF32": ("score_src", "score_dst", "src", "dst"),
    # engine-internal: QEdgeSoftmax with the edge weights' QuantizeLinear (gat_fusion.py)
    "QEdgeSoftmaxQ": OP_INPUTS["QEdgeSoftmax"],
    "RowSlice": ("data", "count"),  # engine-internal: x[:num_dst] as a view (row_slice.py)
}


def _scalar(value: np.ndarray, what: str, dtype: type) -> Any:
    arr = np.asarray(value)
    if arr.dtype != np.dtype(dtype) or arr.size != 1 or arr.ndim > 1:
        raise ValueError(f"{what} must be a {np.dtype(dtype)} scalar, got {arr.dtype} "
                         f"{arr.shape}")
    return arr.reshape(())[()]


class _Args:
    """Resolves a node's named inputs: constants at compile time, the rest per run."""

    def __init__(self, spec: KernelNodeSpec, constants: Mapping[str, np.ndarray]) -> None:
        formal = FORMAL[spec.op_type]
        if len(spec.inputs) > len(formal):
            raise PartitionError(f"{spec.op_type} node {spec.name!r} has {len(spec.inputs)} "
                                 f"inputs, at most {len(formal)} expected")
        self.names = dict(zip(formal, spec.inputs, strict=False))
        self.constants = constants
        self.spec = spec

    def present(self, formal: str) -> bool:
        return bool(self.names.get(formal))

    def name(self, formal: str) -> str:
        return self.names[formal]

    def is_constant(self, *formals: str) -> bool:
        return all(self.names[f] in self.constants for f in formals if self.present(f))

    def const(self, formal: str) -> np.ndarray:
        return self.constants[self.names[formal]]


def _multiplier(args: _Args, tensors: Mapping[str, np.ndarray] | None, weighted: bool
                ) -> tuple[np.float32, int, int, int]:
    """(M, zp_x, zp_y, zp_w) from constants (tensors None) or from a run's tensors."""
    def get(formal: str) -> np.ndarray:
        name = args.name(formal)
        return args.constants[name] if name in args.constants else tensors[name]  # type: ignore

    op = args.spec.op_type
    s_x = _scalar(get("x_scale"), f"{op}.x_scale", np.float32)
    s_y = _scalar(get("y_scale"), f"{op}.y_scale", np.float32)
    s_w = _scalar(get("w_scale"), f"{op}.w_scale", np.float32) if weighted else None
    zp_x = int(_scalar(get("x_zero_point"), f"{op}.x_zero_point", np.uint8))
    zp_y = int(_scalar(get("y_zero_point"), f"{op}.y_zero_point", np.uint8))
    zp_w = int(_scalar(get("w_zero_point"), f"{op}.w_zero_point", np.uint8)) if weighted else 0
    return kernels.requant_multiplier(s_x, s_y, s_w), zp_x, zp_y, zp_w


def _quantised(spec: KernelNodeSpec, args: _Args, threads: int, isa: str) -> KernelFn:
    weighted = args.present("w_q")
    reduce, bits = str(spec.attributes.get("reduce", "sum")), int(spec.attributes.get("bits", 8))
    padded = spec.op_type == "QAggregatePadded"
    if reduce not in REDUCE_CODES:
        raise PartitionError(f"{spec.op_type} node {spec.name!r}: reduce must be one of "
                             f"{tuple(REDUCE_CODES)}, got {reduce!r}")
    code = REDUCE_CODES[reduce]
    scalar_inputs = ("x_scale", "x_zero_point", "y_scale", "y_zero_point",
                     *(("w_scale", "w_zero_point") if weighted else ()))
    fixed = _multiplier(args, None, weighted) if args.is_constant(*scalar_inputs) else None
    x_name = args.name("x_q")
    w_name = args.name("w_q") if weighted else None
    structure = (args.name("nbr"),) if padded else (args.name("indptr"), args.name("src"))
    mod = ext(isa)

    def run(tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        mult, zp_x, zp_y, zp_w = fixed if fixed is not None else _multiplier(args, tensors,
                                                                             weighted)
        w_q = tensors[w_name] if w_name is not None else None
        if padded:
            return kernels.qaggregate_padded(tensors[x_name], zp_x, tensors[structure[0]], mult,
                                             zp_y, reduce, w_q, zp_w, bits=bits,
                                             num_threads=threads, isa=isa)
        return mod.qaggregate(tensors[x_name], zp_x, tensors[structure[0]],
                                tensors[structure[1]], float(mult), zp_y, code, w_q, zp_w, bits,
                                threads)

    return run


def _message_params(args: _Args, tensors: Mapping[str, np.ndarray] | None
                    ) -> tuple[float, float, int, int, int, int]:
    """QMessageAggregate's (M_m, M_y, zp_x, zp_w, zp_m, zp_y): M_m = float32(float32(s_x * s_w)
    / s_m) requantises messages, M_y = float32(s_m / s_y) the aggregate. From constants
    (tensors None) or from a run's tensors."""
    op = args.spec.op_type
    scale, zero = {}, {}
    for site in ("x", "w", "m", "y"):
        scale[site] = _scalar(_tensor(args, tensors, f"{site}_scale"), f"{op}.{site}_scale",
                              np.float32)
        zero[site] = int(_scalar(_tensor(args, tensors, f"{site}_zero_point"),
                                 f"{op}.{site}_zero_point", np.uint8))
    msg_mult = kernels.requant_multiplier(scale["x"], scale["m"], scale["w"])
    mult = kernels.requant_multiplier(scale["m"], scale["y"])
    return float(msg_mult), float(mult), zero["x"], zero["w"], zero["m"], zero["y"]


def _message_aggregate(spec: KernelNodeSpec, args: _Args, threads: int,
                       mod: ModuleType) -> KernelFn:
    """The fused edge scaling + aggregation; constant scales are folded here, at load."""
    reduce = str(spec.attributes.get("reduce", "sum"))
    bits, msg_bits = int(spec.attributes.get("bits", 8)), int(spec.attributes.get("msg_bits", 8))
    if reduce not in REDUCE_CODES:
        raise PartitionError(f"{spec.op_type} node {spec.name!r}: reduce must be one of "
                             f"{tuple(REDUCE_CODES)}, got {reduce!r}")
    code = REDUCE_CODES[reduce]
    scalar_inputs = tuple(f"{site}_{what}" for site in ("x", "w", "m", "y")
                          for what in ("scale", "zero_point"))
    fixed = _message_params(args, None) if args.is_constant(*scalar_inputs) else None

    def run(tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        msg_mult, mult, zp_x, zp_w, zp_m, zp_y = fixed or _message_params(args, tensors)
        return mod.message_aggregate(
            _tensor(args, tensors, "x_q"), zp_x, _tensor(args, tensors, "indptr"),
            _tensor(args, tensors, "src"), _tensor(args, tensors, "w_q"), zp_w, msg_mult, zp_m,
            msg_bits, mult, zp_y, bits, code, threads)

    return run


def _gcn_params(args: _Args, tensors: Mapping[str, np.ndarray] | None
                ) -> tuple[float, float | None, float, int, int, int, int]:
    """QGCNAggregate's (s_w, M_m or None, M, zp_x, zp_w, zp_m, zp_y): with the message site
    M_m = float32(float32(s_x * s_w) / s_m) and M = float32(s_m / s_y), without it M =
    float32(float32(s_x * s_w) / s_y). From constants (tensors None) or a run's tensors."""
    op = args.spec.op_type
    sites = ("x", "w", "m", "y") if args.present("m_scale") else ("x", "w", "y")
    scale, zero = {}, {"m": 0}
    for site in sites:
        scale[site] = _scalar(_tensor(args, tensors, f"{site}_scale"), f"{op}.{site}_scale",
                              np.float32)
        zero[site] = int(_scalar(_tensor(args, tensors, f"{site}_zero_point"),
                                 f"{op}.{site}_zero_point", np.uint8))
    if "m" in scale:
        msg_mult = float(kernels.requant_multiplier(scale["x"], scale["m"], scale["w"]))
        mult = kernels.requant_multiplier(scale["m"], scale["y"])
    else:
        msg_mult, mult = None, kernels.requant_multiplier(scale["x"], scale["y"], scale["w"])
    return (float(scale["w"]), msg_mult, float(mult), zero["x"], zero["w"], zero["m"],
            zero["y"])


def _gcn_aggregate(spec: KernelNodeSpec, args: _Args, threads: int, mod: ModuleType,
                   isa: str) -> KernelFn:
    """GCN's normalised sum over A + I with the edge weights built in the kernel; constant
    scales are folded here, at load; folded one-input float steps (``output_steps``,
    output_tables.py) map its output bytes in the same pass."""
    attrs = spec.attributes
    bits, w_bits = int(attrs.get("bits", 8)), int(attrs.get("w_bits", 8))
    msg_bits = int(attrs.get("msg_bits", 8))
    scalar_inputs = tuple(f"{site}_{what}" for site in ("x", "w", "m", "y")
                          for what in ("scale", "zero_point"))
    fixed = _gcn_params(args, None) if args.is_constant(*scalar_inputs) else None

    steps = attrs.get("output_steps", [])
    tables: dict[int, np.ndarray] = {}

    def run(tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        s_w, msg_mult, mult, zp_x, zp_w, zp_m, zp_y = fixed or _gcn_params(args, tensors)
        x = _tensor(args, tensors, "x_q")
        table = None
        if steps and x is not None and x.ndim == 2:
            table = _memo_table(tables, x.shape[1], steps, x.shape[1], isa)
        return mod.gcn_aggregate(
            x, zp_x, _tensor(args, tensors, "indptr"),
            _tensor(args, tensors, "src"), _tensor(args, tensors, "inv_sqrt_degree"), s_w, zp_w,
            w_bits, msg_mult, zp_m, msg_bits, mult, zp_y, bits, threads,
            *(() if table is None else (table,)))

    return run


def _memo_table(tables: dict[int, np.ndarray], key: int, steps: list[dict[str, Any]],
                columns: int, isa: str) -> np.ndarray:
    """``step_table(steps, columns, isa)``, built on a kernel's first call with that row width
    and kept in ``tables`` under ``key``."""
    table = tables.get(key)
    if table is None:
        table = tables[key] = step_table(steps, columns, isa)
    return table


def step_table(steps: list[dict[str, Any]], columns: int, isa: str) -> np.ndarray:
    """One-input float steps (FloatStep params, applied in order) as one byte table for rows
    of ``columns`` values (output_tables.py)."""
    table = None
    for p in steps:
        t = kernels.float_step_table(p["a_scale"], p["a_zero_point"], p["ops"], p["y_scale"],
                                     p["y_zero_point"], columns, bits=p["bits"], isa=isa)
        table = t if table is None else kernels.compose_tables(table, t)
    return table


def _tensor(args: _Args, tensors: Mapping[str, np.ndarray] | None,
            formal: str) -> np.ndarray | None:
    if not args.present(formal):
        return None
    name = args.name(formal)
    return args.constants[name] if name in args.constants else tensors[name]  # type: ignore


def compile_kernel(spec: KernelNodeSpec, constants: Mapping[str, np.ndarray],
                   threads: int, isa: str) -> KernelFn:
    """A callable computing ``spec``'s output from the run's tensors with the C kernels of ISA
    level ``isa`` (a name that :func:`qgnn.runtime.kernels.resolve_level` accepted)."""
    if spec.op_type not in FORMAL:
        raise PartitionError(f"no kernel for ai.qgnn op {spec.op_type!r}")
    args = _Args(spec, constants)
    mod = ext(isa)
    if spec.op_type == "QLinear":
        return _qlinear(spec, threads, mod, isa)
    if spec.op_type == "FloatStep":
        return _float_step(spec, threads, isa)
    if spec.op_type in ("GatLogits", "GatLogitsF32"):
        return _gat_logits(spec, threads, isa)
    if spec.op_type in ("QAggregate", "QAggregatePadded"):
        return _quantised(spec, args, threads, isa)
    if spec.op_type == "QMessageAggregate":
        return _message_aggregate(spec, args, threads, mod)
    if spec.op_type == "QGCNAggregate":
        return _gcn_aggregate(spec, args, threads, mod, isa)
    if spec.op_type in ("LoopedIndptr", "LoopedSrc"):
        return _self_loops(spec, args, threads, mod)
    if spec.op_type == "RowSlice":
        return lambda t: row_slice(_tensor(args, t, "data"), _tensor(args, t, "count"))
    reduce = str(spec.attributes.get("reduce", "sum"))
    if spec.op_type == "Aggregate":
        if reduce not in REDUCE_CODES:
            raise PartitionError(f"Aggregate node {spec.name!r}: reduce must be one of "
                                 f"{tuple(REDUCE_CODES)}, got {reduce!r}")
        code = REDUCE_CODES[reduce]
        return lambda t: mod.aggregate_f32(_tensor(args, t, "x"), _tensor(args, t, "indptr"),
                                             _tensor(args, t, "src"), code,
                                             _tensor(args, t, "w"), threads)
    if spec.op_type == "AggregatePadded":
        return lambda t: kernels.aggregate_padded_f32(_tensor(args, t, "x"),
                                                      _tensor(args, t, "nbr"), reduce,
                                                      _tensor(args, t, "w"), num_threads=threads,
                                                      isa=isa)
    if spec.op_type == "EdgeSoftmax":
        return lambda t: mod.edge_softmax_f32(_tensor(args, t, "logits"),
                                                _tensor(args, t, "indptr"), threads)
    if spec.op_type in ("QEdgeSoftmax", "QEdgeSoftmaxQ"):
        return _q_edge_softmax(spec, args, threads, mod)
    return lambda t: edge_dst(_tensor(args, t, "indptr"))


def _q_edge_softmax(spec: KernelNodeSpec, args: _Args, threads: int,
                    mod: ModuleType) -> KernelFn:
    """GAT's exact softmax of quantised logits (``QEdgeSoftmaxQ``: quantised as the edge
    weights in the same pass); a constant table is checked once, at load."""
    if args.is_constant("table"):
        try:
            check_table(args.const("table"), f"{spec.op_type} node {spec.name!r}")
        except ValueError as exc:
            raise PartitionError(str(exc)) from None
    p = spec.attributes
    quantise = (() if spec.op_type == "QEdgeSoftmax"
                else (float(p["scale"]), int(p["zero_point"]), int(p["bits"])))
    return lambda t: mod.q_edge_softmax(_tensor(args, t, "logits_q"), _tensor(args, t, "indptr"),
                                        _tensor(args, t, "table"), threads, *quantise)


def _self_loops(spec: KernelNodeSpec, args: _Args, threads: int, mod: ModuleType) -> KernelFn:
    """LoopedIndptr / LoopedSrc: the layer's CSR with one self-loop per destination."""
    drop = int(spec.attributes.get("drop_existing", 0))
    if drop not in (0, 1):
        raise PartitionError(f"{spec.op_type} node {spec.name!r}: drop_existing must be 0 or 1, "
                             f"got {drop!r}")
    kernel = mod.looped_indptr if spec.op_type == "LoopedIndptr" else mod.looped_src
    return lambda t: kernel(_tensor(args, t, "indptr"), _tensor(args, t, "src"), drop, threads)


def _qlinear(spec: KernelNodeSpec, threads: int, mod: ModuleType, isa: str) -> KernelFn:
    """The fused ``MatMulInteger`` + requantisation chain: uint8 (..., K) -> uint8 (..., J)
    (leading dimensions batch, as MatMulInteger's do), folded one-input float steps
    (``output_steps``, output_tables.py) mapping its output bytes in the same pass."""
    p = spec.attributes
    weight, bias = p["weight"], p["bias"]
    mult = np.ascontiguousarray(p["multiplier"], np.float32)
    x_zp, y_zp, bits = p["x_zero_point"], p["y_zero_point"], p["bits"]
    name = spec.inputs[0]
    steps = p.get("output_steps", [])
    table = step_table(steps, weight.shape[1], isa) if steps else None
    packed = mod.qlinear_pack(weight)  # once per step, not per call: the weight is constant

    def run(tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        x = tensors[name]
        if x.ndim == 2:
            return mod.qlinear(x, x_zp, weight, bias, mult, y_zp, bits, threads, table, packed)
        flat = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
        out = mod.qlinear(flat, x_zp, weight, bias, mult, y_zp, bits, threads, table, packed)
        return out.reshape(*x.shape[:-1], weight.shape[1])

    return run


def _float_step(spec: KernelNodeSpec, threads: int, isa: str) -> KernelFn:
    """The fused DequantizeLinear -> float ops -> QuantizeLinear chain (float_step.py), then
    any one-input steps merged after it (``then``, output_tables.py). Inputs and constants
    broadcast as onnxruntime would broadcast them; the op table is built once per row width.

    A one-input chain whose input already has the output's shape runs as one byte table
    (``lut_u8``) where that is faster: at ``baseline``, where the float arithmetic is the cost,
    and for two or more steps at any level (one pass instead of several). A two-input step maps
    its output through the table of the steps merged after it in the same pass.

    A two-input step whose constants are all scalars (SAGE's ``lin_l + lin_r``) runs as one
    256 x 256 table of the byte pairs (``lut2_u8``), the steps after it composed in, by the same
    rule: at ``baseline`` (5.7 against 8.0 ms for 100k x 128 on the Zen 4) and, with steps
    merged after it (SAGE's ReLU), at every level (4.6 against 7.0 ms at ``avx512_vnni``: the
    float loops then also map every output through the later steps' table); a lone step keeps
    the float loops at the vector levels (3.4-3.8 against 5.1-5.3 ms)."""
    p = spec.attributes
    stages = [p, *p.get("then", [])]
    names = [n for n in spec.inputs if n]
    shapes = [s for stage in stages for s in stage["const_shapes"]]
    use_table = len(names) == 1 and (isa == "baseline" or len(stages) > 1)
    use_pair_table = (len(names) == 2 and (isa == "baseline" or len(stages) > 1)
                      and all(int(np.prod(s)) == 1 for s in shapes)
                      and kernels.scalar_constants(p["ops"]))
    programs: dict[tuple[int, int], kernels.FloatStepProgram] = {}
    tables: dict[int, np.ndarray] = {}
    pair_tables: list[np.ndarray] = []

    def step(k: int, inputs: list[np.ndarray], table: np.ndarray | None = None) -> np.ndarray:
        q = stages[k]
        full = np.broadcast_shapes(*(x.shape for x in inputs), *q["const_shapes"])
        shape = full or (1,)
        inputs = [x if x.shape == shape else np.ascontiguousarray(np.broadcast_to(x, shape))
                  for x in inputs]
        program = programs.get((k, shape[-1]))
        if program is None:
            program = programs[k, shape[-1]] = kernels.compile_float_step(q["ops"], shape[-1])
        y = kernels.float_step_q8(inputs[0], q["a_scale"], q["a_zero_point"], program,
                                  q["y_scale"], q["y_zero_point"],
                                  b=inputs[1] if len(inputs) > 1 else None,
                                  b_scale=q["b_scale"], b_zp=q["b_zero_point"], bits=q["bits"],
                                  num_threads=threads, table=table, isa=isa)
        return y.reshape(full)

    def run(tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        inputs = [tensors[n] for n in names]
        x = inputs[0]
        if use_table and x.ndim >= 1 and np.broadcast_shapes(x.shape, *shapes) == x.shape:
            table = _memo_table(tables, x.shape[-1], stages, x.shape[-1], isa)
            return kernels.lut_u8(x, table, num_threads=threads, isa=isa)
        if use_pair_table and x.ndim >= 1 and inputs[1].shape == x.shape:
            if not pair_tables:
                pair_tables.append(_pair_table(stages, isa))
            return kernels.lut2_u8(x, inputs[1], pair_tables[0], num_threads=threads, isa=isa)
        full = np.broadcast_shapes(*(x.shape for x in inputs), *p["const_shapes"])
        if len(stages) > 1 and full and np.broadcast_shapes(full, *shapes) == full:
            # the later steps, as one table on the first's output
            rest = _memo_table(tables, -full[-1], stages[1:], full[-1], isa)
            return step(0, inputs, rest)
        y = step(0, inputs)
        for k in range(1, len(stages)):
            y = step(k, [y])
        return y

    return run


def _pair_table(stages: list[dict[str, Any]], isa: str) -> np.ndarray:
    """The two-input first stage as a (256, 256) table, the one-input stages after it (scalar
    constants too) composed onto its entries."""
    q = stages[0]
    table = kernels.float_step_pair_table(q["a_scale"], q["a_zero_point"], q["ops"],
                                          q["y_scale"], q["y_zero_point"], q["b_scale"],
                                          q["b_zero_point"], bits=q["bits"], isa=isa)
    if len(stages) > 1:
        then = step_table(stages[1:], 1, isa)
        table = np.ascontiguousarray(then[0][table])
    return table


def _gat_logits(spec: KernelNodeSpec, threads: int, isa: str) -> KernelFn:
    """The fused Gather/Gather -> Add -> LeakyRelu -> QuantizeLinear [-> DequantizeLinear] chain
    (gat_fusion.py), with the scores computed from the two uint8 ``lin`` tensors by
    ``head_scores`` when the fusion took their products in too. Gather's shapes: ``data[idx]``
    is ``idx.shape + data.shape[1:]``; both gathers must give one shape (onnxruntime's Add
    would broadcast them)."""
    p = spec.attributes
    names = spec.inputs
    scores = p["scores"]

    def run(tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        s, t, src, dst = (tensors[n] for n in names)
        if scores is not None:
            s, t = (kernels.head_scores(x.reshape(-1, x.shape[-1]), c["x_zero_point"], c["att"],
                                        c["scale"], num_threads=threads, isa=isa)
                    .reshape(*x.shape[:-1], -1) for x, c in zip((s, t), scores, strict=True))
        if (s.ndim < 1 or t.ndim < 1 or s.shape[1:] != t.shape[1:]
                or np.shape(src) != np.shape(dst)):
            raise ValueError(f"GatLogits {spec.name!r}: the gathered scores must have one shape, "
                             f"got data {s.shape} / {t.shape}, indices {np.shape(src)} / "
                             f"{np.shape(dst)}")
        row = s.shape[1:]
        width = int(np.prod(row, dtype=np.int64))
        out = kernels.gat_logits(s.reshape(s.shape[0], width), t.reshape(t.shape[0], width),
                                 np.reshape(src, -1), np.reshape(dst, -1), p["slope"],
                                 p["scale"], p["zero_point"], bits=p["bits"],
                                 dequantize=p["dequantize"], num_threads=threads, isa=isa)
        return out.reshape(*np.shape(src), *row)

    return run


def edge_dst(indptr: np.ndarray) -> np.ndarray:
    """EdgeDst: (E,) int64 destination of each edge of a CSR over destinations."""
    ptr = np.asarray(indptr)
    if ptr.dtype != np.int64 or ptr.ndim != 1 or ptr.size == 0:
        raise ValueError(f"EdgeDst: indptr must be a non-empty 1-D int64 array, got {ptr.dtype} "
                         f"{ptr.shape}")
    counts = np.diff(ptr)
    if ptr[0] != 0 or (counts < 0).any():
        raise ValueError("EdgeDst: indptr must start at 0 and never decrease")
    return np.repeat(np.arange(ptr.size - 1, dtype=np.int64), counts)
