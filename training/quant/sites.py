"""The quantising seam: :class:`QuantizedSites` replaces a layer's full-precision ``QuantSites``.

Each site gets a :class:`SiteQuantizer` (a range tracker plus the scale and zero point derived
from it). Activation sites (roles src/dst/edge) are unsigned asymmetric; ``param`` sites
(weights, attention vectors) signed symmetric, optionally per output channel (dim 0). During
Degree-Quant training the rows of protected nodes pass through in full precision and are left
out of the range statistics, as in the authors' code, where protected rows go to a separate
full-precision path and only the unprotected rows reach the quantiser and its range observer.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from qgnn.training.nn import shards
from qgnn.training.nn.block import Block
from qgnn.training.nn.quant_sites import QuantSites, Role, protection_rows
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.quantiser import fake_quantize, qrange, quant_params
from qgnn.training.quant.ranges import (
    CurrentRange,
    LazyBuffers,
    MinMaxRange,
    MomentumRange,
    PercentileRange,
    RangeTracker,
)
from torch import nn


def make_tracker(role: Role, cfg: QuantConfig) -> RangeTracker:
    """Weights use their exact current range; activations the configured tracker."""
    if role == "param":
        return CurrentRange(per_channel=cfg.per_channel)
    if cfg.range == "percentile":
        assert cfg.percentile is not None
        return PercentileRange(cfg.percentile, 1.0 - cfg.percentile, cfg.momentum,
                               cfg.max_samples)
    if cfg.range == "momentum":
        return MomentumRange(cfg.momentum)
    return MinMaxRange()


class SiteQuantizer(LazyBuffers):
    """Fake quantisation of one site; ``scale``/``zero_point`` are frozen in eval mode.

    ``scale`` is float32 and ``zero_point`` int64, shaped ``()`` per tensor or ``(C,)`` per
    output channel; both are empty until the first training step observed a range.
    """

    def __init__(self, role: Role, cfg: QuantConfig) -> None:
        super().__init__()
        self.role = role
        self.signed = role == "param"
        self.bits = cfg.bits
        self.ste = cfg.ste
        self.qmin, self.qmax = qrange(cfg.bits, self.signed)
        self.tracker = make_tracker(role, cfg)
        self.register_buffer("scale", torch.empty(0))
        self.register_buffer("zero_point", torch.empty(0, dtype=torch.int64))
        # Training inputs are this many times their evaluation size (inverted dropout right
        # before the site): ranges are learned in evaluation units and the training grid is
        # scaled by it, which is exactly "quantise, then drop out".
        self.dropout_gain = 1.0

    @property
    def calibrated(self) -> bool:
        return self.scale.numel() > 0

    @property
    def per_channel(self) -> bool:
        return self.scale.dim() == 1 and self.calibrated

    def forward(self, x: torch.Tensor, stats_rows: torch.Tensor | None = None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        """Fake-quantised ``x``. ``index``: the tensor at this site is ``x[index]`` (one row per
        edge, gathered from distinct rows); the range is observed on it as if it had been built,
        and ``x`` is quantised elementwise, which gives the rows of the quantised ``x[index]``."""
        gain = self.dropout_gain if self.training else 1.0
        if self.training:
            across = shards.active() if self.role == "edge" else None
            observed = self.tracker(x if gain == 1.0 else x / gain, stats_rows, across, index)
            if observed is not None:
                self.scale, self.zero_point = quant_params(*observed, self.bits, self.signed)
        if not self.calibrated:
            if self.training:  # nothing observed yet: every row is protected this step
                return x
            raise RuntimeError("SiteQuantizer: no range observed yet; run at least one "
                               "training step before evaluating a quantised model")
        scale, zero_point = self.scale, self.zero_point
        if scale.dim() == 1:
            if index is not None:
                raise ValueError("SiteQuantizer: a gathered tensor takes one scale, not "
                                 "per-channel scales")
            if x.dim() == 0 or x.shape[0] != scale.numel():
                raise ValueError(f"SiteQuantizer: {scale.numel()} channel scales do not match "
                                 f"a tensor of shape {tuple(x.shape)}")
            view = (-1, *([1] * (x.dim() - 1)))
            scale, zero_point = scale.view(view), zero_point.view(view)
        if gain != 1.0:
            scale = scale * gain
        return fake_quantize(x, scale, zero_point, self.qmin, self.qmax, self.ste)

    def extra_repr(self) -> str:
        gain = f", dropout_gain={self.dropout_gain:g}" if self.dropout_gain != 1.0 else ""
        return f"role={self.role}, bits={self.bits}, signed={self.signed}, ste={self.ste}{gain}"


class QuantizedSites(QuantSites):
    """Fake-quantises every declared site; protected rows bypass it during DQ training."""

    def __init__(self, sites: dict[str, Role], cfg: QuantConfig) -> None:
        super().__init__(sites)
        self.cfg = cfg
        self.quantizers = nn.ModuleDict({name: SiteQuantizer(role, cfg)
                                         for name, role in self.sites.items()})

    def gathers(self) -> bool:
        """Yes, unless forward hooks watch this seam or its quantisers: those (export parity,
        tests) read each site's tensor, so they get the per-edge messages built."""
        watched = [self, *self.quantizers.values()]
        return not any(m._forward_hooks or m._forward_pre_hooks for m in watched)

    def protected(self, name: str, block: Block | None) -> torch.Tensor | None:
        """Rows of site ``name`` that bypass quantisation this pass (Degree-Quant training)."""
        if self.training and self.cfg.method == "dq":
            return protection_rows(self.sites[name], block)
        return None

    def gathered(self, name: str, table: torch.Tensor, index: torch.Tensor,
                 block: Block | None = None) -> torch.Tensor:
        """The quantised ``table``, whose rows at ``index`` are what :meth:`forward` gives for
        ``table[index]``, except on protected rows, which the caller routes separately; their
        ``index`` entries are never read. Ranges are observed as :meth:`forward` observes them."""
        super().gathered(name, table, index, block)
        protect = self.protected(name, block)
        if protect is not None and protect.shape[0] != index.shape[0]:
            raise ValueError(f"QuantizedSites: site {name!r} got {index.shape[0]} gathered rows "
                             f"but the block protects {protect.shape[0]} rows")
        return self.quantizers[name](table, None if protect is None else ~protect, index)

    def forward(self, name: str, tensor: torch.Tensor, block: Block | None = None) -> torch.Tensor:
        super().forward(name, tensor, block)  # validates the name
        protect = self.protected(name, block)
        if protect is not None and (tensor.dim() == 0 or protect.shape[0] != tensor.shape[0]):
            raise ValueError(f"QuantizedSites: site {name!r} (role {self.sites[name]!r}) got a "
                             f"tensor of shape {tuple(tensor.shape)} but the block protects "
                             f"{protect.shape[0]} rows")
        quantizer = self.quantizers[name]
        if protect is None:
            return quantizer(tensor)
        out = quantizer(tensor, ~protect)
        return torch.where(protect.view(-1, *([1] * (tensor.dim() - 1))), tensor, out)


