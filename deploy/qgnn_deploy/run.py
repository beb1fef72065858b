"""Every check at once, and the command line of deploy/validate.py."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

from qgnn_deploy.compose import check_compose
from qgnn_deploy.dockerfile import DockerIgnore, check_dockerfile
from qgnn_deploy.kubernetes import check_manifests, schema_problems
from qgnn_deploy.kustomize import check_kustomization_files, render_kustomization
from qgnn_deploy.loading import ROOT, load_documents
from qgnn_deploy.promql import (
    PROMETHEUSRULE,
    RULES_DIR,
    check_prometheusrule_in_sync,
    sync_prometheusrule,
)

K8S_DIRS = ("deploy/k8s/base", "deploy/k8s/overlays/production")
# The oldest Kubernetes the manifests target: gRPC probes are GA from 1.27.
MIN_KUBERNETES = "1.27"


def check_all(root: Path = ROOT, schema_versions: Iterable[str] = ()) -> list[str]:
    """Every check on the repository's deployment files; ``schema_versions`` adds the
    kubernetes-validate schema check for those Kubernetes versions."""
    problems = []
    for rel in K8S_DIRS:
        directory = root / rel
        problems += check_kustomization_files(directory)
        try:
            resources = render_kustomization(directory)
        except (ValueError, OSError, yaml.YAMLError) as exc:
            problems.append(f"{rel}: cannot render: {exc}")
            continue
        problems += [f"{rel}: {p}" for p in check_manifests(resources)]
        for version in schema_versions:
            problems += [f"{rel}: {p}" for p in schema_problems(resources, version)]
    problems += check_prometheusrule_in_sync(root)
    compose_path = root / "deploy" / "compose.yaml"
    problems += check_compose(load_documents(compose_path)[0], compose_path.parent)
    problems += check_dockerfile((root / "Dockerfile").read_text(), root,
                                 DockerIgnore.from_file(root / ".dockerignore"))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deploy/validate.py",
        description="Offline checks of qgnn's deployment files; one line per problem.")
    parser.add_argument("--sync-prometheusrule", action="store_true",
                        help=f"rewrite {PROMETHEUSRULE} from {RULES_DIR}/*.yml, then check")
    parser.add_argument("--kubernetes-version", action="append", default=None,
                        help=f"schema-check against this Kubernetes version (repeatable; default "
                             f"{MIN_KUBERNETES} and the newest bundled; needs kubernetes-validate)")
    args = parser.parse_args(argv)
    if args.sync_prometheusrule:
        sync_prometheusrule()
    versions: list[str] = []
    try:
        import kubernetes_validate.utils as kv

        versions = args.kubernetes_version or [MIN_KUBERNETES, kv.latest_version()]
    except ImportError:
        print("note: kubernetes-validate is not installed; skipping the JSON-schema check",
              file=sys.stderr)
    problems = check_all(ROOT, versions)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0
