"""Range trackers: the ``[lo, hi]`` each quantisation site maps onto its integer grid.

A tracker observes tensors in training mode and is frozen in eval mode (it returns the stored
range and never updates). The range lives in buffers so it is saved with the ``state_dict``.
``rows`` (a bool mask over the first dimension) restricts the statistics to some rows, which is
how Degree-Quant leaves protected nodes out of the ranges. ``index`` says that the observed
tensor is ``x[index]`` (one row per edge gathered from a table of distinct rows) without
building it: the statistics are those of ``x[index]``, random samples included.
"""

from __future__ import annotations

import math

import torch
from qgnn.training.nn.shards import CrossShard
from torch import nn

DEFAULT_MAX_SAMPLES = 2**16


class LazyBuffers(nn.Module):
    """Buffers whose shape is only known at the first observation (per-channel ranges).

    Loading a ``state_dict`` resizes such a buffer to the stored shape first, so a fresh module
    loads the buffers of a trained one.
    """

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,  # type: ignore[override]
                              missing_keys, unexpected_keys, error_msgs) -> None:
        for name, buf in self._buffers.items():
            stored = state_dict.get(prefix + name)
            if buf is not None and stored is not None and stored.shape != buf.shape:
                self._buffers[name] = torch.empty(stored.shape, dtype=buf.dtype,
                                                  device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


def percentiles(values: torch.Tensor, lower: float, upper: float) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """The ``lower`` and ``upper`` quantiles (fractions) of a 1-D tensor, as ``np.percentile``.

    Linear interpolation between order statistics (numpy's default method), but only the tails
    are partially sorted with ``topk``, which is much cheaper than sorting everything.
    """
    n = values.numel()
    if n == 0:
        raise ValueError("percentiles: empty tensor")

    def order_stats(q: float) -> tuple[int, float]:
        pos = q * (n - 1)
        i = min(math.floor(pos), n - 1)
        return i, pos - i

    i, frac = order_stats(lower)
    asc = torch.topk(values, min(i + 2, n), largest=False, sorted=True).values
    lo = torch.lerp(asc[i], asc[min(i + 1, n - 1)], frac)
    j, frac = order_stats(upper)
    desc = torch.topk(values, n - j, largest=True, sorted=True).values
    hi = torch.lerp(desc[n - 1 - j], desc[max(n - 2 - j, 0)], frac)
    return lo, hi


def sample_values(x: torch.Tensor, rows: torch.Tensor | None, max_samples: int,
                  generator: torch.Generator | None = None,
                  index: torch.Tensor | None = None) -> torch.Tensor:
    """At most ``max_samples`` values of ``x`` (uniform with replacement), from ``rows`` only.

    Small tensors are used whole. Rows outside the mask are dropped from the sample, so the
    sample can be smaller when many rows are excluded. ``generator``: the random stream (torch's
    global one when ``None``). ``index``: sample ``x[index]`` instead, with the same draws and
    values as if it had been built.
    """
    num_rows = x.shape[0] if index is None else index.numel()
    width = math.prod(x.shape[1:])
    numel = num_rows * width
    if numel <= max_samples:
        if index is not None:
            return x[index if rows is None else index[rows]].reshape(-1)
        return x.reshape(-1) if rows is None else x[rows].reshape(-1)
    idx = torch.randint(numel, (max_samples,), device=x.device, generator=generator)
    if rows is not None:
        idx = idx[rows[idx // max(1, width)]]
    if index is None:
        return x.reshape(-1)[idx]
    return x.reshape(x.shape[0], -1)[index[idx // width], idx % width]


def distinct_rows(x: torch.Tensor, rows: torch.Tensor | None,
                  index: torch.Tensor | None) -> torch.Tensor:
    """The rows of ``x`` (or of ``x[index]``) that ``rows`` keeps, each distinct row once: what
    order-free statistics (min, max) need."""
    if index is None:
        return x if rows is None else x[rows]
    return x[torch.unique(index if rows is None else index[rows])]


class RangeTracker(LazyBuffers):
    """Base: ``forward(x, rows) -> (lo, hi)`` or ``None`` while no range was ever observed."""

    def __init__(self, per_channel: bool = False) -> None:
        super().__init__()
        self.per_channel = per_channel
        self.register_buffer("lo", torch.empty(0))
        self.register_buffer("hi", torch.empty(0))

    @property
    def initialised(self) -> bool:
        return self.lo.numel() > 0

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None,
                across: CrossShard | None = None,
                index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``across``: ``x`` is this rank's share of a per-edge tensor (edge-sharded training);
        the statistic is then taken over every rank's share, so all ranks store one range.
        ``index``: observe ``x[index]`` (module docstring)."""
        if index is not None and (across is not None or self.per_channel):
            raise ValueError("RangeTracker: a gathered tensor (index) takes neither per-channel "
                             "ranges nor cross-shard statistics")
        if self.training:
            observed = None
            if across is not None:
                observed = self.observe_across(x.detach(), rows, across)
            elif (x.numel() > 0 and (index is None or index.numel() > 0)
                  and (rows is None or bool(rows.any()))):
                observed = self.observe(x.detach(), rows, index)
            if observed is not None:
                lo, hi = observed
                if self.initialised:
                    lo, hi = self.combine(lo, hi)
                self.lo, self.hi = lo.to(torch.float32), hi.to(torch.float32)
        return (self.lo, self.hi) if self.initialised else None

    def observe_across(self, x: torch.Tensor, rows: torch.Tensor | None, across: CrossShard
                       ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:meth:`observe` over every rank's rows (per tensor); ``None`` when no rank has one."""
        if self.per_channel and x.dim() >= 2:
            raise ValueError("RangeTracker: per-channel ranges of a sharded tensor are not "
                             "supported (only parameters are per channel, and they are whole)")
        values = x if rows is None else x[rows]
        if values.numel() > 0:
            lo, hi = torch.aminmax(values)
        else:
            lo = torch.tensor(torch.inf, device=x.device, dtype=x.dtype)
            hi = torch.tensor(-torch.inf, device=x.device, dtype=x.dtype)
        lo, hi = across.min_max(lo, hi)
        return None if bool(lo > hi) else (lo, hi)

    def observe(self, x: torch.Tensor, rows: torch.Tensor | None,
                index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's statistic: min/max (per channel along dim 0 when ``per_channel`` and
        ``x`` is a matrix or more; vectors and scalars get one range)."""
        x = distinct_rows(x, rows, index)
        if self.per_channel and x.dim() >= 2:
            lo, hi = torch.aminmax(x.reshape(x.shape[0], -1), dim=1)
            return lo, hi
        return torch.aminmax(x)

    def combine(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Merge this step's statistic into the stored range."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"per_channel={self.per_channel}" if self.per_channel else ""


class CurrentRange(RangeTracker):
    """The range of the latest tensor only: right for weights, which are known exactly."""

    def combine(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return lo, hi


class MinMaxRange(RangeTracker):
    """Running min/max over all steps (the range only grows)."""

    def combine(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)


def _check_momentum(momentum: float) -> float:
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"momentum: expected a value in (0, 1], got {momentum!r}")
    return momentum


class MomentumRange(RangeTracker):
    """Exponential moving average of each step's min and max: ``r <- r + m (r_step - r)``."""

    def __init__(self, momentum: float, per_channel: bool = False) -> None:
        super().__init__(per_channel)
        self.momentum = _check_momentum(momentum)

    def combine(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.momentum
        return self.lo + m * (lo - self.lo), self.hi + m * (hi - self.hi)


class PercentileRange(MomentumRange):
    """EMA of each step's ``lower``/``upper`` quantiles, measured on a random subsample.

    Percentiles instead of min/max keep a few outliers (typically high in-degree nodes' sums)
    from stretching the range and wasting the grid (Tailor et al., 2021, Sec. 4). Exact zeros
    are left out of the quantiles: zero is always on the grid, and counting them would let a
    sparse tensor (bag-of-words features under dropout: < 1% non-zero) collapse the range to
    ``[0, 0]`` and quantise every value to zero.
    """

    def __init__(self, lower: float, upper: float, momentum: float,
                 max_samples: int = DEFAULT_MAX_SAMPLES) -> None:
        super().__init__(momentum)
        if not 0.0 <= lower < upper <= 1.0:
            raise ValueError(f"percentile: need 0 <= lower < upper <= 1, got lower={lower!r}, "
                             f"upper={upper!r}")
        if max_samples < 1:
            raise ValueError(f"max_samples: expected >= 1, got {max_samples!r}")
        self.lower, self.upper, self.max_samples = lower, upper, max_samples

    def observe(self, x: torch.Tensor, rows: torch.Tensor | None,
                index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        values = sample_values(x, rows, self.max_samples, index=index)
        nonzero = values[values != 0]
        if nonzero.numel() == 0:
            return torch.aminmax(distinct_rows(x, rows, index))
        return percentiles(nonzero, self.lower, self.upper)

    def observe_across(self, x: torch.Tensor, rows: torch.Tensor | None, across: CrossShard
                       ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Quantiles of the values every rank contributes. A tensor of at most ``max_samples``
        values in all is gathered whole, so the quantiles equal the single-process ones exactly
        (they do not depend on order); a larger one contributes a sample proportional to each
        rank's share, drawn from the rank-local stream."""
        total = across.total(x.numel())
        budget = self.max_samples
        if total > budget:
            budget = max(1, math.ceil(self.max_samples * x.numel() / total))
        local = sample_values(x, rows, budget, across.generator) if x.numel() else x.reshape(-1)
        values = across.gather(local)
        if values.numel() == 0:
            return None
        nonzero = values[values != 0]
        if nonzero.numel() == 0:
            return super().observe_across(x, rows, across)
        return percentiles(nonzero, self.lower, self.upper)

    def extra_repr(self) -> str:
        return (f"lower={self.lower}, upper={self.upper}, momentum={self.momentum}, "
                f"max_samples={self.max_samples}")
