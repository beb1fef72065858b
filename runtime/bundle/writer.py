"""Writing bundles (the exporter's side): :func:`write_bundle` builds a bundle directory
atomically (temporary sibling, fsync, rename) and :func:`write_archive` packs one into a
``.qgnn`` file."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from qgnn.runtime.bundle.layout import (
    ARCHIVE_SUFFIX,
    COPY_CHUNK,
    KIND_BY_SUFFIX,
    MANIFEST,
    check_npy_header,
    check_relative_path,
    json_bytes,
    parse_json_file,
    sha256_file,
)
from qgnn.runtime.bundle.manifest import SCHEMA_VERSION, check_manifest
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.errors import BundleError

from qgnn import __version__

FileSource = bytes | bytearray | memoryview | np.ndarray | Path | dict | list


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_entry(target: Path, rel: str, source: FileSource) -> None:
    """Writes one bundle file and fsyncs it."""
    suffix = PurePosixPath(rel).suffix.lower()
    if isinstance(source, np.ndarray) and suffix != ".npy":
        raise BundleError(rel, "numpy arrays can only be written to .npy files")
    if isinstance(source, np.ndarray) and source.dtype.hasobject:
        raise BundleError(rel, f"array of dtype {source.dtype} holds Python objects, which need "
                               f"unpickling; store numeric arrays only")
    if isinstance(source, dict | list) and suffix != ".json":
        raise BundleError(rel, "dicts and lists can only be written to .json files")
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("xb") as out:
        if isinstance(source, np.ndarray):
            np.save(out, source, allow_pickle=False)
        elif isinstance(source, dict | list):
            out.write(json_bytes(source, rel))
        elif isinstance(source, bytes | bytearray | memoryview):
            out.write(source)
        elif isinstance(source, Path):
            if not source.is_file():
                raise BundleError(rel, f"source {source} is not a regular file")
            with source.open("rb") as src:
                shutil.copyfileobj(src, out, COPY_CHUNK)
        else:
            raise BundleError(rel, f"unsupported source type {type(source).__name__}; give "
                                   f"bytes, a numpy array, a Path, or a dict/list for .json")
        out.flush()
        os.fsync(out.fileno())


def _check_written(path: Path, rel: str) -> dict:
    """The manifest entry of a written file, after checking its content is what its kind says."""
    kind = KIND_BY_SUFFIX[PurePosixPath(rel).suffix.lower()]
    if kind == "array":
        check_npy_header(path, rel)
    elif kind == "json":
        parse_json_file(path, rel)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size, "kind": kind}


def _is_bundle_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / MANIFEST).is_file()


def write_bundle(out_dir: str | Path, manifest: Mapping[str, Any],
                 files: Mapping[str, FileSource], *, overwrite: bool = False) -> Path:
    """Writes a bundle directory atomically and returns its path.

    ``manifest`` holds every field but ``files`` (computed here: size, SHA-256 and kind of each
    file); ``schema_version`` defaults to the current one, ``created`` to now (UTC) and
    ``versions['qgnn']`` to this qgnn's version. ``files`` maps relative paths to their content:
    bytes, a numpy array (``.npy``, saved without pickle), a Path to copy, or a dict/list
    (``.json``). Everything is built in a temporary sibling directory, fsynced and renamed into
    place, so ``out_dir`` is never a half-written bundle; with ``overwrite`` an existing bundle is
    renamed aside first and removed after the new one is in place.
    """
    out_dir = Path(out_dir)
    if out_dir.suffix == ARCHIVE_SUFFIX:
        raise BundleError(out_dir, f"write_bundle writes a directory; use write_archive for "
                                   f"{ARCHIVE_SUFFIX} files")
    if "files" in manifest:
        raise BundleError(MANIFEST, "'files' is computed by write_bundle; do not pass it")
    if (out_dir.exists() or out_dir.is_symlink()) and not overwrite:
        raise BundleError(out_dir, "already exists (pass overwrite=True to replace it)")
    if overwrite and out_dir.exists() and not _is_bundle_dir(out_dir):
        raise BundleError(out_dir, "exists and is not a bundle directory (no manifest.json); "
                                   "refusing to replace it")
    names = [check_relative_path(rel) for rel in files]
    parents = {str(parent) for rel in names for parent in PurePosixPath(rel).parents}
    if clashes := sorted(set(names) & parents):
        raise BundleError(clashes[0], "is both a file and a directory of other files")
    full = json.loads(json_bytes(dict(manifest), MANIFEST))
    full.setdefault("schema_version", SCHEMA_VERSION)
    full.setdefault("created", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    if isinstance(full.get("versions"), dict):
        full["versions"].setdefault("qgnn", __version__)
    placeholder = {"sha256": "0" * 64, "bytes": 0}
    check_manifest({**full, "files": {  # fail before writing gigabytes, not after
        rel: {**placeholder, "kind": KIND_BY_SUFFIX[PurePosixPath(rel).suffix.lower()]}
        for rel in names}})

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the bundle from a server's user
        entries = {}
        for rel in sorted(names):
            _write_entry(tmp / rel, rel, files[rel])
            entries[rel] = _check_written(tmp / rel, rel)
        full["files"] = entries
        check_manifest(full)
        _write_entry(tmp / MANIFEST, MANIFEST, json_bytes(full, MANIFEST))
        for directory in sorted({tmp / parent for rel in names
                                 for parent in PurePosixPath(rel).parents}, reverse=True):
            _fsync_dir(directory)  # deepest first, the bundle's own directory last
        _move_into_place(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Renames the finished temporary bundle onto ``out_dir`` (same filesystem, so atomic)."""
    aside = None
    if overwrite and out_dir.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rename(out_dir, aside / out_dir.name)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        if aside is not None:
            os.rename(aside / out_dir.name, out_dir)
            shutil.rmtree(aside, ignore_errors=True)
        raise
    _fsync_dir(out_dir.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def write_archive(bundle_dir: str | Path, archive: str | Path, *, overwrite: bool = False) -> Path:
    """Packs a verified bundle directory into a single ``.qgnn`` file (an uncompressed tar whose
    members are the bundle's relative paths, manifest first), atomically via a temporary sibling."""
    archive = Path(archive)
    if archive.suffix != ARCHIVE_SUFFIX:
        raise BundleError(archive, f"archive names end in {ARCHIVE_SUFFIX}")
    if archive.exists() and not overwrite:
        raise BundleError(archive, "already exists (pass overwrite=True to replace it)")
    bundle = load_bundle(bundle_dir, verify=True)
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{archive.name}.tmp-", dir=archive.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            os.fchmod(raw.fileno(), 0o644)
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for rel in [MANIFEST, *sorted(bundle.files)]:
                    info = tarfile.TarInfo(rel)
                    info.size = (bundle.path / rel).stat().st_size
                    info.mode = 0o644
                    with (bundle.path / rel).open("rb") as f:
                        tar.addfile(info, f)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, archive)
        _fsync_dir(archive.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return archive

