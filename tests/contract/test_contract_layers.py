"""The layer table binds, for every layer type, parts that exist and agree with each other."""

from __future__ import annotations

import pytest
from qgnn.contract.layers import LAYERS, PARTS, layer_spec


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("part", PARTS)
def test_every_part_resolves_to_a_function(name, part) -> None:
    assert callable(LAYERS[name].load(part))


def test_unknown_layer_and_part_are_named() -> None:
    with pytest.raises(ValueError, match=r"unknown layer type 'gcnn'; known: \['egc', 'gat'"):
        layer_spec("gcnn")
    with pytest.raises(ValueError, match="part must be one of"):
        layer_spec("gcn").load("kernel")


def test_degree_needs() -> None:
    assert layer_spec("gcn").needs_degree({})
    assert not layer_spec("sage").needs_degree({})
    assert layer_spec("egc").needs_degree({})  # symnorm is EGC's default aggregator
    assert not layer_spec("egc").needs_degree({"aggregators": ["sum", "max"]})


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_the_export_uses_only_the_ops_its_spec_names(name) -> None:
    """Each layer type's INT8 export contains exactly ai.qgnn ops its spec declares, and needs
    the in-degree input exactly when the spec says so."""
    from qgnn.exporter.emit.stack import emit_stack
    from qgnn.exporter.ops import QGNN_DOMAIN
    from qgnn.exporter.quant_params import read_sites
    from qgnn.graph.synth import powerlaw_communities
    from qgnn.training.nn.block import full_graph_block
    from qgnn.training.nn.models import ModelConfig, build_model
    from qgnn.training.quant import QuantConfig, quant_state, quantize_model

    graph = powerlaw_communities(60, avg_degree=4, num_communities=3, num_features=8, seed=0)
    kwargs = {"heads": 2} if name in ("gat", "egc") else {}
    out_dim = 8 if LAYERS[name].layer_mean else 4  # LightGCN keeps the width
    cfg = ModelConfig(model=name, in_dim=8, out_dim=out_dim, hidden=8, layer_kwargs=kwargs)
    model = quantize_model(build_model(cfg), QuantConfig(bits=8))
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(graph.x), full_graph_block(graph))
    model.eval()
    sites = read_sites(quant_state(model), "", cfg.num_layers)
    em = emit_stack(model, sites, task="node")
    ops = {n.op_type for n in em.model.graph.node if n.domain == QGNN_DOMAIN}
    assert ops and ops <= LAYERS[name].ops
    reads_degree = any("in_degree" in n.input for n in em.model.graph.node)
    assert reads_degree == LAYERS[name].needs_degree(kwargs)
