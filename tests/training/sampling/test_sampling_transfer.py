"""Host-to-device traffic is measured, and GNS moves only the non-cached input rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qgnn.graph.synth import powerlaw_communities
from qgnn.training.nn.models import ModelConfig
from qgnn.training.sampling.batch import to_device_batch
from qgnn.training.sampling.config import SamplingConfig
from qgnn.training.sampling.transfer import TransferCounter, module_to_device, to_device
from qgnn.training.tasks.minibatch import Pipeline
from torch import nn


@pytest.fixture(scope="module")
def graph():
    return powerlaw_communities(5000, avg_degree=10, num_features=8, seed=4)


def _pipeline(graph, sampler, **kw):
    cfg = ModelConfig(model="sage", in_dim=8, out_dim=8, num_layers=2)
    pipe = Pipeline(graph, cfg, SamplingConfig(sampler=sampler, fanouts=(10, 10), device="cpu",
                                               **kw))
    pipe.begin_epoch(0, seed=0)
    return pipe


def test_to_device_counts_bytes_per_kind():
    counter = TransferCounter()
    t = torch.zeros(10, 3)
    assert to_device(t, torch.device("cpu"), counter, "features") is t
    to_device(torch.zeros(4, dtype=torch.int64), torch.device("cpu"), counter, "structure")
    assert counter.bytes("features") == 120 and counter.bytes("structure") == 32
    assert counter.bytes() == 152 and counter.copies("features") == 1
    with pytest.raises(ValueError, match="kind"):
        to_device(t, torch.device("cpu"), counter, "weights")
    module_to_device(nn.Linear(3, 2), torch.device("cpu"), counter)
    assert counter.bytes("model") == (6 + 2) * 4


def test_gns_batch_moves_exactly_the_non_cached_rows_and_assembles_x(graph):
    pipe = _pipeline(graph, "gns", cache_fraction=0.01)
    cache = pipe.sampler.cache
    assert pipe.counter.bytes("cache") == cache.size * 8 * 4  # the cache load, once
    seeds = np.arange(0, 5000, 37)
    host = pipe.builder.build(seeds, np.random.default_rng(1), {"y": torch.zeros(seeds.size)})
    before = pipe.counter.snapshot()
    batch = to_device_batch(host, pipe.device, pipe.counter)
    moved = TransferCounter.delta(pipe.counter.snapshot(), before)
    misses = int((cache.slot[host.input_ids] < 0).sum())
    assert moved["features"] == misses * 8 * 4
    assert moved["labels"] == seeds.size * 4
    assert host.num_hits == host.num_inputs - misses > 0
    torch.testing.assert_close(batch.x, torch.from_numpy(graph.x[host.input_ids]))


def test_uniform_batch_moves_every_input_row(graph):
    pipe = _pipeline(graph, "uniform")
    host = pipe.builder.build(np.arange(0, 5000, 37), np.random.default_rng(1))
    before = pipe.counter.bytes("features")
    batch = to_device_batch(host, pipe.device, pipe.counter)
    assert pipe.counter.bytes("features") - before == host.num_inputs * 8 * 4
    torch.testing.assert_close(batch.x, torch.from_numpy(graph.x[host.input_ids]))


def test_gns_moves_a_fraction_of_uniform_feature_bytes():
    """On a power-law graph whose 2-hop neighbourhoods do not saturate it (bench/bench_gns.py
    measures the ratio at 1M nodes)."""
    big = powerlaw_communities(20000, avg_degree=10, num_features=8, seed=4)
    moved = {}
    for sampler in ("uniform", "gns"):
        pipe = _pipeline(big, sampler, cache_fraction=0.01)
        total = 0
        for b in range(5):
            seeds = np.random.default_rng(b).choice(big.num_nodes, 64, replace=False)
            host = pipe.builder.build(seeds, np.random.default_rng(b))
            before = pipe.counter.bytes("features")
            to_device_batch(host, pipe.device, pipe.counter)
            total += pipe.counter.bytes("features") - before
        moved[sampler] = total
    assert moved["gns"] < 0.6 * moved["uniform"]
