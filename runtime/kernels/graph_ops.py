"""Message-passing kernels over destination-sorted edges (the ``ai.qgnn`` graph ops).

Edges are given in CSR over destinations: the edges of destination ``v`` are
``indptr[v]:indptr[v+1]`` with sources ``src[...]``; ``indptr`` is (D+1,) int64 from 0 to E and
``src`` (E,) int64 in ``[0, N_src)``. Any integer id dtype is accepted and converted to int64.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from qgnn.runtime.kernels import _checks as ck
from qgnn.runtime.kernels._ext import ext

Reduce = Literal["sum", "mean", "max"]


def qaggregate(x_q: np.ndarray, x_zp: int, indptr: np.ndarray, src: np.ndarray,
               multiplier: float, y_zp: int, reduce: Reduce = "sum",
               w_q: np.ndarray | None = None, w_zp: int = 0, *, bits: int = 8,
               num_threads: int = 2, isa: str | None = None) -> np.ndarray:
    """QAggregate: uint8 (N_src, F) -> uint8 (D, F), exactly the quantisation contract.

    ``acc = sum/max over edges of (x_q[src] - x_zp) [* (w_q - w_zp)]`` in int32;
    ``y = clamp(rint(float32(acc) * m) + y_zp, 0, 2^bits - 1)`` with ``m = multiplier`` (sum,
    max) or ``float32(multiplier / float32(in_degree))`` (mean); a destination without edges gets
    ``y_zp``. ``multiplier`` is :func:`requant_multiplier` of the scales. A destination whose
    exact sum does not fit int32 (possible only above 33,025 weighted / 8,421,504 unweighted
    in-edges) is invalid input and raises ValueError, as the exporter's reference does.
    """
    fn = "qaggregate"
    return ext(isa).qaggregate(
        ck.tensor(fn, "x_q", x_q, np.uint8, 2), ck.zero_point(fn, "x_zp", x_zp),
        ck.ids(fn, "indptr", indptr), ck.ids(fn, "src", src),
        ck.positive_f32(fn, "multiplier", multiplier), ck.zero_point(fn, "y_zp", y_zp),
        ck.reduce_code(fn, reduce), ck.optional_tensor(fn, "w_q", w_q, np.uint8, 1),
        ck.zero_point(fn, "w_zp", w_zp), ck.bits(fn, bits), ck.threads(fn, num_threads))


def message_aggregate(x_q: np.ndarray, x_zp: int, indptr: np.ndarray, src: np.ndarray,
                      w_q: np.ndarray, w_zp: int, msg_multiplier: float, msg_zp: int,
                      multiplier: float, y_zp: int, reduce: Reduce = "sum", *, bits: int = 8,
                      msg_bits: int = 8, num_threads: int = 2,
                      isa: str | None = None) -> np.ndarray:
    """QMessageAggregate: edge scaling into a message site, then :func:`qaggregate` of the
    messages, without materialising the (E, F) messages.

    ``w_q`` is uint8 (E,), or (E, H) with H dividing F (column f uses head f // (F / H)).
    Per edge ``c = clamp(rint(float32((x_q[src] - x_zp) * (w_q - w_zp)) * msg_multiplier) +
    msg_zp, 0, 2^msg_bits - 1) - msg_zp``; then ``y = clamp(rint(float32(acc) * m) + y_zp, 0,
    2^bits - 1)`` with ``acc`` the int32 sum or max of ``c`` and ``m = multiplier`` (sum, max) or
    ``float32(multiplier / float32(in_degree))`` (mean); a destination without edges gets
    ``y_zp``. The multipliers are :func:`requant_multiplier` of (s_x, s_m, s_w) and (s_m, s_y).
    """
    fn = "message_aggregate"
    w = ck.tensor(fn, "w_q", w_q, np.uint8, None)
    return ext(isa).message_aggregate(
        ck.tensor(fn, "x_q", x_q, np.uint8, 2), ck.zero_point(fn, "x_zp", x_zp),
        ck.ids(fn, "indptr", indptr), ck.ids(fn, "src", src), w, ck.zero_point(fn, "w_zp", w_zp),
        ck.positive_f32(fn, "msg_multiplier", msg_multiplier), ck.zero_point(fn, "msg_zp", msg_zp),
        ck.integer(fn, "msg_bits", msg_bits, 1, 8), ck.positive_f32(fn, "multiplier", multiplier),
        ck.zero_point(fn, "y_zp", y_zp), ck.bits(fn, bits), ck.reduce_code(fn, reduce),
        ck.threads(fn, num_threads))


def gcn_aggregate(x_q: np.ndarray, x_zp: int, indptr: np.ndarray, src: np.ndarray,
                  inv_sqrt_degree: np.ndarray, w_scale: float, w_zp: int,
                  msg_multiplier: float | None, msg_zp: int, multiplier: float, y_zp: int, *,
                  bits: int = 8, w_bits: int = 8, msg_bits: int = 8, num_threads: int = 2,
                  table: np.ndarray | None = None, isa: str | None = None) -> np.ndarray:
    """QGCNAggregate: the sum over each destination's in-edges plus one self-loop (row v,
    appended last; destinations are the first D sources), each edge u -> v weighted by
    ``q_w = clamp(rint(float32(inv[u] * inv[v]) / w_scale) + w_zp, 0, 2^w_bits - 1)``, the
    exporter's QuantizeLinear of the GCN coefficient (a float32 division), built per edge
    instead of stored.

    With ``msg_multiplier`` (``requant_multiplier(s_x, s_m, s_w)``) each term is
    :func:`message_aggregate`'s message and ``multiplier`` is ``requant_multiplier(s_m, s_y)``;
    with None the term is ``(x_q[u] - x_zp) * (q_w - w_zp)`` and ``multiplier`` is
    ``requant_multiplier(s_x, s_y, s_w)`` (weighted :func:`qaggregate`). ``inv_sqrt_degree`` is
    float32 with at least N_src finite entries. ``table`` ((1, 256) or (F, 256) uint8) maps
    each output byte as :func:`qgnn.runtime.kernels.lut_u8` would, in the same pass.
    """
    fn = "gcn_aggregate"
    msg_mult = (None if msg_multiplier is None
                else ck.positive_f32(fn, "msg_multiplier", msg_multiplier))
    return ext(isa).gcn_aggregate(
        ck.tensor(fn, "x_q", x_q, np.uint8, 2), ck.zero_point(fn, "x_zp", x_zp),
        ck.ids(fn, "indptr", indptr), ck.ids(fn, "src", src),
        ck.tensor(fn, "inv_sqrt_degree", inv_sqrt_degree, np.float32, 1),
        ck.positive_f32(fn, "w_scale", w_scale), ck.zero_point(fn, "w_zp", w_zp),
        ck.integer(fn, "w_bits", w_bits, 1, 8), msg_mult, ck.zero_point(fn, "msg_zp", msg_zp),
        ck.integer(fn, "msg_bits", msg_bits, 1, 8), ck.positive_f32(fn, "multiplier", multiplier),
        ck.zero_point(fn, "y_zp", y_zp), ck.bits(fn, bits), ck.threads(fn, num_threads),
        *(() if table is None else (ck.tensor(fn, "table", table, np.uint8, 2),)))


def aggregate_f32(x: np.ndarray, indptr: np.ndarray, src: np.ndarray, reduce: Reduce = "sum",
                  w: np.ndarray | None = None, *, num_threads: int = 2,
                  isa: str | None = None) -> np.ndarray:
    """Aggregate: float32 (N_src, F) -> (D, F); ``reduce`` of ``x[src] [* w]`` per destination.

    Mean divides by the in-degree; destinations without edges get 0.
    """
    fn = "aggregate_f32"
    return ext(isa).aggregate_f32(
        ck.tensor(fn, "x", x, np.float32, 2), ck.ids(fn, "indptr", indptr),
        ck.ids(fn, "src", src), ck.reduce_code(fn, reduce),
        ck.optional_tensor(fn, "w", w, np.float32, 1), ck.threads(fn, num_threads))


def padded_to_csr(fn: str, nbr: np.ndarray, w: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(indptr, src, w) of a padded fixed-fanout neighbour table ``nbr`` (D, K), -1 = unused.

    Row order is kept, so edges come out sorted by destination; weights at padding are dropped.
    """
    arr = np.asarray(nbr)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer) or arr.ndim != 2:
        raise ValueError(f"{fn}: nbr must be a 2-D integer array, got {arr.dtype} {arr.shape}")
    if arr.size and int(arr.min()) < -1:
        raise ValueError(f"{fn}: nbr holds {int(arr.min())}; only -1 marks an unused slot")
    used = arr >= 0
    indptr = np.zeros(arr.shape[0] + 1, np.int64)
    np.cumsum(used.sum(axis=1), out=indptr[1:])
    if w is not None:
        w = np.asarray(w)
        if w.shape != arr.shape:
            raise ValueError(f"{fn}: edge weights must have nbr's shape {arr.shape}, got {w.shape}")
        w = w[used]
    return indptr, arr[used].astype(np.int64), w


