"""grpc.health.v1: the overall status (service "") and one status per model name.

NOT_SERVING while the server loads its models at start-up, for a model while it has no READY
version (loading, or failed), and for everything once shutdown begins; SERVING otherwise.
"""

from __future__ import annotations

import threading

from grpc_health.v1 import health, health_pb2
from qgnn.runtime.repository import ModelRepository

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthState:
    """Keeps the standard health servicer in step with the repository."""

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository
        self.servicer = health.HealthServicer(experimental_non_blocking=True)
        self._started = False
        self._stopping = False
        self._names: set[str] = set()
        self._lock = threading.Lock()  # status computed and set as one step, in order
        self.servicer.set("", NOT_SERVING)
        repository.add_listener(self.update)

    def started(self) -> None:
        """Start-up loading is over: the overall status follows the models from now on."""
        self._started = True
        for name in self.repository.names():
            self.update(name)
        with self._lock:
            self._overall()

    def update(self, name: str) -> None:
        """A model's versions changed state."""
        with self._lock:
            if self._stopping:
                return
            if self.repository.knows(name):
                self._names.add(name)
                self.servicer.set(name, SERVING if self.repository.is_serving(name)
                                  else NOT_SERVING)
            elif name in self._names:
                self.servicer.set(name, SERVICE_UNKNOWN)
            self._overall()

    def _overall(self) -> None:
        serving = self._started and not self._stopping and self.repository.is_serving()
        self.servicer.set("", SERVING if serving else NOT_SERVING)

    @property
    def serving(self) -> bool:
        return self._started and not self._stopping and self.repository.is_serving()

    def shutdown(self) -> None:
        """Every status NOT_SERVING for good (later updates are ignored)."""
        with self._lock:
            self._stopping = True
            self.servicer.enter_graceful_shutdown()
