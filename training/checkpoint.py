"""A training run on disk: ``model.safetensors`` (every tensor of the state dict, buffers
included) beside ``config.json`` (what rebuilds the model and what the run measured).

The directory is written whole into a temporary sibling and renamed into place, so a reader
never sees half a checkpoint. Loading never unpickles: weights come from safetensors and the
configuration is plain JSON, validated field by field.

``config.json``::

    {"format": "qgnn-run", "format_version": 1, "qgnn_version": "...", "task": "node" | "link",
     "dataset": "<spec>", "model": {ModelConfig}, "training": {TrainConfig},
     "metrics": {name: number}, "link": {"num_embeddings": int | null} (link task only),
     "extra": {...}}

``extra`` is whatever JSON the caller adds (quantisation records go under ``extra["quant"]``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.presets import TrainConfig
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT = "qgnn-run"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TASKS = ("node", "link")


@dataclass
class Checkpoint:
    """A loaded run: configuration plus the state dict (not yet in a model)."""

    task: str
    dataset: str
    model_config: ModelConfig
    train_config: TrainConfig
    metrics: dict[str, float]
    state: dict[str, torch.Tensor]
    qgnn_version: str
    num_embeddings: int | None = None  # link task on a featureless graph
    extra: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> nn.Module:
        """The FP32 model with these weights (a quantised run's caller rebuilds its wrapper
        first and loads :attr:`state` itself)."""
        if self.task == "link":
            from qgnn.training.tasks.link import build_link_model

            model: nn.Module = build_link_model(self.model_config, self.train_config.decoder,
                                                self.num_embeddings)
        else:
            model = build_model(self.model_config)
        try:
            model.load_state_dict(self.state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{WEIGHTS}: weights do not fit the model in {CONFIG}: "
                             f"{str(exc).splitlines()[0]}") from None
        model.eval()
        return model


def _version() -> str:
    from qgnn import __version__

    return __version__


def save_run(directory: str | Path, model: nn.Module, *, task: str, dataset: str,
             model_config: ModelConfig, train_config: TrainConfig, metrics: dict[str, Any],
             num_embeddings: int | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the run to ``directory`` atomically (replacing an earlier run there)."""
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    config: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "qgnn_version": _version(),
        "task": task, "dataset": dataset, "model": model_config.to_dict(),
        "training": train_config.to_dict(), "metrics": metrics, "extra": extra or {}}
    if task == "link":
        table = getattr(model, "embedding", None)
        if num_embeddings is None and table is not None:  # learned even on featured data
            num_embeddings = int(table.num_embeddings)  # (LightGCN ignores features)
        config["link"] = {"num_embeddings": num_embeddings}
    try:
        text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{CONFIG}: metrics and extra must be plain JSON (finite numbers, "
                         f"strings, lists, dicts): {exc}") from None
    # safetensors refuses tensors that share memory; copies make every entry independent
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / CONFIG).write_text(text + "\n", encoding="utf-8")
        _replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing run there is moved aside first, then removed."""
    if target.exists() and not target.is_dir():
        raise ValueError(f"checkpoint directory {target} exists and is not a directory")
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _field(config: dict[str, Any], name: str, kind: type | tuple[type, ...],
           path: Path) -> Any:
    if name not in config:
        raise ValueError(f"{path}: missing field {name!r}")
    value = config[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ValueError(f"{path}: field {name!r} has the wrong type "
                         f"({type(value).__name__})")
    return value


def load_run(directory: str | Path) -> Checkpoint:
    """Read and validate a run written by :func:`save_run`."""
    root = Path(directory)
    config_path, weights_path = root / CONFIG, root / WEIGHTS
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint directory {root} does not exist")
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing from the checkpoint")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    if _field(config, "format", str, config_path) != FORMAT:
        raise ValueError(f"{config_path}: field 'format' is {config['format']!r}, expected "
                         f"{FORMAT!r}")
    version = _field(config, "format_version", int, config_path)
    if version != FORMAT_VERSION:
        raise ValueError(f"{config_path}: field 'format_version' is {version}; this qgnn reads "
                         f"version {FORMAT_VERSION}")
    task = _field(config, "task", str, config_path)
    if task not in TASKS:
        raise ValueError(f"{config_path}: field 'task' is {task!r}, expected one of {TASKS}")
    try:
        model_config = ModelConfig.from_dict(_field(config, "model", dict, config_path))
        train_config = TrainConfig.from_dict(_field(config, "training", dict, config_path))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{config_path}: field 'model'/'training': {exc}") from None
    num_embeddings = None
    if task == "link":
        link = _field(config, "link", dict, config_path)
        num_embeddings = link.get("num_embeddings")
        if num_embeddings is not None and (not isinstance(num_embeddings, int)
                                           or num_embeddings < 1):
            raise ValueError(f"{config_path}: field 'link.num_embeddings' must be a positive "
                             f"int or null, got {num_embeddings!r}")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    return Checkpoint(task=task, dataset=_field(config, "dataset", str, config_path),
                      model_config=model_config, train_config=train_config,
                      metrics=_field(config, "metrics", dict, config_path), state=state,
                      qgnn_version=_field(config, "qgnn_version", str, config_path),
                      num_embeddings=num_embeddings,
                      extra=_field(config, "extra", dict, config_path))
