"""``qgnn export`` end to end: checkpoints written by the training loop become verified bundles
whose model, graph store, embeddings and manifest reproduce the PyTorch model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from export_testkit import SYNTHETIC, one_torch_thread, relative_error, save_trained_run
from qgnn.exporter.export import export_run, load_run_model, serving_data, torch_output
from qgnn.exporter.parity import ort_session, run_onnx
from qgnn.exporter.store import embeddings_int8
from qgnn.graph.container import Graph
from qgnn.graph.datasets import load_dataset
from qgnn.graph.links import split_edges
from qgnn.runtime.bundle.layout import (
    EMBEDDING_SCALES,
    EMBEDDINGS,
    GRAPH_FEATURE_SCALE,
    GRAPH_FEATURE_ZERO_POINT,
    GRAPH_FEATURES,
    GRAPH_IN_DEGREE,
    GRAPH_INDICES,
    GRAPH_INDPTR,
    GRAPH_LABELS,
)
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.errors import BundleError
from qgnn.training.quant import QuantConfig

from qgnn.cli import main

DQ8 = QuantConfig(bits=8)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Checkpoints trained once for the module: INT8 node GCN, INT8 link SAGE, FP32 node GAT,
    FP32 link GIN with an MLP decoder."""
    root = tmp_path_factory.mktemp("runs")
    with one_torch_thread():
        return {
            "node": save_trained_run(root / "node-gcn", quant=DQ8),
            "link": save_trained_run(root / "link-sage", task="link", model="sage", quant=DQ8,
                                     residual=True, norm="layer"),
            "fp32": save_trained_run(root / "node-gat", model="gat"),
            "mlp": save_trained_run(root / "link-gin", task="link", model="gin",
                                    train_options={"decoder": "mlp"}),
        }


