"""Exceptions the serving runtime raises for bad input it refuses to use."""

from __future__ import annotations

from pathlib import Path


class BundleError(ValueError):
    """A model bundle that cannot be written, trusted or read.

    ``file`` is the offending path (relative to the bundle where it lies inside one) and
    ``reason`` says what is wrong with it, so a caller can report both without parsing the message.
    """

    def __init__(self, file: str | Path, reason: str) -> None:
        self.file = str(file)
        self.reason = reason
        super().__init__(f"{self.file}: {reason}")


class ServingError(Exception):
    """A request the server refuses, with the gRPC status it maps to.

    ``code`` is a ``grpc.StatusCode`` member name (``"NOT_FOUND"``, ...), kept as a string so the
    data plane and the backends raise these without importing grpc; the one server interceptor
    turns them into statuses (qgnn.runtime.interceptors).
    """

    code = "UNKNOWN"


class InvalidRequestError(ServingError, ValueError):
    """Bad input: an id out of range, a wrong shape or dtype. ``field`` and ``value`` name it."""

    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{field}: {reason} (got {shown})")


class ModelNotFoundError(ServingError, LookupError):
    """No loaded model has this name, or the name has no such version."""

    code = "NOT_FOUND"


class FailedPreconditionError(ServingError):
    """The call does not fit the model's state: a task that does not support it, or a stale
    ``expected_num_nodes`` in UpdateGraph."""

    code = "FAILED_PRECONDITION"


class AlreadyExistsError(ServingError):
    """Loading a (name, version) that is already loaded."""

    code = "ALREADY_EXISTS"


class ModelUnavailableError(ServingError):
    """The model is loading, unloading or failed to load, or the server is shutting down; the
    caller may retry."""

    code = "UNAVAILABLE"


class OverloadedError(ServingError):
    """The model's queue is full: the server sheds the request instead of queueing it forever."""

    code = "RESOURCE_EXHAUSTED"


class LimitExceededError(ServingError):
    """A request larger than a configured limit (ids per request); ``field`` and ``limit`` say
    which."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, field: str, count: int, limit: int, *,
                 flag: str = "--max-ids-per-request") -> None:
        self.field = field
        self.count = count
        self.limit = limit
        unit = "bytes" if flag == "--max-message-bytes" else "entries"
        super().__init__(f"{field}: {count} {unit} exceed the limit of {limit} per request "
                         f"({flag}); split the request")


class UnauthenticatedError(ServingError):
    """A missing or wrong bearer token."""

    code = "UNAUTHENTICATED"


class DeadlineExceededError(ServingError):
    """The caller's deadline passed before the request was computed; it was dropped."""

    code = "DEADLINE_EXCEEDED"


class BackendUnavailableError(ServingError):
    """No backend loader is registered for a bundle's format and task."""

    code = "FAILED_PRECONDITION"
