"""Delimited text tables (edge lists, OGB csv, interaction logs) read fast, failing clearly.

Parsing is numpy's C reader; only when it fails do we rescan the lines in Python to report the
file, the line number and the offending token instead of numpy's internal message.
"""

from __future__ import annotations

import gzip
import io
import itertools
import re
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COMMENTS = ("#", "%")
_PLACEHOLDER = "\x1f"  # stands in for a multi-character separator such as MovieLens-1M's "::"
_COMMENT_TAIL = re.compile(r"[#%].*")


def read_text(path: str | Path) -> str:
    """Whole file as text with ``\n`` line ends; ``.gz`` is decompressed. Any failure ->
    ValueError naming the file."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{path}: truncated or corrupt gzip data ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None


def is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _has_text(tokens: list[str]) -> bool:
    return not all(is_number(t) for t in tokens)


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def _data_lines(text: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """``(1-based line number, line without trailing comment)`` for non-blank, non-comment lines."""
    lines = itertools.islice(io.StringIO(text, newline="\n"), start, None)
    for number, line in enumerate(lines, start=start + 1):
        body = _COMMENT_TAIL.sub("", line).strip()
        if body:
            yield number, body


def _split(line: str, sep: str | None) -> list[str]:
    return line.split() if sep is None else [t.strip() for t in line.split(sep)]


@dataclass(frozen=True)
class TextTable:
    """A delimited text file: separator, header and column count settled from its first rows."""

    path: Path
    text: str
    sep: str | None  # None = any whitespace
    skip: int  # raw lines before the first data row (leading comments and the header)
    num_cols: int
    header_tokens: tuple[str, ...] | None = None  # the header row's tokens, when it has one

    @classmethod
    def open(cls, path: str | Path, *, sep: str | None = None, header: bool | None = None,
             looks_like_header: Callable[[list[str]], bool] | None = None) -> TextTable:
        """Read ``path``. ``sep=None`` picks a comma if the first row has one, else whitespace;
        ``header=None`` treats the first row as a header when ``looks_like_header(tokens)``,
        by default when it holds a non-numeric token."""
        path = Path(path)
        text = read_text(path)
        rows = _data_lines(text)
        first = next(rows, None)
        if first is None:
            raise ValueError(f"{path}: no data rows (file is empty or only comments)")
        number, line = first
        if sep is None:
            sep = "," if "," in line else None
        elif sep == " ":
            sep = None  # runs of spaces are one separator
        tokens = _split(line, sep)
        if looks_like_header is None:
            looks_like_header = _has_text
        names = None
        if header or (header is None and looks_like_header(tokens)):
            names = tuple(tokens)
            following = next(rows, None)
            if following is None:
                raise ValueError(f"{path}: no data rows after the header on line {number}")
            number, line = following
            tokens = _split(line, sep)
        return cls(path, text, sep, number - 1, len(tokens), names)

    def _lines(self) -> Iterator[tuple[int, str]]:
        return _data_lines(self.text, self.skip)

    def parse(self, dtype: type | str) -> np.ndarray:
        """All rows as a ``(rows, num_cols)`` array of ``dtype`` (str keeps tokens as text)."""
        sep, text = self.sep, self.text
        if sep is not None and len(sep) > 1:
            text, sep = text.replace(sep, _PLACEHOLDER), _PLACEHOLDER
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                table = np.loadtxt(io.StringIO(text), dtype=dtype, delimiter=sep,
                                   comments=COMMENTS, skiprows=self.skip, ndmin=2)
        except ValueError as exc:
            raise self._diagnose(np.dtype(dtype), exc) from None
        return table

    def _diagnose(self, dtype: np.dtype, exc: Exception) -> ValueError:
        """Find the first bad line ourselves so the message names it."""
        check, kind = {"i": (_is_int, "an integer"), "u": (_is_int, "an integer"),
                       "f": (is_number, "a number")}.get(dtype.kind, (None, ""))
        for number, line in self._lines():
            tokens = _split(line, self.sep)
            if len(tokens) != self.num_cols:
                return ValueError(f"{self.path}, line {number}: {len(tokens)} columns, expected "
                                  f"{self.num_cols} (as in the first data row, line "
                                  f"{self.skip + 1})")
            for col, token in enumerate(tokens, start=1):
                if check is not None and not check(token):
                    return ValueError(f"{self.path}, line {number}, column {col}: {token!r} is "
                                      f"not {kind}")
        return ValueError(f"{self.path}: cannot parse ({exc})")

    def line_numbers(self, rows: int) -> np.ndarray:
        """1-based file line of each of the first ``rows`` data rows (int64)."""
        return np.fromiter((n for n, _ in self._lines()), np.int64, count=rows)

    def line_of_row(self, row: int) -> int:
        """1-based file line holding data row ``row`` (for error messages)."""
        for index, (number, _) in enumerate(self._lines()):
            if index == row:
                return number
        raise IndexError(row)

    def convert(self, column: np.ndarray, col: int, dtype: type, what: str) -> np.ndarray:
        """Cast one str column, naming the line and token of the first value that does not fit."""
        try:
            return column.astype(dtype)
        except ValueError:
            check, kind = ((_is_int, "an integer") if np.dtype(dtype).kind in "iu"
                           else (is_number, "a number"))
            bad = next(i for i, token in enumerate(column.tolist()) if not check(token))
            raise ValueError(f"{self.path}, line {self.line_of_row(bad)}, column {col + 1}: "
                             f"{what} {str(column[bad])!r} is not {kind}") from None
