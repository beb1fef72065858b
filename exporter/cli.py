"""``qgnn export CHECKPOINT --out BUNDLE``: a trained run -> a verified model bundle.

Registering the parser imports nothing heavy; torch, onnx and onnxruntime load in the handler.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from qgnn.argtypes import positive_int


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a trained run to an INT8 (or FP32) ONNX model bundle",
        description="Export the run in CHECKPOINT (written by 'qgnn train') as a model bundle: "
                    "the ONNX model (INT8 for a quantised run, else FP32) with the ai.qgnn ops "
                    "and their function bodies, the serving graph store, precomputed INT8 "
                    "embeddings for link models, and a checksummed manifest. The exported "
                    "model is checked (onnx.checker, shape inference), run on the full graph "
                    "and compared with the PyTorch model. See docs/export.md.")
    p.add_argument("checkpoint", type=Path, help="run directory (model.safetensors + "
                                                 "config.json)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--fp32", action="store_true",
                   help="also ship the FP32 model of the same weights as model_fp32.onnx "
                        "(quantised runs; an FP32 run's model.onnx is FP32 already)")
    p.add_argument("--name", help="model name in the bundle (default: the run directory's "
                                  "name)")
    p.add_argument("--version", type=positive_int, default=1, help="model version (default 1)")
    p.add_argument("--no-parity", action="store_true",
                   help="skip the comparison with the PyTorch model")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    p.add_argument("--dataset",
                   help="the run's dataset when it moved: a dataset spec, or the new path of "
                        "an interactions run's training file (its files must match the sha256 "
                        "recorded at training)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="onnxruntime intra-op threads for the full-graph run (default 1)")
    p.set_defaults(func=run_export)


def _size(n: int) -> str:
    for unit, step in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= step:
            return f"{n / step:.1f} {unit}"
    return f"{n} B"


def format_summary(summary: Any, seconds: float) -> str:
    """The human-readable report of an :class:`~qgnn.exporter.export.ExportSummary`."""
    m = summary.manifest.model
    lines = [f"{m.name} v{m.version} ({m.type} {m.task}, {summary.precision}) -> "
             f"{summary.bundle} in {seconds:.1f}s"]
    width = max(len(k) for k in summary.files)
    for rel, size in summary.files.items():
        lines.append(f"  {rel:<{width}}  {_size(size):>10}")
    lines.append(f"  {'total':<{width}}  {_size(sum(summary.files.values())):>10}")
    lines.append(f"model size: {summary.precision} {_size(summary.model_bytes)}, FP32 "
                 f"{_size(summary.fp32_bytes)} (ratio {summary.size_ratio:.3f})")
    p = summary.parity
    if p is None:
        lines.append("parity: skipped (--no-parity)")
        return "\n".join(lines)
    steps = "" if p.max_error_steps is None else f" = {p.max_error_steps:.1f} output steps"
    lines.append(f"parity vs PyTorch on the full graph ({p.num_rows} nodes): argmax agreement "
                 f"{100 * p.argmax_agreement:.2f}%, max |error| {p.max_abs_error:.3g}{steps}, "
                 f"bit-identical outputs {100 * p.exact_fraction:.2f}%")
    if p.torch_accuracy is not None:
        lines.append(f"test accuracy: PyTorch {p.torch_accuracy:.4f}, ONNX {p.onnx_accuracy:.4f}")
    return "\n".join(lines)


def run_export(args: argparse.Namespace) -> int:
    from qgnn.exporter.export import export_run

    started = time.perf_counter()
    summary = export_run(
        args.checkpoint, args.out, name=args.name, version=args.version,
        include_fp32=args.fp32, parity=not args.no_parity, overwrite=args.overwrite,
        threads=args.threads, dataset=args.dataset,
        progress=lambda msg: print(f"qgnn export: {msg}", file=sys.stderr))
    print(format_summary(summary, time.perf_counter() - started))
    return 0
