"""The load check: a bundle whose model.onnx is garbage, truncated or bit-flipped, with the
manifest re-hashed so every hash passes, is refused by ``qgnn inspect``, ``qgnn serve``,
LoadModel and ReloadModel with one clear error, and the server keeps serving the old version."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
import serving_testkit as tk
from qgnn.runtime import load_check
from qgnn.runtime.bundle.layout import MANIFEST
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.errors import BundleError
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2 as pb
from qgnn.runtime.proto_gen.qgnn.v1 import qgnn_pb2_grpc as pb_grpc

from qgnn.cli import main


def _garbage(data: bytes) -> bytes:
    return np.random.default_rng(0).bytes(len(data))


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _bit_flipped(data: bytes) -> bytes:
    """Flips bits in the graph's structure (node op types and tensor names), where a parse
    still succeeds but the graph no longer resolves."""
    out = bytearray(data)
    for needle in (b"MatMul", b"Relu"):
        at = data.find(needle)
        out[at] ^= 0x20  # 'M' -> 'm', 'R' -> 'r': unknown ops
    return bytes(out)


def _wrong_outputs(data: bytes) -> bytes:
    return data.replace(b"logits", b"lagits")  # parses and runs; not the manifest's outputs


DAMAGE = {"garbage": _garbage, "truncated": _truncated, "bit-flipped": _bit_flipped,
          "renamed outputs": _wrong_outputs}


def rehashed(bundle: Path, damage) -> Path:
    """Damages model.onnx and rewrites the manifest's size and sha256 for it, as an attacker
    (or a broken copy tool that recomputes checksums) would."""
    model = bundle / "model.onnx"
    data = damage(model.read_bytes())
    model.write_bytes(data)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"]["model.onnx"].update(bytes=len(data),
                                           sha256=hashlib.sha256(data).hexdigest())
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    load_bundle(bundle, verify=True).close()  # every hash passes
    return bundle


@pytest.fixture
def good_bundle(tmp_path: Path, node_params) -> Path:
    return tk.write_test_bundle(tmp_path / "repo" / "toy" / "1", node_params, name="toy")


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_inspect_refuses_a_damaged_model_in_one_line(good_bundle, kind, capsys):
    rehashed(good_bundle, DAMAGE[kind])
    assert main(["inspect", str(good_bundle)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("qgnn inspect: error: model.onnx: ")
    with load_bundle(good_bundle) as bundle, pytest.raises(BundleError) as info:
        load_check.open_checked(bundle, lambda b: tk.MeanMlpBackend(b, _options()))
    assert info.value.file == "model.onnx"


def test_inspect_runs_a_good_bundle_once(good_bundle, capsys):
    assert main(["inspect", str(good_bundle)]) == 0
    assert "verified, loaded and answered a trial request" in capsys.readouterr().out


def test_no_verify_still_checks_the_onnx_structure(good_bundle, capsys):
    rehashed(good_bundle, _truncated)
    assert main(["inspect", "--no-verify", str(good_bundle)]) == 2
    assert "is not a valid ONNX model" in capsys.readouterr().err


def test_a_backend_that_answers_wrongly_fails_the_trial_run(good_bundle, monkeypatch):
    def nan_probabilities(self, ids, inductive=None):
        return np.full((len(ids), 3), np.nan, np.float32)

    monkeypatch.setattr(tk.MeanMlpBackend, "predict_nodes", nan_probabilities)
    with load_bundle(good_bundle) as bundle, pytest.raises(BundleError,
                                                           match=r"fails a trial run.*finite"):
        load_check.open_checked(bundle, lambda b: tk.MeanMlpBackend(b, _options()))


def _options():
    from qgnn.runtime.backend import BackendOptions

    return BackendOptions(threads=1)


def test_serve_refuses_a_damaged_single_bundle_with_one_line(good_bundle, capsys):
    rehashed(good_bundle, _garbage)
    code = main(["serve", str(good_bundle), "--host", "127.0.0.1", "--grpc-port", "0",
                 "--metrics-port", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("qgnn serve: error: model.onnx: is not a valid ONNX")


@pytest.mark.parametrize("kind", ["garbage", "bit-flipped"])
def test_load_and_reload_refuse_a_damaged_model_and_the_old_version_keeps_serving(
        start_server, client_for, good_bundle, node_params, tmp_path, kind):
    server = start_server(good_bundle.parent.parent)
    client = client_for(server)
    admin = pb_grpc.ModelAdminStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    other = tk.write_test_bundle(tmp_path / "other", node_params, name="other")
    rehashed(other, DAMAGE[kind])
    with pytest.raises(grpc.RpcError) as info:
        admin.LoadModel(pb.LoadModelRequest(path=str(other)), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model.onnx" in info.value.details()

    backup = tmp_path / "backup.onnx"
    shutil.copy(good_bundle / "model.onnx", backup)
    rehashed(good_bundle, DAMAGE[kind])
    with pytest.raises(grpc.RpcError) as info:
        admin.ReloadModel(pb.ReloadModelRequest(model=pb.ModelRef(name="toy")), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model.onnx" in info.value.details()
    np.testing.assert_allclose(client.predict_nodes("toy", [0, 5]).probabilities,
                               tk.oracle_probabilities(node_params)[[0, 5]], atol=1e-5)
    assert server.metrics.registry.get_sample_value("qgnn_model_load_failures_total",
                                                    {"model": "toy"}) == 1
