"""One model version on the server (:class:`ModelEntry`), its states, and the options the
repository builds every entry with."""

from __future__ import annotations

import enum
import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgnn.runtime.batching import Batcher
from qgnn.runtime.bundle.manifest import Manifest
from qgnn.runtime.bundle.reader import Bundle
from qgnn.runtime.messages import ModelKey


class ModelState(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    FAILED = "FAILED"


@dataclass(frozen=True)
class RepositoryOptions:
    """How the repository builds each model: batching limits and backend options."""

    max_batch_size: int = 256
    max_queue_delay_s: float = 0.002
    max_queue_size: int = 1024
    threads: int = 2
    portable: bool = False
    drain_timeout_s: float = 20.0  # how long UnloadModel waits for in-flight calls
    isa: str | None = None  # the kernels' ISA level (None: the host's default)
    precompute: str = "off"  # node outputs materialised at load (--precompute)
    max_queue_s: float | None = None  # longest a request may queue (--max-queue-ms)


@dataclass(eq=False)
class ModelEntry:
    """One model version on the server, in any state."""

    name: str
    version: int
    source: Path
    state: ModelState
    managed: bool = False  # found by scanning PATH, so polling keeps it in sync with the disk
    signature: str | None = None  # of the files it was loaded from
    failed_signature: str | None = None  # files a reload already failed on (not retried)
    error: str = ""
    manifest: Manifest | None = None
    bundle: Bundle | None = None
    backend: Any = None  # ModelBackend
    batcher: Batcher | None = None
    loaded_at: float = 0.0
    inflight: int = 0
    retired: bool = False
    closing: bool = False
    closed: threading.Event = field(default_factory=threading.Event)
    # what a front end derives from this version once and reads on every call (KServe's
    # signature and response templates); it goes away with the entry
    memo: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def key(self) -> ModelKey:
        """Built once: every answer names the version that gave it (name and version never
        change)."""
        return ModelKey(self.name, self.version)

    @functools.cached_property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def release_resources(self) -> None:
        """Stops the batcher (after its queue drains) and closes backend and bundle."""
        try:
            if self.batcher is not None:
                self.batcher.close(drain=True)
            if self.backend is not None:
                self.backend.close()
        finally:
            if self.bundle is not None:
                self.bundle.close()
            self.closed.set()

