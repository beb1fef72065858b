import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.layers.gcn import GCNConv
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.nn.quant_sites import QuantSites
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.sites import QuantizedSites, quantize_model, quantized_sites
from torch import nn


def small_graph(n=30, seed=0):
    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, n, 4 * n), rng.integers(0, n, 4 * n)
    keep = src != dst
    return Graph.from_edges(np.r_[src[keep], dst[keep]], np.r_[dst[keep], src[keep]], n,
                            x=rng.standard_normal((n, 5)).astype(np.float32))


def on_grid(values, quantizer, rows_dim=None):
    """True where ``values`` are exactly representable on the site's integer grid."""
    scale, zp = quantizer.scale, quantizer.zero_point
    if scale.dim() == 1:
        scale = scale.view(-1, *([1] * (values.dim() - 1)))
        zp = zp.view(-1, *([1] * (values.dim() - 1)))
    q = values / scale + zp
    return ((q - q.round()).abs() < 1e-3) & (q.round() >= quantizer.qmin) & (
        q.round() <= quantizer.qmax)


def record_sites(model):
    """Every QuantizedSites call: (path.site, input, output, block)."""
    calls = []
    for path, seam in quantized_sites(model).items():
        seam.register_forward_hook(
            lambda mod, args, out, path=path: calls.append((f"{path}.{args[0]}", args[1].detach(),
                                                            out.detach(), mod, args[0])))
    return calls


def test_protected_rows_bypass_quantisation_in_a_gcn_layer():
    torch.manual_seed(0)
    graph = small_graph()
    layer = quantize_model(GCNConv(5, 4), QuantConfig(bits=4))
    block = full_graph_block(graph)
    x = torch.from_numpy(graph.x)
    layer(x, block)  # calibrate every site without protection
    protect = torch.zeros(graph.num_nodes, dtype=torch.bool)
    protect[::3] = True
    calls = record_sites(layer)
    layer(x, block.replace(protect=protect))
    looped = block.with_self_loops()
    rows_of = {"src": protect, "dst": protect, "edge": protect[looped.src]}
    for name, inp, out, seam, site in calls:
        role = seam.sites[site]
        quantizer = seam.quantizers[site]
        if role == "param":
            assert bool(on_grid(out, quantizer).all()), name
            continue
        rows = rows_of[role]
        assert torch.equal(out[rows], inp[rows]), name
        assert bool(on_grid(out[~rows], quantizer).all()), name
        assert not bool(on_grid(inp[rows], quantizer).all()), name  # really left unquantised


def test_protected_rows_do_not_enter_the_range():
    cfg = QuantConfig(bits=8, range="minmax")
    seam = QuantizedSites({"h": "src"}, cfg)
    graph = small_graph(10)
    block = full_graph_block(graph)
    h = torch.randn(10, 3)
    h[0] = 500.0
    protect = torch.zeros(10, dtype=torch.bool)
    protect[0] = True
    out = seam("h", h, block.replace(protect=protect))
    assert seam.quantizers["h"].tracker.hi.item() == pytest.approx(h[1:].max().item())
    assert torch.equal(out[0], h[0])


def test_eval_and_qat_ignore_protection():
    graph = small_graph(10)
    protect = torch.ones(10, dtype=torch.bool)
    block = full_graph_block(graph).replace(protect=protect)
    h = torch.randn(10, 3)
    qat = QuantizedSites({"h": "dst"}, QuantConfig(bits=4, method="qat"))
    assert bool(on_grid(qat("h", h, block), qat.quantizers["h"]).all())
    dq = QuantizedSites({"h": "dst"}, QuantConfig(bits=4))
    dq("h", h, block.replace(protect=None))
    dq.eval()
    assert bool(on_grid(dq("h", h, block), dq.quantizers["h"]).all())


def test_eval_freezes_scale_and_needs_calibration():
    seam = QuantizedSites({"h": "src"}, QuantConfig(bits=8))
    seam.eval()
    with pytest.raises(RuntimeError, match="no range observed"):
        seam("h", torch.randn(4, 2))
    seam.train()
    seam("h", torch.randn(4, 2))
    scale = seam.quantizers["h"].scale.clone()
    seam.eval()
    seam("h", 50 * torch.randn(4, 2))
    assert torch.equal(seam.quantizers["h"].scale, scale)


def test_unknown_site_and_misaligned_rows_are_refused():
    seam = QuantizedSites({"h": "dst"}, QuantConfig(bits=8))
    with pytest.raises(KeyError, match="not a declared site"):
        seam("nope", torch.randn(3))
    graph = small_graph(10)
    block = full_graph_block(graph).replace(protect=torch.zeros(10, dtype=torch.bool))
    with pytest.raises(ValueError, match="site 'h'"):
        seam("h", torch.randn(7, 2), block)


def test_weights_are_signed_symmetric_and_optionally_per_channel():
    layer = quantize_model(GCNConv(5, 4), QuantConfig(bits=8, per_channel=True))
    graph = small_graph()
    layer(torch.from_numpy(graph.x), full_graph_block(graph))
    w = layer.q.quantizers["weight"]
    assert w.signed and w.per_channel and w.scale.shape == (4,)
    assert w.zero_point.tolist() == [0, 0, 0, 0]
    np.testing.assert_allclose(w.scale.numpy(),
                               layer.lin.weight.detach().abs().amax(1).numpy() / 127, rtol=1e-6)
    act = layer.q.quantizers["lin"]
    assert not act.signed and act.scale.dim() == 0 and 0 <= act.zero_point.item() <= 255