def qaggregate_padded(x_q: np.ndarray, x_zp: int, nbr: np.ndarray, multiplier: float,
                      y_zp: int, reduce: Reduce = "sum", w_q: np.ndarray | None = None,
                      w_zp: int = 0, *, bits: int = 8, num_threads: int = 2,
                      isa: str | None = None) -> np.ndarray:
    """QAggregatePadded: :func:`qaggregate` over the used slots of ``nbr`` (D, K).

    ``w_q`` (D, K) is aligned with ``nbr``; its values at padding are ignored.
    """
    indptr, src, w = padded_to_csr("qaggregate_padded", nbr, w_q)
    return qaggregate(x_q, x_zp, indptr, src, multiplier, y_zp, reduce, w, w_zp, bits=bits,
                      num_threads=num_threads, isa=isa)


def aggregate_padded_f32(x: np.ndarray, nbr: np.ndarray, reduce: Reduce = "sum",
                         w: np.ndarray | None = None, *, num_threads: int = 2,
                         isa: str | None = None) -> np.ndarray:
    """AggregatePadded: :func:`aggregate_f32` over the used slots of ``nbr`` (D, K)."""
    indptr, src, w_used = padded_to_csr("aggregate_padded_f32", nbr, w)
    return aggregate_f32(x, indptr, src, reduce, w_used, num_threads=num_threads, isa=isa)


