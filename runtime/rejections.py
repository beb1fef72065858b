"""Which reason of ``qgnn_requests_rejected_total`` a refused call counts under.

The interceptor answers every call that reaches qgnn; this module decides, in one place, how
each refusal is counted (the reasons are ``REJECTION_REASONS`` in qgnn.runtime.metrics):
a domain error by its type or status, a call whose client left (cancelled, or its deadline
passed) while qgnn computed it, and a method no service has (UNIMPLEMENTED, answered by gRPC
itself once the interceptor finds no handler).
"""

from __future__ import annotations

from typing import Any

from qgnn.runtime.errors import LimitExceededError

# Statuses that are not a refusal of the request but a failure of the server (counted in
# qgnn_request_errors_total only).
NOT_REJECTIONS = frozenset({"OK", "INTERNAL", "UNKNOWN", "DATA_LOSS"})


def reason_for(code: str, exc: BaseException | None = None) -> str | None:
    """The rejection reason of a call answered with status ``code`` (None: not a refusal)."""
    if code in NOT_REJECTIONS:
        return None
    if isinstance(exc, LimitExceededError):
        # a limit on bytes (--max-message-bytes: field "request bytes") or on entries
        return "message_too_large" if exc.field.endswith("bytes") else "limit_exceeded"
    return code.lower()


# The server's deadline is the client's plus the time the call's headers took to arrive, so a
# client that gave up at its own deadline looks, to the server, like one that cancelled just
# before it; within this margin of the deadline the call is counted as DEADLINE_EXCEEDED, the
# status that client saw.
DEADLINE_SLACK_S = 0.1


def client_gone(context: Any) -> str | None:
    """'CANCELLED' or 'DEADLINE_EXCEEDED' when the caller is no longer waiting for this call
    (it cancelled, disconnected or ran out of time), else None. gRPC drops the answer of such
    a call, so the client saw that status, not OK."""
    try:
        if context.is_active():
            return None
        remaining = context.time_remaining()
    except Exception:  # a context that cannot tell (tests' fakes): assume the client waits
        return None
    late = remaining is not None and remaining <= DEADLINE_SLACK_S
    return "DEADLINE_EXCEEDED" if late else "CANCELLED"
