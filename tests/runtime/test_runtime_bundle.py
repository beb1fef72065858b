"""Model bundles: round trip, every refusal of a bad bundle, atomic writes, archives, the CLI."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from qgnn.runtime import cli_inspect, kernels
from qgnn.runtime.bundle import writer as bundle_writer
from qgnn.runtime.bundle.layout import (
    GRAPH_FEATURES,
    GRAPH_INDICES,
    GRAPH_INDPTR,
    KIND_BY_SUFFIX,
    MANIFEST,
)
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.bundle.writer import write_archive, write_bundle
from qgnn.runtime.cli_inspect import add_inspect_parser
from qgnn.runtime.errors import BundleError


def base_manifest() -> dict:
    return {
        "model": {
            "name": "cora-gcn", "version": 3, "task": "node", "type": "gcn", "file": "model.onnx",
            "inputs": [{"name": "node_ids", "dtype": "int64", "shape": ["batch"]}],
            "outputs": [{"name": "probabilities", "dtype": "float32", "shape": ["batch", 3]},
                        {"name": "predicted_class", "dtype": "int64", "shape": ["batch"]}],
        },
        "quantisation": {"bits": 8, "method": "degree-quant", "num_sites": 6},
        "metrics": {"test_accuracy": 0.8125, "val_accuracy": 0.79},
        "graph": {"num_nodes": 4, "num_edges": 5, "num_features": 2, "num_classes": 3},
        "versions": {"onnx": "1.23.2", "onnxruntime": "1.32.0"},
    }


def base_files() -> dict:
    return {
        "model.onnx": b"\x08\x07fake-onnx-bytes",
        GRAPH_INDPTR: np.array([0, 2, 3, 4, 5], dtype=np.int64),
        GRAPH_INDICES: np.array([1, 2, 0, 3, 1], dtype=np.int64),
        GRAPH_FEATURES: np.arange(8, dtype=np.uint8).reshape(4, 2),
        "embeddings/values.npy": np.array([[1, -2], [3, -4], [5, 6], [-7, 8]], dtype=np.int8),
        "labels.json": {"classes": ["a", "b", "c"]},
    }


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("template") / "b", base_manifest(), base_files())


@pytest.fixture
def bundle_dir(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of one written bundle (copying skips write_bundle's fsyncs)."""
    return Path(shutil.copytree(template, tmp_path / "b"))


def edit_manifest(path: Path, edit) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    edit(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))


def relist(path: Path, rel: str) -> None:
    """Makes the manifest match a file's current content, so only the check under test fires."""
    data = (path / rel).read_bytes()

    def edit(m: dict) -> None:
        m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                           "kind": KIND_BY_SUFFIX.get(Path(rel).suffix, "onnx")}
    edit_manifest(path, edit)


def refused(path: Path, file: str, reason: str, **kwargs) -> BundleError:
    with pytest.raises(BundleError) as info:
        load_bundle(path, **kwargs)
    assert info.value.file == file
    assert reason in info.value.reason
    return info.value


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# ---------------------------------------------------------------------------------------------
# Round trip


