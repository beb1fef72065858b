"""``qgnn inspect BUNDLE``: verify a model bundle and print its manifest (torch-free)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qgnn.runtime import kernels
from qgnn.runtime.backend import BackendOptions
from qgnn.runtime.backend_loaders import resolve_loader
from qgnn.runtime.bundle.manifest import TensorSpec
from qgnn.runtime.bundle.reader import Bundle, load_bundle
from qgnn.runtime.errors import ServingError
from qgnn.runtime.load_check import check_structure, open_checked


def add_inspect_parser(sub: Any) -> argparse.ArgumentParser:
    """Registers ``inspect`` on the ``qgnn`` subcommand parsers."""
    parser = sub.add_parser(
        "inspect", help="verify a model bundle and show its manifest",
        description="Verify a model bundle (directory or .qgnn archive): sizes, SHA-256 and "
                    "safety of every file, then the load check: onnxruntime parses and "
                    "resolves the model, the backend loads it and answers one tiny request. "
                    "Then print its manifest.")
    parser.add_argument("bundle", type=Path, help="bundle directory or .qgnn archive")
    parser.add_argument("--json", action="store_true", help="print the raw manifest as JSON")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip content hashing, the extra-file scan and the trial run "
                             "(structure, sizes, array headers and the ONNX graph are still "
                             "checked)")
    parser.set_defaults(func=inspect_main)
    return parser


def inspect_main(args: argparse.Namespace) -> int:
    """Loads (and by default fully verifies) the bundle; a bad bundle raises BundleError, which the
    ``qgnn`` entry point reports as ``qgnn inspect: error: FILE: REASON`` with exit code 2."""
    with load_bundle(args.bundle, verify=not args.no_verify) as bundle:
        load_check(bundle, run=not args.no_verify)
        if args.json:
            print(bundle.manifest_json(), end="")
        else:
            print(format_bundle(bundle, verified=not args.no_verify))
    return 0


def load_check(bundle: Bundle, *, run: bool) -> None:
    """What the server checks before serving a bundle (qgnn.runtime.load_check): the ONNX
    structure always, and with ``run`` the backend's load and one trial request."""
    if not run:
        check_structure(bundle)
        return
    try:
        loader = resolve_loader(bundle.manifest.model.format, bundle.task)
        backend = open_checked(bundle, lambda b: loader(b, BackendOptions(threads=1)))
    except ServingError as exc:  # no backend for the format: one line, like a bad file
        raise ValueError(f"{bundle.source}: {exc}") from None
    backend.close()


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _tensor(spec: TensorSpec) -> str:
    return f"{spec.name} {spec.dtype} [{', '.join(str(d) for d in spec.shape)}]"


def _pairs(mapping: Mapping[str, Any]) -> str:
    shown = (f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in mapping.items())
    return "  ".join(sorted(shown)) or "-"


def kernels_line() -> str:
    """The ISA level ``qgnn serve`` would run this host's compiled kernels at, and what the CPU
    and the install offer: the bundle is the same everywhere, the kernels are not."""
    if not kernels.available():
        return "not built on this host (serving runs the portable onnxruntime path)"
    try:
        level = kernels.default_level()
    except (ValueError, kernels.KernelsUnavailableError) as exc:
        level = f"none ({exc})"
    return (f"isa={level}  supported={','.join(kernels.levels_supported())}  "
            f"built={','.join(kernels.levels_built())}")


def format_bundle(bundle: Bundle, *, verified: bool) -> str:
    """The manifest as aligned ``label  value`` lines, one tensor or file per line."""
    m = bundle.manifest
    model, quant = m.model, m.quantisation
    total = sum(entry["bytes"] for entry in bundle.files.values())
    check = ("verified, loaded and answered a trial request" if verified
             else "structure and ONNX graph checked, not hashed or run")
    rows: list[tuple[str, str]] = [
        ("bundle", f"{bundle.source}  ({len(bundle.files)} files, {_size(total)}, {check})"),
        ("model", f"{model.name} v{model.version}  task={model.task}  "
                  f"type={model.type}  file={model.file}"),
        ("created", m.created),
        ("schema", str(m.schema_version)),
    ]
    rows += [("inputs" if i == 0 else "", _tensor(s)) for i, s in enumerate(model.inputs)]
    rows += [("outputs" if i == 0 else "", _tensor(s)) for i, s in enumerate(model.outputs)]
    extra = quant.extra
    rows.append(("quant", f"{quant.bits}-bit {quant.method}, {quant.num_sites} sites"
                          + (f"  {_pairs(extra)}" if extra else "")))
    rows.append(("graph", _pairs(m.graph.fields)))
    rows.append(("metrics", _pairs(m.metrics)))
    rows.append(("versions", _pairs(m.versions)))
    rows.append(("kernels", kernels_line()))
    for i, (rel, entry) in enumerate(sorted(bundle.files.items())):
        rows.append(("files" if i == 0 else "",
                     f"{rel}  {entry['kind']}  {_size(entry['bytes'])}  "
                     f"sha256 {entry['sha256'][:16]}"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)

