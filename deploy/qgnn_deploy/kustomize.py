"""A kustomize subset, rendered offline: resources, components, namespace, images,
strategic-merge patches and configMapGenerator; anything else is refused by name."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

from qgnn_deploy.loading import dig, load_documents, rel

KUSTOMIZATION_KEYS = frozenset({"apiVersion", "kind", "resources", "components", "namespace",
                                "images", "patches", "configMapGenerator"})
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding",
                            "CustomResourceDefinition", "PriorityClass", "StorageClass"})

# Strategic-merge keys of the lists the patches touch; any other list is replaced whole.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "envFrom": None}


def _kustomization(directory: Path) -> dict:
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise ValueError(f"{rel(directory)}: no kustomization.yaml")
    docs = load_documents(path)
    if len(docs) != 1:
        raise ValueError(f"{rel(path)}: expected one document, found {len(docs)}")
    unknown = sorted(set(docs[0]) - KUSTOMIZATION_KEYS)
    if unknown:
        raise ValueError(f"{rel(path)}: field(s) {unknown} are outside the kustomize subset "
                         f"this renderer supports ({sorted(KUSTOMIZATION_KEYS)})")
    return docs[0]


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """``patch`` merged into a copy of ``base``, the way kustomize merges the lists we patch.

    Maps merge key by key (a ``None`` value deletes the key); lists named in ``MERGE_KEYS`` merge
    item by item on their merge key; any other value is replaced.
    """
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if isinstance(key, str) and key.startswith("$"):
                raise ValueError(f"strategic-merge directive {key!r} is not supported")
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge(base.get(key), value, key) if key in base else value
        return out
    merge_key = MERGE_KEYS.get(field)
    if isinstance(base, list) and isinstance(patch, list) and merge_key:
        out = list(base)
        for item in patch:
            idx = next((i for i, old in enumerate(out) if isinstance(old, dict)
                        and isinstance(item, dict) and old.get(merge_key) == item.get(merge_key)),
                       None)
            if idx is None:
                out.append(item)
            else:
                out[idx] = strategic_merge(out[idx], item, field)
        return out
    return copy.deepcopy(patch)


def split_image(image: str) -> tuple[str, str | None, str | None]:
    name, _, digest = image.partition("@")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest or None


def _pod_spec(resource: dict) -> dict | None:
    if resource.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return dig(resource, "spec", "template", "spec")
    return None


def containers(pod: dict) -> list[dict]:
    return [c for key in ("initContainers", "containers") for c in (pod.get(key) or [])]


def _set_images(resources: list[dict], images: list[dict]) -> None:
    for resource in resources:
        pod = _pod_spec(resource)
        for container in containers(pod or {}):
            name, tag, digest = split_image(container.get("image", ""))
            for rule in images:
                if rule.get("name") != name:
                    continue
                new = rule.get("newName", name)
                if rule.get("digest"):
                    container["image"] = f"{new}@{rule['digest']}"
                else:
                    new_tag = rule.get("newTag", tag)
                    ref = f"{new}:{new_tag}" if new_tag is not None else new
                    container["image"] = f"{ref}@{digest}" if digest and "newTag" not in rule \
                        else ref


def _read_env_file(path: Path) -> dict[str, str]:
    data = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise ValueError(f"{rel(path)}:{n}: expected KEY=VALUE, got {line!r}")
        data[key] = value
    return data


def _generate(directory: Path, spec: dict, generated: dict[str, dict]) -> None:
    name = spec.get("name")
    data: dict[str, str] = {}
    for env in spec.get("envs") or []:
        data.update(_read_env_file(directory / env))
    for literal in spec.get("literals") or []:
        key, _, value = str(literal).partition("=")
        data[key] = value
    behavior = spec.get("behavior", "create")
    if behavior == "create":
        if name in generated:
            raise ValueError(f"configMapGenerator {name!r} is created twice")
        generated[name] = {"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": name}, "data": data}
    elif behavior in ("merge", "replace"):
        if name not in generated:
            raise ValueError(f"configMapGenerator {name!r} has behavior {behavior} but no base")
        base = generated[name]["data"] if behavior == "merge" else {}
        generated[name]["data"] = {**base, **data}
    else:
        raise ValueError(f"configMapGenerator {name!r}: unknown behavior {behavior!r}")


def _render(directory: Path, resources: list[dict], generated: dict[str, dict]) -> None:
    """Adds ``directory``'s kustomization (or component) to ``resources`` and ``generated``."""
    k = _kustomization(directory)
    for entry in k.get("resources") or []:
        path = directory / entry
        if path.is_dir():
            _render(path, resources, generated)
        else:
            resources.extend(load_documents(path))
    for spec in k.get("configMapGenerator") or []:
        _generate(directory, spec, generated)
    for entry in k.get("components") or []:
        _render(directory / entry, resources, generated)
    namespace = k.get("namespace")
    if namespace:
        for resource in [*resources, *generated.values()]:
            if resource.get("kind") not in CLUSTER_SCOPED:
                resource.setdefault("metadata", {})["namespace"] = namespace
    _set_images(resources, k.get("images") or [])
    for i, entry in enumerate(k.get("patches") or []):
        if "target" in entry or "path" not in entry:
            raise ValueError(f"{rel(directory)}: patches[{i}]: only strategic-merge patch files "
                             "('path:' without 'target:') are supported")
        for patch in load_documents(directory / entry["path"]):
            ident = (patch.get("kind"), dig(patch, "metadata", "name"))
            hits = [j for j, r in enumerate(resources)
                    if (r.get("kind"), dig(r, "metadata", "name")) == ident]
            if len(hits) != 1:
                raise ValueError(f"{rel(directory)}: patch {entry['path']} targets {ident}, "
                                 f"which matches {len(hits)} resources")
            resources[hits[0]] = strategic_merge(resources[hits[0]], patch)


