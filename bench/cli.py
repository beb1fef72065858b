"""``qgnn bench FAMILY``: one subcommand per family of figures, each in its own module.

A family module exposes ``add_parser(sub)`` and stays light at import (torch and onnxruntime load
in its handler). Adding a family is one line in :data:`FAMILIES`.
"""

from __future__ import annotations

import argparse
import importlib

# module names under qgnn.bench, in the order they are listed in --help
FAMILIES = ("accuracy", "bench_dq_cost", "bench_kernels", "bench_serving", "serving_fuzz")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure and record figures (bench/results/*.json)",
                       description="Benchmarks: each family prints a markdown table and writes "
                                   "bench/results/<name>.json with the machine description.")
    families = p.add_subparsers(dest="family", metavar="FAMILY")
    families.required = True
    for name in FAMILIES:
        importlib.import_module(f"qgnn.bench.{name}").add_parser(families)
