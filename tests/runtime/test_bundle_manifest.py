"""The typed manifest (qgnn.runtime.bundle.manifest): parsed once by the checked reader, with the
required fields typed, optional sections defaulted, and extra fields still reachable."""

from __future__ import annotations

import copy

import pytest
from qgnn.runtime.bundle.manifest import Manifest, TensorSpec, parse_manifest
from qgnn.runtime.errors import BundleError

SHA = "ab" * 32


def manifest() -> dict:
    return {
        "schema_version": 1, "created": "2026-01-02T03:04:05Z",
        "model": {"name": "toy", "version": 2, "task": "link", "type": "sage",
                  "file": "model.onnx", "format": "qgnn-onnx", "num_layers": 2,
                  "inputs": [{"name": "x", "dtype": "uint8", "shape": ["n", 4]}],
                  "outputs": [{"name": "emb", "dtype": "float32", "shape": ["n", 8]}]},
        "quantisation": {"bits": 8, "method": "degree-quant", "num_sites": 5, "per_channel": True},
        "metrics": {"auc": 0.9}, "versions": {"qgnn": "0.1"},
        "graph": {"num_nodes": 10, "num_edges": 20, "num_features": 4, "adjacency": "in",
                  "node_types": {"user": [0, 4], "item": [4, 10]}, "future_field": 7},
        "files": {"model.onnx": {"sha256": SHA, "bytes": 3, "kind": "onnx"}},
        "link": {"decoder": "dot", "embedding_dim": 8},
        "parity": {"argmax_agreement": 1.0},
    }


def test_required_fields_come_back_typed() -> None:
    m = parse_manifest(manifest())
    assert isinstance(m, Manifest)
    assert (m.name, m.version, m.task) == ("toy", 2, "link")
    assert (m.model.type, m.model.file, m.model.format, m.model.num_layers) == (
        "sage", "model.onnx", "qgnn-onnx", 2)
    assert m.model.inputs == (TensorSpec("x", "uint8", ("n", 4)),)
    assert m.model.outputs == (TensorSpec("emb", "float32", ("n", 8)),)
    assert (m.quantisation.bits, m.quantisation.method, m.quantisation.num_sites) == (
        8, "degree-quant", 5)
    assert m.quantisation.label == "int8"
    assert (m.graph.num_nodes, m.graph.num_edges, m.graph.num_features) == (10, 20, 4)
    assert m.graph.adjacency == "in"
    assert m.link == {"decoder": "dot", "embedding_dim": 8}


def test_extra_fields_stay_reachable() -> None:
    m = parse_manifest(manifest())
    assert m.quantisation.extra == {"per_channel": True}
    assert m.graph.node_types == {"user": [0, 4], "item": [4, 10]}
    assert m.graph.fields["future_field"] == 7
    assert m.raw["parity"] == {"argmax_agreement": 1.0}


def test_absent_optional_sections_get_their_defaults() -> None:
    raw = manifest()
    for key in ("link",):
        del raw[key]
    del raw["graph"]["adjacency"], raw["graph"]["node_types"]
    del raw["model"]["format"], raw["model"]["num_layers"]
    raw["quantisation"] = {"bits": 32, "method": "none", "num_sites": 0}
    m = parse_manifest(raw)
    assert m.link == {} and m.serving == {} and m.sharding is None
    assert m.graph.adjacency == "out" and m.graph.node_types is None and m.graph.num_classes == 0
    assert m.model.format is None and m.model.num_layers is None and m.model.input == {}
    assert m.quantisation.label == "fp32"


@pytest.mark.parametrize(("path", "value", "field"), [
    (("link",), ["dot"], "link"),
    (("serving",), 3, "serving"),
    (("model", "input"), "uint8", "model.input"),
    (("graph", "num_classes"), -1, "graph.num_classes"),
    (("model", "num_layers"), "two", "model.num_layers"),
])
def test_a_wrong_optional_section_is_refused_by_name(path: tuple[str, ...], value: object,
                                                      field: str) -> None:
    raw = copy.deepcopy(manifest())
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(BundleError, match=field.replace(".", r"\.")):
        parse_manifest(raw)


def test_a_missing_required_field_is_refused_before_typing() -> None:
    raw = manifest()
    del raw["graph"]["num_nodes"]
    with pytest.raises(BundleError, match=r"graph\.'?num_nodes"):
        parse_manifest(raw)
