"""qgnn.v1 end to end: a live server on real bundles, answers checked against the dense oracle,
error codes with messages naming the field and value, and the admin RPCs."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import serving_testkit as tk
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_predict_nodes_matches_the_oracle_in_request_order_with_duplicates(served, node_params):
    _, client = served
    ids = [7, 0, 29, 7, 3]
    r = client.predict_nodes("toy", ids)
    expected = tk.oracle_probabilities(node_params)[ids]
    assert (r.model, r.version) == ("toy", 1)
    np.testing.assert_allclose(r.probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(r.probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(r.predicted_class, expected.argmax(axis=1))


def test_inductive_nodes_join_the_graph_for_one_request_only(served, node_params):
    _, client = served
    feats = np.random.default_rng(5).normal(size=(2, 6)).astype(np.float32)
    nodes = [{"id": 30, "features": feats[0], "neighbors": [0, 31]},
             {"id": 31, "features": feats[1], "in_neighbors": [4]}]
    r = client.predict_nodes("toy", [30, 31, 0], inductive_nodes=nodes)
    edges = np.array([[0, 30], [30, 0], [31, 30], [30, 31], [4, 31]])
    expected = tk.oracle_probabilities(node_params, extra_x=feats, extra_edges=edges)
    np.testing.assert_allclose(r.probabilities, expected[[30, 31, 0]], atol=1e-5)
    plain = client.predict_nodes("toy", [0])
    np.testing.assert_allclose(plain.probabilities, tk.oracle_probabilities(node_params)[[0]],
                               atol=1e-5)


def test_predict_links_and_embed_match_the_oracle(served, link_params):
    _, client = served
    src, dst = np.array([1, 12, 30]), np.array([20, 3, 30])
    r = client.predict_links("links", src, dst)
    np.testing.assert_allclose(r.scores, tk.oracle_link_scores(link_params, src, dst),
                               atol=1e-5)
    e = client.embed("links", [5, 2])
    np.testing.assert_allclose(e.embeddings, tk.oracle_embeddings(link_params)[[5, 2]],
                               atol=1e-5)


def _oracle_top(params: tk.ModelParams, user: int, items: np.ndarray, k: int):
    z = tk.oracle_embeddings(params)
    scores = 1 / (1 + np.exp(-(z[items] @ z[user])))
    order = np.lexsort((items, -scores))[:k]
    return items[order], scores[order]


def test_recommend_ranks_items_like_the_oracle_with_exclusions_and_candidates(served,
                                                                               link_params):
    _, client = served
    user = 3
    items = np.arange(10, 40)
    r = client.recommend("links", user, 5)
    ids, scores = _oracle_top(link_params, user, items, 5)
    np.testing.assert_array_equal(r.item_ids, ids)
    np.testing.assert_allclose(r.scores, scores, atol=1e-5)
    seen = set(link_params.dst[link_params.src == user].tolist())
    r2 = client.recommend("links", user, 50, exclude_seen=True)
    assert not seen & set(r2.item_ids.tolist())
    assert len(r2.item_ids) == len(set(items.tolist()) - seen)
    r3 = client.recommend("links", user, 2, candidate_ids=[15, 11, 30])
    ids3, _ = _oracle_top(link_params, user, np.array([11, 15, 30]), 2)
    np.testing.assert_array_equal(r3.item_ids, ids3)


def test_update_graph_adds_nodes_and_edges_that_later_calls_see(served, node_params):
    _, client = served
    feats = np.full((2, 6), 0.5, np.float32)
    r = client.update_graph("toy", features=feats, edge_src=[30, 31], edge_dst=[2, 30],
                            undirected=True, expected_num_nodes=30)
    assert list(r.node_ids) == [30, 31]
    assert r.graph["num_nodes"] == 32 and r.graph["revision"] == 1
    assert r.graph["num_edges"] == len(node_params.src) + 4
    edges = np.array([[30, 2], [31, 30], [2, 30], [30, 31]])
    expected = tk.oracle_probabilities(node_params, extra_x=feats, extra_edges=edges)
    got = client.predict_nodes("toy", [2, 30, 31])
    np.testing.assert_allclose(got.probabilities, expected[[2, 30, 31]], atol=1e-5)
    code, message = _code(lambda: client.update_graph("toy", edge_src=[0], edge_dst=[1],
                                                      expected_num_nodes=30))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "has 32 nodes" in message
    code, message = _code(lambda: client.update_graph("toy", edge_src=[0], edge_dst=[99]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "edge_dst[0]" in message
    assert client.list_models("toy")[0]["graph"]["num_nodes"] == "32"  # nothing half-applied


def test_list_and_get_model_describe_the_bundle(served, repo_dir: Path):
    _, client = served
    models = client.list_models()
    assert [(m["name"], m["version"]) for m in models] == [("links", "1"), ("toy", "1")]
    info, manifest = client.get_model("toy")
    assert info["task"] == "TASK_NODE" and info["state"] == "MODEL_STATE_READY"
    assert info["graph"]["num_classes"] == "3" and info["quantisation"]["bits"] == 32
    assert info["inputs"][0]["shape"][0] == {"symbol": "batch"}
    on_disk = json.loads((repo_dir / "toy" / "1" / "manifest.json").read_text())
    assert json.loads(manifest) == on_disk


@pytest.mark.parametrize(("call", "code", "needle"), [
    (lambda c: c.predict_nodes("toy", [3, -2]), "INVALID_ARGUMENT", "node_ids[1]"),
    (lambda c: c.predict_nodes("toy", [2**62]), "INVALID_ARGUMENT", str(2**62)),
    (lambda c: c.predict_nodes("toy", []), "INVALID_ARGUMENT", "node_ids"),
    (lambda c: c.predict_nodes("nope", [1]), "NOT_FOUND", "'nope'"),
    (lambda c: c.predict_nodes("toy", [1], version=4), "NOT_FOUND", "no version 4"),
    (lambda c: c.predict_nodes("", [1]), "INVALID_ARGUMENT", "model.name"),
    (lambda c: c.predict_nodes("links", [1]), "FAILED_PRECONDITION", "link model"),
    (lambda c: c.predict_links("links", [1, 2], [3]), "INVALID_ARGUMENT", "dst_ids"),
    (lambda c: c.recommend("links", 1, 0), "INVALID_ARGUMENT", "k"),
    (lambda c: c.recommend("links", 99, 3), "INVALID_ARGUMENT", "user_id"),
    (lambda c: c.predict_nodes("toy", [30], inductive_nodes=[
        {"id": 30, "features": [1.0] * 5}]), "INVALID_ARGUMENT", "length 6"),
    (lambda c: c.predict_nodes("toy", [3], inductive_nodes=[
        {"id": 3, "features": [1.0] * 6}]), "INVALID_ARGUMENT", "inductive_nodes[0].id"),
    (lambda c: c.predict_nodes("toy", [30], inductive_nodes=[
        {"id": 30, "features": [float("nan")] * 6}]), "INVALID_ARGUMENT", "finite"),
    (lambda c: c.predict_nodes("toy", [30], inductive_nodes=[
        {"id": 30, "features": [1.0] * 6, "neighbors": [77]}]), "INVALID_ARGUMENT", "77"),
    (lambda c: c.predict_nodes("toy", list(range(30)) * 200), "RESOURCE_EXHAUSTED",
     "limit of 4096"),
])
def test_user_mistakes_get_precise_codes_and_messages(served, call, code, needle):
    _, client = served
    got, message = _code(lambda: call(client))
    assert got.name == code, message
    assert needle in message


def test_admin_rpcs_load_reload_and_unload(start_server, client_for, tmp_path: Path):
    p1 = tk.random_params(num_nodes=20, seed=4)
    tk.write_test_bundle(tmp_path / "extra", p1, name="extra", version=2)
    server = start_server(None)
    client = client_for(server)
    info = client.load_model(str(tmp_path / "extra"))
    assert (info["name"], info["version"], info["state"]) == ("extra", "2", "MODEL_STATE_READY")
    code, message = _code(lambda: client.load_model(str(tmp_path / "extra")))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "extra v2" in message
    code, message = _code(lambda: client.load_model(str(tmp_path / "missing")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "missing" in message
    p2 = tk.random_params(num_nodes=20, seed=5)
    tk.write_test_bundle(tmp_path / "extra", p2, name="extra", version=2, overwrite=True)
    client.reload_model("extra")
    np.testing.assert_allclose(client.predict_nodes("extra", [1]).probabilities,
                               tk.oracle_probabilities(p2)[[1]], atol=1e-5)
    assert client.unload_model("extra") == [("extra", 2)]
    code, _ = _code(lambda: client.predict_nodes("extra", [1]))
    assert code == grpc.StatusCode.NOT_FOUND


def test_the_answer_names_the_version_that_answered(start_server, client_for, tmp_path: Path):
    for version in (1, 2):
        tk.write_test_bundle(tmp_path / "m" / str(version),
                             tk.random_params(num_nodes=20, seed=version), name="m",
                             version=version)
    client = client_for(start_server(tmp_path))
    assert client.predict_nodes("m", [0]).version == 2
    assert client.predict_nodes("m", [0], version=1).version == 1
    raw = client.inference.PredictNodes(pb.PredictNodesRequest(
        model=pb.ModelRef(name="m", version=1), node_ids=[0]), timeout=10)
    assert raw.model == pb.ModelRef(name="m", version=1) and raw.num_classes == 3
