"""The model repository: which model versions are loaded, and swapping them safely.

``PATH`` is a single bundle (a directory with ``manifest.json`` or a ``.qgnn`` archive) or a
repository of bundles side by side, ``<repo>/<model>/<version>/`` (or ``<version>.qgnn``), whose
directory names must agree with the manifests. Each loaded version is a :class:`ModelEntry` with
its backend and its batcher.

Swaps are atomic: a reloaded bundle is loaded and verified next to the old one, then replaces it
in one step under the lock; requests hold a lease on the entry they started on, so in-flight
requests finish on the old version, which is closed once its last lease ends. A failed load never
replaces anything: the old version keeps serving, and the failure is logged and counted
(``qgnn_model_load_failures_total``). Polling (``--poll-interval-s``) rescans PATH and loads new
versions, reloads changed ones (a changed file size, mtime or inode) and unloads versions whose
directory stayed gone for two scans (a bundle being replaced by ``write_bundle`` is absent for an
instant, which must not unload it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from qgnn.runtime.backend import BackendOptions, ModelBackend
from qgnn.runtime.backend_loaders import resolve_loader
from qgnn.runtime.batch_runner import make_batch_runner
from qgnn.runtime.batching import Batcher
from qgnn.runtime.bundle.layout import ARCHIVE_SUFFIX, MANIFEST
from qgnn.runtime.bundle.reader import load_bundle, read_manifest
from qgnn.runtime.discovery import bundle_signature, discover, is_bundle, unreadable
from qgnn.runtime.errors import (
    AlreadyExistsError,
    BundleError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    ServingError,
)
from qgnn.runtime.load_check import open_checked
from qgnn.runtime.messages import ModelKey, ModelSelector
from qgnn.runtime.metrics import MetricsObserver, ServingMetrics
from qgnn.runtime.model_entry import ModelEntry, ModelState, RepositoryOptions
from qgnn.runtime.model_metrics import sync_model_metrics

log = logging.getLogger("qgnn.runtime.repository")

PrepareHook = Callable[[str, ModelBackend], None]
Listener = Callable[[str], None]


class ModelRepository:
    """Loaded model versions by name and version; loads, reloads, unloads and polls PATH."""

    def __init__(self, path: Path | None = None, *, options: RepositoryOptions | None = None,
                 metrics: ServingMetrics | None = None) -> None:
        self.root = Path(path) if path is not None else None
        self.options = options or RepositoryOptions()
        self.metrics = metrics
        self._models: dict[str, dict[int, ModelEntry]] = {}
        self._lock = threading.Lock()  # the state above and every entry's state/inflight
        self._admin = threading.RLock()  # one load/reload/unload/scan at a time
        self._name_locks: dict[str, threading.Lock] = {}
        self._listeners: list[Listener] = []
        self._prepare_hooks: list[PrepareHook] = []
        self._missing: dict[Path, int] = {}
        self._metric_labels: set[tuple[str, ...]] = set()
        self._poll_stop = threading.Event()
        self._poll_thread: threading.Thread | None = None

    # -- hooks -----------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Called with a model name after any of its versions changes state."""
        self._listeners.append(listener)

    def add_prepare_hook(self, hook: PrepareHook) -> None:
        """Called with (name, backend) just before a loaded version starts serving, under the
        name's lock (the data plane replays graph updates here)."""
        self._prepare_hooks.append(hook)

    def name_lock(self, name: str) -> threading.Lock:
        """The lock that orders graph updates of ``name`` with versions going live."""
        with self._lock:
            return self._name_locks.setdefault(name, threading.Lock())

    def _notify(self, name: str) -> None:
        self._sync_metrics()
        for listener in self._listeners:
            try:
                listener(name)
            except Exception:
                log.exception("model state listener failed")

    # -- selection and leases --------------------------------------------------------------------

    def _select(self, sel: ModelSelector, *, ready: bool = True) -> ModelEntry:
        if not sel.name:
            raise InvalidRequestError("model.name", sel.name, "a model name is required")
        if sel.version is not None and sel.version < 1:
            raise InvalidRequestError("model.version", sel.version,
                                      "versions are >= 1 (leave it unset for the newest)")
        versions = self._models.get(sel.name)
        if not versions:
            known = sorted(self._models)
            shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
            raise ModelNotFoundError(f"no model named {sel.name!r} is loaded (loaded: "
                                     f"{shown or 'none'})")
        if sel.version is None:
            serving = [v for v, e in versions.items() if e.state is ModelState.READY]
            if serving:
                return versions[max(serving)]
            entry = versions[max(versions)]
        else:
            entry = versions.get(sel.version)
            if entry is None:
                raise ModelNotFoundError(f"model {sel.name!r} has no version {sel.version} "
                                         f"(loaded: {', '.join(map(str, sorted(versions)))})")
        if ready and entry.state is not ModelState.READY:
            why = f": {entry.error}" if entry.error else ""
            raise ModelUnavailableError(f"model {entry.label} is {entry.state.value.lower()}"
                                        f"{why}; retry later")
        return entry

    def resolve(self, sel: ModelSelector) -> ModelEntry:
        """The READY entry that answers ``sel`` (newest when no version); NOT_FOUND or
        UNAVAILABLE otherwise."""
        with self._lock:
            return self._select(sel)

    def find(self, sel: ModelSelector) -> ModelEntry:
        """The entry for ``sel`` in any state (GetModel, ModelMetadata); NOT_FOUND otherwise."""
        with self._lock:
            return self._select(sel, ready=False)

    def lease(self, sel: ModelSelector) -> _Lease:
        """The entry for ``sel``, kept open (not closed by a swap or unload) until the block
        ends (``with repository.lease(sel) as entry``)."""
        return _Lease(self, sel)

    @contextlib.contextmanager
    def lease_all(self, name: str) -> Iterator[list[ModelEntry]]:
        """Every READY version of ``name`` (oldest first), leased."""
        with self._lock:
            entries = sorted((e for e in self._models.get(name, {}).values()
                              if e.state is ModelState.READY), key=lambda e: e.version)
            for entry in entries:
                entry.inflight += 1
        try:
            yield entries
        finally:
            for entry in entries:
                self._release(entry)

    def _release(self, entry: ModelEntry) -> None:
        with self._lock:
            entry.inflight -= 1
            close = entry.retired and entry.inflight == 0 and not entry.closing
            if close:
                entry.closing = True
        if close:
            self._close_async(entry)

    def entries(self, name: str | None = None) -> list[ModelEntry]:
        """Every entry (any state), sorted by name then version."""
        with self._lock:
            return sorted((e for n, versions in self._models.items() if name in (None, n)
                           for e in versions.values()), key=lambda e: (e.name, e.version))

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def knows(self, name: str) -> bool:
        return name in self._models

    def is_serving(self, name: str | None = None, version: int | None = None) -> bool:
        """Whether ``name`` (and ``version``; None: any) has a READY version; with no name,
        whether any model does."""
        with self._lock:
            return any(e.state is ModelState.READY for n, versions in self._models.items()
                       if name in (None, n) for v, e in versions.items()
                       if version in (None, v))

    # -- loading ---------------------------------------------------------------------------------

    def _open(self, path: Path, expect: tuple[str, int] | None) -> ModelEntry:
        """Verifies and loads a bundle into a READY (not yet published) entry."""
        started = time.monotonic()
        try:
            bundle = load_bundle(path, verify=True)
        except OSError as exc:
            raise unreadable(path, exc) from None
        backend = None
        try:
            if expect is not None and (bundle.name, bundle.version) != expect:
                raise BundleError(MANIFEST, f"says model {bundle.name!r} version "
                                            f"{bundle.version}, but the repository path {path} "
                                            f"is model {expect[0]!r} version {expect[1]}; "
                                            f"rename the directory or fix the manifest")
            loader = resolve_loader(bundle.manifest.model.format, bundle.task)
            observer = MetricsObserver(self.metrics, bundle.name)
            options = BackendOptions(self.options.threads, self.options.portable, observer,
                                     self.options.isa, self.options.precompute)
            backend = open_checked(bundle, lambda b: loader(b, options), observer)  # load_check
            if (backend.name, backend.version, backend.task) != (bundle.name, bundle.version,
                                                                 bundle.task):
                raise RuntimeError(f"backend reports {backend.name} v{backend.version} "
                                   f"({backend.task}) for bundle {bundle!r}")
        except BaseException:
            if backend is not None:
                backend.close()
            bundle.close()
            raise
        entry = ModelEntry(bundle.name, bundle.version, path, ModelState.READY,
                           manifest=bundle.manifest, bundle=bundle, backend=backend,
                           loaded_at=time.time())
        entry.batcher = Batcher(bundle.name, make_batch_runner(backend),
                                max_batch_size=self.options.max_batch_size,
                                max_queue_delay_s=self.options.max_queue_delay_s,
                                max_queue_size=self.options.max_queue_size, metrics=self.metrics,
                                max_queue_s=self.options.max_queue_s)
        if self.metrics is not None:
            self.metrics.model_load_duration.labels(bundle.name).observe(
                time.monotonic() - started)
        return entry

    def _publish(self, new: ModelEntry, replaces: ModelEntry | None = None) -> None:
        """Makes ``new`` serve, atomically replacing ``replaces`` and any entry with the same
        (name, version); the replaced entries drain and close in the background."""
        try:
            with self.name_lock(new.name):
                for hook in self._prepare_hooks:
                    hook(new.name, new.backend)
                with self._lock:
                    versions = self._models.setdefault(new.name, {})
                    old = [e for e in {versions.get(new.version), replaces} if e is not None
                           and e is not new]
                    versions[new.version] = new
                    if replaces is not None and replaces.key != new.key:
                        others = self._models.get(replaces.name, {})
                        if others.get(replaces.version) is replaces:
                            del others[replaces.version]
                            if not others:
                                del self._models[replaces.name]
        except BaseException:
            new.release_resources()
            raise
        for entry in old:
            self._retire(entry)
        log.info("model ready", extra={"model": new.name, "version": new.version,
                                       "path": str(new.source)})
        self._notify(new.name)
        if replaces is not None and replaces.name != new.name:
            self._notify(replaces.name)

    def _retire(self, entry: ModelEntry) -> None:
        with self._lock:
            entry.retired = True
            if entry.state is ModelState.READY:
                entry.state = ModelState.UNLOADING
            close = entry.inflight == 0 and not entry.closing
            if close:
                entry.closing = True
        if close:
            self._close_async(entry)

    def _close_async(self, entry: ModelEntry) -> None:
        threading.Thread(target=self._close, args=(entry,), name=f"qgnn-close-{entry.name}",
                         daemon=True).start()

    def _close(self, entry: ModelEntry) -> None:
        try:
            entry.release_resources()
        except Exception:
            log.exception("closing model %s failed", entry.label)
        removed = False
        with self._lock:
            versions = self._models.get(entry.name, {})
            if versions.get(entry.version) is entry:
                del versions[entry.version]
                removed = True
                if not versions:
                    del self._models[entry.name]
        if removed:
            self._notify(entry.name)

    def _failed(self, name: str, what: str, exc: BaseException) -> str:
        """Logs and counts a failed load; returns the message for the entry or the caller."""
        message = str(exc) if isinstance(exc, ServingError | ValueError | OSError) else repr(exc)
        if self.metrics is not None:
            self.metrics.model_load_failures.labels(name).inc()
        if isinstance(exc, ServingError | ValueError | OSError):
            log.error("%s failed: %s", what, message, extra={"model": name})
        else:
            log.exception("%s failed", what, extra={"model": name})
        return message

    def _placeholder(self, name: str, version: int, path: Path, managed: bool) -> ModelEntry:
        """A LOADING entry for a version not loaded before (health reports NOT_SERVING)."""
        entry = ModelEntry(name, version, path, ModelState.LOADING, managed=managed)
        with self._lock:
            self._models.setdefault(name, {})[version] = entry
        self._notify(name)
        return entry

    def _drop_placeholder(self, entry: ModelEntry, error: str | None) -> None:
        """A failed first load: keep it as FAILED (``error``) or remove it (None)."""
        with self._lock:
            versions = self._models.get(entry.name, {})
            if versions.get(entry.version) is entry:
                if error is None:
                    del versions[entry.version]
                    if not versions:
                        del self._models[entry.name]
                else:
                    entry.state = ModelState.FAILED
                    entry.error = error
        entry.closed.set()
        self._notify(entry.name)

    @staticmethod
    def _peek(path: Path) -> tuple[str, int] | None:
        """(name, version) from a bundle directory's manifest, without verifying files."""
        try:
            if path.is_dir():
                manifest = read_manifest(path)
                return manifest.model.name, manifest.model.version
        except OSError as exc:
            raise unreadable(path, exc) from None
        return None

    def load(self, path: str | Path, *, managed: bool = False,
             expect: tuple[str, int] | None = None) -> ModelEntry:
        """Loads a bundle as a new (name, version); ALREADY_EXISTS if it is loaded (use
        reload). A failure raises (the BundleError or backend error) and is counted; a managed
        load (from scanning PATH) leaves a FAILED entry behind for ListModels."""
        path = Path(path)
        with self._admin:
            key = expect
            if key is None:
                try:
                    key = self._peek(path)
                except BundleError as exc:
                    self._failed("", f"loading {path}", exc)
                    raise
            placeholder = None
            if key is not None:
                with self._lock:
                    existing = self._models.get(key[0], {}).get(key[1])
                if existing is not None and existing.state is not ModelState.FAILED:
                    raise AlreadyExistsError(f"model {key[0]} v{key[1]} is already loaded (from "
                                             f"{existing.source}); use ReloadModel")
                placeholder = self._placeholder(key[0], key[1], path, managed)
            try:
                entry = self._open(path, expect)
                entry.managed = managed
                entry.signature = bundle_signature(path)
                with self._lock:
                    existing = self._models.get(entry.name, {}).get(entry.version)
                if (existing is not None and existing is not placeholder
                        and existing.state is not ModelState.FAILED):
                    entry.release_resources()
                    raise AlreadyExistsError(f"model {entry.label} is already loaded (from "
                                             f"{existing.source}); use ReloadModel")
            except BaseException as exc:
                name = key[0] if key is not None else ""
                message = (str(exc) if isinstance(exc, AlreadyExistsError)
                           else self._failed(name, f"loading {path}", exc))
                if placeholder is not None:
                    failed = managed and not isinstance(exc, AlreadyExistsError)
                    self._drop_placeholder(placeholder, message if failed else None)
                    if failed:
                        placeholder.signature = bundle_signature(path)
                raise
            self._publish(entry, replaces=placeholder)
            return entry

    def reload(self, sel: ModelSelector) -> ModelEntry:
        """Re-reads a model version's bundle from its path and swaps it in; on failure the old
        version keeps serving and the error is raised (and counted)."""
        with self._admin:
            with self._lock:
                old = self._select(sel, ready=False)
            return self._reload(old)

    def _reload(self, old: ModelEntry) -> ModelEntry:
        signature = bundle_signature(old.source)
        expect = self._expected(old.source) if old.managed else None
        try:
            new = self._open(old.source, expect)
        except BaseException as exc:
            message = self._failed(old.name, f"reloading {old.label} from {old.source}", exc)
            with self._lock:
                old.failed_signature = signature
                if old.state is ModelState.FAILED:
                    old.error = message
                    old.signature = signature
            raise
        new.managed, new.signature = old.managed, signature
        self._publish(new, replaces=old)
        return new

    def _expected(self, path: Path) -> tuple[str, int] | None:
        if self.root is None or is_bundle(self.root):
            return None
        stem = path.name.removesuffix(ARCHIVE_SUFFIX)
        return path.parent.name, int(stem)

    def unload(self, sel: ModelSelector, *, wait: bool = True) -> list[ModelKey]:
        """Stops serving ``sel`` (every version when it has none); in-flight calls finish first
        (waited for up to drain_timeout_s when ``wait``)."""
        with self._admin:
            with self._lock:
                if sel.version is None:
                    self._select(ModelSelector(sel.name, None), ready=False)  # NOT_FOUND
                    entries = list(self._models.get(sel.name, {}).values())
                else:
                    entries = [self._select(sel, ready=False)]
            for entry in entries:
                if entry.backend is None:  # FAILED or LOADING placeholder: nothing to drain
                    with self._lock:
                        entry.retired = entry.closing = True
                    self._close(entry)
                else:
                    self._retire(entry)
            self._notify(sel.name)
            if wait:
                until = time.monotonic() + self.options.drain_timeout_s
                for entry in entries:
                    entry.closed.wait(max(until - time.monotonic(), 0.0))
            log.info("model unloaded", extra={"model": sel.name,
                                              "versions": [e.version for e in entries]})
            return [e.key for e in entries]

    # -- PATH scanning and polling ---------------------------------------------------------------

    def scan(self) -> None:
        """Brings the loaded set in line with PATH: loads new bundles, reloads changed ones and
        unloads removed ones (repository layout only). Errors are logged and counted; in
        single-bundle layout a failed first load raises (the server cannot serve anything)."""
        if self.root is None:
            return
        with self._admin:
            found = discover(self.root)
            single = len(found) == 1 and next(iter(found.values())) is None
            with self._lock:
                managed = {e.source: e for versions in self._models.values()
                           for e in versions.values() if e.managed and not e.retired}
            for path, expect in found.items():
                self._missing.pop(path, None)
                entry = managed.get(path)
                try:
                    if entry is None:
                        self.load(path, managed=True, expect=expect)
                        continue
                    signature = bundle_signature(path)
                    if signature not in (entry.signature, entry.failed_signature):
                        if entry.state is ModelState.FAILED:
                            self._retry_failed(entry, path, expect)
                        else:
                            self._reload(entry)
                except Exception:
                    if single and entry is None:
                        raise
            for path, entry in managed.items():
                if path in found or single:
                    continue
                self._missing[path] = self._missing.get(path, 0) + 1
                if self._missing[path] >= 2:
                    del self._missing[path]
                    self.unload(ModelSelector(entry.name, entry.version), wait=False)

    def _retry_failed(self, entry: ModelEntry, path: Path, expect: tuple[str, int] | None
                      ) -> None:
        with self._lock:
            versions = self._models.get(entry.name, {})
            if versions.get(entry.version) is entry:
                del versions[entry.version]
                if not versions:
                    del self._models[entry.name]
        self.load(path, managed=True, expect=expect)

    def start_polling(self, interval_s: float) -> None:
        """Rescans PATH every ``interval_s`` seconds in a daemon thread."""
        if interval_s <= 0 or self.root is None or self._poll_thread is not None:
            return

        def poll() -> None:
            while not self._poll_stop.wait(interval_s):
                try:
                    self.scan()
                except Exception:
                    log.exception("scanning %s failed", self.root)

        self._poll_thread = threading.Thread(target=poll, name="qgnn-poll", daemon=True)
        self._poll_thread.start()

    def stop_polling(self) -> None:
        self._poll_stop.set()
        if self._poll_thread is not None:
            self._poll_thread.join(timeout=60)
            self._poll_thread = None

    def close(self) -> None:
        """Stops polling and closes every model (their queues drain first)."""
        self.stop_polling()
        with self._admin:
            for entry in self.entries():
                with self._lock:
                    entry.retired = True
                    entry.state = ModelState.UNLOADING
                    if entry.closing:
                        continue
                    entry.closing = True
                self._close(entry)

    # -- metrics ---------------------------------------------------------------------------------

    def _sync_metrics(self) -> None:
        """qgnn_model_ready and qgnn_model_info for exactly the entries present."""
        if self.metrics is None:
            return
        with self._lock:
            entries = [e for versions in self._models.values() for e in versions.values()]
            self._metric_labels = sync_model_metrics(self.metrics, entries, self._metric_labels)


class _Lease:
    """``ModelRepository.lease``'s context manager; a class rather than a generator because
    every request takes one (a generator-based one costs a few microseconds more per call)."""

    __slots__ = ("_entry", "_repository", "_sel")

    def __init__(self, repository: ModelRepository, sel: ModelSelector) -> None:
        self._repository, self._sel = repository, sel

    def __enter__(self) -> ModelEntry:
        repo = self._repository
        with repo._lock:
            entry = repo._select(self._sel)
            entry.inflight += 1
        self._entry = entry
        return entry

    def __exit__(self, *exc: object) -> None:
        self._repository._release(self._entry)
