"""Uniform affine quantisation as pure tensor functions (the shared quantisation contract).

``q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax)``, ``x_hat = (q - zp) * scale``.
Activations are unsigned and asymmetric (``[0, 2^b - 1]``); weights are signed and symmetric
(``zero_point = 0``, ``[-(2^(b-1) - 1), 2^(b-1) - 1]``). ``scale``/``zero_point`` broadcast against
``x``: a 0-d tensor per tensor, a ``(C, 1, ...)`` view per output channel.
"""

from __future__ import annotations

import torch
from qgnn.training.quant.options import STES, Ste

MIN_BITS, MAX_BITS = 2, 8


def check_bits(bits: int, field: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{field}: expected an int in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return bits


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range: ``[0, 2^b - 1]`` unsigned, ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` signed."""
    check_bits(bits)
    if signed:
        top = 2 ** (bits - 1) - 1
        return -top, top
    return 0, 2**bits - 1


def quant_params(lo: torch.Tensor, hi: torch.Tensor, bits: int,
                 signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale float32 > 0, zero_point int64)`` for the range ``[lo, hi]`` (any matching shape).

    The range is widened to contain 0 so zero is exact. Signed means symmetric: the scale maps
    ``max(|lo|, |hi|)`` onto ``qmax`` and the zero point is 0. Unsigned is asymmetric: ``lo``
    maps to ``qmin``, rounded so the zero point is an integer. An empty range gets scale 1.
    """
    qmin, qmax = qrange(bits, signed)
    lo = torch.clamp(lo.to(torch.float32), max=0.0)
    hi = torch.clamp(hi.to(torch.float32), min=0.0)
    tiny = torch.finfo(torch.float32).tiny
    if signed:
        span = torch.maximum(-lo, hi)
        scale = torch.where(span > 0, span / qmax, torch.ones_like(span)).clamp_min(tiny)
        return scale, torch.zeros(scale.shape, dtype=torch.int64, device=scale.device)
    span = hi - lo
    scale = torch.where(span > 0, span / (qmax - qmin), torch.ones_like(span)).clamp_min(tiny)
    zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int64)
    return scale, zero_point


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
             qmax: int) -> torch.Tensor:
    """Integers ``clamp(round(x / scale) + zp, qmin, qmax)`` as int32 (the contract's ``q``)."""
    q = torch.round(x / scale) + zero_point
    return q.clamp_(qmin, qmax).to(torch.int32)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``(q - zp) * scale`` in float32."""
    return (q.to(torch.float32) - zero_point) * scale


class _FakeQuantize(torch.autograd.Function):
    """Quantise-dequantise forward; straight-through backward, optionally zero outside range."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,  # type: ignore[override]
                qmin: int, qmax: int, clipped: bool) -> torch.Tensor:
        q = torch.div(x, scale).round_().add_(zero_point)
        ctx.clipped = clipped
        if not clipped:
            return q.clamp_(qmin, qmax).sub_(zero_point).mul_(scale)
        clamped = q.clamp(qmin, qmax)
        ctx.save_for_backward(clamped == q)  # inside the range: clamping changed nothing
        return clamped.sub_(zero_point).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        if ctx.clipped:
            (inside,) = ctx.saved_tensors
            grad = grad * inside
        return grad, None, None, None, None, None


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                  qmax: int, ste: Ste = "plain") -> torch.Tensor:
    """``dequantize(quantize(x))`` in float, differentiable by a straight-through estimator.

    ``ste="plain"`` passes the gradient unchanged everywhere; ``"clipped"`` zeroes it where
    ``round(x / scale) + zp`` falls outside ``[qmin, qmax]`` (the values clamping changed).
    Scale and zero point get no gradient: ranges are tracked, not learned.
    """
    if ste not in STES:
        raise ValueError(f"fake_quantize: ste must be one of {STES}, got {ste!r}")
    if qmin >= qmax:
        raise ValueError(f"fake_quantize: need qmin < qmax, got [{qmin}, {qmax}]")
    return _FakeQuantize.apply(x, scale, zero_point.to(x.dtype), qmin, qmax, ste == "clipped")
