"""load_dataset: built-in names, path dispatch, synthetic specs, shipped data checksums."""

from __future__ import annotations

import hashlib
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from qgnn.graph.container import Graph
from qgnn.graph.datasets import DATA_ENV, list_datasets, load_dataset
from qgnn.graph.links import LinkData

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
SYNTH = ROOT / "graph" / "synth.py"


def _table_hashes(text: str) -> dict[str, str]:
    """``file -> sha256`` from markdown table rows ``| file | bytes | sha256 |``."""
    rows = re.findall(r"^\|\s*`?([\w./-]+?)`?\s*\|\s*\d+\s*\|\s*`?([0-9a-f]{64})`?", text,
                      flags=re.MULTILINE)
    return dict(rows)


def test_shipped_files_match_readme_and_source_checksums():
    listed = _table_hashes((DATA / "README.md").read_text())
    assert len(listed) == 18  # 8 Cora + 8 CiteSeer files + tolokers.npz + ogbl-ddi.npz
    for name in ("cora", "citeseer", "tolokers"):
        source = _table_hashes((DATA / name / "SOURCE.md").read_text())
        assert source and all(listed[f"{name}/{f}"] == h for f, h in source.items())
    for rel, digest in listed.items():
        assert hashlib.sha256((DATA / rel).read_bytes()).hexdigest() == digest, rel


@pytest.mark.parametrize("spec, nodes, edges", [
    ("cora", 2708, 10556), ("CiteSeer", 3327, 9104), ("tolokers", 11758, 1_038_000)])
def test_builtin_names(spec, nodes, edges):
    g = load_dataset(spec)
    assert isinstance(g, Graph) and (g.num_nodes, g.num_edges) == (nodes, edges)


def test_root_and_environment_override_the_data_folder(tmp_path, monkeypatch):
    (tmp_path / "cora").symlink_to(DATA / "cora")
    assert load_dataset("cora", root=tmp_path).num_nodes == 2708
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert load_dataset("cora").num_nodes == 2708
    with pytest.raises(ValueError, match=rf"expected its files in .*tolokers; set {DATA_ENV}"):
        load_dataset("tolokers")


def test_paths_pick_their_loader(tmp_path):
    assert load_dataset(str(DATA / "citeseer")).name == "citeseer"
    np.savez(tmp_path / "g.npz", edges=np.array([[0, 1]]), train_masks=np.ones((3, 2), bool))
    assert load_dataset(str(tmp_path / "g.npz")).num_splits == 3
    (tmp_path / "g.tsv").write_text("0\t1\n1\t2\n")
    assert load_dataset(str(tmp_path / "g.tsv")).meta["format"] == "edge_list"
    ogb = tmp_path / "ogbn-tiny"
    (ogb / "raw").mkdir(parents=True)
    (ogb / "raw" / "edge.csv").write_text("0,1\n")
    assert load_dataset(str(ogb)).meta["format"] == "ogb"
    (tmp_path / "u.data").write_text("1\t5\t3\t10\n2\t5\t4\t11\n1\t6\t5\t12\n")
    data = load_dataset(f"interactions:{tmp_path / 'u.data'}")
    assert isinstance(data, LinkData) and data.num_users == 2 and data.num_items == 2


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nothing-here", r"not a built-in name \(cora, citeseer, tolokers, ogbl-ddi\) "
                                   r"and no such file or folder; accepted: cora; citeseer"),
    (lambda p: p, "folder has neither ind.<name>.graph nor raw/edge.csv"),
    (lambda p: (p / "g.parquet").touch() or p / "g.parquet", "unrecognised file type '.parquet'"),
])
def test_unknown_specs_list_what_is_accepted(tmp_path, make, message):
    with pytest.raises(ValueError, match=message) as info:
        load_dataset(str(make(tmp_path)))
    assert "interactions:<path>" in str(info.value)


def test_folder_with_two_planetoid_sets_is_ambiguous(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"ind.{name}.graph").touch()
    with pytest.raises(ValueError, match=r"several Planetoid sets \['a', 'b'\]"):
        load_dataset(str(tmp_path))


def test_list_datasets_covers_every_form():
    forms = list_datasets()
    assert {"cora", "citeseer", "tolokers", "interactions:<path>"} <= set(forms)
    assert any(k.startswith("synthetic:powerlaw") for k in forms)
    assert all(isinstance(v, str) and v for v in forms.values())


@pytest.fixture
def fake_synth(monkeypatch):
    """A stand-in qgnn.graph.synth that records the keyword arguments it receives."""
    calls = []
    module = types.ModuleType("qgnn.graph.synth")

    def powerlaw_communities(num_nodes, *, avg_degree=10.0, homophily=0.8, seed=0,
                             name="pl", directed=False):
        calls.append(dict(num_nodes=num_nodes, avg_degree=avg_degree, homophily=homophily,
                          seed=seed, name=name, directed=directed))
        return Graph.from_edges(np.array([0]), np.array([1]), num_nodes)

    def bipartite_recommender(num_users, num_items, **kw):
        calls.append(dict(num_users=num_users, num_items=num_items, **kw))
        return "link-data"

    module.powerlaw_communities = powerlaw_communities
    module.bipartite_recommender = bipartite_recommender
    monkeypatch.setitem(sys.modules, "qgnn.graph.synth", module)
    return calls


def test_synthetic_query_becomes_typed_keyword_arguments(fake_synth):
    g = load_dataset("synthetic:powerlaw?nodes=50&avg_degree=4.5&seed=3&name=x&directed=true")
    assert g.num_nodes == 50
    assert fake_synth[-1] == dict(num_nodes=50, avg_degree=4.5, homophily=0.8, seed=3, name="x",
                                  directed=True)
    assert load_dataset("synthetic:recommender?num_users=3&num_items=4&dim=8") == "link-data"
    assert fake_synth[-1] == dict(num_users=3, num_items=4, dim=8)


@pytest.mark.parametrize("spec, message", [
    ("synthetic:powerlaw?nodes=5&bogus=1", r"unexpected keyword argument 'bogus'.*accepts "
                                           r"num_nodes, avg_degree"),
    ("synthetic:powerlaw?avg_degree=3", r"missing a required argument: 'num_nodes'"),
    ("synthetic:powerlaw?nodes=5&num_nodes=6", r"parameter 'num_nodes' given twice"),
    ("synthetic:powerlaw?nodes", r"malformed query 'nodes'"),
    ("synthetic:ring?nodes=5", r"unknown synthetic kind 'ring'; known: powerlaw, recommender"),
])
def test_bad_synthetic_specs(fake_synth, spec, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(spec)


@pytest.mark.skipif(not SYNTH.exists(), reason="graph/synth.py (the generators) is not in this "
                                               "checkout yet")
def test_real_generators_through_the_spec():
    g = load_dataset("synthetic:powerlaw?nodes=300&communities=3&features=8&seed=1")
    assert isinstance(g, Graph) and g.num_nodes == 300 and g.num_classes == 3
    assert g.num_features == 8
    data = load_dataset("synthetic:recommender?users=40&items=60&seed=2")
    assert isinstance(data, LinkData) and (data.num_users, data.num_items) == (40, 60)