def _config_hash(configmap: dict) -> str:
    body = json.dumps({"kind": "ConfigMap", "name": configmap["metadata"]["name"],
                       "data": configmap.get("data", {})}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:10]


def render_kustomization(directory: Path) -> list[dict]:
    """The objects ``kubectl kustomize directory`` would print, for our kustomize subset.

    Generated ConfigMaps get a content-hash name suffix (not kustomize's exact hash), and pod
    specs' references to them are renamed, so a config change rolls the Deployment.
    """
    resources: list[dict] = []
    generated: dict[str, dict] = {}
    _render(directory, resources, generated)
    renames = {}
    for name, configmap in generated.items():
        renames[name] = f"{name}-{_config_hash(configmap)}"
        configmap["metadata"]["name"] = renames[name]
    for resource in resources:
        pod = _pod_spec(resource)
        if pod is None:
            continue
        for container in containers(pod):
            for source in container.get("envFrom") or []:
                ref = source.get("configMapRef")
                if ref and ref.get("name") in renames:
                    ref["name"] = renames[ref["name"]]
            for env in container.get("env") or []:
                ref = dig(env, "valueFrom", "configMapKeyRef")
                if ref and ref.get("name") in renames:
                    ref["name"] = renames[ref["name"]]
        for volume in pod.get("volumes") or []:
            ref = volume.get("configMap")
            if ref and ref.get("name") in renames:
                ref["name"] = renames[ref["name"]]
    return [*generated.values(), *resources]


def check_kustomization_files(directory: Path) -> list[str]:
    """Problems with the files a kustomization tree names: missing ones, and manifests in its
    directories that nothing lists (forgotten, so never applied)."""
    problems: list[str] = []
    try:
        k = _kustomization(directory)
    except ValueError as exc:
        return [str(exc)]
    listed = {"kustomization.yaml"}
    named = [*(k.get("resources") or []), *(k.get("components") or []),
             *(p.get("path") for p in k.get("patches") or [] if p.get("path")),
             *(env for g in k.get("configMapGenerator") or [] for env in g.get("envs") or [])]
    for entry in named:
        path = directory / entry
        if not path.exists():
            problems.append(f"{rel(directory)}/kustomization.yaml: {entry} does not exist")
        elif path.is_dir():
            problems += check_kustomization_files(path)
        else:
            listed.add(str(PurePosixPath(entry)))
    for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
        if path.name not in listed:
            problems.append(f"{rel(path)}: not listed in {rel(directory)}/kustomization.yaml")
    return problems
