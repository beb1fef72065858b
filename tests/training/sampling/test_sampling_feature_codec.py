"""uint8 feature staging: the per-column code's arithmetic, and what a batch moves with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qgnn.graph.synth import powerlaw_communities
from qgnn.training.nn.models import ModelConfig
from qgnn.training.sampling.batch import FeatureStore, to_device_batch
from qgnn.training.sampling.config import SamplingConfig
from qgnn.training.sampling.feature_codec import encode_columns, fit_column_code
from qgnn.training.sampling.transfer import TransferCounter
from qgnn.training.tasks.minibatch import Pipeline


def test_hand_computed_column_codes():
    x = np.array([[0.0, -1.0, 7.0], [1.0, 0.0, 7.0], [2.55, 1.55, 7.0]], np.float32)
    code = fit_column_code(x)
    np.testing.assert_allclose(code.low.numpy(), [0.0, -1.0, 7.0])
    np.testing.assert_allclose(code.step.numpy(), [0.01, 0.01, 0.0], atol=1e-7)
    q = encode_columns(x, code)
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q, [[0, 0, 0], [100, 100, 0], [255, 255, 0]])
    back = code.decode(torch.from_numpy(q)).numpy()
    np.testing.assert_allclose(back, x, atol=1e-6)  # constant column comes back exactly


def test_round_trip_is_within_half_a_step_per_column():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5000, 6)) * [1, 10, 0.01, 100, 3, 1] + [0, 5, -2, 1e3, 0, 0])
    x = x.astype(np.float32)
    code = fit_column_code(x, chunk_rows=777)  # chunked min/max = whole-matrix min/max
    np.testing.assert_allclose(code.low.numpy(), x.min(axis=0))
    back = code.decode(torch.from_numpy(encode_columns(x, code, chunk_rows=333))).numpy()
    err = np.abs(back - x).max(axis=0)
    step = code.step.numpy()
    assert (err <= 0.5 * step * (1 + 1e-4) + 1e-5 * np.abs(x).max(axis=0)).all()
    np.testing.assert_allclose(back.max(axis=0), x.max(axis=0), rtol=1e-5)


def test_bad_features_and_bad_codes_are_refused():
    x = np.ones((4, 2), np.float32)
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_column_code(x)
    code = fit_column_code(np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        code.decode(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="uint8"):
        code.decode(torch.zeros(3, 5, dtype=torch.uint8))
    with pytest.raises(ValueError, match="feature_dtype"):
        SamplingConfig(feature_dtype="float16")
    with pytest.raises(ValueError, match="dtype"):
        FeatureStore(np.ones((2, 2), np.float32), torch.device("cpu"), "int4")


@pytest.fixture(scope="module")
def graph():
    return powerlaw_communities(5000, avg_degree=10, num_features=8, seed=4)


def _pipeline(graph, **kw):
    cfg = ModelConfig(model="sage", in_dim=8, out_dim=8, num_layers=2)
    pipe = Pipeline(graph, cfg, SamplingConfig(fanouts=(10, 10), device="cpu", **kw))
    pipe.begin_epoch(0, seed=0)
    return pipe


@pytest.mark.parametrize("sampler", ["uniform", "gns"])
def test_uint8_batches_move_a_quarter_of_the_feature_bytes(graph, sampler):
    """Same batch, same rows: one byte per value instead of four, decoded on the device to
    within half a step of the float features (the cached rows too)."""
    seeds = np.arange(0, 5000, 37)
    moved, xs = {}, {}
    for dtype in ("float32", "uint8"):
        pipe = _pipeline(graph, sampler=sampler, feature_dtype=dtype)
        code_bytes = 2 * 8 * 4 if dtype == "uint8" else 0  # low and step, sent once
        assert pipe.counter.bytes("features") == code_bytes
        host = pipe.builder.build(seeds, np.random.default_rng(1))
        before = pipe.counter.snapshot()
        batch = to_device_batch(host, pipe.device, pipe.counter)
        moved[dtype] = TransferCounter.delta(pipe.counter.snapshot(), before)["features"]
        xs[dtype] = (host.input_ids, batch.x)
        if dtype == "uint8":
            assert moved[dtype] * 4 == moved["float32"]
            assert batch.x.dtype == torch.float32
            step = pipe.store.code.step
    ids, x32 = xs["float32"]
    ids8, x8 = xs["uint8"]
    np.testing.assert_array_equal(ids, ids8)
    torch.testing.assert_close(x32, torch.from_numpy(graph.x[ids]))
    assert ((x8 - x32).abs() <= 0.5 * step + 1e-6).all()


def test_uint8_staging_keeps_float_features_for_evaluation(graph):
    pipe = _pipeline(graph, sampler="uniform", feature_dtype="uint8")
    assert pipe.store.x.dtype == torch.float32 and pipe.store.codes.dtype == torch.uint8
    torch.testing.assert_close(pipe.store.x, torch.from_numpy(graph.x))
