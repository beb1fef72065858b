"""One entry point from a dataset spec string (CLI ``--dataset``) to a Graph or LinkData.

Accepted specs (see :func:`list_datasets`): a built-in name (files in the repository's ``data/``,
or ``$QGNN_DATA_DIR``, or ``root=``), a path whose form picks the loader, ``interactions:<path>``,
or ``synthetic:<kind>?key=value&...`` for the generators in ``qgnn.graph.synth``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from qgnn.graph.container import Graph
from qgnn.graph.io.edgelist import load_edge_list
from qgnn.graph.io.interactions import load_interactions
from qgnn.graph.io.npz import load_npz
from qgnn.graph.io.ogb import find_csv, load_ogb_folder
from qgnn.graph.io.ogbl import is_ogbl_npz, load_ogbl_npz
from qgnn.graph.io.planetoid import load_planetoid
from qgnn.graph.links import LinkData

DATA_ENV = "QGNN_DATA_DIR"
REPO_DATA = Path(__file__).resolve().parent.parent / "data"

BUILTIN: dict[str, tuple[Callable[[Path], Graph | LinkData], str]] = {
    "cora": (lambda d: load_planetoid(d / "cora", "cora"),
             "Planetoid Cora: 2708 nodes, 1433 features, 7 classes, standard split"),
    "citeseer": (lambda d: load_planetoid(d / "citeseer", "citeseer"),
                 "Planetoid CiteSeer: 3327 nodes (15 without features), 3703 features, 6 classes"),
    "tolokers": (lambda d: load_npz(d / "tolokers" / "tolokers.npz"),
                 "Tolokers: 11758 nodes, 1,038,000 directed edges, 10 features, 2 classes, "
                 "10 fixed splits"),
    "ogbl-ddi": (lambda d: load_ogbl_npz(d / "ogbl-ddi" / "ogbl-ddi.npz"),
                 "OGB ogbl-ddi: 4267 drugs, 1,067,911 training interactions, fixed validation "
                 "and test negatives, Hits@20 (link task)"),
}
SYNTHETIC = {"powerlaw": "powerlaw_communities", "recommender": "bipartite_recommender"}
EDGE_LIST_SUFFIXES = (".csv", ".tsv", ".txt", ".edges", ".el")


def list_datasets() -> dict[str, str]:
    """Every accepted spec form -> one line of help."""
    forms = {name: desc for name, (_, desc) in BUILTIN.items()}
    forms.update({
        "<folder with ind.<name>.graph>": "Planetoid raw files (ind.<name>.x/y/tx/ty/allx/ally/"
                                          "graph/test.index)",
        "<folder with raw/edge.csv[.gz]>": "OGB node-property folder (raw/ + split/<scheme>/)",
        "<file>.npz": "node_features/node_labels/edges[/..._masks], x/y/edge_index, or adj_* CSR",
        "<file>{.csv,.tsv,.txt,.edges,.el}[.gz]": "edge list: src dst [weight] per line",
        "interactions:<path>": "user item [rating [timestamp]] log -> bipartite LinkData "
                               "(docs/recommenders.md)",
        "interactions:<train>?test=<file>&split=user_time&sep=tab&columns=user=0,item=1&...":
            "options of qgnn.graph.io.interactions.load_interactions (test, val, split, "
            "val_fraction, test_fraction, seed, sep, header, columns, min_rating, weighted, "
            "duplicates, user_features, item_features)",
        **{f"synthetic:{kind}?key=value&...": f"qgnn.graph.synth.{fn}(**params)"
           for kind, fn in SYNTHETIC.items()},
    })
    return forms


def _help() -> str:
    return "accepted: " + "; ".join(list_datasets())


def data_dir(root: str | Path | None = None) -> Path:
    """Where built-in datasets live: ``root``, else ``$QGNN_DATA_DIR``, else the repo's data/."""
    if root is not None:
        return Path(root)
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else REPO_DATA


