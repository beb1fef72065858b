"""Reading the deployment files: YAML documents, nested lookups, repository-relative names."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def load_documents(path: Path) -> list[dict]:
    """Every non-empty YAML document of ``path``; ``ValueError`` naming the file for a non-map."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: document {i} is a {type(doc).__name__}, not a mapping")
    return docs


def dig(obj: Any, *keys: str | int, default: Any = None) -> Any:
    """``obj[k1][k2]...``, or ``default`` where a key is missing or a value is None."""
    for key in keys:
        if isinstance(obj, dict) and isinstance(key, str):
            obj = obj.get(key)
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return default
        if obj is None:
            return default
    return obj


def rel(path: Path) -> str:
    """``path`` relative to the repository root, for messages."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def host_path(container_path: str, mounts: Mapping[str, Path]) -> Path | None:
    """The host file behind ``container_path`` given bind ``mounts`` (container -> host)."""
    for target, source in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target):].lstrip("/")
    return None