def test_round_trip_preserves_manifest_arrays_and_bytes(bundle_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    assert b.manifest.raw["model"] == base_manifest()["model"]
    assert b.manifest.metrics == base_manifest()["metrics"]
    assert b.manifest.schema_version == 1
    assert b.manifest.versions["qgnn"]  # filled in by write_bundle
    assert datetime.fromisoformat(b.manifest.created).tzinfo is not None
    assert (b.name, b.version, b.task) == ("cora-gcn", 3, "node")
    for rel, source in base_files().items():
        if isinstance(source, np.ndarray):
            got = b.array(rel)
            assert got.dtype == source.dtype and got.shape == source.shape
            np.testing.assert_array_equal(got, source)
    assert b.read_bytes("model.onnx") == base_files()["model.onnx"]
    assert b.model_path() == bundle_dir / "model.onnx"
    assert b.read_json("labels.json") == {"classes": ["a", "b", "c"]}
    np.testing.assert_array_equal(b.array("graph/indptr"), [0, 2, 3, 4, 5])  # suffix optional
    with pytest.raises(BundleError, match="not a file of bundle"):
        b.array("graph/missing")
    with pytest.raises(BundleError, match="is a json file, not array"):
        b.array("labels.json")


def test_files_table_matches_an_independent_hash_of_every_file(bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    on_disk = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {MANIFEST}
    for rel, entry in manifest["files"].items():
        data = (bundle_dir / rel).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
    assert manifest["files"][GRAPH_INDPTR]["kind"] == "array"
    assert manifest["files"]["model.onnx"]["kind"] == "onnx"
    assert manifest["files"]["labels.json"]["kind"] == "json"
    # arrays are plain .npy files any numpy reads without pickle
    np.testing.assert_array_equal(np.load(bundle_dir / GRAPH_INDICES, allow_pickle=False),
                                  [1, 2, 0, 3, 1])


def test_arrays_are_memory_mapped_read_only(bundle_dir: Path) -> None:
    arr = load_bundle(bundle_dir).array(GRAPH_FEATURES)
    assert isinstance(arr, np.memmap)
    assert not arr.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        arr[0, 0] = 9
    assert np.load(bundle_dir / GRAPH_FEATURES)[0, 0] == 0


def test_path_source_is_copied_and_numpy_scalars_in_manifest_are_accepted(tmp_path: Path) -> None:
    onnx = tmp_path / "exported.onnx"
    onnx.write_bytes(b"model-from-exporter" * 1000)
    manifest = base_manifest()
    manifest["graph"]["num_nodes"] = np.int64(4)
    manifest["metrics"]["test_accuracy"] = np.float32(0.5)
    b = load_bundle(write_bundle(tmp_path / "b", manifest, {"model.onnx": onnx}))
    assert b.read_bytes("model.onnx") == onnx.read_bytes()
    assert b.manifest.graph.num_nodes == 4
    assert b.manifest.metrics["test_accuracy"] == 0.5


def test_bundle_is_readable_by_others(bundle_dir: Path) -> None:
    assert bundle_dir.stat().st_mode & 0o755 == 0o755


# ---------------------------------------------------------------------------------------------
# Refusals on load


def test_refuses_missing_manifest(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST).unlink()
    refused(bundle_dir, MANIFEST, "missing")


def test_refuses_invalid_json_manifest(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST).write_text('{"schema_version": 1,')
    refused(bundle_dir, MANIFEST, "invalid JSON")


def test_refuses_too_new_schema_version(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda m: m.update(schema_version=999))
    err = refused(bundle_dir, MANIFEST, "schema_version 999 is newer")
    assert "upgrade qgnn" in err.reason


@pytest.mark.parametrize("path", ["created", "model", "quantisation", "metrics", "graph",
                                  "versions", "files", "model.name", "model.version",
                                  "model.task", "model.file", "model.inputs",
                                  "quantisation.bits", "graph.num_nodes"])
def test_refuses_missing_required_field(bundle_dir: Path, path: str) -> None:
    *parents, leaf = path.split(".")

    def edit(m: dict) -> None:
        target = m
        for key in parents:
            target = target[key]
        del target[leaf]
    edit_manifest(bundle_dir, edit)
    refused(bundle_dir, MANIFEST, f"missing required field {''.join(p + '.' for p in parents)}"
                                  f"{leaf!r}")


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("task", "graph", "model.task must be one of"),
    ("version", "3", "model.version must be an integer"),
    ("version", 0, "model.version must be an integer >= 1"),
    ("name", "../evil", "model.name must match"),
    ("file", "missing.onnx", "model.file 'missing.onnx' must be an onnx file listed"),
])
def test_refuses_edited_model_fields(bundle_dir: Path, field: str, value, reason: str) -> None:
    edit_manifest(bundle_dir, lambda m: m["model"].update({field: value}))
    err = refused(bundle_dir, MANIFEST, reason)
    assert repr(value) in str(err)