def _value(text: str) -> Any:
    """Query value: int, float, bool (true/false) or the string itself."""
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return float(text)
    except ValueError:
        return text


def _synthetic(spec: str) -> Graph | LinkData:
    body = spec.removeprefix("synthetic:")
    kind, _, query = body.partition("?")
    if kind not in SYNTHETIC:
        raise ValueError(f"dataset {spec!r}: unknown synthetic kind {kind!r}; known: "
                         f"{', '.join(SYNTHETIC)}")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"dataset {spec!r}: malformed query {query!r}; use "
                         f"key=value&key=value") from None
    try:
        module = importlib.import_module("qgnn.graph.synth")
    except ModuleNotFoundError as exc:
        if exc.name != "qgnn.graph.synth":
            raise
        raise ValueError(f"dataset {spec!r}: synthetic graphs need qgnn.graph.synth, which is "
                         f"not installed") from None
    fn = getattr(module, SYNTHETIC[kind])
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    for key, text in pairs:
        name = key if key in params or takes_any or f"num_{key}" not in params else f"num_{key}"
        if name in kwargs:
            raise ValueError(f"dataset {spec!r}: parameter {key!r} given twice")
        kwargs[name] = _value(text)
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as exc:
        accepted = ", ".join(p for p in params if params[p].kind is not params[p].VAR_KEYWORD)
        raise ValueError(f"dataset {spec!r}: {exc}; {SYNTHETIC[kind]} accepts {accepted}") \
            from None
    return fn(**kwargs)


def _path(spec: str) -> Graph | LinkData:
    path = Path(spec).expanduser()
    if path.is_dir():
        graphs = sorted(path.glob("ind.*.graph"))
        if len(graphs) == 1:
            return load_planetoid(path, graphs[0].name[len("ind."):-len(".graph")])
        if graphs:
            names = [g.name[len("ind."):-len(".graph")] for g in graphs]
            raise ValueError(f"dataset {spec!r}: folder holds several Planetoid sets {names}; "
                             f"call qgnn.graph.io.planetoid.load_planetoid(folder, name)")
        if find_csv(path / "raw", "edge") is not None:
            return load_ogb_folder(path)
        raise ValueError(f"dataset {spec!r}: folder has neither ind.<name>.graph nor "
                         f"raw/edge.csv[.gz]; {_help()}")
    if path.is_file():
        suffixes = [s.lower() for s in path.suffixes]
        if suffixes and suffixes[-1] == ".gz":
            suffixes.pop()
        last = suffixes[-1] if suffixes else ""
        if last == ".npz":
            return load_ogbl_npz(path) if is_ogbl_npz(path) else load_npz(path)
        if last in EDGE_LIST_SUFFIXES:
            return load_edge_list(path)
        raise ValueError(f"dataset {spec!r}: unrecognised file type {last or '(none)'!r}; "
                         f"{_help()}")
    raise ValueError(f"dataset {spec!r}: not a built-in name ({', '.join(BUILTIN)}) and no such "
                     f"file or folder; {_help()}")


def load_dataset(spec: str, *, root: str | Path | None = None) -> Graph | LinkData:
    """Resolve ``spec`` (see :func:`list_datasets`) and load it.

    Built-in names are case-insensitive and read from :func:`data_dir` ``(root)``; paths are
    relative to the working directory. Raises ValueError naming what is accepted otherwise.
    """
    key = spec.strip().lower()
    if key in BUILTIN:
        folder = data_dir(root)
        if not (folder / key).is_dir():
            raise ValueError(f"dataset {spec!r}: expected its files in {folder / key}; set "
                             f"{DATA_ENV} or pass root= to the folder holding {key}/")
        return BUILTIN[key][0](folder)
    if spec.startswith("synthetic:"):
        return _synthetic(spec)
    if spec.startswith("interactions:"):
        path, options = parse_interactions_spec(spec)
        return load_interactions(path, **options)
    return _path(spec)


