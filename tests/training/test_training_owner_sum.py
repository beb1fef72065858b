"""Owner-side aggregation of the partitioned GNS input hop (``--gns-estimator owner-sum``): the
first layer over a block with partial-sum rows equals the same layer over the expanded block
(every summed source as its own edge) or over the full neighbourhood, the feature bytes are the
rows that crossed, and the mode trains on 2 loopback ranks under torchrun."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed_testkit import MirrorExchanger, torchrun_partitioned
from qgnn.graph.neighbourhood import SampledBlock
from qgnn.graph.partition import partition_graph
from qgnn.graph.shards import load_shard, shard_of, write_shards
from qgnn.graph.synth import powerlaw_communities
from qgnn.training.distributed.context import launch_local
from qgnn.training.distributed.exchange import ByteCounter, Exchanger
from qgnn.training.distributed.memory import MemoryLedger
from qgnn.training.distributed.owner_sum import check_owner_sum, input_block, source_scale
from qgnn.training.distributed.remote_sampling import PartialSums, PartitionedSampler, relabel
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.nn.propagate import propagate
from qgnn.training.sampling.blocks import to_block, weight_convention


def _graph():
    return powerlaw_communities(300, avg_degree=6, num_communities=3, num_features=5, seed=7,
                                homophily=0.8)


def _owner(g, cache_fraction: float, mc: ModelConfig) -> tuple[PartitionedSampler, object]:
    part = partition_graph(g, 2, "ldg", seed=1)
    shard = shard_of(g, part, 0)
    sampler = PartitionedSampler(shard, MirrorExchanger(0), (3,), gns=True,
                                 cache_fraction=cache_fraction, ledger=MemoryLedger(None),
                                 estimator="owner-sum", source_scale=source_scale(mc, shard))
    sampler.fetch_rows = lambda ids, kind, table=None: torch.zeros((ids.size, 5))  # type: ignore[method-assign]
    sampler.refresh(np.random.default_rng(3))
    return sampler, part


def _served(sampler: PartitionedSampler, requester: int, ids: np.ndarray, fanout: int
            ) -> tuple[SampledBlock, PartialSums]:
    counts, nbr, w, row_w, rows = sampler._serve_owner_sum(requester, ids, fanout,
                                                           np.random.default_rng(5))
    node_ids, src = relabel(ids, nbr)
    sampled = SampledBlock(node_ids=node_ids, src=src,
                           dst=np.repeat(np.arange(ids.size), counts), num_dst=ids.size,
                           edge_ids=np.zeros(src.size, np.int64), edge_weight=w)
    has = row_w > 0
    return sampled, PartialSums(dst=np.flatnonzero(has), weight=row_w[has], rows=rows,
                                sender=np.zeros(int(has.sum()), np.int64))


def _expanded(g, part, sampled: SampledBlock, sums: PartialSums) -> SampledBlock:
    """The same estimate with every owned source as its own edge, weight = its row's."""
    ids = sampled.node_ids[: sampled.num_dst]
    extra_dst, extra_nbr, extra_w = [], [], []
    for k, pos in enumerate(sums.dst):
        v = ids[pos]
        nbrs = g.csc.indices[g.csc.indptr[v]:g.csc.indptr[v + 1]]
        owned = nbrs[part.parts[nbrs] == part.parts[v]]
        extra_dst.append(np.full(owned.size, pos))
        extra_nbr.append(owned)
        extra_w.append(np.full(owned.size, sums.weight[k]))
    nbr = np.concatenate([sampled.node_ids[sampled.src], *extra_nbr])
    dst = np.concatenate([sampled.dst, *extra_dst])
    w = np.concatenate([sampled.edge_weight, *extra_w]).astype(np.float32)
    order = np.argsort(dst, kind="stable")
    node_ids, src = relabel(ids, nbr[order])
    return SampledBlock(node_ids=node_ids, src=src, dst=dst[order], num_dst=ids.size,
                        edge_ids=np.zeros(src.size, np.int64), edge_weight=w[order])


@pytest.mark.parametrize("model", ["sage", "gcn", "gin"])
@pytest.mark.parametrize("requester", [0, 1])
def test_partial_sum_rows_equal_the_expanded_block(model: str, requester: int) -> None:
    """Requester 1: remote destinations (rows cross); requester 0: its own (rows stay)."""
    g = _graph()
    mc = ModelConfig(model=model, in_dim=5, out_dim=3, hidden=4, num_layers=1)
    sampler, part = _owner(g, 0.1, mc)
    ids = sampler.shard.owned[np.argsort(-np.diff(sampler.shard.indptr))[:30]]
    sampled, sums = _served(sampler, requester, ids, 3)
    assert sums.dst.size > 20 and sampled.src.size > 0  # rows and drawn sources both present
    conv = weight_convention(mc)
    x = torch.from_numpy(g.x)
    layer = build_model(mc).layers[0].eval()
    with torch.no_grad():
        got = layer(torch.cat([x[sampled.node_ids], sums.rows]),
                    input_block(sampled, sums, g.in_degree(), conv))
        ref_block = _expanded(g, part, sampled, sums)
        want = layer(x[ref_block.node_ids], to_block(ref_block, g.in_degree(), conv))
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)