@pytest.fixture(scope="module")
def node_bundle(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "node"
    return export_run(runs["node"], out, name="toy-gcn", version=2, include_fp32=True)


def test_int8_bundle_verifies_and_describes_its_model(node_bundle, runs):
    with load_bundle(node_bundle.bundle) as bundle:
        m = bundle.manifest.raw  # what the exporter wrote
        model = onnx.load(bundle.model_path())
        onnx.checker.check_model(model, full_check=True)
        inputs = [(s["name"], s["dtype"]) for s in m["model"]["inputs"]]
        assert inputs == [("x", "uint8"), ("in_degree", "int64"), ("indptr_0", "int64"),
                          ("src_0", "int64"), ("indptr_1", "int64"), ("src_1", "int64")]
        assert inputs == [(i.name, {2: "uint8", 7: "int64"}[i.type.tensor_type.elem_type])
                          for i in model.graph.input]
        assert m["model"]["outputs"] == [{"name": "logits", "dtype": "float32",
                                          "shape": ["num_dst_1", 3]}]
        assert (m["model"]["name"], m["model"]["version"], m["model"]["task"],
                m["model"]["type"], m["model"]["format"], m["model"]["precision"]) == (
            "toy-gcn", 2, "node", "gcn", "qgnn-onnx", "int8")
        run = load_run_model(runs["node"])
        assert m["quantisation"]["bits"] == 8 and m["quantisation"]["method"] == "degree-quant"
        assert m["quantisation"]["num_sites"] == len(run.quant_state)
        assert m["graph"]["num_nodes"] == 150 and m["graph"]["adjacency"] == "in"
        assert m["serving"]["fanouts"] == [-1, -1]
        assert set(m["versions"]) >= {"qgnn", "onnx", "onnxruntime", "torch"}
        assert m["metrics"]["test_metric"] == run.checkpoint.metrics["test_metric"]
        assert m["parity"]["argmax_agreement"] >= 0.995
        assert m["model"]["fp32_file"] == "model_fp32.onnx"
        assert bundle.files["model.onnx"]["bytes"] == node_bundle.model_bytes
        assert bundle.files["model_fp32.onnx"]["bytes"] == node_bundle.fp32_bytes


def test_graph_store_holds_the_in_neighbour_csr_and_quantised_features(node_bundle, runs):
    run = load_run_model(runs["node"])
    data = serving_data(run)
    site = run.sites[0]["x"]
    with load_bundle(node_bundle.bundle) as bundle:
        csc = data.graph.csc
        np.testing.assert_array_equal(bundle.array(GRAPH_INDPTR), csc.indptr)
        np.testing.assert_array_equal(bundle.array(GRAPH_INDICES), csc.indices)
        np.testing.assert_array_equal(bundle.array(GRAPH_IN_DEGREE), np.diff(csc.indptr))
        features = bundle.array(GRAPH_FEATURES)
        assert features.dtype == np.uint8
        np.testing.assert_array_equal(features, site.quantize(data.features))
        assert bundle.array(GRAPH_FEATURE_SCALE) == site.scale
        assert bundle.array(GRAPH_FEATURE_ZERO_POINT) == site.zero_point
        np.testing.assert_array_equal(bundle.array(GRAPH_LABELS), data.labels)
        np.testing.assert_array_equal(bundle.array("graph/test_mask"), data.masks["test"])


def test_the_bundle_alone_reproduces_the_pytorch_model(node_bundle, runs):
    """Feeds built from the bundle's arrays only (what a server has) give PyTorch's logits."""
    run = load_run_model(runs["node"])
    expected = torch_output(run, serving_data(run))
    with load_bundle(node_bundle.bundle) as bundle:
        feeds = {"x": np.asarray(bundle.array(GRAPH_FEATURES)),
                 "in_degree": np.asarray(bundle.array(GRAPH_IN_DEGREE))}
        for i in range(2):
            feeds[f"indptr_{i}"] = np.asarray(bundle.array(GRAPH_INDPTR))
            feeds[f"src_{i}"] = np.asarray(bundle.array(GRAPH_INDICES))
        logits = run_onnx(ort_session(bundle.model_path().read_bytes()), feeds)["logits"]
    step = float(run.quant_state["layers.1.q.out"]["scale"][0])
    assert np.abs(logits - expected).max() <= 3 * step
    assert (logits.argmax(1) == expected.argmax(1)).mean() >= 0.995


def test_link_bundle_ships_int8_embeddings_of_every_node(runs, tmp_path):
    summary = export_run(runs["link"], tmp_path / "link")
    with load_bundle(summary.bundle) as bundle:
        m = bundle.manifest.raw  # what the exporter wrote
        assert m["model"]["outputs"][0]["name"] == "embeddings"
        assert m["link"] == {"decoder": "dot", "embedding_dim": 8}
        feeds = {"x": np.asarray(bundle.array(GRAPH_FEATURES)),
                 "in_degree": np.asarray(bundle.array(GRAPH_IN_DEGREE))}
        for i in range(2):
            feeds[f"indptr_{i}"] = np.asarray(bundle.array(GRAPH_INDPTR))
            feeds[f"src_{i}"] = np.asarray(bundle.array(GRAPH_INDICES))
        z = run_onnx(ort_session(bundle.model_path().read_bytes()), feeds)["embeddings"]
        values, scales = bundle.array(EMBEDDINGS), bundle.array(EMBEDDING_SCALES)
        assert values.dtype == np.int8 and values.shape == (150, 8) and scales.shape == (150,)
        restored = scales[:, None] * values.astype(np.float32)
        # every node's largest entry is +-127 steps of its own scale; rounding error <= half
        np.testing.assert_array_equal(np.abs(values).max(axis=1), 127)
        assert np.all(np.abs(restored - z) <= scales[:, None] * (0.5 + 1e-5))
    # the model: layer norm between layers and a residual around the last layer
    assert summary.parity is not None and summary.parity.max_error_steps <= 4


def test_embeddings_int8_is_per_node_symmetric():
    z = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -0.75]], np.float32)
    values, scales = embeddings_int8(z)
    np.testing.assert_array_equal(values, [[64, -127, 32], [0, 0, 0], [127, 64, -32]])
    np.testing.assert_allclose(scales, [1 / 127, 1.0, 3 / 127], rtol=1e-7)
    with pytest.raises(ValueError, match="finite"):
        embeddings_int8(np.array([[np.nan]], np.float32))


def test_fp32_run_exports_an_fp32_bundle_within_1e4(runs, tmp_path):
    summary = export_run(runs["fp32"], tmp_path / "fp32")
    with load_bundle(summary.bundle) as bundle:
        m = bundle.manifest.raw  # what the exporter wrote
        assert m["model"]["precision"] == "fp32" and m["model"]["inputs"][0]["dtype"] == "float32"
        assert m["quantisation"] == {"bits": 32, "method": "none", "num_sites": 0}
        assert bundle.array(GRAPH_FEATURES).dtype == np.float32
        assert GRAPH_FEATURE_SCALE not in bundle.files
    p = summary.parity
    assert p is not None and p.argmax_agreement == 1.0
    assert p.torch_accuracy == p.onnx_accuracy
    run = load_run_model(runs["fp32"])
    assert p.max_abs_error <= 1e-4 * max(1.0, float(np.abs(torch_output(
        run, serving_data(run))).max()))
    assert summary.size_ratio == 1.0