def edge_softmax_f32(logits: np.ndarray, indptr: np.ndarray, *,
                     num_threads: int = 2, isa: str | None = None) -> np.ndarray:
    """EdgeSoftmax: float32 (E, H) -> (E, H), softmax over each destination's edges per head."""
    fn = "edge_softmax_f32"
    return ext(isa).edge_softmax_f32(
        ck.tensor(fn, "logits", logits, np.float32, 2), ck.ids(fn, "indptr", indptr),
        ck.threads(fn, num_threads))


def q_edge_softmax(logits_q: np.ndarray, indptr: np.ndarray, table: np.ndarray, *,
                   scale: float | None = None, zero_point: int = 0, bits: int = 8,
                   num_threads: int = 2, isa: str | None = None) -> np.ndarray:
    """QEdgeSoftmax: uint8 (E, H) quantised logits -> float32 (E, H) alphas per destination and
    head through the contract's integer table (qgnn.contract.softmax): ``t = T[max - q]``, an
    int64 sum per destination, ``float32(float64(t) / float64(sum))``. Bit-identical to the op's
    reference and function body at every ISA level and thread count.

    With ``scale``, uint8 (E, H) ``clamp(rint(alpha / scale) + zero_point, 0, 2^bits - 1)``
    instead: onnxruntime's ``QuantizeLinear`` [+ ``Clip``] of the alphas (GAT's edge weights),
    in the same pass."""
    fn = "q_edge_softmax"
    extra = () if scale is None else (ck.positive_f32(fn, "scale", scale),
                                       ck.zero_point(fn, "zero_point", zero_point),
                                       ck.bits(fn, bits))
    return ext(isa).q_edge_softmax(
        ck.tensor(fn, "logits_q", logits_q, np.uint8, 2), ck.ids(fn, "indptr", indptr),
        ck.tensor(fn, "table", table, np.int64, 1), ck.threads(fn, num_threads), *extra)


