"""ai.qgnn::LoopedIndptr / LoopedSrc: one self-loop appended as the last in-edge of every
destination, optionally after dropping the stored loops (GAT)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.numpy_helper import from_array
from qgnn.exporter.ops import IR_VERSION, opset_imports
from qgnn.exporter.ops.body import INT64_MAX, Body
from qgnn.exporter.ops.numeric import edge_dst
from qgnn.exporter.ops.self_loops import looped_indptr, looped_src

OPS = ("LoopedIndptr", "LoopedSrc")


def loop_oracle(indptr: np.ndarray, src: np.ndarray, drop: int) -> tuple[list[int], list[int]]:
    """The definition, one destination at a time."""
    new_indptr, new_src = [0], []
    for v in range(indptr.size - 1):
        kept = [int(u) for u in src[indptr[v]:indptr[v + 1]] if not (drop and u == v)]
        new_src += [*kept, v]
        new_indptr.append(len(new_src))
    return new_indptr, new_src


def old_construction(indptr: np.ndarray, src: np.ndarray, drop: int) -> list[np.ndarray]:
    """(indptr, src, dst) of the standard-op construction that ``Csr.with_self_loops`` emitted
    before these ops (exporter/emit/common.py), run by onnxruntime."""
    b = Body()
    i64 = lambda v: b.const(v, np.int64)  # noqa: E731
    dst = b.op("Identity", "dst_in")
    ptr, s, d = "indptr", "src", dst
    if drop:
        keep = b.op("Not", b.op("Equal", s, d))
        kept = b.op("CumSum", b.op("Concat", i64([0]), b.op("Cast", keep, to=TensorProto.INT64),
                                   axis=0), i64(0))
        ptr = b.op("Gather", kept, ptr, axis=0)
        s, d = b.op("Compress", s, keep, axis=0), b.op("Compress", d, keep, axis=0)
    num_dst = b.op("Squeeze", b.op("Sub", b.op("Shape", "indptr"), i64([1])))
    loops = b.op("Range", i64(0), num_dst, i64(1))
    new_ptr = b.op("Add", ptr, b.op("Range", i64(0), b.op("Add", num_dst, i64(1)), i64(1)))
    edges = b.op("Shape", s)
    pos = b.op("Concat", b.op("Add", b.op("Range", i64(0), b.op("Squeeze", edges), i64(1)), d),
               b.op("Add", b.op("Slice", ptr, i64([1]), i64([INT64_MAX])), loops), axis=0)
    zeros = b.op("ConstantOfShape", b.op("Add", edges, b.op("Unsqueeze", num_dst, i64([0]))),
                 value=from_array(np.zeros(1, np.int64)))
    outs = [new_ptr, *(b.op("ScatterElements", zeros, pos, b.op("Concat", v, loops, axis=0),
                            axis=0) for v in (s, d))]
    for i, name in enumerate(outs):
        b.rename_output(name, f"out{i}")
    vec = lambda n: helper.make_tensor_value_info(n, TensorProto.INT64, [None])  # noqa: E731
    graph = helper.make_graph(b.nodes, "old", [vec("indptr"), vec("src"), vec("dst_in")],
                              [vec(f"out{i}") for i in range(3)])
    model = helper.make_model(graph, opset_imports=opset_imports(), ir_version=IR_VERSION)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"indptr": indptr, "src": src, "dst_in": edge_dst(indptr)})


def random_graph(rng: np.random.Generator, num_src: int, num_dst: int,
                 max_deg: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored self-loops, repeated edges, zero-in-degree destinations, isolated sources."""
    deg = rng.integers(0, max_deg + 1, size=num_dst)
    deg[rng.random(num_dst) < 0.3] = 0
    indptr = np.concatenate([[0], np.cumsum(deg)]).astype(np.int64)
    src = rng.integers(0, max(num_src // 2, 1), size=int(indptr[-1])).astype(np.int64)
    dst = edge_dst(indptr)
    loops = rng.random(src.size) < 0.2
    src[loops] = dst[loops]
    if src.size > 2:
        src[1] = src[0]
    return indptr, src


def run_all(op_runner, indptr: np.ndarray, src: np.ndarray, drop: int) -> list[np.ndarray]:
    """Both ops through the reference, the ONNX body (1 and 2 threads) and onnx.reference;
    asserts they agree and returns (looped indptr, looped src)."""
    feeds = {"indptr": indptr, "src": src}
    outs = []
    for op, ref in zip(OPS, (looped_indptr, looped_src), strict=True):
        want = ref(indptr, src, drop)
        assert want.dtype == np.int64
        np.testing.assert_array_equal(op_runner.ort(op, feeds, drop_existing=drop), want)
        np.testing.assert_array_equal(op_runner.reference(op, feeds, drop_existing=drop), want)
        outs.append(want)
    return outs


@pytest.mark.parametrize("drop", [0, 1])
def test_hand_example(op_runner, drop):
    # v0 <- 1, 0 (loop), 2; v1 <- nothing; v2 <- 2 (loop), 2 (loop), 0; sources 0..3
    indptr = np.array([0, 3, 3, 6], np.int64)
    src = np.array([1, 0, 2, 2, 2, 0], np.int64)
    want = ({0: ([0, 4, 5, 9], [1, 0, 2, 0, 1, 2, 2, 0, 2]),
             1: ([0, 3, 4, 6], [1, 2, 0, 1, 0, 2])}[drop])
    got = run_all(op_runner, indptr, src, drop)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("drop", [0, 1])
def test_structures_match_definition(op_runner, structure, drop):
    got = run_all(op_runner, structure.indptr, structure.src, drop)
    want = loop_oracle(structure.indptr, structure.src, drop)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("drop", [0, 1])
@pytest.mark.parametrize("seed", range(6))
def test_equals_old_standard_op_construction(op_runner, seed, drop):
    rng = np.random.default_rng(seed)
    num_src = int(rng.integers(1, 60))
    num_dst = int(rng.integers(0, num_src + 1))  # D <= N_src, often D < N_src
    indptr, src = random_graph(rng, num_src, num_dst, max_deg=int(rng.integers(0, 9)))
    new_indptr, new_src = run_all(op_runner, indptr, src, drop)
    old_indptr, old_src, old_dst = old_construction(indptr, src, drop)
    np.testing.assert_array_equal(new_indptr, old_indptr)
    np.testing.assert_array_equal(new_src, old_src)
    np.testing.assert_array_equal(edge_dst(new_indptr), old_dst)


@pytest.mark.parametrize("op", OPS)
def test_model_checks_and_infers(op_runner, op):
    feeds = {"indptr": np.array([0, 1], np.int64), "src": np.array([0], np.int64)}
    model = op_runner.model(op, feeds, drop_existing=1)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out = inferred.graph.output[0].type.tensor_type
    assert out.elem_type == TensorProto.INT64 and len(out.shape.dim) == 1


@pytest.mark.parametrize("ref", [looped_indptr, looped_src])
def test_reference_rejects_bad_inputs(ref):
    ok = np.array([0, 1], np.int64)
    with pytest.raises(ValueError, match="indptr must start with 0"):
        ref(np.array([1, 1], np.int64), np.array([0], np.int64))
    with pytest.raises(ValueError, match="non-decreasing"):
        ref(np.array([0, 2, 1], np.int64), np.array([0], np.int64))
    with pytest.raises(ValueError, match=r"indptr\[-1\] = 1 must equal len\(src\) = 2"):
        ref(ok, np.array([0, 0], np.int64))
    with pytest.raises(ValueError, match="src must be int64"):
        ref(ok, np.array([0], np.int32))
    with pytest.raises(ValueError, match=r"src\[0\] = -3 is negative"):
        ref(ok, np.array([-3], np.int64))
    with pytest.raises(ValueError, match="drop_existing must be 0 or 1"):
        ref(ok, np.array([0], np.int64), 2)


def test_node_rejects_bad_attribute():
    from qgnn.exporter.ops import make_op_node
    with pytest.raises(ValueError, match="drop_existing must be one of"):
        make_op_node("LoopedSrc", ["indptr", "src"], ["y"], drop_existing=2)
