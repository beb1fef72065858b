"""Shared pieces of the distributed training tests: a mirrored exchanger for one process, and
a two-rank torchrun launch of the partitioned mode over loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from qgnn.training.distributed.context import DistContext
from qgnn.training.distributed.exchange import ByteCounter


class MirrorExchanger:
    """A 2-rank exchanger whose other rank asks and answers exactly what this one does."""

    def __init__(self, rank: int) -> None:
        self.ctx = DistContext(rank, 2)
        self.counter = ByteCounter()
        self.world = 2

    def exchange(self, send: list[Any], kind: str, part: str | None = None) -> list[Any]:
        return list(send)

    def all_gather_rows(self, t: Any, kind: str, part: str | None = None) -> list[Any]:
        return [t, t]


def torchrun_partitioned(shards: Path, out: Path, *flags: str) -> dict[str, Any]:
    """Train 1 epoch of a small SAGE in the partitioned mode on 2 torchrun ranks; the summary
    line the entry prints, after checking the launch succeeded."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m",
         "qgnn.training.distributed", "--mode", "partitioned", "--shards", str(shards),
         "--model", "sage", "--hidden", "16", "--epochs", "1", "--fanouts", "4,4",
         "--out", str(out), *flags],
        capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["epochs_run"] == 1
    return summary
