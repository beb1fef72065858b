"""Every registered layer type trains under Degree-Quant and plain QAT through its QuantSites."""

import json

import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.models import CLASSIFIER_LAYERS, ModelConfig, build_model
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.hooks import make_hooks
from qgnn.training.quant.sites import quantized_sites
from qgnn.training.quant.state import quant_state
from torch.nn import functional as F

LAYER_KWARGS = {"gat": {"heads": 2}, "egc": {"heads": 2, "bases": 2}}


def community_graph(num_classes=3, per_class=30, seed=0):
    rng = np.random.default_rng(seed)
    n = num_classes * per_class
    y = np.repeat(np.arange(num_classes), per_class)
    prob = np.where(y[:, None] == y[None, :], 0.2, 0.02)
    upper = np.triu(rng.random((n, n)) < prob, 1)
    src, dst = np.nonzero(upper | upper.T)
    x = (np.eye(num_classes)[y] + rng.standard_normal((n, num_classes))).astype(np.float32)
    return Graph.from_edges(src, dst, n, x=x, y=y)


def train(model_name, cfg, steps=40, seed=0):
    torch.manual_seed(seed)
    graph = community_graph()
    model = build_model(ModelConfig(model_name, 3, 3, hidden=16, dropout=0.1,
                                    layer_kwargs=LAYER_KWARGS.get(model_name, {})))
    prepare_model, blocks_for = make_hooks(cfg, graph, generator=torch.Generator().manual_seed(0))
    model = prepare_model(model)
    x, y = torch.from_numpy(graph.x), torch.from_numpy(graph.y)
    block = full_graph_block(graph)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(steps):
        model.train()
        optimiser.zero_grad()
        loss = F.cross_entropy(model(x, blocks_for(block, True)), y)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        logits = model(x, blocks_for(block, False))
    return model, losses, (logits.argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("model_name", sorted(CLASSIFIER_LAYERS))
@pytest.mark.parametrize("cfg", [QuantConfig(bits=8, p_max=0.5), QuantConfig(bits=4, p_max=0.5),
                                 QuantConfig(bits=4, method="qat")], ids=["dq8", "dq4", "qat4"])
def test_every_layer_trains_quantised(model_name, cfg):
    model, losses, acc = train(model_name, cfg)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert acc > 0.6  # three well-separated communities; chance is 1/3
    state = quant_state(model)
    json.dumps(state)
    for path, seam in quantized_sites(model).items():
        for site, quantizer in seam.quantizers.items():
            if quantizer.calibrated:
                assert f"{path}.{site}" in state
    weights = [v for v in state.values() if v["role"] == "param"]
    assert weights and all(v["signed"] and v["zero_point"] == [0] * len(v["scale"])
                           for v in weights)
