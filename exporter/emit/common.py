"""What every layer emitter shares: the quantisation steps of docs/integer-formulation.md as ONNX
nodes, and the per-layer neighbour structure (CSR over destinations, self-loops, degrees).

Rules (numbers as in docs/integer-formulation.md):
1. quantise: ``QuantizeLinear`` (+ ``Clip`` below 8 bits);
2. matrix product: ``MatMulInteger`` (uint8 x uint8 weights stored as ``w + 128`` with zero point
   128, qgnn.contract.weights: exact on every onnxruntime CPU kernel), int32 bias,
   requantisation;
3. edge scaling: int32 product of centred integers, requantisation;
4. aggregation: ``ai.qgnn::QAggregate``; rules 3 and 4 back to back are one
   ``ai.qgnn::QMessageAggregate`` (no E x F tensor in the runtime's kernels); GCN's
   normalised sum over A + I, its coefficients quantised by rule 1 included, is one
   ``ai.qgnn::QGCNAggregate`` (no per-looped-edge tensor either);
5. elementwise float step: ``DequantizeLinear``, float32 op(s), ``QuantizeLinear``.
Requantisation is ``Cast(float32) -> Mul(M) -> QuantizeLinear(scale 1, zp)``: the contract's
float32 product, then round half to even, zero point and saturation, so the integers equal a
numpy reference bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto
from qgnn.contract import WEIGHT_STORAGE_OFFSET, multiplier, weight_storage
from qgnn.exporter.onnx_builder import GraphBuilder
from qgnn.exporter.quant_params import Site, bias_int32, quantize_weight

DEBUG_PREFIX = "debug/"

# Row layouts of the integer tensors a debug export exposes (see docs/export.md):
# "node": one row per node of the layer's source (or destination) list;
# "edge": the layer's edges in CSR order;
# "looped_edge": CSR order after appending one self-loop as the last edge of every destination;
# "fresh_looped_edge": the same after first dropping existing self-loops (GAT).
LAYOUTS = ("node", "edge", "looped_edge", "fresh_looped_edge")


def to_numpy(tensor: object) -> np.ndarray:
    """A torch tensor or parameter as a float32 numpy array (a copy, detached)."""
    return tensor.detach().cpu().numpy().astype(np.float32)  # type: ignore[attr-defined]


@dataclass
class DebugTensor:
    """An intermediate integer tensor a debug export exposes as an extra output."""

    key: str  # quant_state key of the site, e.g. "layers.0.q.lin"
    output: str  # graph output name, DEBUG_PREFIX + key
    layout: str  # one of LAYOUTS


class Emitter:
    """A :class:`GraphBuilder` plus the quantisation steps, with each site's constants stored
    once. ``debug`` makes :meth:`record` expose site tensors as extra outputs."""

    def __init__(self, g: GraphBuilder, debug: bool = False) -> None:
        self.g = g
        self.debug = debug
        self.debug_tensors: list[DebugTensor] = []
        self._site_consts: dict[tuple[str, str], str] = {}

    # -- constants -------------------------------------------------------------------------

    def _site_const(self, site: Site, what: str, value: np.ndarray) -> str:
        key = (site.key, what)
        if key not in self._site_consts:
            with self.g.scope(f"q/{site.key}", absolute=True):
                self._site_consts[key] = self.g.const(value, what)
        return self._site_consts[key]

    def scale(self, site: Site) -> str:
        return self._site_const(site, "scale", site.activation_params()[0])

    def zero_point(self, site: Site) -> str:
        return self._site_const(site, "zero_point", site.activation_params()[1])

    def zero_point_i32(self, site: Site) -> str:
        return self._site_const(site, "zero_point_i32",
                                np.asarray(site.activation_params()[1], np.int32))

    def i64(self, value: int | list[int]) -> str:
        return self.g.shared(value, np.int64)

    def f32(self, value: float | list[float]) -> str:
        return self.g.shared(value, np.float32)

    # -- rules -----------------------------------------------------------------------------

    def quantize(self, x: str, site: Site, hint: str) -> str:
        """Rule 1: float32 -> uint8 at an activation site."""
        q = self.g.op("QuantizeLinear", [x, self.scale(site), self.zero_point(site)], hint)
        return self._saturate(q, site, hint)

    def dequantize(self, q: str, site: Site, hint: str) -> str:
        return self.g.op("DequantizeLinear", [q, self.scale(site), self.zero_point(site)], hint)

    def requantize(self, acc: str, mult: np.ndarray, out: Site, hint: str) -> str:
        """Integer accumulator -> uint8 at ``out``: clamp(rint(float32(acc) * M) + zp).

        ``QuantizeLinear`` with scale 1 is exactly that rounding (half to even; dividing by 1 is
        exact), the zero-point add and the saturation, in one node.
        """
        g = self.g
        with g.scope(hint):
            m = g.const(np.asarray(mult, np.float32), "multiplier")
            scaled = g.op("Mul", [g.op("Cast", [acc], "acc_f32", to=TensorProto.FLOAT), m],
                          "scaled")
        return self._saturate(g.op("QuantizeLinear", [scaled, self.f32(1.0),
                                                      self.zero_point(out)], hint), out, hint)

    def _saturate(self, q: str, site: Site, hint: str) -> str:
        """Clip uint8 ``q`` to ``[0, 2^bits - 1]`` below 8 bits."""
        if site.bits >= 8:
            return q
        return self.g.op("Clip", [q, self.g.shared(0, np.uint8),
                                  self.g.shared(site.qmax, np.uint8)], f"{hint}_clip")

    def int_linear(self, x_q: str, x: Site, weight: np.ndarray, w: Site,
                   bias: np.ndarray | None, out: Site, hint: str) -> str:
        """Rule 2: ``(R, K)`` uint8 at ``x`` times an ``nn.Linear`` weight ``(J, K)`` -> ``(R, J)``
        uint8 at ``out``; the bias, if any, joins the int32 accumulator."""
        g = self.g
        with g.scope(hint):
            w_q = g.const(weight_storage(quantize_weight(weight, w).T), "weight_q")  # (K, J)
            w_zp = g.shared(WEIGHT_STORAGE_OFFSET, np.uint8)
            acc = g.op("MatMulInteger", [x_q, w_q, self.zero_point(x), w_zp], "acc")
            if bias is not None:
                acc = g.op("Add", [acc, g.const(bias_int32(bias, x, w), "bias_q")], "acc_bias")
        return self.requantize(acc, multiplier(x.scale, out.scale, w.scale), out, hint)

    def centred(self, q: str, site: Site, hint: str) -> str:
        """int32 ``q - zp``."""
        return self.g.op("Sub", [self.g.op("Cast", [q], f"{hint}_i32", to=TensorProto.INT32),
                                 self.zero_point_i32(site)], hint)

    def edge_scale(self, h_q: str, h: Site, src: str, w_q: str, w: Site, out: Site,
                   hint: str, heads: tuple[int, int] | None = None) -> str:
        """Rule 3: messages ``(h_q[src] - zp_h) * (w_q - zp_w)`` requantised to ``out``.

        ``h_q`` (N, F) uint8, ``w_q`` (E,) uint8 or, with ``heads = (H, C)`` (F = H * C),
        (E, H) uint8, one weight per head. Returns (E, F) uint8.
        """
        g = self.g
        with g.scope(hint):
            rows = g.op("Gather", [self.centred(h_q, h, "h_centred"), src], "h_edges", axis=0)
            weight = self.centred(w_q, w, "w_centred")
            if heads is None:
                acc = g.op("Mul", [rows, g.op("Unsqueeze", [weight, self.i64([1])], "w_col")],
                           "acc")
            else:
                cube = g.op("Reshape", [rows, self.i64([0, heads[0], heads[1]])], "h_heads")
                acc = g.op("Mul", [cube, g.op("Unsqueeze", [weight, self.i64([2])], "w_col")],
                           "acc")
                acc = g.op("Reshape", [acc, self.i64([0, heads[0] * heads[1]])], "acc_flat")
        return self.requantize(acc, multiplier(h.scale, out.scale, w.scale), out, hint)

    def q_aggregate(self, x_q: str, x: Site, csr: Csr, src: str, out: Site, reduce: str,
                    hint: str, weight: tuple[str, Site] | None = None) -> str:
        """Rule 4: ``ai.qgnn::QAggregate`` of rows ``x_q[src]`` into ``csr``'s destinations."""
        w_inputs = ["", "", ""] if weight is None else [
            weight[0], self.scale(weight[1]), self.zero_point(weight[1])]
        return self.g.qgnn("QAggregate", [x_q, self.scale(x), self.zero_point(x), csr.indptr,
                                          src, *w_inputs, self.scale(out), self.zero_point(out)],
                           hint, reduce=reduce, bits=out.bits)

    def q_message_aggregate(self, h_q: str, h: Site, csr: Csr, w_q: str, w: Site, msg: Site,
                            out: Site, reduce: str, hint: str) -> str:
        """Rules 3 then 4 fused: ``ai.qgnn::QMessageAggregate`` of ``(h_q[src] - zp_h) * (w_q -
        zp_w)`` requantised to ``msg`` and aggregated into ``out``, never an (E, F) tensor in a
        kernel. ``w_q`` is (E,) uint8, or (E, H) with one weight per head of ``h_q``'s columns.
        Equals :meth:`edge_scale` followed by :meth:`q_aggregate` over ``csr.edge_ids``."""
        return self.g.qgnn("QMessageAggregate", [
            h_q, self.scale(h), self.zero_point(h), csr.indptr, csr.src, w_q, self.scale(w),
            self.zero_point(w), self.scale(msg), self.zero_point(msg), self.scale(out),
            self.zero_point(out)], hint, reduce=reduce, bits=out.bits, msg_bits=msg.bits)

    def q_gcn_aggregate(self, x_q: str, x: Site, csr: Csr, inv_sqrt_degree: str, w: Site,
                        msg: Site | None, out: Site, hint: str) -> str:
        """``ai.qgnn::QGCNAggregate``: the sum over ``csr``'s edges plus one self-loop per
        destination, each weighted by the GCN coefficient quantised to ``w`` inside the op.
        With ``msg``, equals ``with_self_loops`` + :func:`gcn_coefficients` + :meth:`quantize`
        + :meth:`q_message_aggregate` (sum); without, the weighted :meth:`q_aggregate` (sum)
        of those weights, bit for bit, with no per-looped-edge tensor in the graph."""
        message = ([self.scale(msg), self.zero_point(msg)] if msg is not None else ["", ""])
        bits = {"bits": out.bits, "w_bits": w.bits,
                **({"msg_bits": msg.bits} if msg is not None else {})}
        return self.g.qgnn("QGCNAggregate", [
            x_q, self.scale(x), self.zero_point(x), csr.indptr, csr.src, inv_sqrt_degree,
            self.scale(w), self.zero_point(w), *message, self.scale(out), self.zero_point(out)],
            hint, **bits)

    def requantize_float_step(self, q: str, a: Site, out: Site, hint: str) -> str:
        """Rule 5 with the identity: re-quantise ``q`` from site ``a`` to site ``out``."""
        return self.quantize(self.dequantize(q, a, f"{hint}_in"), out, hint)

    # -- float pieces ----------------------------------------------------------------------

    def float_linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None,
                     hint: str) -> str:
        """``x @ weight.T (+ bias)`` in float32 (an FP32 export's ``nn.Linear``)."""
        g = self.g
        with g.scope(hint):
            w = g.const(np.asarray(weight, np.float32), "weight")
            inputs = [x, w] if bias is None else [x, w, g.const(np.asarray(bias, np.float32),
                                                                  "bias")]
        return g.op("Gemm", inputs, hint, transB=1)

    def rows(self, x: str, count: str, hint: str) -> str:
        """The first ``count`` ((1,) int64) rows of ``x``: ``x[:num_dst]``."""
        return self.g.op("Slice", [x, self.i64([0]), count, self.i64([0])], hint)

    def record(self, key: str, tensor: str, layout: str) -> None:
        """In a debug export, expose ``tensor`` (the integers of site ``key``) as an output."""
        if not self.debug:
            return
        if layout not in LAYOUTS:
            raise ValueError(f"record: layout must be one of {LAYOUTS}, got {layout!r}")
        name = self.g.output(tensor, DEBUG_PREFIX + key, TensorProto.UINT8, None)
        self.debug_tensors.append(DebugTensor(key, name, layout))


