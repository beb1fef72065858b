"""Command-line options for quantisation-aware training (wired into ``qgnn train``).

``--quant int8|int4|fp32`` picks the usual widths; ``--bits N`` any width in 2..8. Everything
else is optional and defaults per :class:`QuantConfig`, except where the model has a preset at
that width (:data:`~qgnn.training.quant.options.MODEL_QUANT_PRESETS`, read from ``args.model``);
a flag given explicitly always wins. Destinations are prefixed ``quant_``
(or ``p_min``/``p_max``) so they cannot collide with the training command's own options.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from qgnn.training.quant.options import (
    MASK_MODES,
    METHODS,
    RANGE_KINDS,
    STES,
    model_quant_preset,
)

if TYPE_CHECKING:
    from qgnn.training.quant.config import QuantConfig

PRESETS = {"int8": 8, "int4": 4, "fp32": None}


def add_quant_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("quantisation (Degree-Quant / QAT)")
    g.add_argument("--quant", choices=tuple(PRESETS), default=None,
                   help="precision to train for (default fp32: no quantisation)")
    g.add_argument("--bits", dest="quant_bits", type=int, default=None,
                   help="any integer width 2..8 (instead of --quant)")
    g.add_argument("--method", dest="quant_method", choices=METHODS, default=None,
                   help="dq: Degree-Quant (default); qat: plain quantisation-aware training")
    g.add_argument("--p-min", dest="p_min", type=float, default=None,
                   help="DQ protection probability of the lowest in-degree "
                        "(default 0 at INT8, 0.1 below)")
    g.add_argument("--p-max", dest="p_max", type=float, default=None,
                   help="DQ protection probability of the highest in-degree "
                        "(default 0.1 at INT8, 0.2 below)")
    g.add_argument("--range", dest="quant_range", choices=RANGE_KINDS, default=None,
                   help="activation range tracker (default percentile for dq, momentum for qat)")
    g.add_argument("--input-range", dest="quant_input_range", choices=RANGE_KINDS, default=None,
                   help="range tracker of the model's input features only (default: as "
                        "--range; minmax keeps a sparse bag-of-words row's few large values "
                        "unclipped)")
    g.add_argument("--percentile", dest="quant_percentile", type=float, default=None,
                   help="tail fraction clipped on each side (default 0.001 at INT8, 0.01 at "
                        "INT4)")
    g.add_argument("--quant-momentum", dest="quant_momentum", type=float, default=None,
                   help="EMA weight of each step's range (default 0.1; EGC: 0.25 at 4 bits, "
                        "0.5 at 8)")
    g.add_argument("--per-channel", dest="quant_per_channel", action="store_true",
                   help="one weight scale per output channel")
    g.add_argument("--ste", dest="quant_ste", choices=STES, default=None,
                   help="straight-through estimator (default clipped for dq, plain for qat)")
    g.add_argument("--mask", dest="quant_mask", choices=MASK_MODES, default=None,
                   help="DQ: a fresh protection mask per layer (default) or one shared")
    return parser


def quant_config_from_args(args: argparse.Namespace) -> QuantConfig | None:
    """The config the options describe, or ``None`` for full precision.

    ``args.model`` (when present, as in ``qgnn train``) picks the model's quantisation preset
    at the chosen width, for ``args.task`` (``link`` has its own presets); options given
    explicitly override it.
    """
    from qgnn.training.quant.config import QuantConfig

    preset = getattr(args, "quant", None)
    bits = getattr(args, "quant_bits", None)
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"--quant: expected one of {tuple(PRESETS)}, got {preset!r}")
    preset_bits = PRESETS.get(preset) if preset is not None else None
    if preset is not None and bits is not None and preset_bits != bits:
        raise ValueError(f"--bits {bits} contradicts --quant {preset}")
    bits = bits if bits is not None else preset_bits
    options = {"method": getattr(args, "quant_method", None), "p_min": getattr(args, "p_min", None),
               "p_max": getattr(args, "p_max", None),
               "range": getattr(args, "quant_range", None),
               "percentile": getattr(args, "quant_percentile", None),
               "momentum": getattr(args, "quant_momentum", None),
               "ste": getattr(args, "quant_ste", None), "mask": getattr(args, "quant_mask", None),
               "input_range": getattr(args, "quant_input_range", None)}
    given = {k: v for k, v in options.items() if v is not None}
    per_channel = bool(getattr(args, "quant_per_channel", False))
    if bits is None:
        if given or per_channel:
            named = sorted(given) + (["per_channel"] if per_channel else [])
            raise ValueError(f"quantisation options {named} need --quant int8|int4 or --bits")
        return None
    if per_channel:
        given["per_channel"] = True
    model_defaults = model_quant_preset(getattr(args, "model", None), bits,
                                        getattr(args, "task", None) or "node")
    return QuantConfig(bits=bits, **{**model_defaults, **given})
