"""Grafana provisioning and dashboards: data sources, layout, variables, and every query's
metrics and labels."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from qgnn_deploy.contract import DASHBOARD_REQUIRED
from qgnn_deploy.loading import dig, host_path, load_documents, rel
from qgnn_deploy.promql import SERIES, check_promql


def check_dashboard(dashboard: dict, datasource_uids: set[str], where: str) -> list[str]:
    """A Grafana dashboard: layout, data sources, variables, and every query's metrics."""
    problems = []
    variables = {v.get("name") for v in dig(dashboard, "templating", "list", default=[])}
    panels = dashboard.get("panels") or []
    if not dashboard.get("uid") or not panels:
        return [f"{where}: needs a uid and panels"]
    ids, cells, queried = set(), {}, set()
    for panel in panels:
        pwhere = f"{where}: panel {panel.get('title')!r}"
        if panel.get("id") in ids:
            problems.append(f"{pwhere}: duplicate id {panel.get('id')}")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos") or {}
        x, y, w, h = (grid.get(k) for k in "xywh")
        if not all(isinstance(v, int) and v >= 0 for v in (x, y, w, h)) or x + w > 24 or not w:
            problems.append(f"{pwhere}: gridPos {grid} is outside the 24-column grid")
            continue
        for cell in ((cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)):
            if cell in cells:
                problems.append(f"{pwhere}: overlaps panel {cells[cell]!r}")
                break
            cells[cell] = panel.get("title")
        for target in panel.get("targets") or []:
            uid = dig(target, "datasource", "uid") or dig(panel, "datasource", "uid")
            if uid not in datasource_uids:
                problems.append(f"{pwhere}: data source uid {uid!r} is not provisioned")
            expr = str(target.get("expr", ""))
            for var in re.findall(r"\$(\w+)", expr):
                if var not in variables and not var.startswith("__"):
                    problems.append(f"{pwhere}: variable ${var} is not defined")
            concrete = re.sub(r"\$__\w+", "5m", re.sub(r"\$(?!__)\w+", ".*", expr))
            problems += check_promql(concrete, pwhere)
            queried |= {name for name, _ in SERIES.findall(concrete)}
    for name in DASHBOARD_REQUIRED:
        if name not in queried:
            problems.append(f"{where}: no panel queries {name}")
    return problems


def check_grafana(grafana_dir: Path, mounts: Mapping[str, Path]) -> list[str]:
    """Grafana provisioning as the compose service mounts it: data sources reach the compose
    Prometheus, the dashboard provider's path holds the dashboards, and the dashboards check out."""
    problems = []
    uids = set()
    for path in sorted((grafana_dir / "provisioning" / "datasources").glob("*.yml")):
        for source in load_documents(path)[0].get("datasources") or []:
            uids.add(source.get("uid"))
            if source.get("type") == "prometheus" and source.get("url") != "http://prometheus:9090":
                problems.append(f"{rel(path)}: url {source.get('url')!r} is not the compose "
                                "Prometheus (http://prometheus:9090)")
    if not uids:
        problems.append(f"{rel(grafana_dir)}: no provisioned data source")
    providers = [p for path in sorted((grafana_dir / "provisioning" / "dashboards").glob("*.yml"))
                 for p in load_documents(path)[0].get("providers") or []]
    if not providers:
        problems.append(f"{rel(grafana_dir)}: no dashboard provider")
    for provider in providers:
        folder = host_path(str(dig(provider, "options", "path", default="")), mounts)
        dashboards = sorted(folder.glob("*.json")) if folder and folder.is_dir() else []
        if not dashboards:
            problems.append(f"grafana provider {provider.get('name')!r}: path "
                            f"{dig(provider, 'options', 'path')!r} holds no mounted dashboard")
        for path in dashboards:
            problems += check_dashboard(json.loads(path.read_text()), uids, rel(path))
    return problems
