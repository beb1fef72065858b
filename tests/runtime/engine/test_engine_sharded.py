"""The sharded-bundle backend, on a bundle written by hand (numpy only): hand-computed
probabilities, NOT_FOUND naming the owning shard, and bad bundles refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qgnn.runtime.bundle.layout import MODEL_FILE
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.bundle.writer import write_bundle
from qgnn.runtime.engine.sharded import (
    OWNER,
    SHARDED_FORMAT,
    ShardedBackend,
    ShardNotServedError,
    shard_file,
)
from qgnn.runtime.errors import BundleError, FailedPreconditionError

# 5 nodes: shard 0 owns {0, 3}, shard 1 owns {1, 2, 4}
OWNERS = np.array([0, 1, 1, 0, 1], np.int32)
LOGITS = {0: np.array([[2, -1], [0, 0]], np.int8), 1: np.array([[1, 1], [-3, 3], [127, 0]],
                                                                  np.int8)}
SCALES = {0: np.array([0.5, 1.0], np.float32), 1: np.array([2.0, 0.25, 0.01], np.float32)}


def _write(path: Path, held: list[int], owner: np.ndarray = OWNERS) -> Path:
    files: dict[str, object] = {MODEL_FILE: b"not run at request time", OWNER: owner}
    for p in held:
        owned = OWNERS == p  # noqa: SIM300
        nodes = np.flatnonzero(owned).astype(np.int64)
        files[shard_file(p, "nodes")] = nodes
        files[shard_file(p, "predictions")] = LOGITS[p]
        files[shard_file(p, "scales")] = SCALES[p]
        files[shard_file(p, "graph/indptr")] = np.zeros(nodes.size + 1, np.int64)
        files[shard_file(p, "graph/indices")] = np.zeros(0, np.int64)
    manifest = {
        "model": {"name": "part", "version": 1, "task": "node", "type": "sage",
                  "file": MODEL_FILE, "format": SHARDED_FORMAT,
                  "inputs": [{"name": "x", "dtype": "float32", "shape": ["num_nodes", 3]}],
                  "outputs": [{"name": "logits", "dtype": "float32", "shape": ["num_nodes", 2]}]},
        "quantisation": {"bits": 8, "method": "degree-quant", "num_sites": 0},
        "metrics": {}, "graph": {"num_nodes": 5, "num_edges": 0, "num_features": 3},
        "sharding": {"num_shards": 2, "held": held}, "versions": {}}
    return write_bundle(path, manifest, files)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def test_all_shards_answer_every_id(tmp_path: Path) -> None:
    with load_bundle(_write(tmp_path / "b", [0, 1])) as bundle:
        backend = ShardedBackend(bundle)
        got = backend.predict_nodes(np.array([4, 0, 2]))
    # node 4: shard 1 row 2 = 0.01 * (127, 0); node 0: 0.5 * (2, -1); node 2: 0.25 * (-3, 3)
    want = np.stack([_softmax(np.array([1.27, 0.0])), _softmax(np.array([1.0, -0.5])),
                     _softmax(np.array([-0.75, 0.75]))])
    assert np.allclose(got, want, atol=1e-6)
    assert backend.num_nodes == 5 and backend.num_classes == 2


def test_one_shard_refuses_other_ids_naming_their_shard(tmp_path: Path) -> None:
    with load_bundle(_write(tmp_path / "b", [1])) as bundle:
        backend = ShardedBackend(bundle)
        assert np.allclose(backend.predict_nodes(np.array([1])), [[0.5, 0.5]])
        with pytest.raises(ShardNotServedError, match=r"node 3 belongs to shard 0 of 2.*\[1\]"):
            backend.predict_nodes(np.array([1, 3]))
        assert ShardNotServedError.code == "NOT_FOUND"
        with pytest.raises(FailedPreconditionError, match="node predictions only"):
            backend.predict_links(np.array([[0, 1]]))


def test_a_shard_disagreeing_with_the_owner_map_is_refused(tmp_path: Path) -> None:
    owner = OWNERS.copy()
    owner[3] = 1  # the map says node 3 is shard 1's, but shard 0 lists it
    with load_bundle(_write(tmp_path / "b", [0], owner)) as bundle, \
            pytest.raises(BundleError, match="disagrees"):
        ShardedBackend(bundle)


def test_the_engine_package_registers_the_loader(tmp_path: Path) -> None:
    import qgnn.runtime.engine  # noqa: F401  (registers its loaders)
    from qgnn.runtime.backend_loaders import resolve_loader
    from qgnn.runtime.engine.sharded import load_sharded

    with load_bundle(_write(tmp_path / "b", [0])) as bundle:
        assert resolve_loader(bundle.manifest.model.format, bundle.task) is load_sharded