def test_mlp_link_decoder_ships_as_its_own_onnx_model(runs, tmp_path):
    summary = export_run(runs["mlp"], tmp_path / "mlp")
    run = load_run_model(runs["mlp"])
    h = torch_output(run, serving_data(run))
    pairs = np.array([[0, 1], [5, 9], [149, 3]])
    with torch.no_grad():
        expected = run.model.score(torch.from_numpy(h), torch.from_numpy(pairs)).numpy()
    with load_bundle(summary.bundle) as bundle:
        assert bundle.manifest.link["decoder"] == "mlp"
        path = bundle.model_path(bundle.manifest.link["decoder_file"])
        scores = run_onnx(ort_session(path.read_bytes()), {
            "h_src": h[pairs[:, 0]], "h_dst": h[pairs[:, 1]]})["score"]
    assert relative_error(scores, expected) < 1e-5


def test_featureless_link_run_serves_its_learned_embedding_table(tmp_path):
    graph = load_dataset(SYNTHETIC)
    data = split_edges(graph.replace(x=None), seed=0)
    run_dir = save_trained_run(tmp_path / "run", task="link", model="gcn", quant=DQ8, data=data)
    summary = export_run(run_dir, tmp_path / "bundle", graph=data.graph)
    run = load_run_model(run_dir)
    table = run.model.embedding.weight.detach().numpy()
    with load_bundle(summary.bundle) as bundle:
        features = bundle.array(GRAPH_FEATURES)
        np.testing.assert_array_equal(features, run.sites[0]["x"].quantize(table))
    assert summary.parity is not None and summary.parity.max_error_steps <= 3


def test_cli_exports_a_bundle_and_prints_a_summary(runs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["export", str(runs["node"]), "--out", str(out), "--name", "toy",
                 "--version", "3", "--fp32"]) == 0
    captured = capsys.readouterr()
    assert "qgnn export: writing bundle" in captured.err
    assert "model size: int8" in captured.out and "ratio" in captured.out
    assert "argmax agreement 100.00%" in captured.out
    assert "test accuracy: PyTorch" in captured.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["model"]["name"], manifest["model"]["version"]) == ("toy", 3)
    assert "model_fp32.onnx" in manifest["files"]
    # an existing bundle is kept unless --overwrite
    assert main(["export", str(runs["node"]), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(runs["node"]), "--out", str(out), "--overwrite",
                 "--no-parity"]) == 0
    assert "parity: skipped" in capsys.readouterr().out
    assert "parity" not in json.loads((out / "manifest.json").read_text())


def test_bad_checkpoints_are_refused_with_the_reason(runs, tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "b")]) == 2
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model.safetensors", "config.json"):
        (broken / name).write_bytes((runs["node"] / name).read_bytes())
    config = json.loads((broken / "config.json").read_text())
    config["extra"]["quant"]["state"]["layers.0.q.lin"]["scale"] = [0.5]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"extra\.quant\.state disagrees"):
        export_run(broken, tmp_path / "b")
    config["extra"]["quant"] = {"config": {"bits": 3, "method": "magic"}}
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"QuantConfig\.method"):
        export_run(broken, tmp_path / "b")
    with pytest.raises(ValueError, match="version"):
        export_run(runs["node"], tmp_path / "b", version=0)


def test_edge_weighted_graphs_are_refused(runs, tmp_path):
    graph = load_dataset(SYNTHETIC)
    weighted = graph.replace(edge_weight=np.ones(graph.num_edges, np.float32))
    with pytest.raises(ValueError, match="edge weights"):
        export_run(runs["node"], tmp_path / "b", graph=weighted)
    assert isinstance(weighted, Graph)


def test_qgnn_inspect_reads_the_bundle(node_bundle, capsys):
    assert main(["inspect", str(node_bundle.bundle)]) == 0
    out = capsys.readouterr().out
    assert "toy-gcn v2" in out and "8-bit degree-quant" in out and "verified" in out


def test_a_tampered_bundle_fails_verification(node_bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(node_bundle.bundle, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-1] ^= 1
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(copy)