def quantize_model(model: nn.Module, cfg: QuantConfig) -> nn.Module:
    """Swap every full-precision ``QuantSites`` of ``model`` for a quantising one, in place."""
    swapped = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, QuantizedSites):
                raise ValueError("quantize_model: the model is already quantised")
            if type(child) is QuantSites:
                new = QuantizedSites(child.sites, cfg)
                new.train(child.training)
                setattr(module, child_name, new)
                swapped += 1
    if swapped == 0:
        raise ValueError(f"quantize_model: {type(model).__name__} declares no QuantSites")
    encoder = getattr(model, "encoder", model)
    for i, (module, p) in enumerate(getattr(encoder, "input_dropouts", list)()):
        seam = getattr(module, "q", None)
        if not (isinstance(seam, QuantizedSites) and "x" in seam.quantizers):
            continue
        site = seam.quantizers["x"]
        if p > 0:
            site.dropout_gain = 1.0 / (1.0 - p)
        if i == 0 and cfg.input_range is not None and cfg.input_range != cfg.range:
            site.tracker = make_tracker(site.role, replace(
                cfg, range=cfg.input_range,
                percentile=cfg.percentile if cfg.input_range == "percentile" else None))
    return model


def quantized_sites(model: nn.Module) -> dict[str, QuantizedSites]:
    """Every quantising seam of ``model`` by its dotted module path (e.g. ``layers.0.q``)."""
    return {path: m for path, m in model.named_modules() if isinstance(m, QuantizedSites)}
