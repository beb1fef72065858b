"""Layer-wise full-graph inference (runtime/engine/layerwise.py) on bundles ``qgnn export`` wrote.

For every layer type and the stack's extras (input projection, head, residual, norms), running
each layer once over all nodes in chunks must give the k-hop answer and the exporter's own
onnxruntime full-graph answer bit for bit, for any chunk size, on a graph with isolated nodes
and self-loops; the cut must give each layer's sub-model only its own structure; bundles
without the boundary metadata must fall back to k-hop chunks and say so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

import engine_testkit as tk  # noqa: E402
from qgnn.graph.container import Graph  # noqa: E402
from qgnn.graph.synth import powerlaw_communities  # noqa: E402
from qgnn.runtime.bundle.reader import load_bundle  # noqa: E402
from qgnn.runtime.engine import Engine, EngineConfig  # noqa: E402
from qgnn.runtime.engine import onnx_proto as op  # noqa: E402
from qgnn.runtime.engine.layerwise import LAYER_OUTPUTS, NotLayerwise, cut  # noqa: E402

NUM_ISOLATED = 3


def _graph() -> Graph:
    """A power-law graph plus self-loops on every fifth node and a few isolated nodes."""
    base = powerlaw_communities(120, avg_degree=5, num_communities=4, num_features=16, seed=1)
    src, dst = base.edge_index()
    loops = np.arange(0, base.num_nodes, 5, dtype=np.int64)
    n = base.num_nodes + NUM_ISOLATED
    rng = np.random.default_rng(2)
    x = np.concatenate([base.x, rng.standard_normal((NUM_ISOLATED, 16)).astype(np.float32)])
    y = np.concatenate([base.y, np.zeros(NUM_ISOLATED, base.y.dtype)])
    return Graph.from_edges(np.concatenate([src, loops]), np.concatenate([dst, loops]), n,
                            x=x, y=y)


def _export(root: Path, kind: str, task: str = "node", *, layer_kwargs: dict | None = None,
            **stack: object) -> Path:
    return tk.export_calibrated(root, _graph(), kind, task, layer_kwargs=layer_kwargs,
                                parity=False, **stack)


def _onnxruntime_full_graph(bundle_path: Path) -> np.ndarray:
    """The exported model on the whole graph, straight through onnxruntime."""
    bundle = load_bundle(bundle_path)
    indptr = np.asarray(bundle.array("graph/indptr"))
    indices = np.asarray(bundle.array("graph/indices"))
    feeds = {"x": np.asarray(bundle.array("graph/features")),
             "in_degree": np.diff(indptr).astype(np.int64)}
    for i in range(bundle.manifest.model.num_layers):
        feeds[f"indptr_{i}"], feeds[f"src_{i}"] = indptr, indices
    session = ort.InferenceSession(str(bundle.model_path()), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


CASES = {
    "gcn": ("gcn", {}, {}),
    "sage": ("sage", {}, {}),
    "gin": ("gin", {}, {}),
    "gat": ("gat", {"heads": 2}, {}),
    "egc": ("egc", {"heads": 2, "bases": 2}, {}),
    "gcn_proj_head": ("gcn", {}, {"input_proj": True, "head": True}),
    "sage_residual": ("sage", {}, {"input_proj": True, "residual": True, "norm": "layer"}),
    "gcn_residual_batch": ("gcn", {}, {"residual": True, "norm": "batch", "head": True}),
    "gin_one_layer": ("gin", {}, {"num_layers": 1}),
    "sage_three_residual": ("sage", {}, {"num_layers": 3, "input_proj": True, "residual": True,
                                         "head": True}),
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layerwise")
    return {name: _export(root / name, kind, layer_kwargs=kwargs, **stack)
            for name, (kind, kwargs, stack) in CASES.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_layerwise_equals_khop_and_onnxruntime(bundles: dict[str, Path], case: str) -> None:
    path = bundles[case]
    expected = _onnxruntime_full_graph(path)
    engine = Engine(load_bundle(path))
    assert engine.layerwise is not None
    assert engine.fanouts == (-1,) * engine.signature.num_layers
    n = engine.num_nodes
    khop = engine.infer_all(chunk_size=7, method="khop")
    np.testing.assert_array_equal(khop, expected)
    for chunk in (1, 7, n):
        np.testing.assert_array_equal(engine.infer_all(chunk_size=chunk, method="layerwise"),
                                      expected)
    np.testing.assert_array_equal(engine.infer_all(chunk_size=16), expected)  # auto


def test_layerwise_portable_executor(bundles: dict[str, Path]) -> None:
    path = bundles["gat"]
    engine = Engine(load_bundle(path), EngineConfig(portable=True))
    np.testing.assert_array_equal(engine.infer_all(chunk_size=9, method="layerwise"),
                                  _onnxruntime_full_graph(path))


def test_iter_outputs_layerwise_yields_id_ordered_chunks(bundles: dict[str, Path]) -> None:
    engine = Engine(load_bundle(bundles["gcn"]))
    parts = list(engine.iter_outputs(chunk_size=50, method="layerwise"))
    ids = np.concatenate([p[0] for p in parts])
    np.testing.assert_array_equal(ids, np.arange(engine.num_nodes))
    assert [p[0].size for p in parts] == [50, 50, engine.num_nodes - 100]


def test_cut_gives_each_layer_only_its_own_structure(bundles: dict[str, Path]) -> None:
    for case, allowed_shared in (("gcn", {"in_degree"}), ("sage", set()),
                                 ("sage_residual", set()), ("gcn_residual_batch", {"in_degree"})):
        model = op.load_model(load_bundle(bundles[case]).model_path().read_bytes())
        layers = cut(model, 2)
        assert [layer.index for layer in layers] == [0, 1]
        assert set(layers[0].graph_inputs) == {"x", "indptr_0", "src_0"} | allowed_shared
        assert set(layers[1].graph_inputs) == {"indptr_1", "src_1"} | allowed_shared
        assert layers[0].carried == () and set(layers[1].carried) == set(layers[0].outputs)
        assert layers[1].outputs == ("logits",)
        for layer in layers:
            sub = op.load_model(layer.model)
            names = {i.name for i in sub.graph.input}
            assert names == set(layer.graph_inputs) | set(layer.carried)
            assert [o.name for o in sub.graph.output] == list(layer.outputs)
    # layer 1 of this stack adds its float input back: both crossing tensors are carried
    residual = cut(op.load_model(load_bundle(bundles["gcn_residual_batch"]).model_path()
                                 .read_bytes()), 2)
    assert [d.name for d in residual[0].dtypes] == ["uint8", "float32"]
    assert len(residual[1].carried) == 2


def test_exporter_records_each_layers_boundary_and_inputs(bundles: dict[str, Path]) -> None:
    for case, degree in (("gcn", ["in_degree"]), ("sage_three_residual", [])):
        model = op.load_model(load_bundle(bundles[case]).model_path().read_bytes())
        meta = op.metadata(model)
        entries = json.loads(meta[LAYER_OUTPUTS])
        assert meta["qgnn.layerwise"] == "1"
        assert [e["inputs"] for e in entries] == [
            (["x"] if i == 0 else []) + degree + [f"indptr_{i}", f"src_{i}"]
            for i in range(len(entries))]
        assert entries[-1]["outputs"] == ["logits"] and entries[-1]["dtypes"] == ["float32"]
        for entry in entries[:-1]:
            assert entry["dtypes"][0] == "uint8" and set(entry["dtypes"][1:]) <= {"float32"}
    residual = json.loads(op.metadata(op.load_model(load_bundle(
        bundles["sage_three_residual"]).model_path().read_bytes()))[LAYER_OUTPUTS])
    assert [len(e["outputs"]) for e in residual] == [2, 2, 1]


def test_cut_refuses_a_boundary_that_skips_a_layer(bundles: dict[str, Path]) -> None:
    """A boundary naming a tensor of layer 0 as layer 1's output makes layer 1's cut reach
    layer 0's structure; a boundary that is not a model output for the last layer too."""
    model = op.load_model(load_bundle(bundles["sage"]).model_path().read_bytes())
    entries = json.loads(op.metadata(model)[LAYER_OUTPUTS])
    _set_meta(model, LAYER_OUTPUTS, json.dumps([{**entries[0], "outputs": ["logits"],
                                                 "dtypes": ["float32"]}, entries[1]]))
    with pytest.raises(NotLayerwise, match=r"layer 0's sub-model reads .*indptr_1"):
        cut(model, 2)
    _set_meta(model, LAYER_OUTPUTS, json.dumps([entries[0], entries[0]]))
    with pytest.raises(NotLayerwise, match="not one model output"):
        cut(model, 2)


