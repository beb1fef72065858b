"""The integer formulation (docs/integer-formulation.md) equals the fake-quantised model in eval."""

import numpy as np
import pytest
import torch
from qgnn.exporter.emit.stack import emit_stack
from qgnn.exporter.parity import ort_session, run_onnx, torch_edge_order
from qgnn.exporter.quant_params import read_sites
from qgnn.exporter.store import csr_feeds
from qgnn.graph.container import Graph
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.hooks import make_hooks
from qgnn.training.quant.integer_ref import (
    EGC_AGGREGATORS,
    SiteParams,
    int_aggregate_max,
    int_aggregate_mean,
    int_aggregate_sum,
    int_edge_scale,
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


def test_int_aggregate_sum_weighted_accumulates_products_of_centred_integers():
    msg, w, out = site(0.5, 2), site(0.25, 1), site(0.25, 0)
    msg_q, w_q = np.array([[4], [0], [6]]), np.array([5, 3, 1])  # msg 1, -1, 2; w 1, .5, 0
    got = int_aggregate_sum(msg_q, msg, np.array([0, 0, 1]), 2, out, weight=(w_q, w))
    # v0: 1 * 1 + (-1) * 0.5 = 0.5 -> 2; v1: 2 * 0 = 0 -> 0
    np.testing.assert_array_equal(got, [[2], [0]])


def test_int_aggregate_max_and_min_of_centred_integers():
    msg, out = site(1.0, 5), site(1.0, 5)
    msg_q = np.array([[2], [9], [7], [6]])  # values -3, 4, 2, 1
    dst = np.array([0, 0, 0, 1])
    np.testing.assert_array_equal(int_aggregate_max(msg_q, msg, dst, 3, out), [[9], [6], [5]])
    np.testing.assert_array_equal(int_aggregate_max(msg_q, msg, dst, 3, out, "min"),
                                  [[2], [6], [5]])  # min -3 -> 2; empty -> zp


def test_int_edge_scale_uses_one_weight_per_head():
    h, w, out = site(1.0, 0), site(0.5, 0), site(1.0, 0)
    h_q = np.array([[1, 2, 3, 4]])  # 2 heads of 2 features
    got = int_edge_scale(h_q, h, np.array([0]), np.array([[2, 4]]), w, out)
    np.testing.assert_array_equal(got, [[1, 2, 6, 8]])  # head 0 x 1.0, head 1 x 2.0


def test_int_linear_folds_bias_at_the_accumulator_scale():
    x, w, y = site(0.5, 0), site(0.25, 0, -127, 127), site(1.0, 10)
    got = int_linear(np.array([[4]]), x, np.array([[8]]), w, y, bias=np.array([0.3]))
    # acc = 32 at scale 0.125 (= 4.0); bias 0.3 -> rint(2.4) = 2; (32 + 2) * 0.125 = 4.25 -> 4
    np.testing.assert_array_equal(got, [[14]])


def test_accumulator_overflow_is_an_error():
    with pytest.raises(OverflowError, match="int32"):
        requantize(np.array([2**31]), np.float32(1.0), site(1.0, 0))


# Small settings that still exercise several heads, bases and every EGC aggregator.
LAYER_KWARGS = {"gat": {"heads": 2, "out_heads": 2},
                "egc": {"heads": 2, "bases": 2, "aggregators": list(EGC_AGGREGATORS)}}
# Biases the contract folds into a matrix product's int32 accumulator (rule 2), where training
# adds them in float: zeroed where integers must equal training's exactly.
MATMUL_BIASES = {"gcn": (), "sage": ("lin_l.bias",), "gin": ("lin1.bias", "lin2.bias"),
                 "gat": (), "egc": ("comb_lin.bias", "bias")}


def trained(model_name, bits, per_channel, n=60, seed=0):
    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, n, 3 * n), rng.integers(0, n, 3 * n)
    keep = src != dst
    graph = Graph.from_edges(np.r_[src[keep], dst[keep]], np.r_[dst[keep], src[keep]], n,
                             x=rng.standard_normal((n, 6)).astype(np.float32),
                             y=rng.integers(0, 3, n))
    torch.manual_seed(seed)
    model = build_model(ModelConfig(model_name, 6, 3, hidden=8,
                                    layer_kwargs=LAYER_KWARGS.get(model_name, {})))
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


def zero_matmul_biases(model, model_name):
    with torch.no_grad():
        for layer in model.layers:
            for name in MATMUL_BIASES[model_name]:
                layer.get_parameter(name).zero_()


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


def reference(model, graph, block, model_name):
    """integer_forward on ``model``'s parameters and quant_state, with its site trace."""
    params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    trace: dict[str, np.ndarray] = {}
    # edges in the block's (destination-sorted) order, without self-loops (layers add them)
    logits = integer_forward(model_name, graph.x, params, quant_state(model), block.src.numpy(),
                             block.dst.numpy(), 2, trace, model.cfg.layer_kwargs)
    return logits, trace


