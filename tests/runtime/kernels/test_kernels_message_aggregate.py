"""message_aggregate (the QMessageAggregate kernel) against the exporter's numpy reference and the
portable function body on onnxruntime: integers must match exactly, for every reduce, weight
layout, bit width and column chunking, at any thread count."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.exporter.ops import make_op_model
from qgnn.exporter.ops.q_message_aggregate import INPUTS, q_message_aggregate
from qgnn.runtime import kernels
from qgnn.runtime.kernels import message_aggregate, requant_multiplier

REDUCES = ("sum", "mean", "max")


def make_feeds(rng: np.random.Generator, csr, num_src: int, feats: int, heads: int | None,
               bits: int = 8, msg_bits: int = 8, ties: bool = False) -> dict[str, np.ndarray]:
    """Op inputs with messages and outputs spread over their ranges (``ties``: both multipliers
    0.5, so many values land on .5)."""
    indptr, src, _ = csr
    w_shape = len(src) if heads is None else (len(src), heads)
    if ties:
        s_x, s_w, s_m, s_y = 0.5, 0.25, 0.25, 0.5
    else:
        s_x, s_w = rng.uniform(0.001, 0.2, size=2)
        s_m = rng.uniform(0.3, 3.0) * s_x * s_w * 2 ** 14 / 2 ** msg_bits
        s_y = rng.uniform(0.5, 4.0) * s_m * 2 ** msg_bits / 2 ** bits
    f32, u8 = (lambda v: np.array(v, np.float32)), (lambda v: np.array(v, np.uint8))
    return {"x_q": rng.integers(0, 2 ** bits, (num_src, feats), dtype=np.uint8),
            "x_scale": f32(s_x), "x_zero_point": u8(rng.integers(0, 2 ** bits)),
            "indptr": indptr, "src": src, "w_q": rng.integers(0, 256, w_shape, dtype=np.uint8),
            "w_scale": f32(s_w), "w_zero_point": u8(rng.integers(0, 256)),
            "m_scale": f32(s_m), "m_zero_point": u8(rng.integers(0, 2 ** msg_bits)),
            "y_scale": f32(s_y), "y_zero_point": u8(rng.integers(0, 2 ** bits))}


def kernel(feeds: dict[str, np.ndarray], reduce: str = "sum", bits: int = 8, msg_bits: int = 8,
           num_threads: int = 2) -> np.ndarray:
    """The kernel on op inputs, multipliers folded as the engine folds them."""
    s = {k: feeds[f"{k}_scale"][()] for k in ("x", "w", "m", "y")}
    zp = {k: int(feeds[f"{k}_zero_point"]) for k in ("x", "w", "m", "y")}
    return message_aggregate(feeds["x_q"], zp["x"], feeds["indptr"], feeds["src"], feeds["w_q"],
                             zp["w"], requant_multiplier(s["x"], s["m"], s["w"]), zp["m"],
                             requant_multiplier(s["m"], s["y"]), zp["y"], reduce, bits=bits,
                             msg_bits=msg_bits, num_threads=num_threads)


def reference(feeds: dict[str, np.ndarray], **attributes) -> np.ndarray:
    return q_message_aggregate(*[feeds[k] for k in INPUTS], **attributes)


def test_hand_computed_example():
    """The op test's 5-node graph: M_m = 0.5 (products -2.5 -> -2, 1.5 -> 2, 122.5 -> 122,
    -120 + 100 saturating at 0), M_y = 0.5 around zp_y = 60."""
    u8, f32 = (lambda v: np.array(v, np.uint8)), (lambda v: np.array(v, np.float32))
    feeds = {"x_q": u8([[13, 255], [15, 250], [10, 0], [20, 0], [11, 10]]),
             "x_scale": f32(0.5), "x_zero_point": u8(10),
             "indptr": np.array([0, 2, 5, 5, 6, 6]), "src": np.array([1, 2, 0, 0, 3, 2]),
             "w_q": u8([9, 12, 10, 11, 8, 14]), "w_scale": f32(0.25), "w_zero_point": u8(10),
             "m_scale": f32(0.25), "m_zero_point": u8(100), "y_scale": f32(0.5),
             "y_zero_point": u8(60)}
    want = {"sum": [[59, 5], [56, 126], [60, 60], [60, 50], [60, 60]],
            "mean": [[60, 32], [59, 82], [60, 60], [60, 50], [60, 60]],
            "max": [[60, 55], [61, 121], [60, 60], [60, 50], [60, 60]]}
    for reduce, rows in want.items():
        np.testing.assert_array_equal(kernel(feeds, reduce), np.array(rows, np.uint8))


def heads_for(feats: int) -> int:
    for heads in (8, 7, 5, 4, 3):
        if feats % heads == 0:
            return heads
    return 1


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("feats", [1, 5, 16, 32, 48, 64, 70, 128, 200])
def test_matches_reference(make_csr, reduce, per_head, feats):
    """Every column chunking (64, 16, scalar tail) and head layout (heads narrower than a
    vector, not aligned to one), with destinations without edges."""
    rng = np.random.default_rng(feats)
    csr = make_csr(60, 700, 90, empty_frac=0.2)
    for ties in (False, True):
        feeds = make_feeds(rng, csr, 90, feats, heads_for(feats) if per_head else None,
                           ties=ties)
        np.testing.assert_array_equal(kernel(feeds, reduce), reference(feeds, reduce=reduce))


@pytest.mark.parametrize(("bits", "msg_bits"), [(4, 8), (8, 4), (4, 4), (2, 3)])
@pytest.mark.parametrize("reduce", REDUCES)
def test_narrow_bit_widths(make_csr, reduce, bits, msg_bits):
    rng = np.random.default_rng(bits * 10 + msg_bits)
    csr = make_csr(50, 600, 70, empty_frac=0.1)
    for feats, heads in ((80, None), (24, 4), (3, 3)):
        feeds = make_feeds(rng, csr, 70, feats, heads, bits, msg_bits)
        got = kernel(feeds, reduce, bits, msg_bits)
        assert got.max() <= 2 ** bits - 1
        np.testing.assert_array_equal(
            got, reference(feeds, reduce=reduce, bits=bits, msg_bits=msg_bits))


@pytest.mark.parametrize("reduce", REDUCES)
def test_saturating_extremes(make_csr, reduce):
    """Products of +-65025 with a large message multiplier: every message is pinned at its range
    ends, and sums of them saturate the output."""
    rng = np.random.default_rng(5)
    csr = make_csr(40, 500, 30, empty_frac=0.2)
    saturated = False
    for zp_x, zp_w, zp_m, msg_bits in ((0, 128, 128, 8), (255, 0, 200, 8), (128, 128, 7, 4)):
        feeds = make_feeds(rng, csr, 30, 67, None, msg_bits=msg_bits)
        feeds |= {"x_q": rng.choice(np.array([0, 255], np.uint8), size=(30, 67)),
                  "w_q": rng.choice(np.array([0, 255], np.uint8), size=len(csr[1])),
                  "x_zero_point": np.array(zp_x, np.uint8),
                  "w_zero_point": np.array(zp_w, np.uint8),
                  "m_zero_point": np.array(zp_m, np.uint8), "x_scale": np.array(1, np.float32),
                  "w_scale": np.array(1, np.float32), "m_scale": np.array(1e-3, np.float32),
                  "y_scale": np.array(1e-5, np.float32)}
        got = kernel(feeds, reduce, msg_bits=msg_bits)
        np.testing.assert_array_equal(got, reference(feeds, reduce=reduce, msg_bits=msg_bits))
        saturated |= bool(got.min() == 0 or got.max() == 255)
    assert saturated


def test_huge_multipliers_saturate_without_nan(make_csr):
    """float32(p) * M_m overflowing to inf still clamps (p = 0 gives 0, never NaN)."""
    rng = np.random.default_rng(6)
    csr = make_csr(20, 200, 20)
    feeds = make_feeds(rng, csr, 20, 33, None)
    feeds |= {"x_scale": np.array(3e38, np.float32), "w_scale": np.array(1.0, np.float32),
              "m_scale": np.array(1.0, np.float32), "y_scale": np.array(1e-30, np.float32)}
    np.testing.assert_array_equal(kernel(feeds, "sum"), reference(feeds, reduce="sum"))


def test_matches_the_portable_body_on_onnxruntime(make_csr):
    import onnxruntime as ort
    from onnx import helper

    rng = np.random.default_rng(8)
    csr = make_csr(80, 900, 100, empty_frac=0.1)
    for heads in (None, 4):
        feeds = make_feeds(rng, csr, 100, 96, heads)
        for reduce in REDUCES:
            model = make_op_model("QMessageAggregate", {
                k: (helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
                for k, v in feeds.items()}, reduce=reduce)
            session = ort.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
            np.testing.assert_array_equal(kernel(feeds, reduce), session.run(None, feeds)[0])


def test_empty_shapes():
    u8 = np.uint8
    rng = np.random.default_rng(0)
    no_edges = (np.zeros(4, np.int64), np.zeros(0, np.int64), None)
    feeds = make_feeds(rng, no_edges, 5, 6, 2)
    assert feeds["w_q"].shape == (0, 2)
    out = kernel(feeds, "mean")
    assert out.shape == (3, 6) and (out == feeds["y_zero_point"]).all()
    feeds = make_feeds(rng, (np.zeros(1, np.int64), np.zeros(0, np.int64), None), 5, 6, None)
    assert kernel(feeds).shape == (0, 6)
    feeds = make_feeds(rng, (np.array([0, 2]), np.array([0, 1]), None), 2, 0, None)
    assert kernel(feeds).shape == (1, 0) and kernel(feeds).dtype == u8


def test_output_zero_point_above_the_range_clamps(make_csr):
    """bits = 4 with zp_y = 200: a destination without edges gets 15, not 200."""
    rng = np.random.default_rng(2)
    csr = make_csr(30, 100, 30, empty_frac=0.3)
    feeds = make_feeds(rng, csr, 30, 20, None) | {"y_zero_point": np.array(200, np.uint8)}
    got = kernel(feeds, "sum", bits=4)
    np.testing.assert_array_equal(got, reference(feeds, reduce="sum", bits=4))
    assert got.max() == 15 and (got[np.diff(csr[0]) == 0] == 15).all()


@pytest.mark.parametrize("reduce", REDUCES)
def test_threads_agree_and_are_used(make_csr, reduce):
    rng = np.random.default_rng(11)
    csr = make_csr(3_000, 40_000, 3_000, empty_frac=0.1)
    feeds = make_feeds(rng, csr, 3_000, 64, 8)
    one = kernel(feeds, reduce, num_threads=1)
    for threads in (2, 3, 7):
        np.testing.assert_array_equal(kernel(feeds, reduce, num_threads=threads), one)
    assert kernels._ext.ext()._last_parts() == 7
    np.testing.assert_array_equal(one, reference(feeds, reduce=reduce))


def test_int32_limit_is_exact_and_beyond_it_refused():
    """|c| <= 255: 8,421,504 saturated messages into one destination fit int32, one more
    does not (the kernel sums hubs in blocks into int64 and refuses, like the reference)."""
    limit = 8_421_504
    u8, f32 = (lambda v: np.array(v, np.uint8)), (lambda v: np.array(v, np.float32))
    src = np.zeros(limit + 1, np.int64)
    feeds = {"x_q": u8([[255]]), "x_scale": f32(1.0), "x_zero_point": u8(0),
             "indptr": np.array([0, limit, limit + 1]), "src": src,
             "w_q": np.full(limit + 1, 255, np.uint8), "w_scale": f32(1.0),
             "w_zero_point": u8(0), "m_scale": f32(1.0), "m_zero_point": u8(0),
             "y_scale": f32(1e7), "y_zero_point": u8(0)}
    acc, mult = limit * 255, requant_multiplier(1.0, 1e7)
    rint = lambda acc, m: round(float(np.float32(np.float32(acc) * m)))  # noqa: E731
    assert rint(acc, mult) == 215
    np.testing.assert_array_equal(kernel(feeds, "sum")[:, 0], [215, rint(255, mult)])
    mean = np.float32(mult / np.float32(limit))
    np.testing.assert_array_equal(kernel(feeds, "mean")[:, 0], [rint(acc, mean), rint(255, mult)])
    feeds["indptr"] = np.array([0, limit + 1, limit + 1])
    with pytest.raises(ValueError, match="int32 accumulator of destination 0, feature 0 "
                                         "overflows"):
        kernel(feeds, "sum")
    assert kernel(feeds, "max")[0, 0] == rint(255, mult)  # a max never overflows


def _call(**changes):
    rng = np.random.default_rng(0)
    args = {"x_q": rng.integers(0, 256, (4, 6), dtype=np.uint8), "x_zp": 3,
            "indptr": np.array([0, 2, 3]), "src": np.array([0, 3, 1]),
            "w_q": np.array([1, 2, 3], np.uint8), "w_zp": 0, "msg_multiplier": 0.5, "msg_zp": 9,
            "multiplier": 0.25, "y_zp": 7}
    options = {k: changes.pop(k) for k in ("bits", "msg_bits", "num_threads") if k in changes}
    return message_aggregate(**(args | changes), **options)


@pytest.mark.parametrize(("changes", "message"), [
    ({"x_q": np.zeros((4, 6), np.int8)}, "x_q must have dtype uint8"),
    ({"w_q": np.array([1, 2, 3], np.int16)}, "w_q must have dtype uint8"),
    ({"src": np.array([0, 4, 1])}, r"src\[1\] = 4 is out of range \[0, 4\)"),
    ({"src": np.array([0, -1, 1])}, r"src\[1\] = -1 is out of range"),
    ({"w_q": np.array([1, 2], np.uint8)}, "w_q must have 3 rows"),
    ({"w_q": np.zeros((3, 4), np.uint8)}, "w_q has 4 heads, which must divide the 6 columns"),
    ({"w_q": np.zeros((3, 0), np.uint8)}, "w_q has 0 heads"),
    ({"w_q": np.zeros((3, 1, 1), np.uint8)}, "w_q must have 1 or 2 dimensions"),
    ({"indptr": np.array([0, 2, 4])}, r"indptr\[-1\] = 4 must equal"),
    ({"msg_multiplier": 0.0}, "msg_multiplier must be a finite float32 > 0"),
    ({"multiplier": float("nan")}, "multiplier must be a finite float32 > 0"),
    ({"msg_zp": 256}, r"msg_zp must be in \[0, 255\]"),
    ({"msg_bits": 9}, r"msg_bits must be in \[1, 8\]"),
    ({"bits": 0}, r"bits must be in \[1, 8\]"),
    ({"reduce": "min"}, "reduce must be one of"),
    ({"num_threads": 0}, "num_threads must be in"),
])
def test_rejects_bad_inputs(changes, message):
    with pytest.raises(ValueError, match=message):
        _call(**changes)


def test_extension_checks_buffers_itself():
    """The C layer refuses what the wrapper would have converted (the engine calls it
    directly)."""
    ext = kernels._ext.ext()
    x = np.zeros((4, 6), np.uint8)
    indptr, src, w = np.array([0, 2, 3]), np.array([0, 3, 1]), np.ones(3, np.uint8)
    with pytest.raises(ValueError, match="src must have dtype int64"):
        ext.message_aggregate(x, 0, indptr, src.astype(np.int32), w, 0, 0.5, 0, 8, 0.5, 0, 8, 0,
                              1)
    with pytest.raises(ValueError, match="x_q must be C-contiguous"):
        ext.message_aggregate(np.zeros((6, 4), np.uint8).T, 0, indptr, src, w, 0, 0.5, 0, 8,
                              0.5, 0, 8, 0, 1)
    with pytest.raises(ValueError, match="w_q has 4 heads"):
        ext.message_aggregate(x, 0, indptr, src, np.ones((3, 4), np.uint8), 0, 0.5, 0, 8, 0.5,
                              0, 8, 0, 1)


@pytest.mark.parametrize("feats", [1, 5, 16, 17, 48, 64, 70, 128])
@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_reads_only_its_inputs(guarded, feats, reduce):
    """Every array ends right before a guard page; the last source row is gathered often."""
    rng = np.random.default_rng(feats)
    src, indptr = np.array([0, 4, 4, 2, 4, 1, 3, 4]), np.array([0, 3, 3, 8])
    x = rng.integers(0, 256, (5, feats), dtype=np.uint8)
    heads = heads_for(feats)
    for w in (rng.integers(0, 256, 8, dtype=np.uint8),
              rng.integers(0, 256, (8, heads), dtype=np.uint8)):
        args = (3, 0.01, 5, 0.3, 9, reduce)
        np.testing.assert_array_equal(
            message_aggregate(guarded(x), 3, guarded(indptr), guarded(src), guarded(w), *args),
            message_aggregate(x, 3, indptr, src, w, *args))


@pytest.mark.parametrize(("feats", "heads"), [(128, 4), (128, 16), (96, 24), (64, 32), (40, 20),
                                              (40, 5), (24, 3), (8, 1), (8, 2)])
def test_many_heads_and_head_widths(make_csr, feats, heads):
    """Up to 16 heads the kernel permutes one converted weight row per edge (once per vector
    when a head spans a multiple of 4 columns); more heads take the lane-by-lane path. Heads
    8 columns wide take the avx2 level's 8-lane 16- and 8-column paths (GAT's output layer)."""
    rng = np.random.default_rng(feats + heads)
    csr = make_csr(40, 500, 60, empty_frac=0.1)
    feeds = make_feeds(rng, csr, 60, feats, heads)
    for reduce in REDUCES:
        np.testing.assert_array_equal(kernel(feeds, reduce), reference(feeds, reduce=reduce))


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("feats", [4, 8, 12, 20, 32, 36, 128, 131])
def test_baseline_requantises_every_width(make_csr, reduce, feats):
    """At `baseline` the outputs are requantised 16 and then 4 columns at a time in SSE2
    registers, the last feats % 4 one by one: each width against the reference at that level
    explicitly, per-head weights where the width splits into heads."""
    rng = np.random.default_rng(feats)
    csr = make_csr(60, 700, 90, empty_frac=0.2)
    heads = heads_for(feats)
    feeds = make_feeds(rng, csr, 90, feats, heads if heads > 1 else None)
    s = {k: feeds[f"{k}_scale"][()] for k in ("x", "w", "m", "y")}
    zp = {k: int(feeds[f"{k}_zero_point"]) for k in ("x", "w", "m", "y")}
    got = message_aggregate(feeds["x_q"], zp["x"], feeds["indptr"], feeds["src"], feeds["w_q"],
                            zp["w"], requant_multiplier(s["x"], s["m"], s["w"]), zp["m"],
                            requant_multiplier(s["m"], s["y"]), zp["y"], reduce,
                            isa="baseline")
    np.testing.assert_array_equal(got, reference(feeds, reduce=reduce))
