"""What to quantise and how: one validated, JSON-able record per quantised model.

Unset fields are resolved from the bit width and method in ``__post_init__``, so a stored config
always names every choice explicitly. Defaults follow Tailor et al. (ICLR 2021) and their code
(github.com/camlsys/degree-quant, ``runall_reddit_binary.sh``): Degree-Quant uses percentile
ranges with the clipped ("gradient clipping") STE and protection ``p in [0, 0.1]`` at INT8,
``[0.1, 0.2]`` at INT4; the plain-QAT baseline uses momentum min/max ranges and the plain STE.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from qgnn.training.quant.degree_quant import MASK_MODES, MaskMode, check_probabilities
from qgnn.training.quant.options import METHODS, RANGE_KINDS, Method, RangeKind
from qgnn.training.quant.quantiser import STES, Ste, check_bits


def default_percentile(bits: int) -> float:
    """Tail fraction clipped on each side: 0.1% at INT8, 1% at INT4 (the paper's choices).

    Between them we interpolate geometrically (our choice); 8 bits and more use 0.1%, 4 bits
    and fewer 1%.
    """
    clamped = min(max(bits, 4), 8)
    return round(0.001 * 10 ** ((8 - clamped) / 4), 6)


def default_protection(bits: int) -> tuple[float, float]:
    return (0.0, 0.1) if bits >= 8 else (0.1, 0.2)


@dataclass
class QuantConfig:
    bits: int = 8
    method: Method = "dq"
    range: RangeKind | None = None  # percentile (dq) | momentum (qat)
    percentile: float | None = None  # tail fraction, e.g. 0.001 -> 0.1% / 99.9%
    momentum: float = 0.1  # EMA weight of each step's range (percentile/momentum ranges)
    p_min: float | None = None  # dq only
    p_max: float | None = None  # dq only
    per_channel: bool = False  # per-output-channel weight scales
    ste: Ste | None = None  # clipped (dq) | plain (qat)
    mask: MaskMode = "per-layer"  # dq: a fresh mask per layer, or one shared by all layers
    max_samples: int = 2**16  # values sampled per step for percentiles
    input_range: RangeKind | None = None  # the model's input features: None = as `range`

    def __post_init__(self) -> None:
        check_bits(self.bits, "QuantConfig.bits")
        if self.method not in METHODS:
            raise ValueError(f"QuantConfig.method: expected one of {METHODS}, got "
                             f"{self.method!r}")
        dq = self.method == "dq"
        if self.range is None:
            self.range = "percentile" if dq else "momentum"
        if self.range not in RANGE_KINDS:
            raise ValueError(f"QuantConfig.range: expected one of {RANGE_KINDS}, got "
                             f"{self.range!r}")
        if self.range == "percentile" and self.percentile is None:
            self.percentile = default_percentile(self.bits)
        if self.percentile is not None and self.range != "percentile":
            raise ValueError(f"QuantConfig.percentile: only used with range='percentile', got "
                             f"percentile={self.percentile!r} with range={self.range!r}")
        if self.percentile is not None and not 0.0 <= self.percentile < 0.5:
            raise ValueError(f"QuantConfig.percentile: expected a tail fraction in [0, 0.5), "
                             f"got {self.percentile!r}")
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"QuantConfig.momentum: expected a value in (0, 1], got "
                             f"{self.momentum!r}")
        if dq:
            lo, hi = default_protection(self.bits)
            self.p_min = lo if self.p_min is None else self.p_min
            self.p_max = max(hi, self.p_min) if self.p_max is None else self.p_max
            check_probabilities(self.p_min, self.p_max)
        elif self.p_min is not None or self.p_max is not None:
            raise ValueError(f"QuantConfig.p_min/p_max: protection is Degree-Quant only, got "
                             f"p_min={self.p_min!r}, p_max={self.p_max!r} with method='qat'")
        if self.ste is None:
            self.ste = "clipped" if dq else "plain"
        if self.ste not in STES:
            raise ValueError(f"QuantConfig.ste: expected one of {STES}, got {self.ste!r}")
        if self.mask not in MASK_MODES:
            raise ValueError(f"QuantConfig.mask: expected one of {MASK_MODES}, got "
                             f"{self.mask!r}")
        if self.input_range is not None and self.input_range not in RANGE_KINDS:
            raise ValueError(f"QuantConfig.input_range: expected one of {RANGE_KINDS} or None, "
                             f"got {self.input_range!r}")
        if isinstance(self.max_samples, bool) or not isinstance(self.max_samples, int) \
                or self.max_samples < 1:
            raise ValueError(f"QuantConfig.max_samples: expected an int >= 1, got "
                             f"{self.max_samples!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"QuantConfig: unknown fields {sorted(unknown)}")
        return cls(**data)
