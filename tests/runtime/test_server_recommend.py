"""Recommend over gRPC as a recommender user runs it: the real engine on an exported bipartite
bundle with node types, external ids and serving-only seen items (tests/recs_testkit.py), asked
through the Python client and the ``qgnn predict recommend`` command.

The reference is the engine in-process (itself checked against numpy over the bundle's table in
tests/runtime/engine/test_engine_recs.py): the server must give the same answer, translate ids
both ways, and answer every mistake with INVALID_ARGUMENT naming the value.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest

pytest.importorskip("torch")

import recs_testkit as rk
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.cli import add_parsers
from qgnn.runtime.engine import Engine


@pytest.fixture(scope="module")
def data():
    return rk.recommender_data()


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory, data) -> Path:
    return rk.recommender_bundle(tmp_path_factory.mktemp("served-recs"), "sage", data)


@pytest.fixture(scope="module")
def engine(bundle_path: Path) -> Engine:
    return Engine(load_bundle(bundle_path))


@pytest.fixture
def served(start_server, client_for, bundle_path: Path):
    server = start_server(bundle_path)
    return server, client_for(server), load_bundle(bundle_path).name


def _error(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_served_recommendations_equal_the_engines_with_external_ids(served, engine, data
                                                                    ) -> None:
    _, client, name = served
    for user in (0, 17, data.num_users - 1):
        ids, probs = engine.recommend(user, 10, exclude_seen=True)
        by_node = client.recommend(name, user, 10, exclude_seen=True)
        np.testing.assert_array_equal(by_node.item_ids, ids)
        np.testing.assert_allclose(by_node.scores, probs)
        by_ext = client.recommend(name, k=10, exclude_seen=True,
                                  user_external_id=str(user + 1))
        np.testing.assert_array_equal(by_ext.item_ids, ids)
        assert by_ext.item_external_ids == [str(i - data.num_users + 1) for i in ids]


def test_external_candidates_and_cold_start_by_external_ids(served, engine, data) -> None:
    _, client, name = served
    r = client.recommend(name, 3, 2, candidate_external_ids=["5", "9"], candidate_ids=[
        data.num_users + 20])
    assert sorted(r.item_ids.tolist()) == sorted(
        engine.recommend(3, 2, candidates=[data.num_users + 4, data.num_users + 8,
                                           data.num_users + 20])[0].tolist())
    items = np.arange(data.num_users + 30, data.num_users + 50)
    ids, probs = engine.recommend_new_user(items, 8, exclude_seen=True)
    by_node = client.recommend(name, k=8, exclude_seen=True, new_user_item_ids=items)
    by_ext = client.recommend(name, k=8, exclude_seen=True, new_user_item_external_ids=[
        str(i - data.num_users + 1) for i in items])
    for got in (by_node, by_ext):
        np.testing.assert_array_equal(got.item_ids, ids)
        np.testing.assert_allclose(got.scores, probs)
    assert not np.isin(by_node.item_ids, items).any()


def test_recommendations_are_items_over_grpc(served, data) -> None:
    _, client, name = served
    for user in range(0, data.num_users, 5):
        r = client.recommend(name, user, 30)
        assert (r.item_ids >= data.num_users).all()


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"user_id": 70}, "node 70 is an item, not a user"),
    ({"user_external_id": "80"}, "an item, not of a user (got '80')"),
    ({"user_external_id": "zz"}, "no user has this dataset id"),
    ({"user_id": 5, "user_external_id": "3"}, "not both"),
    ({"user_id": 10**6}, "not a node of the graph"),
    ({"user_id": -1}, "user_id[0]: negative"),
    ({"user_id": 2, "candidate_ids": [1]}, "candidate_ids[0]"),
    ({"user_id": 2, "candidate_external_ids": ["nope"]}, "no item has this dataset id"),
    ({"new_user_item_ids": [61, 61]}, "appears twice"),
    ({"new_user_item_ids": [61, 2]}, "node 2 is not an item"),
    ({"new_user_item_ids": [61, 10**7]}, "not a node of the graph"),
    ({"new_user_item_external_ids": ["1", "x"]}, "new_user_item_external_ids[1]"),
    ({"user_id": 4, "new_user_item_ids": [61]}, "cold-start user is given by its items only"),
])
def test_every_recommend_mistake_is_invalid_argument_naming_it(served, kwargs, needle) -> None:
    _, client, name = served
    code, message = _error(lambda: client.recommend(name, k=5, **kwargs))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, message
    assert needle in message, message


def test_client_refuses_a_string_user_id(served) -> None:
    _, client, name = served
    with pytest.raises(ValueError, match="user_external_id"):
        client.recommend(name, "42", 5)


def test_predict_recommend_command_with_external_ids(served, capsys, data) -> None:
    import argparse

    server, _, name = served
    parser = argparse.ArgumentParser(prog="qgnn")
    add_parsers(parser.add_subparsers(dest="command"))
    port = ["--port", str(server.grpc_port)]
    args = parser.parse_args(["predict", "recommend", "--model", name, *port,
                              "--user-external", "4", "-k", "3", "--exclude-seen"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["user_external_id"] == "4" and len(out["item_external_ids"]) == 3
    args = parser.parse_args(["predict", "recommend", "--model", name, *port,
                              "--new-user-external-items", "3", "4", "-k", "2"])
    assert args.func(args) == 0
    assert len(json.loads(capsys.readouterr().out)["item_ids"]) == 2
    args = parser.parse_args(["predict", "recommend", "--model", name, *port,
                              "--user", str(data.num_users + 1)])
    assert args.func(args) == 1
    assert "is an item, not a user" in capsys.readouterr().err