def test_under_a_budget_the_cache_leaves_room_for_the_row_memo() -> None:
    """Each cached node may bring a remembered partial-sum row too, so under the same
    --memory-budget owner-sum draws a smaller cache than the other estimators."""
    g = _graph()
    shard = shard_of(g, partition_graph(g, 2, "ldg", seed=1), 0)
    sizes = {}
    for estimator in ("normalized", "owner-sum"):
        ledger = MemoryLedger(sum(shard.nbytes().values()) + 20_000)
        sizes[estimator] = PartitionedSampler(
            shard, MirrorExchanger(0), (3,), gns=True, cache_fraction=1.0, ledger=ledger,
            estimator=estimator).cache_size
    assert 0 < sizes["owner-sum"] < sizes["normalized"]

def test_with_everything_held_it_is_the_full_neighbourhood() -> None:
    """Cache fraction 1 and a fanout past the largest degree: the SAGE mean over the block
    with partial sums equals the mean over the full in-neighbourhood (one process, whole
    graph)."""
    g = _graph()
    mc = ModelConfig(model="sage", in_dim=5, out_dim=3, hidden=4, num_layers=1)
    sampler, _ = _owner(g, 1.0, mc)
    ids = sampler.shard.owned
    sampled, sums = _served(sampler, 1, ids, int(np.diff(g.csc.indptr).max()))
    x = torch.from_numpy(g.x)
    block = input_block(sampled, sums, g.in_degree(), "mean")
    got = propagate(torch.cat([x[sampled.node_ids], sums.rows]), block, reduce="mean",
                    edge_weight=block.edge_weight)
    full = full_graph_block(g)
    want = propagate(x, full, reduce="mean")[torch.from_numpy(ids)]
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("model", "proj", "quantised", "match"), [
    ("gat", False, False, "'gat'"), ("egc", False, False, "'egc'"),
    ("sage", True, False, "input projection"), ("gcn", False, True, "Degree-Quant")])
def test_refuses_input_layers_that_are_not_linear(model: str, proj: bool, quantised: bool,
                                                  match: str) -> None:
    mc = ModelConfig(model=model, in_dim=5, out_dim=3, input_proj=proj)
    with pytest.raises(ValueError, match=match):
        check_owner_sum(mc, quantised)


def _bytes_job(ctx, shard_dir: str, out_dir: str) -> None:
    """Two owner-sum steps over the same seeds per rank: each step's feature bytes and the
    first layer's SAGE mean (the second step reads remembered partial-sum rows)."""
    shard = load_shard(shard_dir, ctx.rank)
    counter = ByteCounter()
    sampler = PartitionedSampler(shard, Exchanger(ctx, counter), (4, 3), gns=True,
                                 cache_fraction=0.2, ledger=MemoryLedger(None),
                                 estimator="owner-sum")
    sampler.refresh(np.random.default_rng([ctx.rank, 1]))
    seeds = shard.owned[np.flatnonzero(shard.masks["train"])[:40]]
    saved = {}
    for step in range(2):
        before = counter.parts_snapshot()
        sampled, sums = sampler.sample_with_sums(seeds, (0, step))
        x, _, remote = sampler.input_rows(sampled[0].node_ids)
        moved = ByteCounter.delta(counter.parts_snapshot(), before)
        block = input_block(sampled[0], sums, shard.in_degree, "mean")
        agg = propagate(torch.cat([x, sums.rows]), block, reduce="mean",
                        edge_weight=block.edge_weight)
        s0 = sampled[0]
        saved.update({f"{k}{step}": v for k, v in dict(
            rows=moved.get("features:features-rows", 0),
            partial=moved.get("features:partial-sums", 0), remote=remote,
            crossed=int((sums.sender != ctx.rank).sum()), ids=s0.node_ids, src=s0.src,
            dst=s0.dst, w=s0.edge_weight, row_dst=sums.dst, row_w=sums.weight,
            row_sender=sums.sender, agg=agg.numpy()).items()})
    np.savez(Path(out_dir) / f"rank{ctx.rank}.npz", width=shard.x.shape[1], **saved)


