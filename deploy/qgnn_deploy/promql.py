"""PromQL and Prometheus rules checked against the metric catalogue: every series name and
label a query uses must exist, and the operator's PrometheusRule must equal the rule files."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from qgnn_deploy.contract import METRICS, SEVERITIES, TARGET_LABELS
from qgnn_deploy.loading import ROOT, dig, load_documents

PROMETHEUSRULE = Path("deploy/k8s/components/monitoring/prometheusrule.yaml")
RULES_DIR = Path("deploy/prometheus/rules")
# A series name (recording-rule names hold colons) and its optional {matchers}; not preceded by
# a word character, a colon or $ (a Grafana variable).
SERIES = re.compile(r"(?<![\w:$])([a-zA-Z_][\w:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'")
# Keywords, aggregations and functions: identifiers that are not series names.
PROMQL_WORDS = frozenset({
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "rate", "irate", "increase", "delta", "idelta",
    "deriv", "histogram_quantile", "abs", "absent", "absent_over_time", "clamp_max", "clamp_min",
    "ceil", "floor", "round", "label_replace", "label_join", "time", "vector", "scalar",
    "sum_over_time", "avg_over_time", "max_over_time", "min_over_time", "count_over_time",
    "last_over_time", "changes", "resets", "sort", "sort_desc", "sgn", "exp", "ln", "log2",
    "log10", "sqrt", "timestamp", "predict_linear", "humanize", "e", "inf", "nan"})


def _series_labels(name: str) -> frozenset[str] | None:
    """Label names of an exposed series name, or None if it is not a qgnn series."""
    if name in METRICS:
        return METRICS[name][1]
    for suffix, extra in (("_bucket", {"le"}), ("_sum", set()), ("_count", set())):
        base = name.removesuffix(suffix)
        if base != name and METRICS.get(base, ("",))[0] == "histogram":
            return METRICS[base][1] | extra
    return None


def check_promql(expr: str, where: str, recorded: Mapping[str, frozenset[str]] | None = None
                 ) -> list[str]:
    """Names and labels in ``expr`` checked against the metric catalogue (``METRICS``) and the
    recording rules ``recorded`` (name -> labels). Grafana variables must be substituted first.
    Returns problems, one per unknown series or label."""
    recorded = recorded or {}
    problems = []
    scrubbed = _STRINGS.sub('""', expr)
    scrubbed = re.sub(r"\[[^\]]*\]", "", scrubbed)
    available: set[str] = set(TARGET_LABELS)
    for m in SERIES.finditer(scrubbed):
        name, matchers = m[1], m[2] or ""
        following = scrubbed[m.end():].lstrip()
        if name in PROMQL_WORDS or following.startswith("(") or re.fullmatch(r"\d\w*", name):
            continue
        if name.startswith("qgnn_"):
            labels = _series_labels(name)
            if labels is None:
                problems.append(f"{where}: {name} is not a qgnn metric series")
                continue
        elif ":" in name:
            if name not in recorded:
                problems.append(f"{where}: {name} is not a recording rule")
                continue
            labels = recorded[name]
        elif name == "up":
            labels = frozenset()
        else:
            continue
        labels = labels | TARGET_LABELS
        available |= labels
        for label in _MATCHER.findall(matchers):
            if label not in labels:
                problems.append(f"{where}: {name} has no label {label!r} (labels: "
                                f"{', '.join(sorted(labels))})")
    for group in _GROUPING.findall(scrubbed):
        for label in (x.strip() for x in group.split(",")):
            if label and label not in available:
                problems.append(f"{where}: grouping label {label!r} is on none of the series")
    return problems


def _output_labels(expr: str) -> frozenset[str]:
    """Labels a recording rule's result keeps: its first ``by (...)`` clause (our rules
    aggregate once), else the labels of the first qgnn series it reads."""
    grouping = re.findall(r"\bby\s*\(([^)]*)\)", expr)
    if grouping:
        return frozenset(x.strip() for x in grouping[0].split(",") if x.strip()) - {"le"}
    names = [name for name, _ in SERIES.findall(expr) if name.startswith("qgnn_")]
    if not names:
        return frozenset()
    return _series_labels(names[0]) or frozenset()


def check_rule_groups(groups: list[dict], where: str = "rules") -> list[str]:
    """Problems in Prometheus rule groups: fields, severities, metric names and labels."""
    problems: list[str] = []
    recorded: dict[str, frozenset[str]] = {}
    names = set()
    if not isinstance(groups, list) or not groups:
        return [f"{where}: no rule groups"]
    for group in groups:
        if group.get("name") in names:
            problems.append(f"{where}: group {group.get('name')!r} defined twice")
        names.add(group.get("name"))
        for rule in group.get("rules") or []:
            if "record" in rule:
                recorded[rule["record"]] = _output_labels(str(rule.get("expr", "")))
    for group in groups:
        for rule in group.get("rules") or []:
            rwhere = f"{where}: {rule.get('record') or rule.get('alert')}"
            if ("record" in rule) == ("alert" in rule) or not rule.get("expr"):
                problems.append(f"{rwhere}: a rule needs expr and exactly one of record/alert")
                continue
            problems += check_promql(str(rule["expr"]), rwhere, recorded)
            if "alert" in rule:
                if dig(rule, "labels", "severity") not in SEVERITIES:
                    problems.append(f"{rwhere}: labels.severity must be one of {SEVERITIES}")
                if not dig(rule, "annotations", "summary"):
                    problems.append(f"{rwhere}: annotations.summary is empty")
                if not rule.get("for"):
                    problems.append(f"{rwhere}: no 'for:' duration; one bad scrape would page")
    return problems


def rule_groups(rules_dir: Path) -> list[dict]:
    """The groups of every rules file in ``rules_dir``, in file-name order."""
    groups = []
    for path in sorted(rules_dir.glob("*.yml")):
        groups += load_documents(path)[0].get("groups") or []
    return groups


def check_prometheusrule_in_sync(root: Path = ROOT) -> list[str]:
    """The operator's PrometheusRule must hold exactly the compose stack's rule files."""
    rule = load_documents(root / PROMETHEUSRULE)[0]
    if dig(rule, "spec", "groups") != rule_groups(root / RULES_DIR):
        return [f"{PROMETHEUSRULE}: spec.groups differs from {RULES_DIR}/*.yml; run "
                "python deploy/validate.py --sync-prometheusrule"]
    return []


def sync_prometheusrule(root: Path = ROOT) -> None:
    """Rewrites spec.groups of the PrometheusRule from the rule files, keeping its header."""
    path = root / PROMETHEUSRULE
    text = path.read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    rule = load_documents(path)[0]
    rule["spec"] = {"groups": rule_groups(root / RULES_DIR)}
    path.write_text(header + yaml.safe_dump(rule, sort_keys=False, width=100))