@dataclass
class Csr:
    """Destination-sorted edges in the graph being built: ``indptr`` (D + 1,) and ``src``
    (E,) int64 tensor names; derived tensors are built on first use and reused."""

    em: Emitter
    indptr: str
    src: str
    hint: str
    _cache: dict[str, str] = field(default_factory=dict)
    _looped: dict[str, Csr] = field(default_factory=dict)

    def _get(self, key: str, build: object) -> str:
        if key not in self._cache:
            with self.em.g.scope(self.hint, absolute=True):
                self._cache[key] = build()  # type: ignore[operator]
        return self._cache[key]

    @property
    def num_dst(self) -> str:
        """(1,) int64 D."""
        g = self.em.g
        return self._get("num_dst", lambda: g.op(
            "Sub", [g.op("Shape", [self.indptr], "indptr_len"), self.em.i64([1])], "num_dst"))

    @property
    def num_edges(self) -> str:
        """(1,) int64 E."""
        return self._get("num_edges", lambda: self.em.g.op("Shape", [self.src], "num_edges"))

    @property
    def dst(self) -> str:
        """(E,) destination of every edge (``ai.qgnn::EdgeDst``)."""
        return self._get("dst", lambda: self.em.g.qgnn("EdgeDst", [self.indptr], "dst"))

    @property
    def edge_ids(self) -> str:
        """(E,) 0 .. E - 1: the source rows when messages are already one row per edge."""
        g, em = self.em.g, self.em
        return self._get("edge_ids", lambda: g.op("Range", [
            em.i64(0), g.op("Squeeze", [self.num_edges], "num_edges_scalar"), em.i64(1)],
            "edge_ids"))

    def with_self_loops(self, drop_existing: bool) -> Csr:
        """The same destinations with one self-loop appended as the last in-edge of each (the
        training layers' ``with_self_loops``; ``drop_existing`` first removes stored loops, as
        GAT does): ``ai.qgnn::LoopedIndptr`` and ``LoopedSrc``, one kernel pass each in the
        runtime. The looped ``dst`` is ``EdgeDst`` of the new pointer, built on first use."""
        key = "fresh_looped" if drop_existing else "looped"
        if key in self._looped:
            return self._looped[key]
        g = self.em.g
        with g.scope(f"{self.hint}/{key}", absolute=True):
            inputs = [self.indptr, self.src]
            drop = int(drop_existing)
            indptr = g.qgnn("LoopedIndptr", inputs, "indptr", drop_existing=drop)
            src = g.qgnn("LoopedSrc", inputs, "src", drop_existing=drop)
        looped = Csr(self.em, indptr, src, f"{self.hint}/{key}")
        looped._cache["num_dst"] = self.num_dst
        self._looped[key] = looped
        return looped


@dataclass
class LayerInput:
    """What one layer reads: its structure and the model-wide inverse square-root degrees."""

    csr: Csr
    inv_sqrt_degree: str  # (N_0,) float32 (d + 1)^-1/2 of the layer-0 sources (a superset)
    index: int
    prefix: str  # quant_state prefix of the layer's sites, e.g. "layers.0.q."


def gcn_coefficients(em: Emitter, looped: Csr, inv_sqrt_degree: str, hint: str) -> str:
    """(E,) float32 ``(d_u + 1)^-1/2 (d_v + 1)^-1/2`` per looped edge, the float32 product the
    training layers compute (full-graph in-degrees; node lists are prefixes of layer 0's)."""
    g = em.g
    with g.scope(hint):
        return g.op("Mul", [g.op("Gather", [inv_sqrt_degree, looped.src], "inv_src", axis=0),
                            g.op("Gather", [inv_sqrt_degree, looped.dst], "inv_dst", axis=0)],
                    "coef")
