"""Time the portable function bodies on stock onnxruntime (CPU), for docs/onnx-ops.md.

    python -m qgnn.exporter.ops.timing --edges 1000000 --nodes 100000 --features 64 \
        --threads 2 Aggregate:sum QAggregate:sum_weighted QAggregatePadded:max

A random graph with ``edges`` edges over ``nodes`` nodes (uniform sources and destinations);
the padded ops get a (nodes, edges // nodes) grid, 90 % filled. Prints the best and median of
``--repeat`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import helper
from qgnn.contract.softmax import softmax_table
from qgnn.exporter.ops.model import make_op_model
from qgnn.exporter.ops.registry import OPS


def random_inputs(edges: int, nodes: int, features: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Every input any op may take, for one random graph (edges sorted by destination)."""
    rng = np.random.default_rng(seed)
    dst = np.sort(rng.integers(0, nodes, edges))
    fanout = max(edges // nodes, 1)
    nbr = np.where(rng.random((nodes, fanout)) < 0.9,
                   rng.integers(0, nodes, (nodes, fanout)), -1).astype(np.int64)
    return {
        "x": rng.normal(size=(nodes, features)).astype(np.float32),
        "x_q": rng.integers(0, 256, (nodes, features)).astype(np.uint8),
        "indptr": np.concatenate([[0], np.cumsum(np.bincount(dst, minlength=nodes))]).astype(
            np.int64),
        "src": rng.integers(0, nodes, edges).astype(np.int64),
        "w": rng.normal(size=edges).astype(np.float32),
        "w_q": rng.integers(0, 256, edges).astype(np.uint8),
        "logits": rng.normal(size=(edges, 4)).astype(np.float32),
        "logits_q": rng.integers(0, 256, (edges, 4)).astype(np.uint8),
        "table": softmax_table(np.float32(0.05), 8),
        "inv_sqrt_degree": (1.0 / np.sqrt(1.0 + np.bincount(dst, minlength=nodes))).astype(
            np.float32),
        "nbr": nbr,
        "w_grid": rng.normal(size=nbr.shape).astype(np.float32),
        "w_q_grid": rng.integers(0, 256, nbr.shape).astype(np.uint8),
        "x_scale": np.array(0.05, np.float32), "x_zero_point": np.array(120, np.uint8),
        "w_scale": np.array(0.01, np.float32), "w_zero_point": np.array(7, np.uint8),
        "m_scale": np.array(0.1, np.float32), "m_zero_point": np.array(128, np.uint8),
        "y_scale": np.array(3.0, np.float32), "y_zero_point": np.array(100, np.uint8),
    }


def time_op(item: str, inputs: dict[str, np.ndarray], threads: int,
            repeat: int) -> tuple[float, float]:
    """(best, median) seconds of one ``Op[:overload]`` run."""
    op, _, overload = item.partition(":")
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; known: {sorted(OPS)}")
    spec = OPS[op]
    variants = {v.overload: v for v in spec.variants()}
    if overload not in variants:
        raise ValueError(f"{op} has no overload {overload!r}; known: {sorted(variants)}")
    variant = variants[overload]
    padded = op.endswith("Padded")
    feeds = {}
    for name in spec.inputs:
        if name in spec.optional and not variant.weighted:
            continue
        key = f"{name}_grid" if padded and name in ("w", "w_q") else name
        feeds[name] = inputs[key]
    types = {k: (helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
             for k, v in feeds.items()}
    model = make_op_model(op, types, **({"reduce": variant.reduce} if variant.reduce else {}))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ops", nargs="+", help="Op[:overload], e.g. QAggregate:sum_weighted")
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    inputs = random_inputs(args.edges, args.nodes, args.features)
    print(f"E={args.edges} N=D={args.nodes} F={args.features} threads={args.threads} "
          f"max in-degree={int(np.diff(inputs['indptr']).max())}")
    for item in args.ops:
        best, median = time_op(item, inputs, args.threads, args.repeat)
        print(f"{item:28s} best {best * 1e3:8.0f} ms   median {median * 1e3:8.0f} ms")


if __name__ == "__main__":
    main()