def test_quantize_model_swaps_every_seam_once():
    model = build_model(ModelConfig("gcn", 5, 3, hidden=8, num_layers=3))
    quantize_model(model, QuantConfig(bits=8))
    seams = quantized_sites(model)
    assert sorted(seams) == ["layers.0.q", "layers.1.q", "layers.2.q"]
    assert not any(type(m) is QuantSites for m in model.modules())
    with pytest.raises(ValueError, match="already quantised"):
        quantize_model(model, QuantConfig(bits=8))
    with pytest.raises(ValueError, match="declares no QuantSites"):
        quantize_model(nn.Linear(2, 2), QuantConfig(bits=8))


def test_quantised_model_stays_close_to_full_precision():
    model = build_model(ModelConfig("gcn", 5, 3, hidden=8))
    graph = small_graph()
    model.eval()
    x = torch.from_numpy(graph.x)
    block = full_graph_block(graph)
    before = model(x, block)
    quantize_model(model, QuantConfig(bits=8, method="qat"))
    model.train()
    model(x, block)
    model.eval()
    after = model(x, block)
    assert not torch.equal(before, after)  # quantised now ...
    assert (before - after).abs().max().item() < 0.1 * before.abs().max().item()  # ... but close



@pytest.mark.parametrize("input_proj", [False, True])
def test_sites_after_a_dropout_learn_their_range_in_evaluation_units(input_proj):
    """Inverted dropout doubles (p = 0.5) the training inputs of every layer's ``x`` site;
    the learned range must fit the evaluation inputs (no dropout), which are what the exported
    model quantises, and training must see "quantise, then drop out" exactly."""
    graph = small_graph(60)
    x, block = torch.from_numpy(graph.x), full_graph_block(graph)
    cfg = ModelConfig("gcn", 5, 3, hidden=8, num_layers=2, dropout=0.5, input_dropout=0.2,
                      input_proj=input_proj, head=input_proj)
    torch.manual_seed(0)
    model = quantize_model(build_model(cfg), QuantConfig(bits=8, method="qat", range="minmax"))
    first = model.input_proj if input_proj else model.layers[0]
    gains = {path: m.dropout_gain for path, m in model.named_modules() if hasattr(m, "tracker")
             and path.endswith(".x")}
    expected = {f"{'input_proj' if input_proj else 'layers.0'}.q.quantizers.x": 1 / 0.8}
    rest = ([("layers.0", 2.0)] if input_proj else []) + [("layers.1", 2.0)]
    rest += [("head", 2.0)] if input_proj else []
    expected.update({f"{name}.q.quantizers.x": g for name, g in rest})
    assert gains == pytest.approx(expected)
    model.train()
    seen = []
    first.q.register_forward_hook(lambda mod, args, out: seen.append((args, out))
                                  if args[0] == "x" else None)
    model(x, block)
    (_, dropped, *_), out = seen[0]
    site = first.q.quantizers["x"]
    hi = float((site.qmax - site.zero_point) * site.scale)
    lo = float((site.qmin - site.zero_point) * site.scale)
    kept = dropped != 0
    raw = dropped[kept] * 0.8  # the kept inputs in evaluation units
    step = float(site.scale)  # the grid moves the ends by less than a step to hold zero
    assert abs(hi - float(raw.max())) <= step and abs(lo - float(raw.min())) <= step
    eval_grid = torch.clamp(torch.round(dropped[kept] * 0.8 / site.scale) + site.zero_point,
                            site.qmin, site.qmax)
    torch.testing.assert_close(out[kept], (eval_grid - site.zero_point) * site.scale / 0.8)


@pytest.mark.parametrize("input_proj", [False, True])
def test_input_range_sets_only_the_model_inputs_tracker(input_proj):
    """``input_range="minmax"`` keeps the input features' largest values (a sparse
    bag-of-words row with few words) inside the range, where a 99.9% percentile clips them;
    every other site keeps the configured percentile tracker."""
    from qgnn.training.quant.ranges import MinMaxRange, PercentileRange

    graph = small_graph(60)
    x = torch.zeros(60, 5)
    x[0, 0] = 1.0  # one row with a single large value, the rest small
    x[1:, 1:] = torch.rand(59, 4) * 0.1
    cfg = ModelConfig("gcn", 5, 3, hidden=8, num_layers=2, dropout=0.0,
                      input_proj=input_proj, head=input_proj)
    model = quantize_model(build_model(cfg), QuantConfig(bits=8, input_range="minmax"))
    first = model.input_proj if input_proj else model.layers[0]
    trackers = {path: type(m.tracker) for path, m in model.named_modules()
                if hasattr(m, "tracker") and m.role != "param"}
    first_path = f"{'input_proj' if input_proj else 'layers.0'}.q.quantizers.x"
    assert trackers.pop(first_path) is MinMaxRange
    assert set(trackers.values()) == {PercentileRange}
    model.train()
    model(x, full_graph_block(graph))
    site = first.q.quantizers["x"]
    assert float((site.qmax - site.zero_point) * site.scale) == pytest.approx(1.0, abs=1e-2)
    with pytest.raises(ValueError, match="input_range"):
        QuantConfig(bits=8, input_range="median")
