"""The restricted unpickler: real Planetoid files load, anything that could run code is refused."""

from __future__ import annotations

import collections
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from qgnn.graph.io.safe_pickle import CsrState, UnsafePickleError, load_pickle

DATA = Path(__file__).resolve().parents[3] / "data"


class _Evil:
    """Pickles into 'call <target>(<arg>)' (building the bytes runs nothing)."""

    def __init__(self, target, arg):
        self.target, self.arg = target, arg

    def __reduce__(self):
        return self.target, (self.arg,)


def _write(tmp_path: Path, payload: bytes) -> Path:
    path = tmp_path / "ind.evil.x"
    path.write_bytes(payload)
    return path


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("target, refused", [  # protocols < 3 write the Python 2 module names
    (os.system, rf"{os.system.__module__}\.system"),
    (eval, r"(builtins|__builtin__)\.eval"),
    (subprocess.Popen, r"(subprocess|commands)\.Popen"),
])
def test_code_running_globals_are_refused_before_being_called(tmp_path, protocol, target,
                                                              refused):
    marker = tmp_path / "pwned"
    arg = f"open({str(marker)!r}, 'w')" if target is eval else f"touch {marker}"
    if target is subprocess.Popen:
        arg = ["touch", str(marker)]
    path = _write(tmp_path, pickle.dumps(_Evil(target, arg), protocol=protocol))
    with pytest.raises(UnsafePickleError, match=f"refused global '{refused}'") as info:
        load_pickle(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_hand_written_protocol0_os_system_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(UnsafePickleError, match=r"refused global 'os\.system'"):
        load_pickle(path)
    assert not marker.exists()


def test_refused_global_nested_inside_allowed_container(tmp_path):
    # a defaultdict (allowed) whose default factory is os.system (not allowed)
    path = _write(tmp_path, pickle.dumps(collections.defaultdict(os.system, {1: [2]}),
                                         protocol=2))
    with pytest.raises(UnsafePickleError, match="system"):
        load_pickle(path)


def test_persistent_ids_are_refused(tmp_path):
    path = _write(tmp_path, b"\x80\x02P1\n.")  # PERSID opcode
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_pickle(path)


def test_python3_protocol2_bytes_helper_is_not_admitted(tmp_path):
    # Python 3 writes bytes at protocol <= 2 through _codecs.encode, which is outside the list
    path = _write(tmp_path, pickle.dumps(np.arange(3), protocol=2))
    with pytest.raises(UnsafePickleError, match=r"_codecs\.encode"):
        load_pickle(path)


def test_allowed_objects_round_trip(tmp_path):
    value = {"a": [1, 2], "arr": np.arange(6, dtype=np.int32).reshape(2, 3),
             "adj": collections.defaultdict(list, {0: [1], 1: [0]})}
    path = _write(tmp_path, pickle.dumps(value, protocol=4))
    out = load_pickle(path)
    assert out["a"] == [1, 2] and out["adj"] == {0: [1], 1: [0]}
    assert isinstance(out["adj"], collections.defaultdict)
    np.testing.assert_array_equal(out["arr"], value["arr"])


def test_scipy_csr_pickle_becomes_shim_with_same_dense_values(tmp_path):
    sparse = pytest.importorskip("scipy.sparse")
    dense = np.array([[0, 2.5, 0, 0], [0, 0, 0, 0], [1, 0, 0, 3]], np.float32)
    path = _write(tmp_path, pickle.dumps(sparse.csr_matrix(dense), protocol=4))
    out = load_pickle(path)
    assert isinstance(out, CsrState) and out.shape == (3, 4)
    np.testing.assert_array_equal(out.to_dense(), dense)


@pytest.mark.parametrize("part", ["x", "tx", "allx"])
def test_real_planetoid_matrices_match_scipy(part):
    sparse = pytest.importorskip("scipy.sparse")
    path = DATA / "cora" / f"ind.cora.{part}"
    with path.open("rb") as fh, pytest.warns(DeprecationWarning):  # old scipy.sparse.csr path
        reference = pickle.load(fh, encoding="latin1")
    assert isinstance(reference, sparse.csr_matrix)
    np.testing.assert_array_equal(load_pickle(path).to_dense(), reference.toarray())


def test_loading_planetoid_files_never_imports_scipy_or_torch():
    code = ("import sys; from qgnn.graph.datasets import load_dataset; "
            "load_dataset('citeseer'); load_dataset('tolokers'); "
            "bad = [m for m in ('scipy', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("payload, problem", [
    (b"", "not a valid Planetoid pickle"),
    (b"\x80\x02}q\x00(X", "not a valid Planetoid pickle"),
])
def test_corrupt_pickles_name_the_file(tmp_path, payload, problem):
    path = _write(tmp_path, payload)
    with pytest.raises(ValueError, match=problem) as info:
        load_pickle(path)
    assert str(path) in str(info.value)


def test_truncated_real_file_names_the_file(tmp_path):
    raw = (DATA / "cora" / "ind.cora.allx").read_bytes()
    path = _write(tmp_path, raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"ind\.evil\.x: not a valid Planetoid pickle"):
        load_pickle(path)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="file not found"):
        load_pickle(tmp_path / "nope")


def test_malformed_csr_state_is_reported(tmp_path):
    sparse = pytest.importorskip("scipy.sparse")
    m = sparse.csr_matrix(np.eye(3, dtype=np.float32))
    m.indices[0] = 7  # column out of range for a 3x3 matrix
    path = _write(tmp_path, pickle.dumps(m, protocol=4))
    with pytest.raises(ValueError, match=r"column index out of range \[0, 3\)"):
        load_pickle(path)
