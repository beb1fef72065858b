"""The convention every qgnn figure follows: what machine, how timed, where written, how shown.

- :func:`machine_info` describes the host (CPU, cores, memory, library versions, allocator and
  threading environment), read without importing torch or onnxruntime.
- :func:`time_repeated` runs a callable after warm-up and keeps every sample; figures quote the
  median. :func:`interleave` times A/B candidates round by round, in orders that balance who
  runs after whom, so drift (thermal, other tenants) and order effects hit each alike.
- :func:`write_result` writes ``bench/results/<name>.json`` atomically with the machine block.
- :func:`markdown_table` renders rows for docs and terminals.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Environment variables that change allocation or threading, recorded with every result.
ENV_KEYS = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES",
            "LD_PRELOAD", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "OMP_WAIT_POLICY", "KMP_AFFINITY", "PYTORCH_NO_CUDA_MEMORY_CACHING")
PACKAGES = ("numpy", "torch", "onnx", "onnxruntime", "grpcio", "qgnn")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """The host a figure was measured on; versions come from package metadata (no imports)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(), "logical_cores": os.cpu_count(), "usable_cores": usable,
        "memory_bytes": _memory_bytes(), "platform": platform.platform(),
        "python": sys.version.split()[0], "versions": versions,
        "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
        "git_commit": _git_commit(),
    }


@dataclass(frozen=True)
class Timing:
    """Seconds per call over repeated runs; ``median`` is the figure to quote."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p10(self) -> float:
        return _quantile(self.samples, 0.1)

    @property
    def p90(self) -> float:
        return _quantile(self.samples, 0.9)

    @property
    def p99(self) -> float:
        return _quantile(self.samples, 0.99)

    @property
    def min(self) -> float:
        return min(self.samples)

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "p10_s": self.p10, "p90_s": self.p90,
                "p99_s": self.p99, "min_s": self.min, "repeat": len(self.samples), **asdict(self)}


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of a non-empty sample."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _check_counts(repeat: int, warmup: int) -> None:
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat: expected an int >= 1, got {repeat!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup: expected an int >= 0, got {warmup!r}")


def time_repeated(fn: Callable[[], object], *, repeat: int = 10, warmup: int = 2,
                  clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeat`` times, timing each call."""
    _check_counts(repeat, warmup)
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = clock()
        fn()
        samples.append(clock() - start)
    return Timing(tuple(samples))


def round_orders(count: int) -> list[list[int]]:
    """Candidate orders for successive rounds (a Williams design): over ``len(result)`` rounds
    every candidate runs right after every other one equally often, and in each position
    equally often. A plain rotation (A B C, B C A, C A B) never changes who runs right after
    whom, so a candidate that leaves the host in a costly state (a PyTorch route freeing GBs,
    spinning OpenMP workers) slowed the same neighbour in every round (docs/benchmarks.md)."""
    if count < 1:
        raise ValueError(f"count: expected >= 1, got {count}")
    base, low, high = [0], 1, count - 1
    while low <= high:
        base.append(low)
        low += 1
        if low <= high:
            base.append(high)
            high -= 1
    rows = [[(b + r) % count for b in base] for r in range(count)]
    if count % 2:  # odd: the mirror images complete the balance
        rows += [row[::-1] for row in rows]
    return rows


def interleave(candidates: Mapping[str, Callable[[], object]], *, repeat: int = 10,
               warmup: int = 2, clock: Callable[[], float] = time.perf_counter
               ) -> dict[str, Timing]:
    """Time several candidates round by round, in the orders of :func:`round_orders`, so slow
    drift and order effects (what the previous candidate left behind: a warm cache, freed
    memory, busy threads) are shared out."""
    _check_counts(repeat, warmup)
    if not candidates:
        raise ValueError("candidates: nothing to time")
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    orders = round_orders(len(names))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        for name in (names[i] for i in orders[r % len(orders)]):
            start = clock()
            candidates[name]()
            samples[name].append(clock() - start)
    return {name: Timing(tuple(s)) for name, s in samples.items()}


def write_result(name: str, results: Any, *, results_dir: str | Path | None = None,
                 command: str | None = None, machine: dict[str, Any] | None = None) -> Path:
    """Write ``<results_dir>/<name>.json`` = {name, created, command, machine, results}.

    ``results`` must be plain JSON (finite numbers). Written to a temporary file and renamed, so
    a reader sees the old file or the new one, never half of one.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"name: expected letters, digits, '_', '.', '-' (no path), got {name!r}")
    folder = Path(results_dir) if results_dir is not None else RESULTS_DIR
    payload = {"name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "command": command if command is not None else " ".join(sys.argv),
               "machine": machine if machine is not None else machine_info(),
               "results": results}
    try:
        text = json.dumps(payload, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"results: not plain JSON ({exc})") from None
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                   align: Sequence[str] | None = None) -> str:
    """A GitHub markdown table; ``align`` per column is "l" or "r" (default: left)."""
    if any(len(row) != len(headers) for row in rows):
        raise ValueError(f"markdown_table: every row needs {len(headers)} cells")
    align = list(align) if align is not None else ["l"] * len(headers)
    if len(align) != len(headers) or set(align) - {"l", "r"}:
        raise ValueError(f"align: expected {len(headers)} of 'l'/'r', got {align!r}")
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        padded = [c.rjust(w) if a == "r" else c.ljust(w)
                  for c, w, a in zip(row, widths, align, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                          for w, a in zip(widths, align, strict=True)) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value).replace("|", "\\|")
