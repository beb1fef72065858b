"""The model bundle: a verified directory (or ``.qgnn`` tar archive) an exported model ships in.

A bundle holds ``manifest.json`` plus the files it lists (ONNX models, ``.npy`` arrays, JSON), each
with its size and SHA-256, so a server can refuse anything truncated, altered, unlisted or needing
unpickling before it serves a byte of it. Arrays are plain ``.npy`` so the server memory-maps them.
The exporter writes bundles with :func:`write_bundle`; the server reads them with
:func:`load_bundle`. Torch-free: this module is part of ``qgnn.runtime``. Format reference:
docs/bundle-format.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tarfile
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from qgnn.runtime.errors import BundleError

from qgnn import __version__

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ARCHIVE_SUFFIX = ".qgnn"

# Conventional names inside a bundle, shared by the exporter (writer) and the server (reader).
MODEL_FILE = "model.onnx"
MODEL_FORMAT = "qgnn-onnx"  # manifest model.format of bundles `qgnn export` writes
GRAPH_INDPTR = "graph/indptr.npy"  # int64 (N + 1,), CSR row pointers (manifest graph.adjacency)
GRAPH_INDICES = "graph/indices.npy"  # int64 or int32 (E,), the other endpoint of each edge
GRAPH_IN_DEGREE = "graph/in_degree.npy"  # int64 (N,), full-graph in-degree
GRAPH_LABELS = "graph/labels.npy"  # int64 (N,), -1 = unlabelled (node task)
GRAPH_MASK = "graph/{split}_mask.npy"  # bool (N,), the training run's split (node task)
GRAPH_FEATURES = "graph/features.npy"  # float32 (N, F), or uint8 (N, F) for INT8 models
GRAPH_FEATURE_SCALE = "graph/feature_scale.npy"  # float32 () or (F,), uint8 features only
GRAPH_FEATURE_ZERO_POINT = "graph/feature_zero_point.npy"  # uint8 () or (F,), likewise
EMBEDDINGS = "embeddings/values.npy"  # int8 (N, D), precomputed final node embeddings
EMBEDDING_SCALES = "embeddings/scales.npy"  # float32 (N,), per-node dequantisation scale

KIND_BY_SUFFIX = {".onnx": "onnx", ".npy": "array", ".json": "json"}
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib", ".npz"})
TASKS = ("node", "link")
DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MODEL_NAME_PATTERN = _NAME_RE  # what a model name may be; requests are checked against it too
_PART_RE = re.compile(r"[A-Za-z0-9._-]{1,255}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_MAX_MANIFEST_BYTES = 16 * 2**20
_CHUNK = 2**20
_REQUIRED_TOP = ("schema_version", "created", "model", "quantisation", "metrics", "graph",
                 "versions", "files")

FileSource = bytes | bytearray | memoryview | np.ndarray | Path | dict | list


# ---------------------------------------------------------------------------------------------
# Manifest and path validation (shared by writing and loading)


def check_relative_path(rel: object) -> str:
    """A listed file name, refused unless it is a plain relative POSIX path inside the bundle."""
    if not isinstance(rel, str) or not rel:
        raise BundleError(repr(rel), "file names must be non-empty strings")
    if rel.startswith("/") or "\\" in rel or ".." in PurePosixPath(rel).parts:
        raise BundleError(rel, "path escapes the bundle directory")
    if PurePosixPath(rel).as_posix() != rel or any(p == "." for p in rel.split("/")):
        raise BundleError(rel, "path is not in normal form (no '.', '//' or trailing '/')")
    if not all(_PART_RE.fullmatch(p) for p in rel.split("/")):
        raise BundleError(rel, "path has characters outside A-Z a-z 0-9 . _ - /")
    if rel == MANIFEST:
        raise BundleError(rel, "the manifest cannot list itself")
    suffix = PurePosixPath(rel).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise BundleError(rel, f"{suffix} files need unpickling and are never allowed in a bundle")
    if suffix not in KIND_BY_SUFFIX:
        raise BundleError(rel, f"unsupported file type {suffix or '(none)'!r}; a bundle holds "
                               f"{', '.join(KIND_BY_SUFFIX)} files")
    return rel


def _field(obj: Mapping, key: str, where: str) -> Any:
    if key not in obj:
        raise BundleError(MANIFEST, f"missing required field {where}{key!r}")
    return obj[key]


def _typed(value: Any, types: type | tuple[type, ...], name: str, what: str) -> Any:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise BundleError(MANIFEST, f"{name} must be {what}, got {value!r}")
    if not isinstance(value, types):
        raise BundleError(MANIFEST, f"{name} must be {what}, got {value!r}")
    return value


def _count(value: Any, name: str, minimum: int = 0) -> int:
    _typed(value, int, name, f"an integer >= {minimum}")
    if value < minimum:
        raise BundleError(MANIFEST, f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_tensor_specs(specs: Any, name: str) -> None:
    _typed(specs, list, name, "a list of tensor specs")
    if not specs:
        raise BundleError(MANIFEST, f"{name} must list at least one tensor")
    for i, spec in enumerate(specs):
        where = f"{name}[{i}]"
        _typed(spec, dict, where, "an object {name, dtype, shape}")
        tname = _typed(_field(spec, "name", f"{where}."), str, f"{where}.name", "a string")
        if not tname:
            raise BundleError(MANIFEST, f"{where}.name must not be empty")
        dtype = _field(spec, "dtype", f"{where}.")
        if dtype not in DTYPES:
            raise BundleError(MANIFEST, f"{where}.dtype must be one of {DTYPES}, got {dtype!r}")
        shape = _typed(_field(spec, "shape", f"{where}."), list, f"{where}.shape", "a list")
        for dim in shape:
            symbolic = isinstance(dim, str) and dim != ""
            fixed = isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0
            if not (symbolic or fixed):
                raise BundleError(MANIFEST, f"{where}.shape entries must be sizes >= 0 or "
                                            f"symbolic names, got {dim!r}")


def check_manifest(manifest: Any) -> dict:
    """Checks a manifest's structure (not the files); returns it. Raises BundleError naming the
    field and the offending value. Unknown extra fields are allowed (forward compatibility)."""
    _typed(manifest, dict, "manifest", "a JSON object")
    version = _field(manifest, "schema_version", "")
    _typed(version, int, "schema_version", "an integer")
    if version > SCHEMA_VERSION:
        raise BundleError(MANIFEST, f"schema_version {version} is newer than this qgnn "
                                    f"({__version__}) reads (up to {SCHEMA_VERSION}); upgrade qgnn")
    if version < 1:
        raise BundleError(MANIFEST, f"schema_version must be >= 1, got {version}")
    for key in _REQUIRED_TOP:
        _field(manifest, key, "")
    created = _typed(manifest["created"], str, "created", "an ISO 8601 time")
    try:
        datetime.fromisoformat(created)
    except ValueError:
        raise BundleError(MANIFEST, f"created must be an ISO 8601 time, got {created!r}") from None

    model = _typed(manifest["model"], dict, "model", "an object")
    name = _typed(_field(model, "name", "model."), str, "model.name", "a string")
    if not _NAME_RE.fullmatch(name):
        raise BundleError(MANIFEST, f"model.name must match {_NAME_RE.pattern}, got {name!r}")
    _count(_field(model, "version", "model."), "model.version", minimum=1)
    task = _field(model, "task", "model.")
    if task not in TASKS:
        raise BundleError(MANIFEST, f"model.task must be one of {TASKS}, got {task!r}")
    mtype = _typed(_field(model, "type", "model."), str, "model.type", "a string")
    if not mtype:
        raise BundleError(MANIFEST, "model.type must not be empty")
    _check_tensor_specs(_field(model, "inputs", "model."), "model.inputs")
    _check_tensor_specs(_field(model, "outputs", "model."), "model.outputs")
    model_file = _typed(_field(model, "file", "model."), str, "model.file", "a file name")

    quant = _typed(manifest["quantisation"], dict, "quantisation", "an object")
    bits = _count(_field(quant, "bits", "quantisation."), "quantisation.bits", minimum=1)
    if bits > 32:
        raise BundleError(MANIFEST, f"quantisation.bits must be <= 32, got {bits}")
    _typed(_field(quant, "method", "quantisation."), str, "quantisation.method", "a string")
    _count(_field(quant, "num_sites", "quantisation."), "quantisation.num_sites")

    metrics = _typed(manifest["metrics"], dict, "metrics", "an object of name -> number")
    for key, value in metrics.items():
        _typed(value, (int, float), f"metrics.{key}", "a finite number")
        if not math.isfinite(value):
            raise BundleError(MANIFEST, f"metrics.{key} must be a finite number, got {value!r}")

    graph = _typed(manifest["graph"], dict, "graph", "an object")
    for key in ("num_nodes", "num_edges", "num_features"):
        _count(_field(graph, key, "graph."), f"graph.{key}")

    versions = _typed(manifest["versions"], dict, "versions", "an object of name -> version")
    for key, value in versions.items():
        _typed(value, str, f"versions.{key}", "a version string")

    files = _typed(manifest["files"], dict, "files", "an object of path -> entry")
    for rel, entry in files.items():
        check_relative_path(rel)
        _typed(entry, dict, f"files[{rel!r}]", "an object {sha256, bytes, kind}")
        sha = _field(entry, "sha256", f"files[{rel!r}].")
        if not (isinstance(sha, str) and _SHA_RE.fullmatch(sha)):
            raise BundleError(MANIFEST, f"files[{rel!r}].sha256 must be 64 lowercase hex digits, "
                                        f"got {sha!r}")
        _count(_field(entry, "bytes", f"files[{rel!r}]."), f"files[{rel!r}].bytes")
        kind = _field(entry, "kind", f"files[{rel!r}].")
        expected = KIND_BY_SUFFIX[PurePosixPath(rel).suffix.lower()]
        if kind != expected:
            raise BundleError(MANIFEST, f"files[{rel!r}].kind must be {expected!r} for its "
                                        f"suffix, got {kind!r}")
    if files.get(model_file, {}).get("kind") != "onnx":
        raise BundleError(MANIFEST, f"model.file {model_file!r} must be an onnx file listed in "
                                    f"files")
    return manifest


def check_npy_header(path: Path, rel: str) -> tuple[np.dtype, tuple[int, ...]]:
    """Reads a .npy header without unpickling anything; refuses object dtypes and sizes that do
    not match the header. Returns (dtype, shape)."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            major, _ = np.lib.format.read_magic(f)
            if major == 1:
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif major in (2, 3):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {major}")
            offset = f.tell()
    except (ValueError, SyntaxError, EOFError, OSError) as exc:
        raise BundleError(rel, f"malformed .npy header: {exc}") from None
    del fortran
    if dtype.hasobject:
        raise BundleError(rel, f"array of dtype {dtype} holds Python objects, which need "
                               f"unpickling; bundles never allow them")
    data = math.prod(shape) * dtype.itemsize
    if size - offset != data:
        raise BundleError(rel, f"array data is {size - offset} bytes but its header promises "
                               f"{data} ({dtype}, shape {shape}); truncated or corrupt")
    return dtype, tuple(shape)


