"""gcn_aggregate (the QGCNAggregate kernel) against the exporter's numpy reference and the
portable function body on onnxruntime: integers must match exactly, with and without the
message site, for every column chunking and bit width, at any thread count."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.exporter.ops import make_op_model
from qgnn.exporter.ops.q_gcn_aggregate import INPUTS, q_gcn_aggregate
from qgnn.runtime import kernels
from qgnn.runtime.kernels import gcn_aggregate, requant_multiplier


def with_loops(rng: np.random.Generator, csr, share: float = 0.1):
    """The CSR with about ``share`` of its edges turned into stored self-loops (which count
    twice: once stored, once added)."""
    indptr, src, dst = csr
    src = src.copy()
    loops = rng.random(src.size) < share
    src[loops] = dst[loops]
    return indptr, src, dst


def make_feeds(rng: np.random.Generator, csr, num_src: int, feats: int, message: bool,
               bits: int = 8, w_bits: int = 8, msg_bits: int = 8) -> dict[str, np.ndarray]:
    """Op inputs with weights, messages and outputs spread over their ranges; the inverse
    degrees come from random in-degrees and run past N_src (the op ignores the tail)."""
    indptr, src, _ = csr
    inv = (1.0 / np.sqrt(rng.integers(0, 50, num_src + 2).astype(np.float32) + 1)).astype(
        np.float32)
    s_x = rng.uniform(0.001, 0.2)
    s_w = rng.uniform(0.5, 1.5) / 2 ** w_bits
    s_m = rng.uniform(0.3, 3.0) * s_x * s_w * 2 ** 14 / 2 ** msg_bits
    s_y = rng.uniform(0.5, 4.0) * (s_m * 2 ** msg_bits if message else s_x * s_w * 2 ** 12) / (
        2 ** bits)
    f32, u8 = (lambda v: np.array(v, np.float32)), (lambda v: np.array(v, np.uint8))
    feeds = {"x_q": rng.integers(0, 2 ** bits, (num_src, feats), dtype=np.uint8),
             "x_scale": f32(s_x), "x_zero_point": u8(rng.integers(0, 2 ** bits)),
             "indptr": indptr, "src": src, "inv_sqrt_degree": inv, "w_scale": f32(s_w),
             "w_zero_point": u8(rng.integers(0, 2 ** w_bits)), "y_scale": f32(s_y),
             "y_zero_point": u8(rng.integers(0, 2 ** bits))}
    if message:
        feeds |= {"m_scale": f32(s_m), "m_zero_point": u8(rng.integers(0, 2 ** msg_bits))}
    return feeds


def kernel(feeds: dict[str, np.ndarray], bits: int = 8, w_bits: int = 8, msg_bits: int = 8,
           num_threads: int = 2) -> np.ndarray:
    """The kernel on op inputs, multipliers folded as the engine folds them."""
    s = {k: feeds[f"{k}_scale"][()] for k in ("x", "w", "y")}
    zp = {k: int(feeds[f"{k}_zero_point"]) for k in ("x", "w", "y")}
    if "m_scale" in feeds:
        s_m = feeds["m_scale"][()]
        msg_mult, mult = requant_multiplier(s["x"], s_m, s["w"]), requant_multiplier(s_m, s["y"])
        zp_m = int(feeds["m_zero_point"])
    else:
        msg_mult, mult, zp_m = None, requant_multiplier(s["x"], s["y"], s["w"]), 0
    return gcn_aggregate(feeds["x_q"], zp["x"], feeds["indptr"], feeds["src"],
                         feeds["inv_sqrt_degree"], s["w"], zp["w"], msg_mult, zp_m, mult,
                         zp["y"], bits=bits, w_bits=w_bits, msg_bits=msg_bits,
                         num_threads=num_threads)


def reference(feeds: dict[str, np.ndarray], **attributes) -> np.ndarray:
    return q_gcn_aggregate(*[feeds.get(k) for k in INPUTS], **attributes)


def test_hand_computed_example():
    """The op test's graph: a stored loop on 0, no in-edge into 1, a half-way weight (2.5 ->
    2) into 2; messages 0.5 -> 0 and outputs 2.5 -> 2, -1.5 -> -2 round half to even."""
    u8, f32 = (lambda v: np.array(v, np.uint8)), (lambda v: np.array(v, np.float32))
    feeds = {"x_q": u8([[12, 10], [13, 7], [10, 20], [20, 11]]), "x_scale": f32(0.5),
             "x_zero_point": u8(10), "indptr": np.array([0, 2, 2, 3]),
             "src": np.array([1, 0, 3]), "inv_sqrt_degree": f32([0.5, 1.0, 0.25, 0.3125]),
             "w_scale": f32(1 / 32), "w_zero_point": u8(2), "y_scale": f32(0.5),
             "y_zero_point": u8(50)}
    want = np.array([[52, 48], [53, 47], [51, 51]], np.uint8)
    np.testing.assert_array_equal(kernel(feeds), want)
    message = feeds | {"m_scale": f32(1 / 16), "m_zero_point": u8(100)}
    np.testing.assert_array_equal(kernel(message), want)
    np.testing.assert_array_equal(kernel(message | {"m_zero_point": u8(8)}, msg_bits=4),
                                  np.array([[52, 49], [51, 49], [51, 51]], np.uint8))
    np.testing.assert_array_equal(kernel(feeds, w_bits=4),
                                  np.array([[52, 49], [51, 49], [51, 51]], np.uint8))


@pytest.mark.parametrize("message", [True, False])
@pytest.mark.parametrize("feats", [1, 5, 16, 17, 32, 48, 64, 70, 128, 200])
def test_matches_reference(make_csr, message, feats):
    """Every column chunking (64, 16, scalar tail), with destinations without in-edges, stored
    self-loops, and sources that are no destination."""
    rng = np.random.default_rng(feats)
    csr = with_loops(rng, make_csr(60, 700, 90, empty_frac=0.2))
    feeds = make_feeds(rng, csr, 90, feats, message)
    np.testing.assert_array_equal(kernel(feeds), reference(feeds))


@pytest.mark.parametrize(("bits", "w_bits", "msg_bits"), [(4, 4, 4), (8, 4, 8), (4, 8, 3),
                                                          (2, 3, 8)])
@pytest.mark.parametrize("message", [True, False])
def test_narrow_bit_widths(make_csr, message, bits, w_bits, msg_bits):
    rng = np.random.default_rng(bits * 100 + w_bits * 10 + msg_bits)
    csr = with_loops(rng, make_csr(50, 600, 70, empty_frac=0.1))
    attrs = {"bits": bits, "w_bits": w_bits, "msg_bits": msg_bits}
    for feats in (80, 24, 3):
        feeds = make_feeds(rng, csr, 70, feats, message, bits, w_bits, msg_bits)
        got = kernel(feeds, **attrs)
        assert got.max() <= 2 ** bits - 1
        np.testing.assert_array_equal(got, reference(feeds, **attrs))


@pytest.mark.parametrize("message", [True, False])
def test_saturating_extremes(make_csr, message):
    """Weights pinned at both range ends (coefficients from 1e-6 to 9e8, some scaled to inf),
    products of +-65025, messages and outputs saturating."""
    rng = np.random.default_rng(5)
    csr = with_loops(rng, make_csr(30, 500, 40, empty_frac=0.2))
    saturated = False
    for zp_x, zp_w, s_w, zp_m in ((0, 0, 1e-6, 128), (255, 200, 1.0, 7), (128, 3, 1e-30, 0)):
        feeds = make_feeds(rng, csr, 40, 67, message)
        feeds |= {"x_q": rng.choice(np.array([0, 255], np.uint8), size=(40, 67)),
                  "inv_sqrt_degree": rng.choice(np.array([1e-3, 1.0, 3e4], np.float32), 40),
                  "x_zero_point": np.array(zp_x, np.uint8), "x_scale": np.array(1, np.float32),
                  "w_zero_point": np.array(zp_w, np.uint8),
                  "w_scale": np.array(s_w, np.float32),
                  "y_scale": np.array(s_w * 1e-5, np.float32)}
        if message:
            feeds |= {"m_zero_point": np.array(zp_m, np.uint8),
                      "m_scale": np.array(s_w * 1e-3, np.float32)}
        got = kernel(feeds)
        np.testing.assert_array_equal(got, reference(feeds))
        saturated |= bool(got.min() == 0 or got.max() == 255)
    assert saturated


def test_matches_the_portable_body_on_onnxruntime(make_csr):
    import onnxruntime as ort
    from onnx import helper

    rng = np.random.default_rng(8)
    csr = with_loops(rng, make_csr(80, 900, 100, empty_frac=0.1))
    for message in (True, False):
        feeds = make_feeds(rng, csr, 100, 96, message)
        model = make_op_model("QGCNAggregate", {
            k: (helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
            for k, v in feeds.items()})
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(kernel(feeds), session.run(None, feeds)[0])


@pytest.mark.parametrize("message", [True, False])
def test_empty_shapes(message):
    rng = np.random.default_rng(0)
    no_edges = (np.zeros(4, np.int64), np.zeros(0, np.int64), None)
    feeds = make_feeds(rng, no_edges, 5, 6, message)
    np.testing.assert_array_equal(kernel(feeds), reference(feeds))  # the loops alone
    assert kernel(feeds).shape == (3, 6)
    no_dst = (np.zeros(1, np.int64), np.zeros(0, np.int64), None)
    assert kernel(make_feeds(rng, no_dst, 5, 6, message)).shape == (0, 6)
    no_src = make_feeds(rng, no_dst, 0, 6, message)
    assert no_src["inv_sqrt_degree"].size == 2 and kernel(no_src).shape == (0, 6)
    no_cols = make_feeds(rng, (np.array([0, 2]), np.array([0, 1]), None), 2, 0, message)
    out = kernel(no_cols)
    assert out.shape == (1, 0) and out.dtype == np.uint8


@pytest.mark.parametrize("message", [True, False])
def test_threads_agree_and_are_used(make_csr, parts_used, message):
    rng = np.random.default_rng(11)
    csr = with_loops(rng, make_csr(3_000, 40_000, 3_000, empty_frac=0.1))
    feeds = make_feeds(rng, csr, 3_000, 64, message)
    one = kernel(feeds, num_threads=1)
    for threads in (2, 3, 7):
        np.testing.assert_array_equal(kernel(feeds, num_threads=threads), one)
    assert parts_used() == 7
    np.testing.assert_array_equal(one, reference(feeds))


def _hub(edges: int, s_w: float) -> dict[str, np.ndarray]:
    """One destination with ``edges`` in-edges from row 0 and a second with none; row 0's
    centred value is 255 and every weight 255 (coefficient 1, s_w = 1/255)."""
    u8, f32 = (lambda v: np.array(v, np.uint8)), (lambda v: np.array(v, np.float32))
    return {"x_q": u8([[255], [255]]), "x_scale": f32(1.0), "x_zero_point": u8(0),
            "indptr": np.array([0, edges, edges]), "src": np.zeros(edges, np.int64),
            "inv_sqrt_degree": f32([1.0, 1.0]), "w_scale": f32(s_w), "w_zero_point": u8(0),
            "y_scale": f32(1e9), "y_zero_point": u8(0)}


def test_int32_limit_is_exact_and_beyond_it_refused():
    """Without the message site a term is up to 65,025: 33,024 in-edges plus the loop fit
    int32, one more edge does not (summed in blocks into int64 and refused, like the
    reference). A longer segment of small terms takes the same blocked path and is exact."""
    feeds = _hub(33_024, 1 / 255)
    np.testing.assert_array_equal(kernel(feeds), reference(feeds))
    with pytest.raises(ValueError, match="int32 accumulator of destination 0, feature 0 "
                                         "overflows"):
        kernel(_hub(33_025, 1 / 255))
    small = _hub(100_000, 1.0) | {"x_q": np.array([[3], [2]], np.uint8),
                                  "y_scale": np.array(1e4, np.float32)}
    np.testing.assert_array_equal(kernel(small), reference(small))
    np.testing.assert_array_equal(kernel(small)[:, 0], [30, 0])  # 100,001 * 3 * 1e-4


def _call(**changes):
    rng = np.random.default_rng(0)
    args = {"x_q": rng.integers(0, 256, (4, 6), dtype=np.uint8), "x_zp": 3,
            "indptr": np.array([0, 2, 3]), "src": np.array([0, 3, 1]),
            "inv_sqrt_degree": np.ones(4, np.float32), "w_scale": 0.01, "w_zp": 0,
            "msg_multiplier": 0.5, "msg_zp": 9, "multiplier": 0.25, "y_zp": 7}
    options = {k: changes.pop(k) for k in ("bits", "w_bits", "msg_bits", "num_threads")
               if k in changes}
    return gcn_aggregate(**(args | changes), **options)


@pytest.mark.parametrize(("changes", "message"), [
    ({"x_q": np.zeros((4, 6), np.int8)}, "x_q must have dtype uint8"),
    ({"inv_sqrt_degree": np.ones(4)}, "inv_sqrt_degree must have dtype float32"),
    ({"inv_sqrt_degree": np.ones(3, np.float32)},
     r"inv_sqrt_degree has 3 entries, expected at least one per x_q row \(4\)"),
    ({"inv_sqrt_degree": np.array([1, 1, np.inf, 1], np.float32)},
     r"inv_sqrt_degree\[2\] = inf is not finite"),
    ({"src": np.array([0, 4, 1])}, r"src\[1\] = 4 is out of range \[0, 4\)"),
    ({"indptr": np.array([0, 2, 4])}, r"indptr\[-1\] = 4 must equal"),
    ({"indptr": np.array([0, 0, 0, 0, 0, 3])}, "5 destinations but x_q has 4 rows"),
    ({"w_scale": 0.0}, "w_scale must be a finite float32 > 0"),
    ({"msg_multiplier": float("nan")}, "msg_multiplier must be a finite float32 > 0"),
    ({"w_zp": 256}, r"w_zp must be in \[0, 255\]"),
    ({"w_bits": 9}, r"w_bits must be in \[1, 8\]"),
    ({"msg_bits": 0}, r"msg_bits must be in \[1, 8\]"),
    ({"bits": 0}, r"bits must be in \[1, 8\]"),
    ({"num_threads": 0}, "num_threads must be in"),
])
def test_rejects_bad_inputs(changes, message):
    with pytest.raises(ValueError, match=message):
        _call(**changes)


def test_extension_checks_buffers_itself():
    """The C layer refuses what the wrapper would have converted (the engine calls it
    directly)."""
    ext = kernels._ext.ext()
    x, inv = np.zeros((4, 6), np.uint8), np.ones(4, np.float32)
    indptr, src = np.array([0, 2, 3]), np.array([0, 3, 1])
    with pytest.raises(ValueError, match="src must have dtype int64"):
        ext.gcn_aggregate(x, 0, indptr, src.astype(np.int32), inv, 0.1, 0, 8, None, 0, 8, 0.5,
                          0, 8, 1)
    with pytest.raises(ValueError, match="inv_sqrt_degree must be C-contiguous"):
        ext.gcn_aggregate(x, 0, indptr, src, np.ones(8, np.float32)[::2], 0.1, 0, 8, None, 0,
                          8, 0.5, 0, 8, 1)
    with pytest.raises(ValueError, match="msg_multiplier must be a finite float32 > 0"):
        ext.gcn_aggregate(x, 0, indptr, src, inv, 0.1, 0, 8, -1.0, 0, 8, 0.5, 0, 8, 1)


@pytest.mark.parametrize("feats", [1, 5, 16, 17, 48, 64, 70, 128])
@pytest.mark.parametrize("message", [True, False])
def test_reads_only_its_inputs(guarded, feats, message):
    """Every array ends right before a guard page; the last source row is gathered often and
    inv_sqrt_degree has exactly N_src entries."""
    rng = np.random.default_rng(feats)
    src, indptr = np.array([0, 4, 4, 2, 4, 1, 3, 4]), np.array([0, 3, 3, 8])
    x = rng.integers(0, 256, (5, feats), dtype=np.uint8)
    inv = rng.uniform(0.1, 1.0, 5).astype(np.float32)
    args = (0.004, 5, 0.3 if message else None, 9, 0.01, 9)
    np.testing.assert_array_equal(
        gcn_aggregate(guarded(x), 3, guarded(indptr), guarded(src), guarded(inv), *args),
        gcn_aggregate(x, 3, indptr, src, inv, *args))


@pytest.mark.parametrize("message", [True, False])
def test_output_table_maps_each_byte(make_csr, message):
    """A table (the engine's folded float steps) gives what lut_u8 gives on the plain output,
    shared or per column, hub destinations included."""
    rng = np.random.default_rng(21)
    csr = with_loops(rng, make_csr(200, 3_000, 200, empty_frac=0.1))
    feeds = make_feeds(rng, csr, 200, 70, message)
    plain = kernel(feeds)
    s = {k: feeds[f"{k}_scale"][()] for k in ("x", "w", "y")}
    zp = {k: int(feeds[f"{k}_zero_point"]) for k in ("x", "w", "y")}
    if message:
        msg = (requant_multiplier(s["x"], feeds["m_scale"][()], s["w"]),
               int(feeds["m_zero_point"]),
               requant_multiplier(feeds["m_scale"][()], s["y"]))
    else:
        msg = (None, 0, requant_multiplier(s["x"], s["y"], s["w"]))
    for rows in (1, 70):
        table = rng.integers(0, 256, (rows, 256)).astype(np.uint8)
        got = gcn_aggregate(feeds["x_q"], zp["x"], feeds["indptr"], feeds["src"],
                            feeds["inv_sqrt_degree"], s["w"], zp["w"], msg[0], msg[1], msg[2],
                            zp["y"], table=table)
        np.testing.assert_array_equal(got, kernels.lut_u8(plain, table))
    with pytest.raises(ValueError, match=r"table must be \(1, 256\) or \(70, 256\)"):
        gcn_aggregate(feeds["x_q"], zp["x"], feeds["indptr"], feeds["src"],
                      feeds["inv_sqrt_degree"], s["w"], zp["w"], msg[0], msg[1], msg[2],
                      zp["y"], table=np.zeros((3, 256), np.uint8))


def test_large_message_multipliers_and_long_message_sums(make_csr):
    """Message multipliers on both sides of 32768 (the baseline's integer rounding holds below
    it only), and a destination of 1,001 messages of +-127 (far beyond one int16 block)."""
    rng = np.random.default_rng(4)
    csr = with_loops(rng, make_csr(40, 500, 50, empty_frac=0.1))
    for ratio in (3e4, 3.3e4, 1e6):
        feeds = make_feeds(rng, csr, 50, 48, True)
        feeds["m_scale"] = np.array(feeds["x_scale"] * feeds["w_scale"] / ratio, np.float32)
        np.testing.assert_array_equal(kernel(feeds), reference(feeds))
    hub = _hub(1_000, 1 / 255) | {"x_q": np.array([[255, 0] * 24, [9, 9] * 24], np.uint8),
                                  "m_scale": np.array(1.0, np.float32),
                                  "m_zero_point": np.array(128, np.uint8),
                                  "x_zero_point": np.array(128, np.uint8),
                                  "y_scale": np.array(2000.0, np.float32),
                                  "y_zero_point": np.array(128, np.uint8)}
    got = kernel(hub)
    np.testing.assert_array_equal(got, reference(hub))
    assert got[0, 0] == 128 + 64 and got[0, 1] == 128 - 64  # 1001 * +-127 / 2000, rounded


@pytest.mark.parametrize("message", [True, False])
@pytest.mark.parametrize("feats", [4, 8, 12, 20, 36, 100, 131])
def test_baseline_requantises_every_width(make_csr, message, feats):
    """At `baseline` the outputs are requantised 16 and then 4 columns at a time in SSE2
    registers, the last feats % 4 one by one: widths that end in each of those, with outputs
    spread over the range and then saturating at both ends (y_scale 40x smaller)."""
    rng = np.random.default_rng(feats + 1000 * message)
    csr = with_loops(rng, make_csr(60, 700, 90, empty_frac=0.2))
    feeds = make_feeds(rng, csr, 90, feats, message)
    tight = feeds | {"y_scale": feeds["y_scale"] / np.float32(40)}
    for case in (feeds, tight):
        s = {k: case[f"{k}_scale"][()] for k in ("x", "w", "y")}
        zp = {k: int(case[f"{k}_zero_point"]) for k in ("x", "w", "y")}
        if message:
            msg_mult = requant_multiplier(s["x"], case["m_scale"][()], s["w"])
            mult, zp_m = requant_multiplier(case["m_scale"][()], s["y"]), int(case["m_zero_point"])
        else:
            msg_mult, mult, zp_m = None, requant_multiplier(s["x"], s["y"], s["w"]), 0
        got = gcn_aggregate(case["x_q"], zp["x"], case["indptr"], case["src"],
                            case["inv_sqrt_degree"], s["w"], zp["w"], msg_mult, zp_m, mult,
                            zp["y"], isa="baseline")
        np.testing.assert_array_equal(got, reference(case))
    assert got.min() == 0 and got.max() == 255
