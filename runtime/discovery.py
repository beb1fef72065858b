"""Finding bundles under PATH: a single bundle or ``<repo>/<model>/<version>/`` (or
``<version>.qgnn``), and a cheap signature per bundle so polling sees rewrites without hashing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from qgnn.runtime.bundle.layout import ARCHIVE_SUFFIX, MANIFEST
from qgnn.runtime.errors import BundleError


def is_bundle(path: Path) -> bool:
    """A bundle directory (has manifest.json) or a .qgnn archive."""
    if path.is_file():
        return path.suffix == ARCHIVE_SUFFIX
    return (path / MANIFEST).is_file()


def bundle_signature(path: Path) -> str:
    """A cheap fingerprint of a bundle's files (relative path, size, mtime, inode), so polling
    sees any rewrite, including a directory renamed into place, without hashing the content."""
    digest = hashlib.sha1(usedforsecurity=False)
    try:
        if path.is_file():
            st = path.stat()
            digest.update(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}".encode())
            return digest.hexdigest()
        st = path.stat()
        digest.update(f".:{st.st_ino}".encode())
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                st = os.lstat(full)
                rel = os.path.relpath(full, path)
                digest.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}\n".encode())
    except FileNotFoundError:
        return "missing"
    return digest.hexdigest()


def discover(root: Path) -> dict[Path, tuple[str, int] | None]:
    """The bundles under PATH: ``{PATH: None}`` for a single bundle, else every
    ``<root>/<model>/<version>`` (directory or ``<version>.qgnn``) with the (name, version) its
    path promises. Hidden entries (``.cora.tmp-*`` left by an interrupted write) are skipped."""
    if is_bundle(root):
        return {root: None}
    if not root.is_dir():
        raise ValueError(f"{root} is neither a model bundle (a directory with {MANIFEST}, or a "
                         f"{ARCHIVE_SUFFIX} archive) nor a model repository directory")
    found: dict[Path, tuple[str, int] | None] = {}
    for model_dir in sorted(root.iterdir()):
        if model_dir.name.startswith(".") or not model_dir.is_dir():
            continue
        for version_path in sorted(model_dir.iterdir()):
            stem = version_path.name.removesuffix(ARCHIVE_SUFFIX)
            if version_path.name.startswith(".") or not stem.isdigit() or int(stem) < 1:
                continue
            if version_path.is_dir() or version_path.suffix == ARCHIVE_SUFFIX:
                found[version_path] = (model_dir.name, int(stem))
    return found


def unreadable(path: Path, exc: OSError) -> BundleError:
    shown = str(path) if len(str(path)) <= 200 else str(path)[:197] + "..."
    return BundleError(shown, f"cannot be read ({exc.strerror or exc})")


