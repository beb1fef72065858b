"""Reading bundles (the server's side): :func:`load_bundle` checks the manifest and the files
(presence, size, location, array headers; with ``verify`` also hashes, unlisted files and JSON)
and returns a :class:`Bundle` whose arrays are memory-mapped read-only."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from qgnn.runtime.bundle.layout import (
    ARCHIVE_SUFFIX,
    COPY_CHUNK,
    MANIFEST,
    check_npy_header,
    check_relative_path,
    json_bytes,
    parse_json_file,
    sha256_file,
)
from qgnn.runtime.bundle.manifest import Manifest, NamedByManifest, parse_manifest
from qgnn.runtime.errors import BundleError

_MAX_MANIFEST_BYTES = 16 * 2**20


class Bundle(NamedByManifest):
    """A loaded bundle: its manifest and read-only access to its files.

    Arrays come back memory-mapped read-only, so serving a large graph costs page cache, not heap.
    A bundle loaded from a ``.qgnn`` archive lives in a temporary directory that :meth:`close`
    (or garbage collection) removes; arrays already mapped stay valid.
    """

    def __init__(self, path: Path, manifest: Manifest, *, source: Path | None = None,
                 cleanup: Path | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.source = source or path
        self._arrays: dict[str, np.ndarray] = {}
        self._finalizer = (weakref.finalize(self, shutil.rmtree, cleanup, True)
                           if cleanup is not None else None)

    @property
    def files(self) -> Mapping[str, Mapping[str, Any]]:
        """The manifest's file table: relative path -> {sha256, bytes, kind}."""
        return self.manifest.files

    @property
    def task(self) -> str:
        return self.manifest.model.task

    def _entry(self, name: str, kind: str | None = None) -> tuple[str, Path]:
        if name not in self.files and kind == "array" and f"{name}.npy" in self.files:
            name = f"{name}.npy"
        entry = self.files.get(name)
        if entry is None:
            raise BundleError(name, f"is not a file of bundle {self.source} (it has: "
                                    f"{', '.join(sorted(self.files))})")
        if kind is not None and entry["kind"] != kind:
            raise BundleError(name, f"is a {entry['kind']} file, not {kind}")
        return name, self.path / name

    def array(self, name: str) -> np.ndarray:
        """A ``.npy`` file (``name`` with or without the suffix), memory-mapped read-only."""
        name, path = self._entry(name, "array")
        if name not in self._arrays:
            self._arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)
        return self._arrays[name]

    def read_bytes(self, name: str) -> bytes:
        """A listed file's content."""
        return self._entry(name)[1].read_bytes()

    def read_json(self, name: str) -> Any:
        """A listed ``.json`` file, parsed."""
        name, path = self._entry(name, "json")
        return parse_json_file(path, name)

    def model_path(self, name: str | None = None) -> Path:
        """Path of an ONNX file of the bundle; by default the main model (``model.file``)."""
        return self._entry(name or self.manifest.model.file, "onnx")[1]

    def manifest_json(self) -> str:
        """The manifest as canonical JSON text (sorted keys, as write_bundle stores it)."""
        return json_bytes(self.manifest.raw, MANIFEST).decode()

    def close(self) -> None:
        """Drops cached arrays and removes an archive's extraction directory."""
        self._arrays.clear()
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Bundle({self.name!r} v{self.version}, task={self.task!r}, path={self.source})"


def read_manifest(path: Path) -> Manifest:
    """Reads ``path/manifest.json``, checks its structure and returns it typed."""
    manifest_path = path / MANIFEST
    if manifest_path.is_symlink() or not manifest_path.is_file():
        raise BundleError(MANIFEST, f"missing from {path} (not a qgnn bundle?)")
    if manifest_path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise BundleError(MANIFEST, f"larger than {_MAX_MANIFEST_BYTES} bytes")
    return parse_manifest(parse_json_file(manifest_path, MANIFEST))


