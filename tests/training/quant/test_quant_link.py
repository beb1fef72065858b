"""Degree-Quant on link prediction: the link preset's ranges keep up with an embedding table's
early growth (issue 16: DQ INT8 GCN clipped most of its final embeddings in the first steps and
stayed at the most-popular level)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from qgnn.graph.io.interactions import load_interactions
from qgnn.graph.synth import movielens_udata
from qgnn.training.presets import preset
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.hooks import make_hooks
from qgnn.training.quant.options import model_quant_preset
from qgnn.training.quant.sites import quantized_sites
from qgnn.training.tasks.link import link_model_config, train_link


@pytest.fixture(scope="module")
def interactions(tmp_path_factory):
    """A small featureless MovieLens-format train/test pair (an embedding table is learned)."""
    folder = tmp_path_factory.mktemp("movielens")
    movielens_udata(folder / "u1.base", test_path=folder / "u1.test", num_users=100,
                    num_items=150, min_per_user=10, mean_per_user=30, seed=0)
    return load_interactions(folder / "u1.base", test=folder / "u1.test")


def worst_clipped_fraction(data, qcfg: QuantConfig, epochs: int) -> dict[str, float]:
    """Per activation site, the largest fraction of values outside the grid over the first
    ``epochs`` training steps of DQ GCN link training with the link preset."""
    chosen = preset("gcn", "test", "link")
    train_cfg = dataclasses.replace(chosen.train, epochs=epochs, patience=None, seed=0)
    model_cfg = link_model_config(data, "gcn", embedding_dim=chosen.model["hidden"],
                                  **chosen.model)
    prepare, blocks_for = make_hooks(qcfg, data.graph, num_layers=model_cfg.num_layers,
                                     generator=torch.Generator().manual_seed(0))
    worst: dict[str, float] = {}

    def observe(model):
        model = prepare(model)
        for path, seam in quantized_sites(model).items():
            for name, site in seam.quantizers.items():
                if site.role == "param":
                    continue

                def hook(module, inputs, _out, key=f"{path}.{name}"):
                    if not module.training or not module.calibrated:
                        return
                    q = torch.round(inputs[0].detach() / module.scale) + module.zero_point
                    clipped = ((q < module.qmin) | (q > module.qmax)).float().mean().item()
                    worst[key] = max(worst.get(key, 0.0), clipped)

                site.register_forward_hook(hook)
        return model

    train_link(data, model_cfg, train_cfg, progress=False, prepare_model=observe,
               blocks_for=blocks_for)
    return worst


def test_link_preset_ranges_follow_the_early_growth_of_dq_int8_gcn(interactions):
    link = worst_clipped_fraction(
        interactions, QuantConfig(bits=8, **model_quant_preset("gcn", 8, "link")), epochs=6)
    out = "encoder.layers.1.q.out"  # the final embeddings the dot decoder scores
    assert link[out] < 0.25, link
    assert max(link.values()) < 0.25, link
    # the node preset's momentum 0.1 clips most of them (0.59 measured): what collapsed
    node = worst_clipped_fraction(
        interactions, QuantConfig(bits=8, **model_quant_preset("gcn", 8)), epochs=6)
    assert node[out] > 0.4, node
