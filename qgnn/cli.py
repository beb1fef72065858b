"""The ``qgnn`` command: one entry point, a subcommand per stage of the pipeline.

Each stage registers its own parser from a light module (no torch at import time), so
``qgnn serve`` on a torch-free host and ``qgnn --help`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from qgnn import __version__
from qgnn.logs import configure_logging

# (module, what it adds); a module that cannot be imported on this install is skipped with a note.
STAGES = (
    ("qgnn.training.cli", "train"),
    ("qgnn.exporter.cli", "export"),
    ("qgnn.runtime.cli", "serve, predict, health, inspect"),
    ("qgnn.bench.cli", "bench"),
)


class UsageError(Exception):
    """A user's mistake the CLI reports in one line with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qgnn",
        description="Quantised GNNs: train (Degree-Quant, GNS), export to INT8 ONNX, serve over "
                    "gRPC.",
        epilog="Run 'qgnn COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"qgnn {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-v info, -vv debug); quiet by default")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="structured log lines as key=value text or JSON")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name, _ in STAGES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.log_format)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"qgnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        print(f"qgnn {args.command}: error: {exc.name} is not installed; this command needs the "
              f"training extra (pip install 'qgnn[train]')", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `qgnn inspect B | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"qgnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
