"""Model repository: layout, version selection, load/unload/reload, atomic swaps, polling."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import serving_testkit as tk
from prometheus_client import CollectorRegistry
from qgnn.runtime.backend_loaders import (
    register_backend_loader,
    resolve_loader,
    unregister_backend_loader,
)
from qgnn.runtime.dataplane import DataPlane
from qgnn.runtime.discovery import discover
from qgnn.runtime.errors import (
    AlreadyExistsError,
    BackendUnavailableError,
    BundleError,
    InvalidRequestError,
    ModelNotFoundError,
)
from qgnn.runtime.messages import ModelSelector
from qgnn.runtime.metrics import ServingMetrics
from qgnn.runtime.model_entry import ModelState, RepositoryOptions
from qgnn.runtime.repository import ModelRepository


def _repo(path: Path | None) -> ModelRepository:
    return ModelRepository(path, metrics=ServingMetrics.create(CollectorRegistry()),
                           options=RepositoryOptions(max_queue_delay_s=0.0, drain_timeout_s=5))


def _value(repo: ModelRepository, name: str, labels: dict) -> float | None:
    return repo.metrics.registry.get_sample_value(name, labels)


def _write(root: Path, name: str, version: int, seed: int, **kw) -> tk.ModelParams:
    params = tk.random_params(num_nodes=20, seed=seed)
    tk.write_test_bundle(root / name / str(version), params, name=name, version=version, **kw)
    return params


def _predict(repo: ModelRepository, sel: ModelSelector, ids) -> np.ndarray:
    return DataPlane(repo).predict_nodes(sel, ids).probabilities


def test_discover_finds_versions_and_skips_hidden_and_non_numeric_entries(tmp_path: Path):
    _write(tmp_path, "a", 1, 0)
    _write(tmp_path, "a", 3, 1)
    (tmp_path / "a" / ".3.tmp-xyz").mkdir()
    (tmp_path / "a" / "latest").mkdir()
    (tmp_path / ".trash" / "1").mkdir(parents=True)
    (tmp_path / "README.md").write_text("models")
    found = discover(tmp_path)
    assert found == {tmp_path / "a" / "1": ("a", 1), tmp_path / "a" / "3": ("a", 3)}
    assert discover(tmp_path / "a" / "1") == {tmp_path / "a" / "1": None}
    with pytest.raises(ValueError, match="neither a model bundle"):
        discover(tmp_path / "README.md")


def test_newest_ready_version_answers_unless_a_version_is_named(tmp_path: Path):
    p1 = _write(tmp_path, "a", 1, 0)
    p2 = _write(tmp_path, "a", 2, 1)
    repo = _repo(tmp_path)
    try:
        repo.scan()
        assert repo.resolve(ModelSelector("a")).version == 2
        ids = np.array([0, 4])
        np.testing.assert_allclose(_predict(repo, ModelSelector("a"), ids),
                                   tk.oracle_probabilities(p2)[ids], atol=1e-5)
        np.testing.assert_allclose(_predict(repo, ModelSelector("a", 1), ids),
                                   tk.oracle_probabilities(p1)[ids], atol=1e-5)
        with pytest.raises(ModelNotFoundError, match=r"no version 7 \(loaded: 1, 2\)"):
            repo.resolve(ModelSelector("a", 7))
        with pytest.raises(ModelNotFoundError, match=r"no model named 'b' .*loaded: a"):
            repo.resolve(ModelSelector("b"))
        with pytest.raises(InvalidRequestError, match=r"model\.version"):
            repo.resolve(ModelSelector("a", 0))
        with pytest.raises(InvalidRequestError, match=r"model\.name"):
            repo.resolve(ModelSelector(""))
        assert _value(repo, "qgnn_model_ready", {"model": "a", "version": "2"}) == 1
        assert _value(repo, "qgnn_model_info", {"model": "a", "version": "1", "task": "node",
                                                "quant": "fp32", "isa": ""}) == 1
        assert _value(repo, "qgnn_model_load_duration_seconds_count", {"model": "a"}) == 2
    finally:
        repo.close()


def test_admin_load_refuses_a_loaded_version_and_unload_removes_every_version(tmp_path: Path):
    _write(tmp_path, "a", 1, 0)
    _write(tmp_path, "a", 2, 1)
    repo = _repo(None)
    try:
        repo.load(tmp_path / "a" / "1")
        repo.load(tmp_path / "a" / "2")
        with pytest.raises(AlreadyExistsError, match="a v1 is already loaded"):
            repo.load(tmp_path / "a" / "1")
        keys = repo.unload(ModelSelector("a", 1))
        assert [(k.name, k.version) for k in keys] == [("a", 1)]
        assert [e.version for e in repo.entries("a")] == [2]
        keys = repo.unload(ModelSelector("a"))
        assert [(k.name, k.version) for k in keys] == [("a", 2)]
        assert repo.entries() == []
        assert _value(repo, "qgnn_model_ready", {"model": "a", "version": "2"}) is None
        with pytest.raises(ModelNotFoundError):
            repo.unload(ModelSelector("a"))
    finally:
        repo.close()


def test_a_bundle_in_the_wrong_directory_fails_alone_and_is_counted(tmp_path: Path):
    _write(tmp_path, "a", 1, 0)
    params = tk.random_params(num_nodes=20, seed=3)
    tk.write_test_bundle(tmp_path / "b" / "1", params, name="other")
    repo = _repo(tmp_path)
    try:
        repo.scan()
        failed = repo.entries("b")[0]
        assert failed.state is ModelState.FAILED
        assert "'other'" in failed.error and "model 'b' version 1" in failed.error
        assert repo.is_serving("a") and not repo.is_serving("b")
        assert _value(repo, "qgnn_model_load_failures_total", {"model": "b"}) == 1
        repo.scan()  # unchanged files are not retried
        assert _value(repo, "qgnn_model_load_failures_total", {"model": "b"}) == 1
    finally:
        repo.close()


def test_a_failed_reload_keeps_the_old_version_serving(tmp_path: Path):
    params = _write(tmp_path, "a", 1, 0)
    repo = _repo(tmp_path)
    try:
        repo.scan()
        before = repo.resolve(ModelSelector("a"))
        # deploy a damaged copy the way bundles are replaced: a rename, never an in-place edit
        # (the server memory-maps the arrays of the bundle it serves)
        shutil.copytree(tmp_path / "a" / "1", tmp_path / "new")
        (tmp_path / "new" / "graph" / "features.npy").write_bytes(b"garbage")
        (tmp_path / "a" / "1").rename(tmp_path / "old")
        (tmp_path / "new").rename(tmp_path / "a" / "1")
        with pytest.raises(BundleError, match=r"features\.npy"):
            repo.reload(ModelSelector("a"))
        assert repo.resolve(ModelSelector("a")) is before
        np.testing.assert_allclose(_predict(repo, ModelSelector("a"), [3]),
                                   tk.oracle_probabilities(params)[[3]], atol=1e-5)
        assert _value(repo, "qgnn_model_load_failures_total", {"model": "a"}) == 1
    finally:
        repo.close()


def test_a_swap_lets_in_flight_requests_finish_on_the_old_version(tmp_path: Path):
    _write(tmp_path, "a", 1, 0)
    repo = _repo(tmp_path)
    try:
        repo.scan()
        with repo.lease(ModelSelector("a")) as old:
            new_params = tk.random_params(num_nodes=20, seed=9)
            tk.write_test_bundle(tmp_path / "a" / "1", new_params, name="a", overwrite=True)
            new = repo.reload(ModelSelector("a"))
            assert repo.resolve(ModelSelector("a")) is new and new is not old
            assert not old.backend.closed  # still leased: it keeps serving this request
            assert old.batcher.call("nodes", np.array([1]), 1).shape == (1, 3)
        assert old.closed.wait(5) and old.backend.closed
        np.testing.assert_allclose(_predict(repo, ModelSelector("a"), [2]),
                                   tk.oracle_probabilities(new_params)[[2]], atol=1e-5)
    finally:
        repo.close()


def _wait_for(condition, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_polling_loads_new_versions_reloads_changed_ones_and_unloads_removed_ones(
        tmp_path: Path):
    _write(tmp_path, "a", 1, 0)
    repo = _repo(tmp_path)
    try:
        repo.scan()
        repo.start_polling(0.05)
        p2 = _write(tmp_path, "a", 2, 1)
        assert _wait_for(lambda: repo.is_serving("a", 2))
        np.testing.assert_allclose(_predict(repo, ModelSelector("a"), [5]),
                                   tk.oracle_probabilities(p2)[[5]], atol=1e-5)
        first = repo.resolve(ModelSelector("a", 2))
        p2b = tk.random_params(num_nodes=20, seed=7)
        tk.write_test_bundle(tmp_path / "a" / "2", p2b, name="a", version=2, overwrite=True)
        assert _wait_for(lambda: repo.resolve(ModelSelector("a", 2)) is not first)
        np.testing.assert_allclose(_predict(repo, ModelSelector("a"), [5]),
                                   tk.oracle_probabilities(p2b)[[5]], atol=1e-5)
        shutil.rmtree(tmp_path / "a" / "2")
        assert _wait_for(lambda: [e.version for e in repo.entries("a")] == [1])
        assert repo.resolve(ModelSelector("a")).version == 1
    finally:
        repo.close()


def test_a_version_missing_for_one_scan_only_is_not_unloaded(tmp_path: Path):
    _write(tmp_path, "a", 1, 0)
    repo = _repo(tmp_path)
    try:
        repo.scan()
        (tmp_path / "a" / "1").rename(tmp_path / "a" / ".aside")
        repo.scan()
        assert repo.is_serving("a", 1)
        (tmp_path / "a" / ".aside").rename(tmp_path / "a" / "1")
        repo.scan()
        repo.scan()
        assert repo.is_serving("a", 1)
    finally:
        repo.close()


def test_graph_updates_survive_a_reload(tmp_path: Path):
    _write(tmp_path, "a", 1, 0)
    repo = _repo(tmp_path)
    plane = DataPlane(repo)
    try:
        repo.scan()
        upd = plane.update_graph(ModelSelector("a"), [np.ones(6)], [20], [0], undirected=True)
        assert list(upd.node_ids) == [20] and upd.graph.revision == 1
        repo.reload(ModelSelector("a"))
        entry = repo.resolve(ModelSelector("a"))
        assert entry.backend.num_nodes == 21 and entry.backend.revision == 1
    finally:
        repo.close()


def test_loaders_are_chosen_by_format_then_task_then_default(tmp_path: Path):
    def by_task(bundle, options):
        raise AssertionError

    def default(bundle, options):
        raise AssertionError

    with pytest.raises(BackendUnavailableError, match=r"model\.format='other'"):
        resolve_loader("other", "link")
    register_backend_loader(by_task, task="link")
    register_backend_loader(default)
    try:
        assert resolve_loader("other", "link") is by_task
        assert resolve_loader("other", "node") is default
        assert resolve_loader(tk.FORMAT, "link") is \
            tk.load_mean_mlp
    finally:
        unregister_backend_loader(task="link")
        unregister_backend_loader()


def test_a_bundle_no_backend_can_serve_fails_to_load_with_the_reason(tmp_path: Path):
    params = tk.random_params(num_nodes=20, seed=0)
    tk.write_test_bundle(tmp_path / "x", params, name="x", fmt="unknown-format")
    repo = _repo(None)
    with pytest.raises(BackendUnavailableError, match="unknown-format"):
        repo.load(tmp_path / "x")
    assert repo.entries() == []
