"""Requests for kernel_driver.c: every C kernel on random inputs, as bytes any build answers.

A case is (name, op, args); an argument is an int, a float (a C float or int), a numpy array
(passed as a buffer, written back after the call) or None (NULL). ``cases`` covers the shapes
where the kernels' code paths divide: tiles and narrow outputs of qlinear, the 64-column blocks,
lanes and tails of the aggregates, the uint16 flush (hubs past 257 edges), several parts
(threads), output tables, 4-bit outputs, rounding ties, NaN inputs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np
from qgnn.contract.softmax import softmax_table
from qgnn.runtime.kernels._checks import REDUCE_CODES
from qgnn.runtime.kernels.float_step import compile_program

Arg = int | float | np.ndarray | None
Case = tuple[str, int, list[Arg]]


def encode(op: int, args: list[Arg]) -> bytes:
    out = [struct.pack("<II", op, len(args))]
    for a in args:
        if a is None:
            out.append(b"\x03")
        elif isinstance(a, bool | int | np.integer):
            out.append(b"\x00" + struct.pack("<q", int(a)))
        elif isinstance(a, float | np.floating):
            out.append(b"\x01" + struct.pack("<d", float(a)))
        else:
            data = np.ascontiguousarray(a).tobytes()
            out.append(b"\x02" + struct.pack("<Q", len(data)) + data)
    return b"".join(out)


def decode(answer: bytes, args: list[Arg]) -> tuple[int, list[bytes], int]:
    """(return value, the buffers after the call, bytes read) of one request's answer."""
    (rc,) = struct.unpack_from("<q", answer, 0)
    pos, bufs = 8, []
    for a in args:
        if isinstance(a, np.ndarray):
            (n,) = struct.unpack_from("<Q", answer, pos)
            bufs.append(answer[pos + 8:pos + 8 + n])
            pos += 8 + n
    return rc, bufs, pos


def split(answer: bytes, cases: list[Case]) -> dict[str, tuple[int, list[bytes]]]:
    """Each case's (return value, buffers) from the answer to all of them in order."""
    out, pos = {}, 0
    for name, _op, args in cases:
        rc, bufs, used = decode(answer[pos:], args)
        out[name] = (rc, bufs)
        pos += used
    if pos != len(answer):
        raise ValueError(f"answer has {len(answer) - pos} bytes past the last case")
    return out


def _csr(rng: np.random.Generator, num_dst: int, num_edges: int, num_src: int,
         hub: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """indptr, src with destination 0 given ``hub`` extra edges and some destinations empty."""
    dst = np.sort(np.concatenate([np.zeros(hub, np.int64),
                                  rng.integers(0, num_dst, num_edges)]))
    dst = dst[(dst % 7 != 3) | (dst == 0)]  # some destinations without an edge
    indptr = np.zeros(num_dst + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=num_dst), out=indptr[1:])
    return indptr, rng.integers(0, num_src, len(dst)).astype(np.int64)


