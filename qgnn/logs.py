"""Structured, quiet-by-default logging shared by every qgnn command."""

from __future__ import annotations

import json
import logging
import sys
import time

_RESERVED = set(vars(logging.makeLogRecord({})))


class _Formatter(logging.Formatter):
    """Renders ``logger.info("event", extra={...})`` as key=value text or one JSON object."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.fmt = fmt

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _RESERVED}
        base = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
                "level": record.levelname.lower(), "logger": record.name,
                "event": record.getMessage()}
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if self.fmt == "json":
            return json.dumps({**base, **fields}, default=str)
        kv = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{base['ts']} {base['level']:<7} {base['logger']}: {base['event']} {kv}".rstrip()


def configure_logging(verbosity: int = 0, fmt: str = "text") -> None:
    """Warnings only by default; ``-v`` info, ``-vv`` debug."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    root = logging.getLogger("qgnn")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
