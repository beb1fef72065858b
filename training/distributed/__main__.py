"""``torchrun ... -m qgnn.training.distributed --mode M [mode flags]``: one entry for every mode.

Each mode's ``main(argv)`` parses its own flags; ``--mode`` (default ``ddp``) picks it.
"""

from __future__ import annotations

import faulthandler
import sys
from collections.abc import Callable
from importlib import import_module

from qgnn.training.distributed.context import exit_skipping_teardown

MODES: dict[str, str] = {
    "ddp": "qgnn.training.distributed.ddp",
    "edge-sharded": "qgnn.training.distributed.edge_sharded",
    "partitioned": "qgnn.training.distributed.partitioned",
    "infer": "qgnn.training.distributed.infer",
}


def _split_mode(argv: list[str]) -> tuple[str, list[str]]:
    rest, mode, i = [], "ddp", 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--mode" and i + 1 < len(argv):
            mode, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--mode="):
            mode, i = arg.split("=", 1)[1], i + 1
            continue
        rest.append(arg)
        i += 1
    return mode, rest


def main(argv: list[str] | None = None) -> None:
    mode, rest = _split_mode(list(sys.argv[1:] if argv is None else argv))
    if mode not in MODES:
        sys.exit(f"python -m qgnn.training.distributed: --mode must be one of {sorted(MODES)}, "
                 f"got {mode!r}")
    # a rank killed by SIGABRT (gloo's intermittent teardown abort) prints every thread's Python
    # stack to stderr, so the phase it died in is on record
    faulthandler.enable(all_threads=True)
    entry: Callable[[list[str]], None] = import_module(MODES[mode]).main
    entry(rest)


if __name__ == "__main__":
    main()
    exit_skipping_teardown()
