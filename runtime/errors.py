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
