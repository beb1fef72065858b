"""Sharded link bundles against the unsharded bundle of the same run: bit-identical embeddings,
pair scores and top-k (ids, order, scores; exclude-seen and candidates) from a replica of every
shard; a replica of one shard answers what it owns exactly and refuses the rest naming the
owning shard; bad bundles are refused.

Both bundles come from the real pipelines (tests/sharded_links_testkit.py): ``qgnn export`` for
the unsharded one, ``--mode infer`` on W = 2 and 3 spawned gloo ranks for the sharded ones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import sharded_links_testkit as sk
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.bundle.writer import write_bundle
from qgnn.runtime.engine import Engine
from qgnn.runtime.engine.shard_book import ShardNotServedError, shard_file
from qgnn.runtime.engine.sharded_links import ShardedLinkBackend
from qgnn.runtime.errors import (
    BundleError,
    FailedPreconditionError,
    InvalidRequestError,
)

CASES = {"gcn-dot-2": ("gcn", "dot", 2, True), "sage-mlp-3": ("sage", "mlp", 3, True),
         "lightgcn-dot-3": ("lightgcn", "dot", 3, True),
         "gcn-fp32-dot-2": ("gcn", "dot", 2, False)}


@pytest.fixture(scope="module")
def data():
    return sk.recommender_data()


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data
         ) -> sk.ShardedCase:
    kind, decoder, parts, quant = CASES[request.param]
    return sk.sharded_case(tmp_path_factory.mktemp(request.param), data, kind, decoder, parts,
                           quant=quant)


def _both(case: sk.ShardedCase, held: str = "all") -> tuple[Engine, ShardedLinkBackend]:
    return Engine(load_bundle(case.bundle)), ShardedLinkBackend(load_bundle(case.sharded(held)))


def test_every_shard_holds_the_unsharded_embedding_rows(case: sk.ShardedCase) -> None:
    bundle = load_bundle(case.bundle)
    values = np.asarray(bundle.array("embeddings/values"))
    scales = np.asarray(bundle.array("embeddings/scales"))
    with load_bundle(case.sharded(), verify=True) as sharded:
        assert sharded.manifest.sharding["held"] == list(range(case.parts))
        assert sharded.manifest.sharding["out_edges"] == "in-edges"  # user-item: both ways
        assert shard_file(0, "graph/out_indptr") not in sharded.files
        for p in range(case.parts):
            nodes = np.asarray(sharded.array(shard_file(p, "nodes")))
            np.testing.assert_array_equal(sharded.array(shard_file(p, "embeddings")),
                                          values[nodes])
            np.testing.assert_array_equal(sharded.array(shard_file(p, "embedding_scales")),
                                          scales[nodes])


def test_all_shards_score_pairs_bit_for_bit(case: sk.ShardedCase) -> None:
    engine, sharded = _both(case)
    n = engine.num_nodes
    pairs = np.random.default_rng(1).integers(0, n, (400, 2))
    np.testing.assert_array_equal(sharded.predict_links(pairs), engine.predict_links(pairs))
    ids = np.arange(n)
    np.testing.assert_array_equal(sharded.embed(ids), engine.embed(ids))
    assert sharded.embedding_dim == engine.embedding_dim and sharded.num_nodes == n


def test_all_shards_recommend_what_the_unsharded_bundle_does(case: sk.ShardedCase) -> None:
    engine, sharded = _both(case)
    users = case.data.num_users
    rng = np.random.default_rng(2)
    for user in range(users):
        for exclude_seen in (False, True):
            want = engine.recommend(user, 7, exclude_seen=exclude_seen)
            got = sharded.recommend(user, 7, exclude_seen=exclude_seen)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
        cand = rng.choice(np.arange(users, engine.num_nodes), 15, replace=False)
        want = engine.recommend(user, 5, exclude_seen=True, candidates=cand)
        got = sharded.recommend(user, 5, exclude_seen=True, candidates=cand)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_exclude_seen_drops_train_and_held_out_items(case: sk.ShardedCase) -> None:
    _, sharded = _both(case)
    data = case.data
    pairs = np.concatenate([data.train, data.val, data.test])
    for user in range(0, data.num_users, 3):
        ids, _ = sharded.recommend(user, 50, exclude_seen=True)
        assert not np.isin(ids, pairs[pairs[:, 0] == user, 1]).any()
        assert (ids >= data.num_users).all()


def test_one_shard_answers_what_it_owns_and_names_the_owner_of_the_rest(
        case: sk.ShardedCase) -> None:
    engine, one = _both(case, "shard-1")
    owner, users = case.owner, case.data.num_users
    mine = np.flatnonzero(owner == 1)
    foreign = np.flatnonzero(owner != 1)
    pairs = np.stack([mine[:20], mine[::-1][:20]], 1)
    np.testing.assert_array_equal(one.predict_links(pairs), engine.predict_links(pairs))
    other = int(foreign[0])
    with pytest.raises(ShardNotServedError,
                       match=rf"pairs\[1\]: node {other} belongs to shard {owner[other]} of "
                             rf"{case.parts}; .* serves shard\(s\) \[1\]"):
        one.predict_links(np.array([[int(mine[0]), other]]))
    user = int(mine[mine < users][0])
    items = mine[mine >= users]
    want = engine.recommend(user, 4, exclude_seen=True, candidates=items)
    got = one.recommend(user, 4, exclude_seen=True, candidates=items)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    with pytest.raises(ShardNotServedError, match=r"needs shard\(s\) \[0"):
        one.recommend(user, 4)
    far_user = int(foreign[foreign < users][0])
    with pytest.raises(ShardNotServedError, match=rf"user_id\[0\]: node {far_user} belongs "
                                                  rf"to shard {owner[far_user]}"):
        one.recommend(far_user, 4, candidates=items)
    with pytest.raises(ShardNotServedError, match="candidate_ids"):
        one.recommend(user, 4, candidates=[int(foreign[foreign >= users][0])])


def test_users_items_and_what_a_shard_cannot_serve(case: sk.ShardedCase) -> None:
    _, sharded = _both(case)
    users = case.data.num_users
    with pytest.raises(InvalidRequestError, match="is an item, not a user"):
        sharded.recommend(users + 1, 3)
    with pytest.raises(InvalidRequestError, match="is a user, not an item"):
        sharded.recommend(0, 3, candidates=[1, users + 2])
    assert sharded.catalogue.has_external_ids
    with pytest.raises(FailedPreconditionError, match="UpdateGraph needs the ONNX engine"):
        sharded.update_graph(None, np.array([[0, users]]))


def test_a_tampered_shard_file_is_refused(case: sk.ShardedCase, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(case.sharded("shard-0"), copy)
    target = copy / shard_file(0, "embeddings")
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0x01
    target.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"shards/0/embeddings.npy"):
        load_bundle(copy, verify=True)


def test_an_unknown_shard_is_refused(case: sk.ShardedCase, tmp_path: Path) -> None:
    src = load_bundle(case.sharded("shard-0"))
    manifest = {k: v for k, v in src.manifest.raw.items() if k != "files"}
    manifest["sharding"] = {**manifest["sharding"], "held": [case.parts]}
    files = {name: src.path / name for name in src.files}
    path = write_bundle(tmp_path / "b", manifest, files)
    with pytest.raises(BundleError, match=rf"must name shards in \[0, {case.parts}\)"):
        ShardedLinkBackend(load_bundle(path))
    assert json.loads((src.path / "manifest.json").read_text())["model"]["task"] == "link"


def test_a_directed_graph_keeps_its_out_edges_for_exclude_seen(tmp_path: Path) -> None:
    data = sk.directed_data()
    case = sk.sharded_case(tmp_path, data, "sage", "dot", 2)
    engine, sharded = _both(case)
    assert sharded.manifest.sharding["out_edges"] == "stored"
    assert not sharded.catalogue.typed
    n = engine.num_nodes
    for user in range(0, n, 3):
        for exclude_seen in (False, True):
            want = engine.recommend(user, 6, exclude_seen=exclude_seen)
            got = sharded.recommend(user, 6, exclude_seen=exclude_seen)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
    g = data.graph
    linked = g.csr.indices[g.csr.indptr[5]:g.csr.indptr[6]]
    assert linked.size and not np.isin(sharded.recommend(5, n, exclude_seen=True)[0],
                                       linked).any()


@pytest.fixture(scope="module", params=["dot", "mlp"])
def replicated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data
               ) -> sk.ShardedCase:
    return sk.sharded_case(tmp_path_factory.mktemp(f"items-{request.param}"), data, "gcn",
                           request.param, 3, replicate_items=True)


def test_replicated_items_let_one_shard_recommend_to_its_users_over_every_item(
        replicated: sk.ShardedCase) -> None:
    case = replicated
    engine, one = _both(case, "shard-1")
    owner, users, n = case.owner, case.data.num_users, int(case.owner.size)
    assert one.manifest.sharding["items"] == "replicated" and one.items is not None
    assert "items" not in ShardedLinkBackend(load_bundle(case.sharded())).manifest.sharding
    rng = np.random.default_rng(4)
    for user in np.flatnonzero(owner[:users] == 1).tolist():
        for exclude_seen in (False, True):
            want = engine.recommend(user, 8, exclude_seen=exclude_seen)
            got = one.recommend(user, 8, exclude_seen=exclude_seen)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
        cand = rng.choice(np.arange(users, n), 12, replace=False)  # items of every shard
        want = engine.recommend(user, 4, exclude_seen=True, candidates=cand)
        got = one.recommend(user, 4, exclude_seen=True, candidates=cand)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    mine = int(np.flatnonzero(owner[:users] == 1)[0])
    pairs = np.stack([np.full(n - users, mine), np.arange(users, n)], 1)
    np.testing.assert_array_equal(one.predict_links(pairs), engine.predict_links(pairs))
    other = int(np.flatnonzero(owner[:users] != 1)[0])
    one.check_ids(np.arange(users, n), "candidate_ids")  # every item is served here
    with pytest.raises(ShardNotServedError, match=rf"node {other} belongs to shard"):
        one.check_ids(np.array([mine, other]), "src_ids")
    with pytest.raises(ShardNotServedError, match=rf"user_id\[0\]: node {other}"):
        one.recommend(other, 3)


def test_replicated_items_need_node_types(tmp_path: Path) -> None:
    from qgnn.exporter.link_shards import write_link_shards
    from qgnn.training.distributed import launch_local
    from qgnn.training.distributed.infer import run_rank

    data = sk.directed_data()
    run = sk.link_run(tmp_path, data, "sage")
    write_link_shards(run, tmp_path / "shards", 2, "ldg", data=data)
    with pytest.raises(Exception, match="--replicate-items needs a bipartite link run"):
        launch_local(run_rank, 2, str(run), str(tmp_path / "shards"), str(tmp_path / "b"),
                     "partitioned", 1, 16, 1, True, timeout_s=120)
