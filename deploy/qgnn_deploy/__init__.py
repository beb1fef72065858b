"""Offline checks of qgnn's deployment files (Dockerfile, compose, Kubernetes, Prometheus,
Grafana) against the serving contract; run them with ``python deploy/validate.py``."""

from qgnn_deploy.compose import check_compose, check_prometheus_config
from qgnn_deploy.contract import (
                                  DEFAULT_GRACE_PERIOD_S,
                                  GRPC_PORT,
                                  HEALTH_COMMAND,
                                  METRICS,
                                  METRICS_PORT,
                                  MODELS_DIR,
                                  RUN_AS_UID,
                                  SERVE_COMMAND,
                                  SERVE_ENV,
                                  SERVE_FLAGS,
)
from qgnn_deploy.dockerfile import (
                                  DockerIgnore,
                                  Instruction,
                                  check_dockerfile,
                                  context_files,
                                  dockerfile_stages,
                                  parse_dockerfile,
)
from qgnn_deploy.grafana import check_dashboard, check_grafana
from qgnn_deploy.kubernetes import check_manifests, parse_cpu, parse_memory, schema_problems
from qgnn_deploy.kustomize import check_kustomization_files, render_kustomization, strategic_merge
from qgnn_deploy.loading import ROOT, load_documents
from qgnn_deploy.promql import (
                                  PROMETHEUSRULE,
                                  RULES_DIR,
                                  check_prometheusrule_in_sync,
                                  check_promql,
                                  check_rule_groups,
                                  rule_groups,
                                  sync_prometheusrule,
)
from qgnn_deploy.run import K8S_DIRS, check_all, main

__all__ = [
    "DEFAULT_GRACE_PERIOD_S", "GRPC_PORT", "HEALTH_COMMAND", "K8S_DIRS", "METRICS", "METRICS_PORT",
    "MODELS_DIR", "PROMETHEUSRULE", "ROOT", "RULES_DIR", "RUN_AS_UID", "SERVE_COMMAND",
    "SERVE_ENV", "SERVE_FLAGS", "DockerIgnore", "Instruction", "check_all", "check_compose",
    "check_dashboard", "check_dockerfile", "check_grafana", "check_kustomization_files",
    "check_manifests", "check_prometheus_config", "check_prometheusrule_in_sync", "check_promql",
    "check_rule_groups", "context_files", "dockerfile_stages", "load_documents", "main",
    "parse_cpu", "parse_dockerfile", "parse_memory", "render_kustomization", "rule_groups",
    "schema_problems", "strategic_merge", "sync_prometheusrule",
]
