"""Regenerates the committed Python gRPC stubs in runtime/proto_gen from the .proto files here.

Usage: ``python proto/generate.py [--out DIR]`` (needs grpcio-tools, a dev dependency).

protoc names generated modules after the proto paths (``qgnn.v1.qgnn_pb2``, ``inference...``),
but the stubs live inside the ``qgnn.runtime.proto_gen`` package, so the generated imports and
module names are rewritten to that prefix. The KServe files (package ``inference``) are also moved
into a private descriptor pool: other libraries (tritonclient, for one) register their own
``inference.*`` messages in protobuf's default pool, and two definitions of one symbol in a pool
make whichever module is imported second fail.

The output is deterministic; tests/runtime/test_runtime_proto.py regenerates into a temporary
directory and asserts the committed files are identical.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_ROOT.parent / "runtime" / "proto_gen"
PACKAGE = "qgnn.runtime.proto_gen"
# Proto packages whose descriptors go into a private pool (see the module docstring).
PRIVATE_POOL = ("inference",)
POOL_INIT = '''"""KServe v2 gRPC stubs, kept in a private descriptor pool (POOL)."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
'''
DOCSTRINGS = {
    "": "Generated gRPC stubs; regenerate with python proto/generate.py, never edit by hand.",
    "qgnn": "Stubs of the qgnn protocol packages.",
    "qgnn/v1": "Stubs of the qgnn.v1 serving API (proto/qgnn/v1/qgnn.proto).",
}


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto under ``root``, sorted, as paths relative to it."""
    return sorted(p.relative_to(root) for p in root.rglob("*.proto"))


def run_protoc(root: Path, out: Path) -> None:
    """Runs grpc_tools' bundled protoc: messages (.py), type stubs (.pyi) and gRPC services."""
    from grpc_tools import protoc

    include = resources.files("grpc_tools") / "_proto"
    args = ["protoc", f"-I{root}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *(str(p) for p in proto_files(root))]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {root}")


def _replace_once(text: str, old: str, new: str, where: Path) -> str:
    if text.count(old) != 1:
        raise RuntimeError(f"{where}: expected exactly one {old!r} in protoc's output")
    return text.replace(old, new)


def postprocess(path: Path, rel: Path, top_packages: set[str]) -> str | None:
    """The committed text of one generated file, or None for a file that should not be kept."""
    text = path.read_text()
    if path.name.endswith("_pb2_grpc.py") and "class " not in text:
        return None  # a proto without services: protoc's plugin still writes an empty module
    tops = "|".join(sorted(map(re.escape, top_packages)))
    text = re.sub(rf"^from ((?:{tops})(?:\.\w+)*) import ", rf"from {PACKAGE}.\1 import ", text,
                  flags=re.MULTILINE)
    text = re.sub(r"BuildTopDescriptorsAndMessages\(DESCRIPTOR, '([\w.]+)'",
                  rf"BuildTopDescriptorsAndMessages(DESCRIPTOR, '{PACKAGE}.\1'", text)
    if rel.parts[0] in PRIVATE_POOL and path.suffix == ".py" and path.name.endswith("_pb2.py"):
        pool_import = f"from {PACKAGE}.{rel.parts[0]} import POOL as _private_pool\n"
        text = _replace_once(text, "_descriptor_pool.Default().AddSerializedFile(",
                             "_private_pool.AddSerializedFile(", path)
        text = _replace_once(text, "# @@protoc_insertion_point(imports)\n",
                             f"{pool_import}# @@protoc_insertion_point(imports)\n", path)
    return text


def init_text(package_dir: Path) -> str:
    """The ``__init__.py`` of one generated package directory (relative to the output root)."""
    if package_dir.parts and package_dir.parts[0] in PRIVATE_POOL and len(package_dir.parts) == 1:
        return POOL_INIT
    key = package_dir.as_posix() if package_dir.parts else ""
    doc = DOCSTRINGS.get(key, f"Generated stubs of the {'.'.join(package_dir.parts)} package.")
    return f'"""{doc}"""\n'


def generate(out: Path = DEFAULT_OUT, root: Path = PROTO_ROOT) -> list[Path]:
    """Writes the stubs into ``out`` (replacing earlier generated files); returns their paths."""
    protos = proto_files(root)
    top_packages = {p.parts[0] for p in protos}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        run_protoc(root, raw)
        texts: dict[Path, str] = {}
        for path in sorted(raw.rglob("*")):
            if path.is_file():
                rel = path.relative_to(raw)
                text = postprocess(path, rel, top_packages)
                if text is not None:
                    texts[rel] = text
    package_dirs = {Path()} | {parent for rel in texts for parent in rel.parents}
    for package_dir in package_dirs:
        texts[package_dir / "__init__.py"] = init_text(package_dir)
    if out.exists():  # drop stubs of protos that no longer exist; nothing else is touched
        for pattern in ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py"):
            for old in out.rglob(pattern):
                if old.relative_to(out) not in texts:
                    old.unlink()
    for rel, text in sorted(texts.items()):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return sorted(out / rel for rel in texts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output directory (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    written = generate(args.out)
    print(f"wrote {len(written)} files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