def test_two_ranks_count_the_rows_and_aggregate_like_one_process(tmp_path: Path) -> None:
    """Both steps aggregate what the whole graph gives for the same draws, whether a partial
    sum crossed, came from the memo or was sent as edges; only the first step's rows cross."""
    g = powerlaw_communities(600, avg_degree=8, num_communities=4, num_features=16,
                             homophily=0.8, seed=5)
    part = partition_graph(g, 2, "ldg", seed=2)
    write_shards(g, part, tmp_path / "shards")
    launch_local(_bytes_job, 2, str(tmp_path / "shards"), str(tmp_path), timeout_s=120)
    x = g.x.astype(np.float64)
    for r in range(2):
        got = np.load(tmp_path / f"rank{r}.npz")
        width = int(got["width"])
        # step 0: every partial-sum row from the other rank crossed; step 1 asks the same
        # destinations, and the memo (as many rows as the cache) keeps some from crossing
        assert got["crossed0"] > 0
        assert int(got["partial0"]) == int(got["crossed0"]) * width * 4
        assert int(got["rows0"]) == int(got["remote0"]) * width * 4
        assert 0 <= int(got["partial1"]) < int(got["partial0"])
        # some remote destinations with sources in their owner's part got edges, not a row
        dest0 = got["ids0"][: got["agg0"].shape[0]]
        owned_src = [pos for pos in np.flatnonzero(part.parts[dest0] != r)
                     if (part.parts[g.csc.indices[g.csc.indptr[dest0[pos]]:
                                                  g.csc.indptr[dest0[pos] + 1]]]
                         == part.parts[dest0[pos]]).any()]
        assert set(owned_src) - set(got["row_dst0"].tolist())
        for step in range(2):
            ids, num_dst = got[f"ids{step}"], got[f"agg{step}"].shape[0]
            dest = ids[:num_dst]
            total = np.zeros((num_dst, x.shape[1]))
            np.add.at(total, got[f"dst{step}"], got[f"w{step}"][:, None]
                      * x[ids[got[f"src{step}"]]])
            for pos, w, sender in zip(got[f"row_dst{step}"], got[f"row_w{step}"],
                                      got[f"row_sender{step}"], strict=True):
                v = dest[pos]
                nbrs = g.csc.indices[g.csc.indptr[v]:g.csc.indptr[v + 1]]
                assert part.parts[v] == sender
                total[pos] += w * x[nbrs[part.parts[nbrs] == sender]].sum(0)
            mean = total / np.maximum(g.in_degree()[dest], 1)[:, None]
            assert np.allclose(got[f"agg{step}"], mean, rtol=1e-5, atol=1e-6)


def test_torchrun_trains_with_owner_sum(tmp_path: Path) -> None:
    g = powerlaw_communities(1500, avg_degree=8, num_communities=4, num_features=16,
                             homophily=0.85, seed=5)
    write_shards(g, partition_graph(g, 2, "ldg"), tmp_path / "shards")
    summary = torchrun_partitioned(tmp_path / "shards", tmp_path / "out", "--sampler", "gns",
                                   "--gns-estimator", "owner-sum", "--batch-size", "64")
    assert summary["partial_sum_rows"] > 0 and summary["cross_rank_feature_bytes_per_epoch"] > 0
    assert summary["config"]["estimator"] == "owner-sum"


@pytest.mark.parametrize(("extra", "match"), [(["--model", "gat"], "'gat'"),
                                              (["--model", "sage", "--quant", "int8"],
                                               "Degree-Quant")])
def test_cli_refuses_before_any_rank_starts(tmp_path: Path, capsys, extra: list[str],
                                            match: str) -> None:
    from qgnn.training.distributed.partitioned import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--shards", str(tmp_path), "--out", str(tmp_path / "out"), "--gns-estimator",
              "owner-sum", *extra])
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err


# ---------------------------------------------------------------- bytes on a hand-made graph
# Part 0 holds nodes 0-3, part 1 nodes 4-8; F = 4 (a row is 16 bytes, an id 4: int32 ids).
# In-edges: 0 <- 1, 4, 5;  1 <- 0;  4 <- 2, 6, 7;  5 <- 4, 6;  7 <- 6;  8 <- 7.
# Rank 0 caches node 6, rank 1 caches nothing. Rank 0 trains seed 0, rank 1 seed 8; fanouts
# past every degree, so every draw takes the whole list.
_TINY_EDGES = [(1, 0), (4, 0), (5, 0), (0, 1), (2, 4), (6, 4), (7, 4), (4, 5), (6, 5), (6, 7),
               (7, 8)]
_TINY_PARTS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])