def _walk(root: Path, rel: PurePosixPath | None = None) -> Iterator[str]:
    """Every regular file under ``root`` (relative POSIX paths); refuses links and special files."""
    rel = rel or PurePosixPath()
    with os.scandir(root / rel) as entries:
        for entry in entries:
            child = rel / entry.name
            if entry.is_symlink():
                raise BundleError(child.as_posix(), "is a symbolic link; bundles hold regular "
                                                    "files only")
            if entry.is_dir():
                yield from _walk(root, child)
            elif entry.is_file():
                yield child.as_posix()
            else:
                raise BundleError(child.as_posix(), "is not a regular file")


def verify_files(path: Path, manifest: Manifest, *, content: bool = True) -> None:
    """Checks the files against the manifest.

    Always: each listed file exists inside the bundle as a regular file of the listed size, and
    each array's header is safe and consistent. With ``content``: no unlisted files, SHA-256 of
    every file, and JSON files parse.
    """
    root = path.resolve()
    files = manifest.files
    for rel, entry in files.items():
        full = path / rel
        if not os.path.realpath(full).startswith(str(root) + os.sep):
            raise BundleError(rel, "path escapes the bundle directory (through a link)")
        if not full.exists() and not full.is_symlink():
            raise BundleError(rel, "listed in manifest.json but missing")
        if full.is_symlink():
            raise BundleError(rel, "is a symbolic link; bundles hold regular files only")
        if not full.is_file():
            raise BundleError(rel, "is not a regular file")
        size = full.stat().st_size
        if size != entry["bytes"]:
            raise BundleError(rel, f"is {size} bytes but manifest.json says {entry['bytes']} "
                                   f"(truncated or altered)")
        if entry["kind"] == "array":
            check_npy_header(full, rel)
    if not content:
        return
    for rel in _walk(path):
        if rel != MANIFEST and rel not in files:
            raise BundleError(rel, "is not listed in manifest.json (unexpected extra file)")
    for rel, entry in files.items():
        if sha256_file(path / rel) != entry["sha256"]:
            raise BundleError(rel, "sha256 does not match manifest.json (corrupt or tampered)")
        if entry["kind"] == "json":
            parse_json_file(path / rel, rel)


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Opens a bundle directory or ``.qgnn`` archive.

    The manifest's structure, every listed file's presence, size and location, and array headers
    are always checked; ``verify`` (default) adds SHA-256 of every file, a scan for unlisted files
    and JSON parsing, the only checks whose cost grows with the bundle's size. Raises BundleError
    naming the offending file and the reason.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ARCHIVE_SUFFIX:
        return _load_archive(path, verify=verify)
    if not path.is_dir():
        raise BundleError(path, f"not a bundle directory or {ARCHIVE_SUFFIX} archive")
    manifest = read_manifest(path)
    verify_files(path, manifest, content=verify)
    return Bundle(path, manifest)


def _extract_archive(archive: Path, dest: Path) -> None:
    """Extracts a .qgnn archive member by member, refusing links, special files, unsafe or
    duplicate names; only regular files are written."""
    seen: set[str] = set()
    try:
        tar = tarfile.open(archive, mode="r:")  # noqa: SIM115 (closed by the with below)
    except tarfile.TarError as exc:
        raise BundleError(archive, f"not an uncompressed tar archive: {exc}") from None
    with tar:
        try:
            for member in tar:
                if member.isdir():
                    continue
                name = member.name
                if not member.isreg():
                    raise BundleError(name, "archive member is a link or special file; only "
                                            "regular files are allowed")
                if name != MANIFEST:
                    check_relative_path(name)
                if name in seen:
                    raise BundleError(name, "appears twice in the archive")
                seen.add(name)
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, target.open("xb") as out:  # type: ignore
                    shutil.copyfileobj(src, out, COPY_CHUNK)
        except (tarfile.TarError, EOFError) as exc:
            raise BundleError(archive, f"damaged archive: {exc}") from None
        except OSError as exc:
            raise BundleError(archive, f"cannot be extracted: {exc}") from None


def _load_archive(archive: Path, *, verify: bool) -> Bundle:
    dest = Path(tempfile.mkdtemp(prefix="qgnn-bundle-"))
    try:
        _extract_archive(archive, dest)
        manifest = read_manifest(dest)
        verify_files(dest, manifest, content=verify)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return Bundle(dest, manifest, source=archive, cleanup=dest)

