"""What every training run shares: seeding, model selection on validation, history, the result.

Tasks (node, link) own their forward passes and metrics; this module owns the bookkeeping so both
select the best epoch, stop early and report the same way.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[np.random.Generator]:
    """Seed torch and Python, turn on deterministic kernels, and yield a numpy Generator.

    The deterministic-algorithms switch is process-wide in torch, so it is restored on exit.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.manual_seed(seed)
    random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield np.random.default_rng(seed)
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)


class BestTracker:
    """Keeps the parameters of the epoch with the best validation metric (higher is better).

    Ties on the metric go to the lower validation loss, so a plateau of equal accuracy does not
    freeze the choice at its first, least-trained epoch. ``patience`` epochs without a new best
    end training (``None`` or 0: never).
    """

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.best_metric = -float("inf")
        self.best_loss = float("inf")
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self._stale = 0

    def update(self, epoch: int, metric: float, loss: float, model: nn.Module) -> bool:
        """Record an epoch; True when it is the new best."""
        better = metric > self.best_metric or (metric == self.best_metric and loss < self.best_loss)
        if better:
            self.best_metric, self.best_loss, self.best_epoch = metric, loss, epoch
            self.best_state = copy.deepcopy(model.state_dict())
            self._stale = 0
        else:
            self._stale += 1
        return better

    @property
    def should_stop(self) -> bool:
        return bool(self.patience) and self._stale >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


@dataclass
class RunResult:
    """The outcome of one training run; ``model`` holds the best epoch's parameters."""

    metric: str  # name of the selection metric, e.g. "accuracy", "roc_auc"
    best_epoch: int
    val_metric: float
    test_metric: float
    train_metric: float | None  # None where the task has no training-set metric (link)
    epochs_run: int
    seconds: float
    num_params: int
    history: list[dict[str, float]] = field(default_factory=list)
    extra_metrics: dict[str, float] = field(default_factory=dict)  # e.g. test recall@20
    model: nn.Module | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (no history, no model)."""
        return {"metric": self.metric, "best_epoch": self.best_epoch,
                "train_metric": self.train_metric, "val_metric": self.val_metric,
                "test_metric": self.test_metric, "epochs_run": self.epochs_run,
                "seconds": round(self.seconds, 3), "num_params": self.num_params,
                **self.extra_metrics}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def epoch_bar(epochs: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar over epochs (stderr), or a plain range when progress is off."""
    if not enabled:
        return range(epochs)
    from tqdm.auto import tqdm

    return tqdm(range(epochs), desc=desc, unit="epoch", leave=False, dynamic_ncols=True,
                disable=None)  # None: quiet when stderr is not a terminal