def sha256_file(path: Path) -> str:
    """Streamed SHA-256 of a file (hex)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ---------------------------------------------------------------------------------------------
# Writing


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
            out.write(_json_bytes(source, rel))
        elif isinstance(source, bytes | bytearray | memoryview):
            out.write(source)
        elif isinstance(source, Path):
            if not source.is_file():
                raise BundleError(rel, f"source {source} is not a regular file")
            with source.open("rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
        else:
            raise BundleError(rel, f"unsupported source type {type(source).__name__}; give "
                                   f"bytes, a numpy array, a Path, or a dict/list for .json")
        out.flush()
        os.fsync(out.fileno())


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers, for json.dumps (which refuses them)."""
    if isinstance(value, np.bool_ | np.integer | np.floating):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _json_bytes(obj: Any, rel: str) -> bytes:
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=_plain)
        return (text + "\n").encode()
    except (TypeError, ValueError) as exc:
        raise BundleError(rel, f"not serialisable as strict JSON: {exc}") from None


def _check_written(path: Path, rel: str) -> dict:
    """The manifest entry of a written file, after checking its content is what its kind says."""
    kind = KIND_BY_SUFFIX[PurePosixPath(rel).suffix.lower()]
    if kind == "array":
        check_npy_header(path, rel)
    elif kind == "json":
        _parse_json_file(path, rel)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size, "kind": kind}