def test_refuses_non_finite_metric_and_bad_tensor_dtype(bundle_dir: Path) -> None:
    text = (bundle_dir / MANIFEST).read_text().replace('0.8125', 'NaN')  # Python's json allows NaN
    (bundle_dir / MANIFEST).write_text(text)
    refused(bundle_dir, MANIFEST, "metrics.test_accuracy must be a finite number")
    edit_manifest(bundle_dir, lambda m: m["metrics"].update(test_accuracy=0.8))
    edit_manifest(bundle_dir, lambda m: m["model"]["inputs"][0].update(dtype="complex64"))
    refused(bundle_dir, MANIFEST, "model.inputs[0].dtype must be one of")


def test_refuses_listed_file_missing(bundle_dir: Path) -> None:
    (bundle_dir / GRAPH_INDICES).unlink()
    refused(bundle_dir, GRAPH_INDICES, "missing")
    refused(bundle_dir, GRAPH_INDICES, "missing", verify=False)


def test_refuses_extra_unlisted_file(bundle_dir: Path) -> None:
    (bundle_dir / "graph" / "notes.json").write_text("{}")
    refused(bundle_dir, "graph/notes.json", "not listed in manifest.json")


def test_refuses_truncated_file(bundle_dir: Path) -> None:
    data = (bundle_dir / "model.onnx").read_bytes()
    (bundle_dir / "model.onnx").write_bytes(data[:-3])
    refused(bundle_dir, "model.onnx", "truncated")
    refused(bundle_dir, "model.onnx", "truncated", verify=False)  # a size check costs nothing


def test_refuses_corrupt_byte(bundle_dir: Path) -> None:
    path = bundle_dir / GRAPH_INDICES
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # same size, one flipped bit in the array data
    path.write_bytes(bytes(data))
    refused(bundle_dir, GRAPH_INDICES, "sha256 does not match")
    assert load_bundle(bundle_dir, verify=False).array(GRAPH_INDICES)[-1] != 1  # unchecked path


def test_refuses_tampered_hash_or_size_in_manifest(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda m: m["files"]["labels.json"].update(sha256="0" * 64))
    refused(bundle_dir, "labels.json", "sha256 does not match")
    relist(bundle_dir, "labels.json")
    edit_manifest(bundle_dir, lambda m: m["files"]["labels.json"].update(bytes=1))
    refused(bundle_dir, "labels.json", "truncated or altered")


