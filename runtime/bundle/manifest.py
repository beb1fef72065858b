"""The manifest schema: :func:`check_manifest` (structure, types and values; errors name the
field) and the typed :class:`Manifest` the reader parses a checked manifest into, once."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from qgnn.runtime.bundle.layout import KIND_BY_SUFFIX, MANIFEST, check_relative_path
from qgnn.runtime.errors import BundleError

from qgnn import __version__

SCHEMA_VERSION = 1
TASKS = ("node", "link")
DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MODEL_NAME_PATTERN = _NAME_RE  # what a model name may be; requests are checked against it too
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_REQUIRED_TOP = ("schema_version", "created", "model", "quantisation", "metrics", "graph",
                 "versions", "files")



class NamedByManifest:
    """``name`` and ``version`` read from ``self.manifest``: what the repository, the logs and
    the metrics call a bundle and each backend that serves one (one definition for all)."""

    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.model.name

    @property
    def version(self) -> int:
        return self.manifest.model.version

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



# ---------------------------------------------------------------------------------------------
# The typed manifest, parsed once from a checked manifest


@dataclass(frozen=True)
class TensorSpec:
    """One declared model input or output."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]  # sizes, or symbolic names for dynamic dimensions


@dataclass(frozen=True)
class ModelSection:
    """``model``: what the model is and which file holds it."""

    name: str
    version: int
    task: str  # 'node' or 'link'
    type: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    format: str | None  # which backend loads it (None: the default backend)
    num_layers: int | None
    input: Mapping[str, Any]  # the input encoding (dtype, scale...); empty when absent


@dataclass(frozen=True)
class QuantisationSection:
    """``quantisation``: bits, method, number of quantisation sites, and any extra fields."""

    bits: int
    method: str
    num_sites: int
    extra: Mapping[str, Any]  # fields beyond the three above

    @property
    def label(self) -> str:
        """'fp32' or 'int<bits>', as metrics and listings show it."""
        return "fp32" if self.bits >= 32 else f"int{self.bits}"


@dataclass(frozen=True)
class GraphSection:
    """``graph``: sizes of the shipped graph and how its adjacency is stored."""

    num_nodes: int
    num_edges: int
    num_features: int
    num_classes: int  # 0 for link prediction
    adjacency: str  # 'out' when absent; the graph reader checks it
    node_types: Mapping[str, Any] | None  # user/item typing of a recommender graph
    fields: Mapping[str, Any]  # the whole section, extras included


@dataclass(frozen=True)
class Manifest:
    """A bundle's ``manifest.json``, checked and typed. The required fields are attributes;
    the optional sections the runtime reads (``link``, ``sharding``, ``serving``) are mappings
    (empty when absent); anything else, including fields a newer exporter adds, stays in
    ``raw`` (the manifest as read; do not mutate it)."""

    schema_version: int
    created: str
    model: ModelSection
    quantisation: QuantisationSection
    graph: GraphSection
    metrics: Mapping[str, float]
    versions: Mapping[str, str]
    files: Mapping[str, Mapping[str, Any]]  # path -> {sha256, bytes, kind}
    link: Mapping[str, Any]
    sharding: Any  # as written (None: absent); the sharded backend checks it
    serving: Mapping[str, Any]
    raw: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> int:
        return self.model.version

    @property
    def task(self) -> str:
        return self.model.task


def _tensors(specs: list[dict]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(s["name"], s["dtype"], tuple(s["shape"])) for s in specs)


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(MANIFEST, f"{name} must be an object, got {value!r}")
    return value


def parse_manifest(manifest: Any) -> Manifest:
    """Checks a manifest (:func:`check_manifest`) and returns it typed."""
    m = check_manifest(manifest)
    model, quant, graph = m["model"], m["quantisation"], m["graph"]
    num_layers = model.get("num_layers")
    return Manifest(
        schema_version=m["schema_version"], created=m["created"],
        model=ModelSection(
            name=model["name"], version=model["version"], task=model["task"],
            type=model["type"], file=model["file"], inputs=_tensors(model["inputs"]),
            outputs=_tensors(model["outputs"]), format=model.get("format"),
            num_layers=None if num_layers is None else _count(num_layers, "model.num_layers"),
            input=_mapping(model.get("input", {}), "model.input")),
        quantisation=QuantisationSection(
            bits=quant["bits"], method=quant["method"], num_sites=quant["num_sites"],
            extra={k: v for k, v in quant.items() if k not in ("bits", "method", "num_sites")}),
        graph=GraphSection(
            num_nodes=graph["num_nodes"], num_edges=graph["num_edges"],
            num_features=graph["num_features"],
            num_classes=_count(graph.get("num_classes", 0), "graph.num_classes"),
            adjacency=graph.get("adjacency", "out"),
            node_types=(None if graph.get("node_types") is None
                        else _mapping(graph["node_types"], "graph.node_types")),
            fields=graph),
        metrics=m["metrics"], versions=m["versions"], files=m["files"],
        link=_mapping(m.get("link", {}), "link"),
        sharding=m.get("sharding"),
        serving=_mapping(m.get("serving", {}), "serving"),
        raw=m)