def _parse_json_file(path: Path, rel: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(rel, f"invalid JSON: {exc}") from None


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
    full = json.loads(_json_bytes(dict(manifest), MANIFEST))
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
        _write_entry(tmp / MANIFEST, MANIFEST, _json_bytes(full, MANIFEST))
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


# ---------------------------------------------------------------------------------------------
# Loading


class Bundle:
    """A loaded bundle: its manifest and read-only access to its files.

    Arrays come back memory-mapped read-only, so serving a large graph costs page cache, not heap.
    A bundle loaded from a ``.qgnn`` archive lives in a temporary directory that :meth:`close`
    (or garbage collection) removes; arrays already mapped stay valid.
    """

    def __init__(self, path: Path, manifest: dict, *, source: Path | None = None,
                 cleanup: Path | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self.source = source or path
        self._arrays: dict[str, np.ndarray] = {}
        self._finalizer = (weakref.finalize(self, shutil.rmtree, cleanup, True)
                           if cleanup is not None else None)

    @property
    def files(self) -> dict[str, dict]:
        """The manifest's file table: relative path -> {sha256, bytes, kind}."""
        return self.manifest["files"]

    @property
    def name(self) -> str:
        return self.manifest["model"]["name"]

    @property
    def version(self) -> int:
        return self.manifest["model"]["version"]

    @property
    def task(self) -> str:
        return self.manifest["model"]["task"]

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
        return _parse_json_file(path, name)

    def model_path(self, name: str | None = None) -> Path:
        """Path of an ONNX file of the bundle; by default the main model (``model.file``)."""
        return self._entry(name or self.manifest["model"]["file"], "onnx")[1]

    def manifest_json(self) -> str:
        """The manifest as canonical JSON text (sorted keys, as write_bundle stores it)."""
        return _json_bytes(self.manifest, MANIFEST).decode()

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


def read_manifest(path: Path) -> dict:
    """Reads and structurally checks ``path/manifest.json``."""
    manifest_path = path / MANIFEST
    if manifest_path.is_symlink() or not manifest_path.is_file():
        raise BundleError(MANIFEST, f"missing from {path} (not a qgnn bundle?)")
    if manifest_path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise BundleError(MANIFEST, f"larger than {_MAX_MANIFEST_BYTES} bytes")
    return check_manifest(_parse_json_file(manifest_path, MANIFEST))


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


def verify_files(path: Path, manifest: dict, *, content: bool = True) -> None:
    """Checks the files against the manifest.

    Always: each listed file exists inside the bundle as a regular file of the listed size, and
    each array's header is safe and consistent. With ``content``: no unlisted files, SHA-256 of
    every file, and JSON files parse.
    """
    root = path.resolve()
    files = manifest["files"]
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
            _parse_json_file(path / rel, rel)


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
                    shutil.copyfileobj(src, out, _CHUNK)
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


__all__ = [
    "ARCHIVE_SUFFIX", "EMBEDDINGS", "EMBEDDING_SCALES", "GRAPH_FEATURES", "GRAPH_FEATURE_SCALE",
    "GRAPH_FEATURE_ZERO_POINT", "GRAPH_INDICES", "GRAPH_INDPTR", "MANIFEST", "MODEL_FILE",
    "SCHEMA_VERSION", "Bundle", "BundleError", "check_manifest", "check_npy_header",
    "check_relative_path", "load_bundle", "read_manifest", "sha256_file",
    "verify_files", "write_archive", "write_bundle",
]
