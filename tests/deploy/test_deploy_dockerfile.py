"""The Dockerfile and .dockerignore, checked without a Docker daemon."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from qgnn.runtime.kernels._ext import LEVELS

PACKAGE_FOLDERS = ("qgnn", "contract", "graph", "training", "exporter", "runtime", "bench")


@pytest.fixture
def dockerfile(root) -> str:
    return (root / "Dockerfile").read_text()


@pytest.fixture
def ignore(validate, root):
    return validate.DockerIgnore.from_file(root / ".dockerignore")


def builder_files(validate, root, ignore, dockerfile) -> set[str]:
    """Context files the builder stage COPYs (before their destination renaming)."""
    stages = validate.dockerfile_stages(validate.parse_dockerfile(dockerfile))
    files = set()
    for ins in stages["builder"]:
        if ins.keyword == "COPY" and "from" not in ins.flags:
            for source in ins.words()[:-1]:
                files |= set(validate.context_files(root, ignore, source))
    return files


def test_the_dockerfile_meets_the_contract(validate, root, dockerfile, ignore):
    assert validate.check_dockerfile(dockerfile, root, ignore) == []


def test_the_serve_image_runs_qgnn_serve_on_models_as_uid_10001(validate, dockerfile):
    """Read straight from the parsed instructions, independently of check_dockerfile."""
    stages = validate.dockerfile_stages(validate.parse_dockerfile(dockerfile))
    serve = {i.keyword: i for i in stages["serve"]}
    assert serve["ENTRYPOINT"].words() == ["qgnn", "serve"]
    assert serve["CMD"].words() == ["/models"]
    assert serve["EXPOSE"].args.split() == ["8500", "9464"]
    assert serve["USER"].args == "10001:10001"
    assert serve["HEALTHCHECK"].args.endswith('CMD ["qgnn", "health", "--port", "8500"]')
    assert serve["HEALTHCHECK"].flags["start-period"] == "60s"
    assert stages["serve"][0].args == "${PYTHON_IMAGE} AS serve"
    assert list(stages) == ["builder", "serve", "train", "model", "serve-with-model"]


def test_every_package_source_reaches_the_builder(validate, root, ignore, dockerfile):
    copied = builder_files(validate, root, ignore, dockerfile)
    sources = {p.relative_to(root).as_posix() for folder in PACKAGE_FOLDERS
               for p in (root / folder).rglob("*")
               if p.suffix in (".py", ".c", ".h") and "__pycache__" not in p.parts}
    assert sources and sources <= copied, sorted(sources - copied)[:10]
    assert {"pyproject.toml", "setup.py"} <= copied


def test_nothing_built_on_the_host_reaches_the_image(validate, root, ignore, dockerfile):
    copied = builder_files(validate, root, ignore, dockerfile)
    leaked = [f for f in copied if f.endswith((".so", ".pyc")) or "__pycache__" in f
              or f.startswith((".venv/", "runs/", "bench/results/"))]
    assert leaked == []


def test_the_serving_constraints_pin_every_base_dependency_compatibly(root):
    from packaging.requirements import Requirement

    declared = {Requirement(r).name.lower(): Requirement(r) for r in
                tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]}
    pins = {}
    for line in (root / "deploy" / "constraints-serve.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[req.name.lower().replace("_", "-")] = spec.version
    assert set(declared) <= set(pins), sorted(set(declared) - set(pins))
    for name, req in declared.items():
        assert req.specifier.contains(pins[name]), (name, str(req.specifier), pins[name])


@pytest.mark.parametrize(("path", "excluded"), [
    (".venv/bin/python", True),
    ("graph/__pycache__/container.cpython-311.pyc", True),
    ("__pycache__/x.pyc", True),
    ("runtime/kernels/_qgnn_kernels_avx2.cpython-311-x86_64-linux-gnu.so", True),
    ("runtime/kernels/csrc/qlinear.c", False),
    ("deploy/compose.yaml", True),
    ("deploy/constraints-serve.txt", False),
    ("runs/demo/bundle/manifest.json", True),
    ("bench/results/table.csv", True),
    ("bench/bench_sampling.py", False),
    ("runsx/file", False),
    ("graph/runs", False),
    ("qgnn.egg-info/PKG-INFO", True),
    ("data/cora/ind.cora.x", False),
    (".git/HEAD", True),
    ("tests/deploy/conftest.py", True),
])
def test_dockerignore_semantics_on_the_repository_patterns(ignore, path, excluded):
    assert ignore.excluded(path) is excluded


@pytest.mark.parametrize(("patterns", "path", "excluded"), [
    (["*.md", "!README.md"], "README.md", False),
    (["*.md", "!README.md"], "CHANGES.md", True),
    (["*.md"], "docs/deploy.md", False),
    (["**/*.md"], "docs/deploy.md", True),
    (["docs/**"], "docs/a/b.md", True),
    (["!keep", "*"], "keep", True),
    (["a?c"], "abc", True),
    (["a?c"], "a/c", False),
    (["[ab]x"], "bx", True),
    (["/build"], "build/lib/x.py", True),
])
def test_dockerignore_semantics_hand_cases(validate, patterns, path, excluded):
    assert validate.DockerIgnore(patterns).excluded(path) is excluded


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


BROKEN = {
    "missing source": (("COPY bench/ bench/", "COPY benchmarks/ benchmarks/"),
                       "source 'benchmarks/' sends no file"),
    "ignored source": (("COPY bench/ bench/", "COPY tests/ tests/"),
                       "source 'tests/' sends no file"),
    "unknown stage": (("COPY --from=builder /opt/qgnn", "COPY --from=build /opt/qgnn"),
                      "--from=build is not an earlier stage"),
    "extra port": (("EXPOSE 8500 9464", "EXPOSE 8500 9464 8080"),
                   "EXPOSE [8080, 8500, 9464]"),
    "named user": (("USER 10001:10001\nEXPOSE", "USER qgnn\nEXPOSE"),
                   "Dockerfile stage serve: USER 'qgnn'"),
    "other entry point": (('ENTRYPOINT ["qgnn", "serve"]', 'ENTRYPOINT ["python", "-m", "qgnn"]'),
                          "Dockerfile stage serve: runs ['python', '-m', 'qgnn', '/models']"),
    "other models path": (('CMD ["/models"]', 'CMD ["/model"]'),
                          "runs ['qgnn', 'serve', '/model']"),
    "other health check": (('"--port", "8500"]', '"--port", "8501"]'),
                           "HEALTHCHECK runs ['qgnn', 'health', '--port', '8501']"),
    "no train extra": (('"${wheel}[train]"', '"${wheel}"'), "no RUN installs the [train] extra"),
    "root in a derived stage": (("COPY --from=model /repository/ /models/",
                                 "COPY --from=model /repository/ /models/\nUSER root"),
                                "Dockerfile stage serve-with-model: USER 'root'"),
    "ADD": (("COPY pyproject.toml setup.py", "ADD pyproject.toml setup.py"), "use COPY"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_broken_dockerfile_is_reported(validate, root, ignore, dockerfile, case):
    (old, new), expected = BROKEN[case]
    problems = validate.check_dockerfile(_replace(dockerfile, old, new), root, ignore)
    assert any(expected in p for p in problems), problems


def test_parse_dockerfile_joins_continuations_and_reads_flags(validate):
    text = ("# syntax=docker/dockerfile:1\nFROM img AS a\nRUN one \\\n  # inside\n  && two\n"
            "COPY --from=a --chown=1:1 /x /y\nHEALTHCHECK --interval=5s CMD [\"true\"]\n")
    ins = validate.parse_dockerfile(text)
    assert [(i.keyword, i.line) for i in ins] == [("FROM", 2), ("RUN", 3), ("COPY", 6),
                                                   ("HEALTHCHECK", 7)]
    assert ins[1].args == "one && two"
    assert ins[2].flags == {"from": "a", "chown": "1:1"} and ins[2].words() == ["/x", "/y"]
    assert ins[3].flags == {"interval": "5s"} and ins[3].args == 'CMD ["true"]'


@pytest.mark.slow
def test_the_builder_stage_builds_a_wheel_with_the_compiled_kernels(validate, root, ignore,
                                                                   dockerfile, tmp_path):
    """Replays the builder's COPYs into a fresh context and runs its `pip wheel . --no-deps`."""
    context = tmp_path / "src"
    for rel in builder_files(validate, root, ignore, dockerfile):
        if rel.startswith("deploy/"):
            continue
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        (context / rel).write_bytes((root / rel).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp_path / "wheels"), "-q"],
                   cwd=context, check=True, timeout=600)
    (wheel,) = (tmp_path / "wheels").glob("qgnn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for level in LEVELS:  # every ISA level of this machine, so the image runs on any CPU of it
        assert any(n.startswith(f"qgnn/runtime/kernels/_qgnn_kernels_{level}.")
                   and n.endswith(".so") for n in names), level
    assert "qgnn/cli.py" in names
    assert "qgnn/runtime/proto_gen/qgnn/v1/qgnn_pb2.py" in names
    assert not any(Path(n).parts[0] in ("tests", "deploy", "docs") for n in names)