def _set_meta(model: object, key: str, value: str | None) -> None:
    props = model.metadata_props  # type: ignore[attr-defined]
    kept = [(p.key, p.value) for p in props if p.key != key]
    del props[:]
    for k, v in kept + ([] if value is None else [(key, value)]):
        props.add(key=k, value=v)


def _rewrite_model(src: Path, dest: Path, key: str, value: str | None) -> Path:
    """A copy of bundle ``src`` whose model has its ``key`` metadata replaced (None: removed),
    the manifest's size and digest updated: what an older exporter would have written."""
    path = Path(shutil.copytree(src, dest))
    manifest = json.loads((path / "manifest.json").read_text())
    rel = manifest["model"]["file"]
    model = op.load_model((path / rel).read_bytes())
    _set_meta(model, key, value)
    data = model.SerializeToString()
    (path / rel).write_bytes(data)
    manifest["files"][rel].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize(("key", "value", "why"), [
    (LAYER_OUTPUTS, None, "no qgnn.layer_outputs metadata"),
    ("qgnn.layerwise", "0", "marked the model as not layer-wise")])
def test_models_without_boundaries_fall_back_to_khop(tmp_path: Path, bundles: dict[str, Path],
                                                     caplog: pytest.LogCaptureFixture,
                                                     key: str, value: str | None,
                                                     why: str) -> None:
    path = _rewrite_model(bundles["gcn"], tmp_path / "old", key, value)
    engine = Engine(load_bundle(path))
    assert engine.layerwise is None and why in engine.not_layerwise
    with caplog.at_level(logging.INFO, logger="qgnn.runtime.engine"):
        out = engine.infer_all(chunk_size=40)
    np.testing.assert_array_equal(out, _onnxruntime_full_graph(path))
    said = [r.getMessage() for r in caplog.records if "not layer by layer" in r.getMessage()]
    assert len(said) == 1 and why in said[0]