def _tiny_graph():
    from qgnn.graph.container import Graph

    src, dst = (np.array(c) for c in zip(*_TINY_EDGES, strict=True))
    n = _TINY_PARTS.size
    x = (np.arange(n * 4, dtype=np.float32).reshape(n, 4) % 7) + 1
    return Graph.from_edges(src, dst, n, x=x, y=np.arange(n) % 2,
                            train_mask=np.ones(n, bool), val_mask=np.ones(n, bool),
                            test_mask=np.ones(n, bool))


def _tiny_job(ctx, out_dir: str) -> None:
    """Two identical owner-sum steps per rank: the bytes each rank received, by part, per
    step, and rank 0's first-layer neighbour sums."""
    from qgnn.graph.partition import Partition

    g = _tiny_graph()
    shard = shard_of(g, Partition(_TINY_PARTS, 2, "metis"), ctx.rank)
    counter = ByteCounter()
    sampler = PartitionedSampler(shard, Exchanger(ctx, counter), (10, 10), gns=True,
                                 cache_fraction=0.5, ledger=MemoryLedger(None),
                                 estimator="owner-sum")
    got: dict[str, object] = {}
    before = counter.parts_snapshot()
    sampler.use_cache(np.array([6] if ctx.rank == 0 else [], np.int64))
    got["announce"] = ByteCounter.delta(counter.parts_snapshot(), before)
    seeds = np.array([0] if ctx.rank == 0 else [8], np.int64)
    for step in range(2):
        before = counter.parts_snapshot()
        sampled, sums = sampler.sample_with_sums(seeds, (0, step))
        x, _, _ = sampler.input_rows(sampled[0].node_ids)
        got[f"step{step}"] = ByteCounter.delta(counter.parts_snapshot(), before)
        block = input_block(sampled[0], sums, shard.in_degree, "sum")
        total = propagate(torch.cat([x, sums.rows]), block, reduce="sum",
                          edge_weight=block.edge_weight)
        got[f"sums{step}"] = dict(zip(sampled[0].node_ids[: block.num_dst].tolist(),
                                      total.tolist(), strict=True))
    (Path(out_dir) / f"tiny{ctx.rank}.json").write_text(json.dumps(got))


def test_bytes_by_part_match_a_hand_count(tmp_path: Path) -> None:
    """Rank 0 asks rank 1 about destinations 4 and 5. 4's sources in part 1 (6, 7) cross as
    one partial-sum row (7 is neither cached nor asked); 5's (4, 6) are an asked destination
    and a cached node, so they come as two edges and no row. Step 2 asks the same: 4's row is
    in rank 0's memo (capacity: one cached row) and node 6's cached row is already loaded."""
    launch_local(_tiny_job, 2, str(tmp_path), timeout_s=120)
    r0 = json.loads((tmp_path / "tiny0.json").read_text())
    r1 = json.loads((tmp_path / "tiny1.json").read_text())
    nonzero = lambda d: {k: v for k, v in d.items() if v}  # noqa: E731
    assert nonzero(r0["announce"]) == {}
    assert nonzero(r1["announce"]) == {"structure:cache-ids": 4}  # rank 0's one cached id
    # replies to rank 0: counts [1, 2] and neighbours [2, 4, 6] (5 ids); 3 edge weights and
    # one row weight per asked id; 4's row; the rows of 4 and 5 (not cached); 6's cached row
    assert nonzero(r0["step0"]) == {
        "structure:hop-neighbours": 5 * 4, "structure:hop-weights": 5 * 4,
        "features:partial-sums": 16, "features:features-rows": 2 * 16,
        "cache:cache-rows": 16}
    assert nonzero(r1["step0"]) == {"structure:hop-requests": 2 * 4,
                                    "structure:features-requests": 2 * 4,
                                    "structure:cache-requests": 4}
    assert nonzero(r0["step1"]) == {
        "structure:hop-neighbours": 5 * 4, "structure:hop-weights": 5 * 4,
        "features:features-rows": 2 * 16}
    assert nonzero(r1["step1"]) == {"structure:hop-requests": 2 * 4,
                                    "structure:features-requests": 2 * 4}
    # the neighbour sums are the same at both steps: 4 and 5 exact; 0 holds only its part-0
    # source (1) and stands it for its 3 in-neighbours (the ratio form)
    x = _tiny_graph().x.astype(np.float64)
    want = {0: 3 * x[1], 1: x[0], 4: x[2] + x[6] + x[7], 5: x[4] + x[6]}
    for step in ("sums0", "sums1"):
        got = {int(k): np.array(v) for k, v in r0[step].items()}
        assert got.keys() == want.keys()
        for v, total in want.items():
            assert np.allclose(got[v], total, rtol=1e-6), (step, v)
