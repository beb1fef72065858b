import json

import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.hooks import make_hooks
from qgnn.training.quant.sites import quantize_model
from qgnn.training.quant.state import (
    load_quant_state,
    quant_extra,
    quant_state,
    restore_quantized,
)


def setup(per_channel=False, bits=8, seed=0):
    rng = np.random.default_rng(seed)
    n = 40
    src, dst = rng.integers(0, n, 160), rng.integers(0, n, 160)
    graph = Graph.from_edges(np.r_[src, dst], np.r_[dst, src], n,
                             x=rng.standard_normal((n, 6)).astype(np.float32),
                             y=rng.integers(0, 3, n))
    cfg = QuantConfig(bits=bits, per_channel=per_channel)
    torch.manual_seed(seed)
    model = build_model(ModelConfig("gcn", 6, 3, hidden=8))
    prepare_model, blocks_for = make_hooks(cfg, graph)
    model = prepare_model(model)
    x, y = torch.from_numpy(graph.x), torch.from_numpy(graph.y)
    block = full_graph_block(graph)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(5):
        model.train()
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x, blocks_for(block, True)), y).backward()
        optimiser.step()
    model.eval()
    return model, cfg, x, block


def fresh_like(cfg):
    return quantize_model(build_model(ModelConfig("gcn", 6, 3, hidden=8)), cfg).eval()


def test_quant_state_is_plain_json_with_the_contract_fields():
    model, _, _, _ = setup(per_channel=True)
    state = json.loads(json.dumps(quant_state(model)))
    assert set(state) == {f"layers.{i}.q.{s}" for i in range(2)
                          for s in ("x", "weight", "lin", "edge_weight", "msg", "agg", "out")}
    w = state["layers.0.q.weight"]
    assert w == {"scale": w["scale"], "zero_point": [0] * 8, "bits": 8, "signed": True,
                 "per_channel": True, "role": "param"}
    assert len(w["scale"]) == 8 and all(s > 0 for s in w["scale"])
    lin = state["layers.0.q.lin"]
    assert lin["signed"] is False and lin["per_channel"] is False and lin["role"] == "src"
    assert len(lin["scale"]) == 1 and 0 <= lin["zero_point"][0] <= 255
    # scales are float32 values, exactly
    assert all(np.float32(s) == s for v in state.values() for s in v["scale"])


@pytest.mark.parametrize("per_channel", [False, True])
def test_load_quant_state_reproduces_eval_outputs(per_channel):
    model, cfg, x, block = setup(per_channel=per_channel)
    expected = model(x, block)
    fresh = fresh_like(cfg)
    fresh.load_state_dict({k: v for k, v in model.state_dict().items()
                           if k.split(".")[-1] not in ("scale", "zero_point", "lo", "hi")},
                          strict=False)
    load_quant_state(fresh, json.loads(json.dumps(quant_state(model))))
    assert torch.equal(fresh(x, block), expected)
    assert quant_state(fresh) == quant_state(model)


def test_state_dict_round_trip_restores_lazily_shaped_buffers():
    model, cfg, x, block = setup(per_channel=True)
    fresh = fresh_like(cfg)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x, block), model(x, block))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda s: s.update({"layers.9.q.x": s["layers.0.q.x"]}), "not a quantisation site"),
    (lambda s: s["layers.0.q.x"].update(bits=4), "bits"),
    (lambda s: s["layers.0.q.x"].update(scale=[0.0]), "scale must be finite and > 0"),
    (lambda s: s["layers.0.q.x"].update(zero_point=[300]), "zero_point"),
    (lambda s: s["layers.0.q.weight"].update(zero_point=[3]), "zero_point"),
    (lambda s: s["layers.0.q.x"].update(scale=[0.1, 0.2], zero_point=[1, 2]), "per-tensor"),
])
def test_bad_quant_state_is_refused(mutate, message):
    model, cfg, _, _ = setup()
    state = json.loads(json.dumps(quant_state(model)))
    mutate(state)
    with pytest.raises(ValueError, match=message):
        load_quant_state(fresh_like(cfg), state)


def test_checkpoint_extra_rebuilds_the_quantised_model():
    model, cfg, x, block = setup(per_channel=True, bits=4)
    extra = json.loads(json.dumps(quant_extra(model)))
    assert QuantConfig.from_dict(extra["quant"]["config"]) == cfg
    assert extra["quant"]["state"] == json.loads(json.dumps(quant_state(model)))
    fresh = build_model(ModelConfig("gcn", 6, 3, hidden=8))
    fresh.load_state_dict({k: v for k, v in model.state_dict().items()
                           if k.split(".")[-1] in ("weight", "bias")}, strict=False)
    fresh = restore_quantized(fresh, extra).eval()
    assert torch.equal(fresh(x, block), model(x, block))
    plain = build_model(ModelConfig("gcn", 6, 3, hidden=8))
    assert quant_extra(plain) == {}
    assert restore_quantized(plain, {}) is plain
    with pytest.raises(ValueError, match="needs a 'config'"):
        restore_quantized(plain, {"quant": {"state": {}}})