def test_method_is_checked(bundles: dict[str, Path]) -> None:
    engine = Engine(load_bundle(bundles["gcn"]))
    with pytest.raises(ValueError, match="method: expected one of"):
        engine.infer_all(method="layer-wise")
    with pytest.raises(ValueError, match="method: expected one of"):
        engine.iter_outputs(method="fast")
    with pytest.raises(ValueError, match="needs full neighbourhoods"):
        engine.infer_all(fanouts=(3, 2), method="layerwise")


def test_auto_with_sampling_caps_is_khop(bundles: dict[str, Path]) -> None:
    engine = Engine(load_bundle(bundles["gcn"]))
    capped = engine.infer_all(chunk_size=30, fanouts=(3, 2))
    np.testing.assert_array_equal(capped, engine.infer_all(chunk_size=30, fanouts=(3, 2),
                                                           method="khop"))
    assert not np.array_equal(capped, engine.infer_all(method="layerwise"))


def test_link_embeddings_layer_wise_are_the_exporters_table(tmp_path: Path) -> None:
    """The link path (the table an engine recomputes at load with infer_all when a bundle has
    none): layer-wise gives the exporter's table bit for bit."""
    path = _export(tmp_path, "gcn", task="link")
    bundle = load_bundle(path)
    values = np.asarray(bundle.array("embeddings/values"))
    engine = Engine(bundle)
    assert engine.layerwise is not None
    from qgnn.runtime.engine import quantize_rows

    table, scales = quantize_rows(engine.infer_all(chunk_size=13, method="layerwise"))
    np.testing.assert_array_equal(table, values)
    np.testing.assert_array_equal(scales, np.asarray(bundle.array("embeddings/scales")))


def test_whole_graph_chunk_after_an_update_extracts_and_agrees(bundles: dict[str, Path]) -> None:
    """One chunk of every node reads the stored CSR directly, except on a graph with added
    nodes or edges: there the block is extracted, and both methods still agree."""
    engine = Engine(load_bundle(bundles["gcn"]))
    n = engine.num_nodes
    before = engine.infer_all(chunk_size=n, method="layerwise")
    np.testing.assert_array_equal(before, engine.infer_all(chunk_size=n, method="khop"))
    features = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
    engine.update_graph(features, np.array([[0, n], [n, n + 1], [n + 1, 5]], np.int64))
    after = engine.infer_all(chunk_size=n + 2, method="layerwise")
    np.testing.assert_array_equal(after, engine.infer_all(chunk_size=n + 2, method="khop"))
    assert after.shape[0] == n + 2


@pytest.mark.parametrize("case", ["gcn", "gat", "sage_residual"])
def test_auto_with_one_chunk_runs_the_whole_model_on_the_stored_graph(
        bundles: dict[str, Path], case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One chunk of every node (auto) skips extraction and the per-layer cut and gives the
    same answer as both chunked methods and the exporter's onnxruntime run."""
    engine = Engine(load_bundle(bundles[case]))
    n = engine.num_nodes

    def no_extraction(*_args: object) -> None:
        raise AssertionError("the whole-graph route must not extract a subgraph")

    expected = engine.infer_all(chunk_size=7, method="layerwise")
    monkeypatch.setattr(engine.extractor, "extract", no_extraction)
    whole = engine.infer_all(chunk_size=n)
    np.testing.assert_array_equal(whole, expected)
    np.testing.assert_array_equal(whole, _onnxruntime_full_graph(bundles[case]))
