"""Calibrated untrained models, saved as runs ``qgnn export`` reads: what every model-level bench
exports (serving speed does not depend on training, only on the ranges the quantisers saw)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qgnn.graph.container import Graph

CALIBRATION_PASSES = 3


def calibrate(model: Any, graph: Graph, features: np.ndarray | None = None) -> Any:
    """``model`` after three training-mode forward passes over the whole graph (its quantisers'
    ranges set), in eval mode. ``features`` default to the graph's, as float32."""
    import torch
    from qgnn.training.nn.block import full_graph_block

    x = np.asarray(graph.x if features is None else features, np.float32)
    block = full_graph_block(graph)
    model.train()
    with torch.no_grad():
        for _ in range(CALIBRATION_PASSES):
            model(torch.from_numpy(x), block)
    return model.eval()


def save_untrained_run(run: Path, model: Any, *, task: str, graph: Graph, model_config: Any,
                       quant: Any, train: Any = None) -> Path:
    """``run`` written as ``qgnn train`` writes one, with the quantisation state the exporter
    reads and no metrics."""
    from qgnn.training.checkpoint import save_run
    from qgnn.training.presets import TrainConfig
    from qgnn.training.quant import quant_state

    save_run(run, model, task=task, dataset=graph.name, model_config=model_config,
             train_config=train if train is not None else TrainConfig(), metrics={},
             extra={"quant": {"config": quant.to_dict(), "state": quant_state(model)}})
    return run