def test_refuses_object_npy_even_with_matching_hash(bundle_dir: Path) -> None:
    rel = "graph/evil.npy"
    np.save(bundle_dir / rel, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    relist(bundle_dir, rel)
    refused(bundle_dir, rel, "need unpickling", verify=False)


@pytest.mark.parametrize("rel", ["weights.pkl", "model.pt", "state.pth"])
def test_refuses_pickle_files(bundle_dir: Path, rel: str) -> None:
    (bundle_dir / rel).write_bytes(b"\x80\x04N.")
    relist(bundle_dir, rel)
    refused(bundle_dir, rel, "need unpickling")


def test_refuses_malformed_npy_header(bundle_dir: Path) -> None:
    path = bundle_dir / GRAPH_INDPTR
    data = path.read_bytes()
    header_end = data.index(b"\n") + 1  # version 1: magic, 2 length bytes, header text, "\n"
    evil = b"{'descr': __import__('os').getcwd()}".ljust(header_end - 11) + b"\n"
    path.write_bytes(data[:10] + evil + data[header_end:])
    relist(bundle_dir, GRAPH_INDPTR)
    refused(bundle_dir, GRAPH_INDPTR, "malformed .npy header")


def test_refuses_npy_whose_data_is_shorter_than_its_header_says(bundle_dir: Path) -> None:
    path = bundle_dir / GRAPH_INDPTR
    path.write_bytes(path.read_bytes()[:-8])
    relist(bundle_dir, GRAPH_INDPTR)
    refused(bundle_dir, GRAPH_INDPTR, "header promises 40")


@pytest.mark.parametrize("rel", ["../outside.json", "/etc/hostname.json", "graph/../../x.json"])
def test_refuses_path_traversal(bundle_dir: Path, rel: str) -> None:
    (bundle_dir.parent / "outside.json").write_text("{}")
    edit_manifest(bundle_dir, lambda m: m["files"].update(
        {rel: {"sha256": "0" * 64, "bytes": 2, "kind": "json"}}))
    refused(bundle_dir, rel, "escapes the bundle directory")


def test_refuses_symlink_to_outside_with_matching_hash(bundle_dir: Path) -> None:
    secret = bundle_dir.parent / "secret.json"
    secret.write_text('{"token": 1}')
    (bundle_dir / "leak.json").symlink_to(secret)
    relist(bundle_dir, "leak.json")
    refused(bundle_dir, "leak.json", "escapes the bundle directory")


def test_refuses_kind_not_matching_suffix(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda m: m["files"]["labels.json"].update(kind="array"))
    refused(bundle_dir, MANIFEST, "kind must be 'json'")


def test_refuses_a_plain_file_that_is_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    refused(tmp_path / "x.txt", str(tmp_path / "x.txt"), "not a bundle directory")


# ---------------------------------------------------------------------------------------------
# Refusals on write


@pytest.mark.parametrize(("files", "file", "reason"), [
    ({"model.onnx": b"x", "bad.npy": np.array([object()])}, "bad.npy", "need unpickling"),
    ({"model.onnx": b"x", "w.pkl": b"x"}, "w.pkl", "need unpickling"),
    ({"model.onnx": b"x", "../up.json": b"{}"}, "../up.json", "escapes"),
    ({"model.onnx": b"x", "a/./b.json": b"{}"}, "a/./b.json", "normal form"),
    ({"model.onnx": b"x", "notes.txt": b"hi"}, "notes.txt", "unsupported file type"),
    ({"model.onnx": b"x", "x.json": b"{not json"}, "x.json", "invalid JSON"),
    ({"model.onnx": b"x", "x.npy": b"not an array"}, "x.npy", "malformed .npy header"),
    ({"model.onnx": np.zeros(3)}, "model.onnx", "only be written to .npy"),
    ({"model.onnx": b"x", "g.npy": np.zeros(1), "g.npy/h.npy": np.zeros(1)}, "g.npy",
     "both a file and a directory"),
])
def test_write_refuses_bad_files(tmp_path: Path, files: dict, file: str, reason: str) -> None:
    with pytest.raises(BundleError) as info:
        write_bundle(tmp_path / "b", base_manifest(), files)
    assert (info.value.file, reason in info.value.reason) == (file, True)
    assert siblings(tmp_path / "b") == []  # nothing left behind


def test_write_refuses_bad_manifest(tmp_path: Path) -> None:
    manifest = base_manifest()
    manifest["metrics"]["loss"] = float("nan")
    with pytest.raises(BundleError, match="strict JSON"):
        write_bundle(tmp_path / "b", manifest, {"model.onnx": b"x"})
    manifest = base_manifest()
    del manifest["graph"]["num_features"]
    with pytest.raises(BundleError, match="'num_features'"):
        write_bundle(tmp_path / "b", manifest, {"model.onnx": b"x"})
    with pytest.raises(BundleError, match="computed by write_bundle"):
        write_bundle(tmp_path / "b", {**base_manifest(), "files": {}}, {"model.onnx": b"x"})
    assert siblings(tmp_path / "b") == []


def test_write_refuses_existing_target_unless_overwrite(bundle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(bundle_dir, base_manifest(), base_files())
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(BundleError, match="not a bundle directory"):
        write_bundle(precious, base_manifest(), base_files(), overwrite=True)
    assert (precious / "thesis.tex").read_text() == "years of work"


# ---------------------------------------------------------------------------------------------
# Atomic writes


class Boom(RuntimeError):
    """The injected failure, distinct from anything the bundle writer raises itself."""


def fail_on_call(monkeypatch, n: int) -> None:
    """Makes the n-th file write raise, after earlier files were written to the temporary dir."""
    real = bundle_writer._write_entry
    calls = {"n": 0}

    def write(target, rel, source):
        calls["n"] += 1
        if calls["n"] == n:
            raise Boom(rel)
        return real(target, rel, source)
    monkeypatch.setattr(bundle_writer, "_write_entry", write)


def test_failure_mid_write_leaves_no_bundle_and_no_leftovers(tmp_path: Path, monkeypatch) -> None:
    fail_on_call(monkeypatch, 3)
    with pytest.raises(Boom):
        write_bundle(tmp_path / "out" / "b", base_manifest(), base_files())
    assert siblings(tmp_path / "out" / "b") == []


def test_failure_mid_overwrite_keeps_the_old_bundle(bundle_dir: Path, monkeypatch) -> None:
    before = (bundle_dir / MANIFEST).read_text()
    manifest = base_manifest()
    manifest["model"]["version"] = 4
    fail_on_call(monkeypatch, 7)  # the manifest itself, the last write
    with pytest.raises(Boom):
        write_bundle(bundle_dir, manifest, base_files(), overwrite=True)
    assert (bundle_dir / MANIFEST).read_text() == before
    assert load_bundle(bundle_dir).version == 3
    assert siblings(bundle_dir) == ["b"]


def test_failed_final_rename_restores_the_old_bundle(bundle_dir: Path, monkeypatch) -> None:
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name.startswith(".b.tmp-"):
            raise OSError("disk unplugged")
        return real_rename(src, dst)
    monkeypatch.setattr(bundle_writer.os, "rename", rename)
    with pytest.raises(OSError, match="unplugged"):
        write_bundle(bundle_dir, base_manifest(), base_files(), overwrite=True)
    assert load_bundle(bundle_dir).version == 3
    assert siblings(bundle_dir) == ["b"]


def test_overwrite_replaces_the_bundle_and_cleans_up(bundle_dir: Path) -> None:
    manifest = base_manifest()
    manifest["model"]["version"] = 4
    write_bundle(bundle_dir, manifest, {"model.onnx": b"new"}, overwrite=True)
    b = load_bundle(bundle_dir)  # verify=True also proves no stale file of the old bundle stayed
    assert (b.version, sorted(b.files)) == (4, ["model.onnx"])
    assert siblings(bundle_dir) == ["b"]


def test_killed_writer_never_leaves_a_bundle_at_the_target(tmp_path: Path) -> None:
    out = tmp_path / "b"
    script = textwrap.dedent(f"""
        import os, numpy as np
        from qgnn.runtime.bundle import writer as bundle
        real = bundle._write_entry
        calls = []
        def write(target, rel, source):
            calls.append(rel)
            if len(calls) == 3:
                os._exit(9)  # the process dies mid-write: no exception handler runs
            real(target, rel, source)
        bundle._write_entry = write
        manifest = {json.dumps(base_manifest())}
        bundle.write_bundle({str(out)!r}, manifest,
                            {{"model.onnx": b"x", "a.npy": np.zeros(4), "b.npy": np.ones(4),
                              "c.json": b"{{}}"}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert not out.exists()
    assert all(name.startswith(".b.tmp-") for name in siblings(out))  # only a marked temp dir
    write_bundle(out, base_manifest(), {"model.onnx": b"x"})  # the leftover is in nobody's way
    assert load_bundle(out).name == "cora-gcn"


# ---------------------------------------------------------------------------------------------
# Single-file archives


def test_archive_round_trip_and_cleanup(bundle_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    archive = write_archive(bundle_dir, tmp_path / "model.qgnn")
    with tarfile.open(archive) as tar:
        assert tar.getnames()[0] == MANIFEST
    b = load_bundle(archive)
    assert b.source == archive and b.path.parent == tmp_path / "tmp"
    np.testing.assert_array_equal(b.array(GRAPH_INDPTR), [0, 2, 3, 4, 5])
    assert b.manifest == load_bundle(bundle_dir).manifest
    b.close()
    assert list((tmp_path / "tmp").iterdir()) == []


def _tar_with(tmp_path: Path, bundle_dir: Path, extra: tarfile.TarInfo,
              data: bytes | None = None) -> Path:
    archive = tmp_path / "evil.qgnn"
    with tarfile.open(archive, "w") as tar:
        for p in sorted(bundle_dir.rglob("*")):
            if p.is_file():
                tar.add(p, arcname=p.relative_to(bundle_dir).as_posix())
        tar.addfile(extra, io.BytesIO(data) if data is not None else None)
    return archive


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"{}"):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(("member", "reason"), [
    (_member("/tmp/abs.json"), "escapes"),
    (_member("../up.json"), "escapes"),
    (_member("link.json", tarfile.SYMTYPE, "/etc/passwd"), "link or special file"),
    (_member("hard.json", tarfile.LNKTYPE, "manifest.json"), "link or special file"),
    (_member("labels.json"), "appears twice"),
    (_member("extra.json"), "not listed in manifest.json"),
])
def test_archive_refuses_unsafe_members(bundle_dir: Path, tmp_path: Path, monkeypatch,
                                        member: tarfile.TarInfo, reason: str) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    archive = _tar_with(tmp_path, bundle_dir, member, b"{}" if member.isreg() else None)
    with pytest.raises(BundleError) as info:
        load_bundle(archive)
    assert reason in info.value.reason
    assert list((tmp_path / "tmp").iterdir()) == []  # extraction dir gone, nothing escaped it


def test_archive_refuses_compressed_or_garbage(tmp_path: Path) -> None:
    (tmp_path / "x.qgnn").write_bytes(b"\x1f\x8b" + os.urandom(600))
    with pytest.raises(BundleError, match="not an uncompressed tar"):
        load_bundle(tmp_path / "x.qgnn")


# ---------------------------------------------------------------------------------------------
# Boundaries and CLI


def test_runtime_bundle_never_imports_torch_training_or_exporter() -> None:
    code = ("import sys, qgnn.runtime.bundle.reader, qgnn.runtime.bundle.writer, "
            "qgnn.runtime.cli_inspect; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', "
            "'qgnn.training', 'qgnn.exporter', 'onnx.'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _inspect(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    add_inspect_parser(parser.add_subparsers())
    args = parser.parse_args(["inspect", *argv])
    assert args.func(args) == 0


def test_inspect_prints_manifest_and_json(bundle_dir: Path, capsys, monkeypatch) -> None:
    # This bundle's model.onnx is a placeholder, which the load check refuses (its own tests
    # are in tests/runtime/test_load_check.py); here only the listing is under test.
    monkeypatch.setattr(cli_inspect, "load_check", lambda bundle, run: None)
    _inspect([str(bundle_dir)])
    text = capsys.readouterr().out
    assert "cora-gcn v3  task=node  type=gcn  file=model.onnx" in text
    assert "probabilities float32 [batch, 3]" in text
    assert "8-bit degree-quant, 6 sites" in text
    assert "test_accuracy=0.8125" in text
    assert "graph/indptr.npy  array  168 B" in text
    if kernels.available():
        assert f"kernels   isa={kernels.default_level()}  supported=baseline" in text
    _inspect([str(bundle_dir), "--json"])
    assert json.loads(capsys.readouterr().out) == json.loads((bundle_dir / MANIFEST).read_text())


def test_inspect_reports_a_corrupt_bundle(bundle_dir: Path) -> None:
    (bundle_dir / "labels.json").write_text('{"classes": ["x", "y", "z"]}')
    with pytest.raises(BundleError, match=r"labels.json: .*truncated"):
        _inspect([str(bundle_dir)])


@pytest.mark.slow
def test_verifying_a_100mb_bundle_is_fast(tmp_path: Path) -> None:
    features = np.random.default_rng(0).integers(0, 255, (100_000, 1000), dtype=np.uint8)
    path = write_bundle(tmp_path / "big", base_manifest(),
                        {"model.onnx": b"x", GRAPH_FEATURES: features})
    start = time.perf_counter()
    b = load_bundle(path)
    elapsed = time.perf_counter() - start
    assert b.array(GRAPH_FEATURES).nbytes == 100_000_000
    print(f"verified 100 MB in {elapsed:.3f} s")
    assert elapsed < 2.0
