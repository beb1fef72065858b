"""Which files a dataset spec reads, with their sha256: recorded at training, checked at export.

Export rebuilds the served graph from the dataset; a file that moved or changed since training
would give a bundle whose node ids or splits silently differ from the trained model's, so the
check names the file instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from qgnn.graph.datasets import dataset_files


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(spec: str) -> list[dict[str, Any]]:
    """``[{path, sha256, bytes}]`` of every file ``spec`` reads (empty for built-in sets)."""
    out = []
    for path in dataset_files(spec):
        if not path.is_file():
            raise ValueError(f"dataset {spec!r}: {path} is not a file")
        out.append({"path": str(path), "sha256": sha256_file(path),
                    "bytes": path.stat().st_size})
    return out


def verify(spec: str, recorded: list[dict[str, Any]], *, where: str = "training") -> None:
    """Raise ValueError unless ``spec`` reads files with the ``recorded`` contents, in order
    (paths may differ: a dataset moved elsewhere and given by ``--dataset`` is fine)."""
    current = dataset_files(spec)
    if len(current) != len(recorded):
        raise ValueError(f"dataset {spec!r} reads {len(current)} files, the run recorded "
                         f"{len(recorded)} at {where}: "
                         f"{[r.get('path') for r in recorded]}")
    for path, entry in zip(current, recorded, strict=True):
        if not path.is_file():
            raise ValueError(f"dataset file {path} not found (recorded at {where} as "
                             f"{entry.get('path')}); pass the dataset's new location with "
                             f"--dataset")
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            raise ValueError(f"dataset file {path}: sha256 {digest[:12]}... differs from "
                             f"{str(entry.get('sha256'))[:12]}... recorded at {where} "
                             f"({entry.get('path')}); the file changed since the run was "
                             f"trained")