INTERACTION_OPTIONS = {"test": Path, "val": Path, "split": str, "val_fraction": float,
                       "test_fraction": float, "seed": int, "sep": str, "header": bool,
                       "columns": str, "min_rating": float, "weighted": bool,
                       "duplicates": str, "user_features": Path, "item_features": Path}
INTERACTION_FILES = ("test", "val", "user_features", "item_features")


def parse_interactions_spec(spec: str) -> tuple[Path, dict[str, Any]]:
    """``interactions:<path>?key=value&...`` -> (path, load_interactions keyword arguments).

    Values are taken literally (no URL decoding, so a tab separator is spelled ``sep=tab``);
    ``columns`` keeps its ``role=column`` commas.
    """
    body = spec.removeprefix("interactions:")
    path, _, query = body.partition("?")
    if not path:
        raise ValueError(f"dataset {spec!r}: interactions: needs a file path")
    options: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, eq, text = part.partition("=")
        if not eq or key not in INTERACTION_OPTIONS:
            raise ValueError(f"dataset {spec!r}: option {part!r} not understood; known: "
                             f"{', '.join(INTERACTION_OPTIONS)} (as key=value)")
        if key in options:
            raise ValueError(f"dataset {spec!r}: option {key!r} given twice")
        kind = INTERACTION_OPTIONS[key]
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(f"dataset {spec!r}: {key} must be true or false, got {text!r}")
            options[key] = text.lower() == "true"
        elif kind is Path:
            options[key] = Path(text).expanduser()
        elif kind is str:
            options[key] = text
        else:
            try:
                options[key] = kind(text)
            except ValueError:
                raise ValueError(f"dataset {spec!r}: {key} must be {kind.__name__}, got "
                                 f"{text!r}") from None
    return Path(path).expanduser(), options


def interactions_spec(path: str | Path, **options: Any) -> str:
    """The spec string of :func:`parse_interactions_spec`, with absolute file paths (so a run
    records where its data is, whatever the working directory later)."""
    parts = []
    for key, value in options.items():
        if value is None:
            continue
        if key not in INTERACTION_OPTIONS:
            raise ValueError(f"interactions option {key!r} not understood; known: "
                             f"{', '.join(INTERACTION_OPTIONS)}")
        if key in INTERACTION_FILES:
            value = Path(value).expanduser().resolve()
        elif isinstance(value, bool):
            value = str(value).lower()
        elif key == "sep":
            value = {"\t": "tab", ",": "comma", " ": "space", ";": "semicolon",
                     "|": "pipe"}.get(str(value), str(value))
        text = str(value)
        if "&" in text or "?" in text:
            raise ValueError(f"interactions option {key}={text!r}: '&' and '?' cannot appear "
                             f"in a dataset spec value")
        parts.append(f"{key}={text}")
    head = f"interactions:{Path(path).expanduser().resolve()}"
    return head + ("?" + "&".join(parts) if parts else "")


def dataset_files(spec: str) -> list[Path]:
    """Absolute paths of the files a dataset spec reads (empty for built-in and synthetic
    sets), in a fixed order: what training fingerprints and export verifies."""
    if spec.strip().lower() in BUILTIN or spec.startswith("synthetic:"):
        return []
    if spec.startswith("interactions:"):
        path, options = parse_interactions_spec(spec)
        return [path.resolve()] + [Path(options[k]).resolve() for k in INTERACTION_FILES
                                   if k in options]
    path = Path(spec).expanduser().resolve()
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def load_node_graph(spec: str, purpose: str) -> Graph:
    """:func:`load_dataset` for tools that take node graphs only (partitioning, edge shards):
    link data is refused with a ValueError naming ``purpose``."""
    graph = load_dataset(spec)
    if not isinstance(graph, Graph):
        raise ValueError(f"--dataset: {purpose} needs a node graph, got link data")
    return graph
