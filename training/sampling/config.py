"""Minibatch sampling settings: one validated, JSON-able record (stored beside a run's config).

``fanouts[h]`` is the number of in-neighbours sampled at hop ``h + 1`` counted from the seeds
(PyG's ``num_neighbors`` order, the order of :func:`qgnn.graph.neighbourhood.khop_blocks`), so
``fanouts[-1]`` is the input layer's fanout, the one GNS draws from its cache; ``-1`` takes every
neighbour.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

Sampler = Literal["full", "uniform", "gns"]
SAMPLERS: tuple[Sampler, ...] = ("full", "uniform", "gns")
Estimator = Literal["unbiased", "normalized", "stratified"]
ESTIMATORS: tuple[Estimator, ...] = ("unbiased", "normalized", "stratified")
# GNS stratified: non-cached draws per cache-drawn destination; 4 keeps accuracy within a point
# of uniform sampling on Cora, Tolokers and the power-law graph (docs/gns.md)
DEFAULT_UNCACHED_FANOUT = 4
GnsLayers = Literal["input", "all"]
GNS_LAYERS: tuple[GnsLayers, ...] = ("input", "all")
FeatureDtype = Literal["float32", "uint8"]
FEATURE_DTYPES: tuple[FeatureDtype, ...] = ("float32", "uint8")
EvalMode = Literal["full", "sampled"]
EVAL_MODES: tuple[EvalMode, ...] = ("full", "sampled")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"SamplingConfig.{name}: expected an int >= {low}, got {value!r}")


def parse_fanouts(text: str) -> tuple[int, ...]:
    """``"10,10"`` -> ``(10, 10)``; each entry an int >= 1 or -1 (all neighbours)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        fanouts = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"SamplingConfig.fanouts: expected comma-separated ints such as "
                         f"'10,10', got {text!r}") from None
    return check_fanouts(fanouts)


def check_fanouts(fanouts: Any) -> tuple[int, ...]:
    if isinstance(fanouts, str | bytes) or not hasattr(fanouts, "__len__") or len(fanouts) == 0:
        raise ValueError(f"SamplingConfig.fanouts: expected a non-empty sequence of ints, got "
                         f"{fanouts!r}")
    for h, f in enumerate(fanouts):
        if isinstance(f, bool) or not isinstance(f, int) or (f < 1 and f != -1):
            raise ValueError(f"SamplingConfig.fanouts[{h}]: expected an int >= 1 or -1 (all "
                             f"neighbours), got {f!r}")
    return tuple(int(f) for f in fanouts)


def resolve_device(spec: str) -> torch.device:
    """``"auto"``: the first CUDA device when one is available, else the CPU."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(f"SamplingConfig.device: expected 'auto', 'cpu', 'cuda' or "
                         f"'cuda:<index>', got {spec!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"SamplingConfig.device: only cpu and cuda devices are supported, got "
                         f"{spec!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"SamplingConfig.device: {spec!r} requested but CUDA is not available")
    return device


@dataclass
class SamplingConfig:
    """How minibatches are drawn and fed; ``sampler="full"`` means full-graph training."""

    sampler: Sampler = "full"
    fanouts: tuple[int, ...] = (10, 10)
    batch_size: int = 1024  # seed nodes (node task) or positive pairs (link task) per step
    cache_fraction: float = 0.01  # GNS: expected cache size as a fraction of |V|
    cache_refresh_period: int = 1  # GNS: redraw the cache every this many epochs
    gns_estimator: Estimator = "unbiased"  # GNS input-layer weights (docs/gns.md)
    gns_layers: GnsLayers = "input"  # GNS: which hops draw from the cache (docs/gns.md)
    gns_uncached_fanout: int = DEFAULT_UNCACHED_FANOUT  # GNS stratified: non-cached draws
    feature_dtype: FeatureDtype = "float32"  # host copy / transfer of input rows (uint8: coded)
    workers: int = 1  # sampling threads
    prefetch: int = 2  # batches prepared ahead of the trainer (bounded queue depth)
    device: str = "auto"
    eval: EvalMode = "full"  # full: exact layer-wise inference; sampled: uniform fanouts
    eval_batch_size: int = 65536  # destinations per chunk (full) or seeds per batch (sampled)

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"SamplingConfig.sampler: expected one of {SAMPLERS}, got "
                             f"{self.sampler!r}")
        self.fanouts = check_fanouts(self.fanouts)
        for name in ("batch_size", "cache_refresh_period", "workers", "prefetch",
                     "eval_batch_size"):
            _check_int(name, getattr(self, name), 1)
        _check_int("gns_uncached_fanout", self.gns_uncached_fanout, 1)
        f = self.cache_fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0.0 < f <= 1.0:
            raise ValueError(f"SamplingConfig.cache_fraction: expected a fraction in (0, 1], "
                             f"got {f!r}")
        if self.gns_estimator not in ESTIMATORS:
            raise ValueError(f"SamplingConfig.gns_estimator: expected one of {ESTIMATORS}, got "
                             f"{self.gns_estimator!r}")
        if self.gns_layers not in GNS_LAYERS:
            raise ValueError(f"SamplingConfig.gns_layers: expected one of {GNS_LAYERS}, got "
                             f"{self.gns_layers!r}")
        if self.feature_dtype not in FEATURE_DTYPES:
            raise ValueError(f"SamplingConfig.feature_dtype: expected one of {FEATURE_DTYPES}, "
                             f"got {self.feature_dtype!r}")
        if not isinstance(self.device, str):
            raise ValueError(f"SamplingConfig.device: expected a string, got {self.device!r}")
        if self.device not in ("auto", "cpu"):  # the defaults need no torch to check
            resolve_device(self.device)
        if self.eval not in EVAL_MODES:
            raise ValueError(f"SamplingConfig.eval: expected one of {EVAL_MODES}, got "
                             f"{self.eval!r}")

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fanouts"] = list(self.fanouts)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"SamplingConfig: unknown fields {sorted(unknown)}")
        data = dict(data)
        if "fanouts" in data and isinstance(data["fanouts"], list):
            data["fanouts"] = tuple(data["fanouts"])
        return cls(**data)
