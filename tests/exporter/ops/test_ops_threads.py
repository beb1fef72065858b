"""Every op and variant on a graph big enough for onnxruntime to actually split work across
threads (the tiny test graphs stay under its parallelisation thresholds): 1 and 2 intra-op
threads give bit-identical outputs, equal to the reference (integers exactly)."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.exporter.ops import OPS
from qgnn.exporter.ops.timing import random_inputs

CASES = [(op, v) for op in sorted(OPS) for v in OPS[op].variants()]


@pytest.fixture(scope="module", params=[
    pytest.param((15_000, 16), id="E15k-F16"),
    pytest.param((60_000, 32), id="E60k-F32", marks=pytest.mark.slow),
])
def big_inputs(request) -> dict[str, np.ndarray]:
    """3,000 destinations, a quarter of the edges into one hub (destination 9)."""
    edges, features = request.param
    inputs = random_inputs(edges=edges, nodes=3_000, features=features, seed=4)
    indptr = np.linspace(0, edges * 3 // 4, 3_001).astype(np.int64)
    indptr[10:] += edges - edges * 3 // 4
    inputs["indptr"] = indptr
    return inputs


@pytest.mark.parametrize(("op", "variant"), CASES,
                         ids=[f"{op}-{v.overload or 'default'}" for op, v in CASES])
def test_two_threads_match_one_and_the_reference(op_runner, big_inputs, op, variant):
    spec = OPS[op]
    padded = op.endswith("Padded")
    feeds = {}
    for name in spec.inputs:
        if name in spec.optional and not variant.weighted:
            continue
        feeds[name] = big_inputs[f"{name}_grid" if padded and name in ("w", "w_q") else name]
    attrs = {"reduce": variant.reduce} if variant.reduce else {}
    got = op_runner.ort(op, feeds, **attrs)  # asserts 1 thread == 2 threads, bit for bit
    want = op_runner.reference(op, feeds, **attrs)
    if got.dtype == np.float32:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(got, want)
