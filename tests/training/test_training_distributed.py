"""Data-parallel minibatch training: disjoint shards, and two gloo ranks on the loopback
interface end a step with identical parameters, equal to one process stepping on the union of
their batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from qgnn.graph.synth import powerlaw_communities
from qgnn.training.distributed import launch_local, shard, train_and_save
from qgnn.training.presets import TrainConfig
from qgnn.training.sampling.config import SamplingConfig
from qgnn.training.tasks.minibatch import train_minibatch
from qgnn.training.tasks.node import node_model_config
from safetensors.torch import load_file

WORLD = 2
PER_RANK = 32


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _problem():
    """A graph whose training set is exactly WORLD * PER_RANK nodes, and a model without
    dropout or batch statistics, so a step depends only on the seeds it sees."""
    g = powerlaw_communities(300, avg_degree=6, num_features=5, num_communities=3, seed=7)
    train = np.zeros(g.num_nodes, np.bool_)
    train[np.flatnonzero(g.train_mask)[:WORLD * PER_RANK]] = True
    g = g.replace(train_mask=train)
    cfg = node_model_config(g, "sage", hidden=8, dropout=0.0)
    return g, cfg, TrainConfig(epochs=1, patience=None, seed=3)


def _sampling(batch_size: int) -> SamplingConfig:
    # full neighbourhoods: sampling is deterministic, so the union run sees the same blocks
    return SamplingConfig(sampler="uniform", fanouts=(-1, -1), batch_size=batch_size,
                          device="cpu")


def test_shards_are_disjoint_equal_and_cover_all_but_the_remainder():
    order = np.random.default_rng(0).permutation(103)
    parts = [shard(order, r, 4) for r in range(4)]
    assert {p.size for p in parts} == {25}
    joined = np.concatenate(parts)
    assert np.unique(joined).size == joined.size == 100
    with pytest.raises(ValueError, match="rank"):
        shard(order, 4, 4)


def test_two_gloo_ranks_agree_and_match_the_union_step(tmp_path):
    g, cfg, train = _problem()
    launch_local(train_and_save, WORLD, g, cfg, train, _sampling(PER_RANK), str(tmp_path),
                 timeout_s=120)
    states = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(WORLD)]
    assert json.loads((tmp_path / "result.json").read_text())["epochs_run"] == 1
    union = train_minibatch(g, cfg, train, _sampling(WORLD * PER_RANK), progress=False)
    initial = train_minibatch(g, cfg, TrainConfig(epochs=1, patience=None, seed=3, lr=1e-12),
                              _sampling(WORLD * PER_RANK), progress=False)
    for name, value in states[0].items():
        torch.testing.assert_close(states[1][name], value, rtol=0, atol=0)  # identical
        torch.testing.assert_close(value, union.model.state_dict()[name], rtol=1e-5,
                                   atol=1e-6)
        assert not torch.allclose(value, initial.model.state_dict()[name])  # it moved


def test_launch_local_times_out_and_stops_the_ranks(tmp_path):
    g, cfg, train = _problem()
    with pytest.raises(TimeoutError, match="still running"):
        launch_local(train_and_save, WORLD, g, cfg, train, _sampling(PER_RANK), str(tmp_path),
                     timeout_s=0.5)
    assert not list(tmp_path.iterdir())


def test_init_from_env_explains_how_to_launch(monkeypatch):
    from qgnn.training.distributed import init_from_env

    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        init_from_env("gloo")


def test_data_parallel_full_graph_training_is_refused():
    g, cfg, train = _problem()

    class TwoRanks:
        rank, world_size = 0, 2

    with pytest.raises(ValueError, match="single-process"):
        train_minibatch(g, cfg, train, SamplingConfig(sampler="full"), progress=False,
                        distributed=TwoRanks())


def _threads_job(ctx, out_dir: str) -> None:
    from pathlib import Path

    Path(out_dir, f"threads.rank{ctx.rank}").write_text(str(torch.get_num_threads()))


@pytest.mark.parametrize(("omp", "want"), [("3", 3), (None, None)])
def test_launch_local_ranks_take_omp_num_threads(tmp_path, monkeypatch, omp, want):
    """A bench on a shared machine pins one thread per rank with OMP_NUM_THREADS; without it
    the ranks split the cores."""
    import os

    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        want = max(1, (os.cpu_count() or 1) // WORLD)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    launch_local(_threads_job, WORLD, str(tmp_path), timeout_s=60)
    for r in range(WORLD):
        assert int((tmp_path / f"threads.rank{r}").read_text()) == want
