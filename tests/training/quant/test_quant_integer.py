"""The integer formulation (docs/integer-formulation.md) equals the fake-quantised model in eval."""

import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.hooks import make_hooks
from qgnn.training.quant.integer_ref import (
    SiteParams,
    int_aggregate_mean,
    int_aggregate_sum,
    int_linear,
    integer_forward,
    requantize,
)
from qgnn.training.quant.sites import quantized_sites
from qgnn.training.quant.state import quant_state


def site(scale, zp, qmin=0, qmax=255):
    return SiteParams(np.float32(scale), np.int32(zp), qmin, qmax)


def test_requantize_rounds_half_to_even_then_adds_zero_point_and_saturates():
    out = site(1.0, 10)
    acc = np.array([1, 3, 5, -25, 1000])
    np.testing.assert_array_equal(requantize(acc, np.float32(0.5), out), [10, 12, 12, 0, 255])


def test_int_linear_by_hand():
    x, w, y = site(0.5, 2), site(0.25, 0, -127, 127), site(0.125, 100)
    x_q = np.array([[2, 4, 6]])  # x = [0, 1, 2]
    w_q = np.array([[4, -4, 8], [1, 1, 1]])  # w = [[1, -1, 2], [.25, .25, .25]]
    # y = [0 - 1 + 4, 0.75] = [3, 0.75] -> q = [24, 6] + 100
    np.testing.assert_array_equal(int_linear(x_q, x, w_q, w, y), [[124, 106]])


def test_int_aggregate_sum_gives_empty_destinations_the_zero_point():
    msg, out = site(0.1, 3), site(0.2, 7)
    msg_q = np.array([[13], [5], [3]])  # values 1.0, 0.2, 0.0
    got = int_aggregate_sum(msg_q, msg, np.array([0, 0, 2]), 3, out)
    np.testing.assert_array_equal(got, [[13], [7], [7]])  # 1.2 / 0.2 = 6 (+7); nothing -> zp


def test_int_aggregate_mean_divides_the_multiplier_by_the_degree():
    msg, out = site(0.5, 0), site(0.5, 0)
    msg_q = np.array([[1], [2], [5], [4]])
    got = int_aggregate_mean(msg_q, msg, np.array([0, 0, 0, 1]), 3, out)
    np.testing.assert_array_equal(got, [[3], [4], [0]])  # 8/3 -> 3, 4, empty -> zp


def test_int_linear_folds_bias_at_the_accumulator_scale():
    x, w, y = site(0.5, 0), site(0.25, 0, -127, 127), site(1.0, 10)
    got = int_linear(np.array([[4]]), x, np.array([[8]]), w, y, bias=np.array([0.3]))
    # acc = 32 at scale 0.125 (= 4.0); bias 0.3 -> rint(2.4) = 2; (32 + 2) * 0.125 = 4.25 -> 4
    np.testing.assert_array_equal(got, [[14]])


def test_accumulator_overflow_is_an_error():
    with pytest.raises(OverflowError, match="int32"):
        requantize(np.array([2**31]), np.float32(1.0), site(1.0, 0))


def trained(model_name, bits, per_channel, n=60, seed=0):
    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, n, 3 * n), rng.integers(0, n, 3 * n)
    keep = src != dst
    graph = Graph.from_edges(np.r_[src[keep], dst[keep]], np.r_[dst[keep], src[keep]], n,
                             x=rng.standard_normal((n, 6)).astype(np.float32),
                             y=rng.integers(0, 3, n))
    torch.manual_seed(seed)
    model = build_model(ModelConfig(model_name, 6, 3, hidden=8))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_()  # a non-trivial bias everywhere
    prepare_model, blocks_for = make_hooks(QuantConfig(bits=bits, per_channel=per_channel),
                                           graph, generator=torch.Generator().manual_seed(0))
    model = prepare_model(model)
    x, y = torch.from_numpy(graph.x), torch.from_numpy(graph.y)
    block = full_graph_block(graph)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(15):
        model.train()
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x, blocks_for(block, True)), y).backward()
        optimiser.step()
    return model.eval(), graph, block


def fake_quant_integers(model, x, block):
    """Run the fake-quantised model in eval and read back every site's integers."""
    found, handles = {}, []
    for path, seam in quantized_sites(model).items():
        def hook(mod, args, out, path=path):
            quantizer = mod.quantizers[args[0]]
            view = (-1, *([1] * (out.dim() - 1)))
            scale = quantizer.scale.view(view) if quantizer.per_channel else quantizer.scale
            zp = quantizer.zero_point.view(view) if quantizer.per_channel else \
                quantizer.zero_point
            found[f"{path}.{args[0]}"] = (torch.round(out / scale) + zp).to(torch.int64).numpy()
        handles.append(seam.register_forward_hook(hook))
    with torch.no_grad():
        logits = model(x, block).numpy()
    for h in handles:
        h.remove()
    return logits, found


def compare(model, graph, block, model_name):
    logits, fake = fake_quant_integers(model, torch.from_numpy(graph.x), block)
    qstate = quant_state(model)
    params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    trace: dict[str, np.ndarray] = {}
    # edges in the block's (destination-sorted) order, without self-loops (GCN adds them)
    ref = integer_forward(model_name, graph.x, params, qstate, block.src.numpy(),
                          block.dst.numpy(), 2, trace)
    assert set(trace) == set(fake) == set(qstate)
    step = qstate["layers.1.q.out"]["scale"][0]
    return trace, fake, qstate, np.abs(ref - logits).max() / step


@pytest.mark.parametrize("model_name", ["gcn", "sage"])
@pytest.mark.parametrize(("bits", "per_channel"), [(8, False), (8, True), (4, False), (4, True)])
def test_integer_formulation_equals_fake_quantised_eval(model_name, bits, per_channel):
    """Every site's integers are identical (GCN's bias after aggregation is a float step;
    SAGE's bias inside its matrix product is zeroed here, see the next test)."""
    model, graph, block = trained(model_name, bits, per_channel)
    if model_name == "sage":
        with torch.no_grad():
            for layer in model.layers:
                layer.lin_l.bias.zero_()
    trace, fake, qstate, final_steps = compare(model, graph, block, model_name)
    for key, ints in fake.items():
        np.testing.assert_array_equal(trace[key], ints, err_msg=key)
    assert final_steps <= 1e-6
    for key, ints in trace.items():  # really narrow integers: uint8 activations, int8 weights
        if qstate[key]["signed"]:
            assert np.abs(ints).max() <= 2 ** (bits - 1) - 1, key
        else:
            assert ints.min() >= 0 and ints.max() <= 2**bits - 1, key


@pytest.mark.parametrize("bits", [8, 4])
def test_matmul_bias_folded_in_int32_moves_integers_by_at_most_one_step(bits):
    """The contract folds a matrix product's bias into int32 as rint(bias / (s_x s_w)); training
    adds it in float, so a few outputs round the other way (one step), and so may what follows."""
    model, graph, block = trained("sage", bits, False)
    trace, fake, _, final_steps = compare(model, graph, block, "sage")
    for key, ints in fake.items():
        diff = np.abs(trace[key] - ints)
        assert diff.max() <= 1 and (diff > 0).mean() <= 0.05, key
    assert final_steps <= 1 + 1e-6
