"""PredictLinks and Recommend over gRPC from sharded link bundles, as ``qgnn serve`` loads them:
a server of every shard answers what a server of the unsharded bundle answers (scores bit for
bit, top-k ids and order, external ids), a server of one shard answers its own users and pairs
and gives NOT_FOUND naming the owning shard for the rest.

The bundles come from the real pipelines (tests/sharded_links_testkit.py): ``qgnn export`` and
``--mode infer`` on 2 spawned gloo ranks.
"""

from __future__ import annotations

import shutil

import grpc
import numpy as np
import pytest

pytest.importorskip("torch")

import sharded_links_testkit as sk


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> sk.ShardedCase:
    return sk.sharded_case(tmp_path_factory.mktemp("sharded-links"), sk.recommender_data(),
                           "gcn", "dot", 2)


@pytest.fixture
def clients(start_server, client_for, case: sk.ShardedCase):
    """Clients of three servers: the unsharded bundle, every shard, shard 0 only."""
    unsharded = case.bundle.parent / "repo"
    if not unsharded.exists():
        shutil.copytree(case.bundle, unsharded / "partitioned" / "1")
    return {name: client_for(start_server(path)) for name, path in
            (("unsharded", unsharded), ("all", case.repos / "all"),
             ("shard-0", case.repos / "shard-0"))}


def _error(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_a_server_of_every_shard_answers_as_the_unsharded_one(clients, case) -> None:
    ref, all_shards = clients["unsharded"], clients["all"]
    n = int(case.owner.size)
    rng = np.random.default_rng(3)
    src, dst = rng.integers(0, n, 200), rng.integers(0, n, 200)
    np.testing.assert_array_equal(all_shards.predict_links("partitioned", src, dst).scores,
                                  ref.predict_links("partitioned", src, dst).scores)
    for user in range(0, case.data.num_users, 4):
        want = ref.recommend("partitioned", user, 6, exclude_seen=True)
        got = all_shards.recommend("partitioned", user, 6, exclude_seen=True)
        np.testing.assert_array_equal(got.item_ids, want.item_ids)
        np.testing.assert_array_equal(got.scores, want.scores)
        assert got.item_external_ids == want.item_external_ids
    want = ref.recommend("partitioned", k=5, user_external_id="3",
                         candidate_external_ids=["1", "4", "9", "16", "25", "36"])
    got = all_shards.recommend("partitioned", k=5, user_external_id="3",
                               candidate_external_ids=["1", "4", "9", "16", "25", "36"])
    np.testing.assert_array_equal(got.item_ids, want.item_ids)
    np.testing.assert_array_equal(got.scores, want.scores)


def test_a_server_of_one_shard_refuses_what_it_does_not_hold(clients, case) -> None:
    ref, one = clients["unsharded"], clients["shard-0"]
    owner, users = case.owner, case.data.num_users
    mine, foreign = np.flatnonzero(owner == 0), np.flatnonzero(owner == 1)
    user = int(mine[mine < users][0])
    items = mine[mine >= users]
    want = ref.recommend("partitioned", user, 4, exclude_seen=True, candidate_ids=items)
    got = one.recommend("partitioned", user, 4, exclude_seen=True, candidate_ids=items)
    np.testing.assert_array_equal(got.item_ids, want.item_ids)
    np.testing.assert_array_equal(got.scores, want.scores)
    np.testing.assert_array_equal(one.predict_links("partitioned", mine[:9], mine[9:18]).scores,
                                  ref.predict_links("partitioned", mine[:9], mine[9:18]).scores)
    far = int(foreign[foreign < users][0])
    code, message = _error(lambda: one.recommend("partitioned", far, 4, candidate_ids=items))
    assert code == grpc.StatusCode.NOT_FOUND
    assert f"user_id[0]: node {far} belongs to shard 1 of 2" in message
    code, message = _error(lambda: one.recommend("partitioned", user, 4))
    assert code == grpc.StatusCode.NOT_FOUND and "needs shard(s) [1]" in message
    code, message = _error(lambda: one.predict_links("partitioned", [user], [int(foreign[0])]))
    assert code == grpc.StatusCode.NOT_FOUND
    assert f"dst_ids[0]: node {int(foreign[0])} belongs to shard 1" in message


def test_sharded_servers_serve_a_link_model(clients) -> None:
    for name in ("all", "shard-0"):  # loaded through the load check's trial pair
        code, message = _error(lambda c=clients[name]: c.predict_nodes("partitioned", [0]))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "link model" in message


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> sk.ShardedCase:
    return sk.sharded_case(tmp_path_factory.mktemp("replicated"), sk.recommender_data(),
                           "gcn", "dot", 2, replicate_items=True)


def test_a_shard_with_replicated_items_recommends_by_external_id(
        start_server, client_for, replicated) -> None:
    from qgnn.runtime.bundle.reader import load_bundle
    from qgnn.runtime.engine import Engine

    engine = Engine(load_bundle(replicated.bundle))
    one = client_for(start_server(replicated.repos / "shard-1"))
    users = replicated.data.num_users
    for user in np.flatnonzero(replicated.owner[:users] == 1)[:8].tolist():
        ids, scores = engine.recommend(user, 6, exclude_seen=True)
        got = one.recommend("partitioned", k=6, exclude_seen=True, user_external_id=str(user))
        np.testing.assert_array_equal(got.item_ids, ids)
        np.testing.assert_array_equal(got.scores, scores)
    other = int(np.flatnonzero(replicated.owner[:users] == 0)[0])
    code, message = _error(lambda: one.recommend("partitioned", other, 3))
    assert code == grpc.StatusCode.NOT_FOUND and f"node {other} belongs to shard 0" in message