def compare(model, graph, block, model_name):
    logits, fake = fake_quant_integers(model, torch.from_numpy(graph.x), block)
    qstate = quant_state(model)
    ref, trace = reference(model, graph, block, model_name)
    assert set(trace) == set(fake) == set(qstate)
    # GAT's messages are (E, H, C) in training, (E, H * C) in the reference (and the export)
    trace = {k: v.reshape(fake[k].shape) for k, v in trace.items()}
    step = qstate["layers.1.q.out"]["scale"][0]
    return trace, fake, qstate, np.abs(ref - logits).max() / step


@pytest.mark.parametrize("model_name", ["gcn", "sage", "gin", "gat", "egc"])
@pytest.mark.parametrize(("bits", "per_channel"), [(8, False), (8, True), (4, False), (4, True)])
def test_integer_formulation_equals_fake_quantised_eval(model_name, bits, per_channel):
    """Every site's integers are identical: biases after an aggregation (GCN, GAT) are float
    steps; biases inside a matrix product (SAGE, GIN, EGC) are zeroed here, see the next test.
    GIN keeps its MLP's BatchNorm, GAT its float attention island, EGC all seven aggregators."""
    model, graph, block = trained(model_name, bits, per_channel)
    zero_matmul_biases(model, model_name)
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
    adds it in float, so a few outputs round the other way (one step), and so may what follows:
    one step of a coarser grid is up to two of a finer one downstream."""
    model, graph, block = trained("sage", bits, False)
    trace, fake, _, final_steps = compare(model, graph, block, "sage")
    for key, ints in fake.items():
        diff = np.abs(trace[key] - ints)
        assert diff.max() <= 2 and (diff > 0).mean() <= 0.05, key
    assert final_steps <= 1 + 1e-6


@pytest.mark.parametrize(("model_name", "first_biased"), [("gin", "lin1"), ("egc", "comb")])
@pytest.mark.parametrize("bits", [8, 4])
def test_folded_bias_first_moves_the_site_it_is_folded_into(model_name, first_biased, bits):
    """With its matrix-product biases kept, GIN/EGC's integers stay exact up to the first site
    a folded bias reaches, which moves by one step on a few entries (later sites inherit the
    moves, amplified by GIN's BatchNorm, so they are not bounded here)."""
    model, graph, block = trained(model_name, bits, False)
    trace, fake, _, _ = compare(model, graph, block, model_name)
    order = list(trace)  # the reference records sites in execution order
    for key in order[: order.index(f"layers.0.q.{first_biased}")]:
        np.testing.assert_array_equal(trace[key], fake[key], err_msg=key)
    diff = np.abs(trace[f"layers.0.q.{first_biased}"] - fake[f"layers.0.q.{first_biased}"])
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.05


def test_refuses_what_it_cannot_represent():
    model, graph, block = trained("egc", 8, False)
    params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    args = (graph.x, params, quant_state(model), block.src.numpy(), block.dst.numpy(), 2)
    with pytest.raises(ValueError, match="aggregators"):
        integer_forward("egc", *args, layer_kwargs={"heads": 2, "aggregators": ["median"]})
    with pytest.raises(ValueError, match="do not fit heads=3"):
        integer_forward("egc", *args, layer_kwargs={**model.cfg.layer_kwargs, "heads": 3})
    params["input_proj.weight"] = np.zeros((8, 6), np.float32)
    with pytest.raises(ValueError, match="input_proj"):
        integer_forward("egc", *args, layer_kwargs=model.cfg.layer_kwargs)


@pytest.mark.parametrize(("model_name", "bits", "per_channel"), [
    ("gin", 8, False), ("gat", 8, False), ("egc", 8, False),
    ("gin", 4, True), ("gat", 4, True), ("egc", 4, True)])
def test_equals_the_onnx_exports_debug_integers(model_name, bits, per_channel):
    """The exporter's emitters are the other implementation of the integer formulation: its
    debug integers at every activation site and its logits equal the reference bit for bit
    (matrix-product biases kept: both fold them the same way)."""
    model, graph, block = trained(model_name, bits, per_channel)
    em = emit_stack(model, read_sites(quant_state(model), "", 2), task="node", debug=True)
    src, dst, n = block.src.numpy(), block.dst.numpy(), graph.num_nodes
    feeds = {"x": em.input_site.quantize(graph.x).astype(np.uint8),
             "in_degree": np.bincount(dst, minlength=n).astype(np.int64),
             **csr_feeds(0, src, dst, n), **csr_feeds(1, src, dst, n)}
    outs = run_onnx(ort_session(em.model), feeds)
    ref, trace = reference(model, graph, block, model_name)
    assert {t.key for t in em.debug_tensors} == {
        k for k, v in quant_state(model).items() if not v["signed"]}
    for tensor in em.debug_tensors:
        ours = outs[tensor.output].astype(np.int64)
        if tensor.layout != "node":  # the reference appends loops after all edges, as training
            ours = ours[torch_edge_order(tensor.layout, feeds["indptr_0"], src)]
        np.testing.assert_array_equal(ours, trace[tensor.key], err_msg=tensor.key)
    np.testing.assert_array_equal(outs[em.output], ref)