def looped_indptr(indptr: np.ndarray, src: np.ndarray, drop_existing: bool = False, *,
                  num_threads: int = 2, isa: str | None = None) -> np.ndarray:
    """LoopedIndptr: (D + 1,) pointer of the CSR with one self-loop v -> v appended as the last
    in-edge of each destination v (after dropping stored loops when ``drop_existing``)."""
    fn = "looped_indptr"
    return ext(isa).looped_indptr(ck.ids(fn, "indptr", indptr), ck.ids(fn, "src", src),
                                  int(bool(drop_existing)), ck.threads(fn, num_threads))


def looped_src(indptr: np.ndarray, src: np.ndarray, drop_existing: bool = False, *,
               num_threads: int = 2, isa: str | None = None) -> np.ndarray:
    """LoopedSrc: (E' + D,) sources of :func:`looped_indptr`'s CSR, kept edges in stored order."""
    fn = "looped_src"
    return ext(isa).looped_src(ck.ids(fn, "indptr", indptr), ck.ids(fn, "src", src),
                               int(bool(drop_existing)), ck.threads(fn, num_threads))


def gat_logits(score_src: np.ndarray, score_dst: np.ndarray, src: np.ndarray, dst: np.ndarray,
               slope: float, scale: float, zero_point: int, *, bits: int = 8,
               dequantize: bool = False, num_threads: int = 2,
               isa: str | None = None) -> np.ndarray:
    """GAT's quantised attention logits: per edge ``e`` and head ``h``,
    ``q = clamp(rint(LeakyReLU(score_src[src[e], h] + score_dst[dst[e], h]) / scale) + zp)``,
    uint8 (E, H); with ``dequantize``, ``float32(q - zp) * scale`` instead (float32 (E, H)).
    Each step is onnxruntime's float32 operation (Gather, Add, LeakyRelu with
    ``x >= 0 ? x : slope * x``, QuantizeLinear's true division and half-to-even rounding), so the
    engine can replace that chain bit for bit (runtime/engine/gat_fusion.py)."""
    fn = "gat_logits"
    return ext(isa).gat_logits(
        ck.tensor(fn, "score_src", score_src, np.float32, 2),
        ck.tensor(fn, "score_dst", score_dst, np.float32, 2), ck.ids(fn, "src", src),
        ck.ids(fn, "dst", dst), float(slope), ck.positive_f32(fn, "scale", scale),
        ck.zero_point(fn, "zero_point", zero_point), ck.bits(fn, bits), bool(dequantize),
        ck.threads(fn, num_threads))


def head_scores(x_q: np.ndarray, x_zp: int, att: np.ndarray, scale: np.ndarray | float, *,
                num_threads: int = 2, isa: str | None = None) -> np.ndarray:
    """GAT's per-head scores (qgnn.contract.attention): uint8 (N, H*C) ``x_q`` and int8 (H, C)
    ``att`` -> float32 (N, H) ``float32(sum_c (x_q - x_zp) * att) * scale[h]``, which is what
    ``MatMulInteger`` with the block-diagonal attention matrix, ``Cast`` and ``Mul`` give."""
    fn = "head_scores"
    att = ck.tensor(fn, "att", att, np.int8, 2)
    scale = np.ascontiguousarray(np.broadcast_to(np.asarray(scale, np.float32).reshape(-1),
                                                 (att.shape[0],)))
    return ext(isa).head_scores(ck.tensor(fn, "x_q", x_q, np.uint8, 2),
                                ck.zero_point(fn, "x_zp", x_zp), att, scale,
                                ck.threads(fn, num_threads))
