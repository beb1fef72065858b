"""The GNS benchmark's cache-coverage figures: what a degree-proportional cache holds."""

from __future__ import annotations

from qgnn.bench.bench_gns import coverage_section
from qgnn.graph.synth import powerlaw_communities


def test_heavier_degree_tail_puts_more_in_edges_in_the_cache():
    """The README explains GNS's accuracy gap by how little of the graph a 1 % cache holds; that
    share must grow with the cache and with the weight of the degree tail."""
    graphs = {f"p{p:g}": powerlaw_communities(20000, avg_degree=10, num_features=1, power=p,
                                              seed=3)
              for p in (2.1, 3.0)}
    out = coverage_section(graphs, [0.01, 0.05])
    for name in graphs:
        rows = out[name]["fractions"]
        small, large = rows["0.01"], rows["0.05"]
        assert small["edge_share"] < large["edge_share"] <= 1.0
        assert small["nodes_with_cached_neighbour"] < large["nodes_with_cached_neighbour"]
        assert small["edge_share"] > 0.01  # degree-proportional beats a uniform draw
    assert out["p2.1"]["fractions"]["0.01"]["edge_share"] > \
        3 * out["p3"]["fractions"]["0.01"]["edge_share"]


def test_neighbour_weight_ratio_reads_each_sage_layer():
    """The accuracy table's attenuation figure: ||W_neigh|| / ||W_self|| per GraphSAGE layer."""
    import torch
    from qgnn.bench.bench_gns import neighbour_weight_ratios
    from qgnn.training.nn.layers.sage import SAGEConv
    from qgnn.training.nn.models import ModelConfig, build_model

    model = build_model(ModelConfig(model="sage", in_dim=4, out_dim=3, hidden=8, num_layers=2))
    convs = [m for m in model.modules() if isinstance(m, SAGEConv)]
    assert len(convs) == 2
    with torch.no_grad():
        for scale, conv in zip((2.0, 0.5), convs, strict=True):
            conv.lin_r.weight.fill_(1.0)
            conv.lin_l.weight.copy_(scale * conv.lin_r.weight)
    assert neighbour_weight_ratios(model) == [2.0, 0.5]
    gcn = build_model(ModelConfig(model="gcn", in_dim=4, out_dim=3, hidden=8, num_layers=2))
    assert neighbour_weight_ratios(gcn) == []