def _u8(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _qlinear(rng: np.random.Generator) -> Iterator[Case]:
    shapes = [(1, 1, 1), (5, 7, 5), (37, 130, 8), (37, 130, 16), (9, 64, 17), (37, 130, 64),
              (23, 33, 70), (41, 128, 128)]
    for k, (n, kk, m) in enumerate(shapes):
        x, w = _u8(rng, n, kk), rng.integers(-128, 128, (kk, m), dtype=np.int8)
        bias = rng.integers(-5000, 5000, m, dtype=np.int32)
        mult = (rng.random(m) * 2e-3).astype(np.float32)
        bits = 4 if k % 4 == 3 else 8
        table = [None, _u8(rng, 256), _u8(rng, m, 256)][k % 3]
        per_column = int(k % 3 == 2)
        for op, threads in ((1, 1 + k % 3), (2, 3)):
            y = np.zeros((n, m), np.uint8)
            yield (f"qlinear{op}_{n}x{kk}x{m}_t{threads}", op,
                   [x, n, kk, int(rng.integers(0, 256)), w, m, bias, mult,
                    int(rng.integers(0, 1 << bits)), bits, table, per_column, y, threads])


def _aggregates(rng: np.random.Generator) -> Iterator[Case]:
    for feats, hub in ((3, 0), (64, 600), (84, 0), (136, 300)):
        indptr, src = _csr(rng, 40, 400, 50, hub)
        num_dst, edges = len(indptr) - 1, len(src)
        x = _u8(rng, 50, feats)
        x[:, ::5] = 255  # maximal bytes in the even and odd columns
        for reduce, code in REDUCE_CODES.items():
            for weighted in (False, True):
                w = _u8(rng, edges) if weighted else None
                y, status = np.zeros((num_dst, feats), np.uint8), np.zeros(4, np.int64)
                yield (f"qaggregate_{feats}_{reduce}_{weighted}", 3,
                       [x, 50, feats, 37, indptr, num_dst, src, w, 140, 0.0173, 121, 8, code,
                        y, 3, status])
            heads = 2 if feats % 2 == 0 else 1
            w = _u8(rng, edges, heads)
            y, status = np.zeros((num_dst, feats), np.uint8), np.zeros(4, np.int64)
            yield (f"message_aggregate_{feats}_{reduce}", 4,
                   [x, 50, feats, 12, indptr, num_dst, src, w, heads, 128, 0.0031, 127, 8,
                    0.013, 5, 8, code, y, 2, status])
            xf = rng.standard_normal((50, feats)).astype(np.float32)
            wf = rng.standard_normal(edges).astype(np.float32)
            yield (f"aggregate_f32_{feats}_{reduce}", 6,
                   [xf, 50, feats, indptr, num_dst, src, wf, code,
                    np.zeros((num_dst, feats), np.float32), 3])
        inv = (1.0 / np.sqrt(1.0 + rng.integers(0, 30, 50))).astype(np.float32)
        for has_msg in (0, 1):
            table = _u8(rng, feats, 256) if has_msg else None
            y, status = np.zeros((num_dst, feats), np.uint8), np.zeros(4, np.int64)
            yield (f"gcn_aggregate_{feats}_{has_msg}", 5,
                   [x, 50, feats, 3, indptr, num_dst, src, inv, 0.004, 0, 8, has_msg, 0.0021,
                    120, 8, 0.011, 9, 8, table, int(table is not None), y, 2, status])


def _graph_ops(rng: np.random.Generator) -> Iterator[Case]:
    indptr, src = _csr(rng, 30, 200, 30, hub=40)
    num_dst, edges, heads = len(indptr) - 1, len(src), 3
    logits = (rng.standard_normal((edges, heads)) * 4).astype(np.float32)
    yield ("edge_softmax_f32", 7,
           [logits, heads, indptr, num_dst, np.zeros((edges, heads), np.float32), 2])
    table = softmax_table(np.float32(0.07), 8)
    lq = _u8(rng, edges, heads)
    yield ("q_edge_softmax", 8, [lq, heads, indptr, num_dst, table, len(table),
                                 np.zeros((edges, heads), np.float32), 2])
    yield ("q_edge_softmax_q8", 9, [lq, heads, indptr, num_dst, table, len(table), 1 / 255.0, 0,
                                    8, np.zeros((edges, heads), np.uint8), 2])
    src_loops = src.copy()
    src_loops[::5] = np.repeat(np.arange(num_dst), np.diff(indptr))[::5]  # stored self-loops
    for drop in (0, 1):
        looped = np.zeros(num_dst + 1, np.int64)
        yield (f"looped_indptr_{drop}", 10, [indptr, num_dst, src_loops, drop, looped, 2])
        ptr = np.zeros(num_dst + 1, np.int64)
        ptr[1:] = np.cumsum(np.diff(indptr) + 1)
        if drop:
            counts = np.diff(indptr) + 1
            dsts = np.repeat(np.arange(num_dst), np.diff(indptr))
            for v in dsts[src_loops == dsts]:
                counts[v] -= 1
            ptr[1:] = np.cumsum(counts)
        yield (f"looped_src_{drop}", 11, [indptr, num_dst, src_loops, drop, ptr,
                                          np.zeros(ptr[-1], np.int64), 2])
    ss = (rng.standard_normal((30, heads)) * 3).astype(np.float32)
    sd = (rng.standard_normal((30, heads)) * 3).astype(np.float32)
    dst = np.repeat(np.arange(num_dst), np.diff(indptr)).astype(np.int64)
    yield ("gat_logits_q", 15, [ss, 30, sd, 30, heads, src, dst, edges, 0.2, 0.05, 128, 8,
                                np.zeros((edges, heads), np.uint8), None, 2])
    yield ("gat_logits_f", 15, [ss, 30, sd, 30, heads, src, dst, edges, 0.2, 0.05, 128, 8, None,
                                np.zeros((edges, heads), np.float32), 2])
    x = _u8(rng, 33, heads * 24)
    att = rng.integers(-128, 128, (heads, 24), dtype=np.int8)
    scale = (rng.random(heads) * 1e-3).astype(np.float32)
    yield ("head_scores", 16, [x, 33, heads, 24, 131, att, scale,
                               np.zeros((33, heads), np.float32), 2])


def _elementwise(rng: np.random.Generator) -> Iterator[Case]:
    for feats in (1, 13, 64, 130):
        a, b = _u8(rng, 17, feats), _u8(rng, 17, feats)
        per_col = (rng.standard_normal(feats) * 0.3).astype(np.float32)
        alpha, beta = rng.standard_normal(feats), rng.standard_normal(feats)
        programs = {
            "add_relu": ([("add_b", 0, None), ("relu", 0, None)], True),
            "affine": ([("mul", 0, per_col), ("affine_f64", 0, (alpha, beta)),
                        ("rsub", 0, np.float32(0.25)), ("relu", 0, None)], False),
            "div_sub": ([("div", 0, np.float32(0.7)), ("sub", 1, per_col), ("add_b", 0, None)],
                        True),
        }
        for name, (ops, two) in programs.items():
            prog = compile_program(ops, feats)
            table = _u8(rng, 256) if name == "affine" else None
            yield (f"float_step_{name}_{feats}", 12,
                   [a, b if two else None, 17, feats, 0.021, 131, 0.017, 97, prog.steps,
                    len(prog.steps), prog.floats, len(prog.floats), prog.doubles,
                    len(prog.doubles), 0.013, 128 if feats != 13 else 7,
                    8 if feats != 13 else 4, table,
                    0, np.zeros((17, feats), np.uint8), 1 + feats % 3])
        yield (f"lut_u8_{feats}", 13, [a, 17, feats, _u8(rng, feats, 256), 1,
                                       np.zeros((17, feats), np.uint8), 2])
        yield (f"lut2_u8_{feats}", 14, [a, b, a.size, _u8(rng, 256, 256),
                                        np.zeros(a.size, np.uint8), 2])
    table8 = rng.integers(-128, 128, (300, 24), dtype=np.int8)
    q8 = rng.integers(-128, 128, 24, dtype=np.int8)
    rows = np.unique(rng.integers(0, 300, 120)).astype(np.int64)
    exclude = np.unique(rng.integers(0, 300, 10)).astype(np.int64)
    table8[7] = table8[5]  # a tie: the smaller id first
    for k, (r, q32) in enumerate(((None, None), (rows, None),
                                  (None, rng.integers(-70000, 70000, 24).astype(np.int32)))):
        yield (f"topk_{k}", 17, [table8, 300, 24, q8 if q32 is None else None, q32, r,
                                 0 if r is None else len(r), exclude, len(exclude), 20,
                                 np.zeros(20, np.int64), np.zeros(20, np.int32), 2])
    xs = np.concatenate([(np.arange(-40, 40) + 0.5) * 0.02,  # ties at every half step
                         rng.standard_normal(300) * 3, [np.nan, np.inf, -np.inf, 1e30]]
                        ).astype(np.float32)
    yield ("quantize_u8", 18, [xs[:-4], len(xs) - 4, 0.02, 100, 8,
                               np.zeros(len(xs) - 4, np.uint8), 2])
    yield ("quantize_u8_nan", 18, [xs, len(xs), 0.02, 100, 8, np.zeros(len(xs), np.uint8), 2])
    yield ("quantize_s8", 19, [xs[:-4], len(xs) - 4, 0.02, np.zeros(len(xs) - 4, np.int8), 2])
    q = _u8(rng, 333)
    yield ("dequantize_u8", 20, [q, 333, 0.037, 129, np.zeros(333, np.float32), 2])


def cases(seed: int = 0) -> list[Case]:
    rng = np.random.default_rng(seed)
    return [*_qlinear(rng), *_aggregates(rng), *_graph_ops(rng), *_elementwise(rng)]


def cpu_case(level: str) -> Case:
    return (f"cpu_supports_{level}", 21, [np.frombuffer(level.encode() + b"\0", np.uint8)])
