"""``qgnn bench FAMILY``: one subcommand per family of figures, each in its own module.

A family module exposes ``add_parser(sub)`` and stays light at import (torch and onnxruntime load
in its handler). Adding a family is one line in :data:`FAMILIES`.
"""

from __future__ import annotations

import argparse
import importlib

# module names under qgnn.bench, in the order they are listed in --help
FAMILIES = ("accuracy", "bench_kernels", "bench_serving")
# Families whose modules import torch at the top: registered by name only, so that `qgnn --help`
# stays torch-free; their own parser reads the arguments when the family runs.
TORCH_FAMILIES = {"dq-cost": ("bench_dq_cost", "Degree-Quant vs plain-QAT epoch cost (torch)")}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure and record figures (bench/results/*.json)",
                       description="Benchmarks: each family prints a markdown table and writes "
                                   "bench/results/<name>.json with the machine description.")
    families = p.add_subparsers(dest="family", metavar="FAMILY")
    families.required = True
    for name in FAMILIES:
        importlib.import_module(f"qgnn.bench.{name}").add_parser(families)
    for name, (module, text) in TORCH_FAMILIES.items():
        q = families.add_parser(name, help=text, add_help=False,
                                description=f"{text}; run with --help for its options")
        q.add_argument("args", nargs=argparse.REMAINDER)
        q.set_defaults(func=lambda a, m=module: _run_module(m, a.args))


def _run_module(module: str, argv: list[str]) -> int:
    importlib.import_module(f"qgnn.bench.{module}").main(argv)
    return 0
