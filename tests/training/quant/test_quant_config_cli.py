import argparse

import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.quant.cli_args import add_quant_arguments, quant_config_from_args
from qgnn.training.quant.config import QuantConfig, default_percentile
from qgnn.training.quant.hooks import make_hooks
from qgnn.training.quant.sites import QuantizedSites


def parse(*argv):
    return quant_config_from_args(add_quant_arguments(argparse.ArgumentParser()).parse_args(argv))


def test_defaults_follow_the_paper_per_bit_width_and_method():
    dq8, dq4, qat4 = QuantConfig(bits=8), QuantConfig(bits=4), QuantConfig(bits=4, method="qat")
    assert (dq8.range, dq8.percentile, dq8.p_min, dq8.p_max, dq8.ste) == (
        "percentile", 0.001, 0.0, 0.1, "clipped")
    assert (dq4.percentile, dq4.p_min, dq4.p_max) == (0.01, 0.1, 0.2)
    assert (qat4.range, qat4.percentile, qat4.p_min, qat4.p_max, qat4.ste) == (
        "momentum", None, None, None, "plain")
    assert default_percentile(2) == 0.01 and default_percentile(6) == pytest.approx(0.00316, 1e-2)


def test_config_round_trips_through_a_dict():
    cfg = QuantConfig(bits=5, p_max=0.3, per_channel=True, mask="shared")
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        QuantConfig.from_dict({**cfg.to_dict(), "bogus": 1})


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"bits": 9}, "bits"), ({"method": "ptq"}, "method"), ({"range": "mse"}, "range"),
    ({"percentile": 0.6}, "percentile"), ({"range": "minmax", "percentile": 0.01}, "percentile"),
    ({"momentum": 0.0}, "momentum"), ({"p_min": 0.3, "p_max": 0.2}, "p_min"),
    ({"p_max": 2.0}, "p_max"), ({"method": "qat", "p_max": 0.2}, "p_min/p_max"),
    ({"ste": "soft"}, "ste"), ({"mask": "once"}, "mask"), ({"max_samples": 0}, "max_samples")])
def test_bad_configs_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        QuantConfig(**kwargs)


def test_cli_presets_and_options():
    assert parse() is None
    assert parse("--quant", "fp32") is None
    assert parse("--quant", "int8") == QuantConfig(bits=8)
    cfg = parse("--quant", "int4", "--method", "qat", "--range", "minmax", "--ste", "clipped",
                "--per-channel")
    assert cfg == QuantConfig(bits=4, method="qat", range="minmax", ste="clipped",
                              per_channel=True)
    cfg = parse("--bits", "3", "--p-min", "0.05", "--p-max", "0.25", "--percentile", "0.02",
                "--mask", "shared", "--quant-momentum", "0.2", "--input-range", "minmax")
    assert (cfg.bits, cfg.p_min, cfg.p_max, cfg.percentile, cfg.mask, cfg.momentum,
            cfg.input_range) == (3, 0.05, 0.25, 0.02, "shared", 0.2, "minmax")


@pytest.mark.parametrize(("argv", "message"), [
    (("--quant", "int8", "--bits", "4"), "contradicts"),
    (("--method", "qat"), "need --quant"),
    (("--per-channel",), "need --quant"),
    (("--quant", "fp32", "--p-max", "0.2"), "need --quant"),
    (("--bits", "12"), "bits")])
def test_cli_contradictions_are_refused(argv, message):
    with pytest.raises(ValueError, match=message):
        parse(*argv)


def test_hooks_prepare_the_model_and_protect_only_training_passes():
    rng = np.random.default_rng(0)
    graph = Graph.from_edges(rng.integers(0, 20, 60), rng.integers(0, 20, 60), 20)
    block = full_graph_block(graph)
    prepare_model, blocks_for = make_hooks(QuantConfig(bits=8, p_min=1.0, p_max=1.0), graph)
    with pytest.raises(RuntimeError, match="prepare_model"):
        blocks_for(block, True)
    model = prepare_model(build_model(ModelConfig("gcn", 4, 2, num_layers=3)))
    assert all(isinstance(layer.q, QuantizedSites) for layer in model.layers)
    train_blocks = blocks_for(block, True)
    assert len(train_blocks) == 3 and all(bool(b.protect.all()) for b in train_blocks)
    assert all(b.protect is None for b in blocks_for(block, False))
    _, qat_blocks_for = make_hooks(QuantConfig(bits=8, method="qat"), graph, num_layers=2)
    protected = block.replace(protect=torch.ones(20, dtype=torch.bool))
    assert all(b.protect is None for b in qat_blocks_for(protected, True))


def parse_for(model, *argv):
    """As ``qgnn train`` parses: the quantisation options beside ``--model``."""
    parser = add_quant_arguments(argparse.ArgumentParser())
    parser.add_argument("--model")
    return quant_config_from_args(parser.parse_args(["--model", model, *argv]))


def test_model_preset_sets_egc_int4_momentum_unless_a_flag_overrides_it():
    assert parse_for("egc", "--quant", "int4").momentum == 0.25
    assert parse_for("egc", "--bits", "4", "--method", "qat").momentum == 0.25
    assert parse_for("egc", "--quant", "int4", "--quant-momentum", "0.1").momentum == 0.1
    assert parse_for("egc", "--quant", "int4", "--quant-momentum", "0.3").momentum == 0.3
    # other widths, other models and Python-built configs keep the default
    assert parse_for("egc", "--quant", "int8").momentum == 0.5
    assert parse_for("gcn", "--quant", "int8").momentum == 0.1
    assert parse_for("gcn", "--quant", "int4").momentum == 0.1
    assert parse("--quant", "int4").momentum == 0.1 and QuantConfig(bits=4).momentum == 0.1
    assert parse_for("egc") is None


def test_gcn_int8_preset_takes_the_plain_ste_for_dq_only_where_no_flag_says_otherwise():
    assert parse_for("gcn", "--quant", "int8").ste == "plain"
    assert parse_for("gcn", "--quant", "int8", "--ste", "clipped").ste == "clipped"
    assert parse_for("gcn", "--quant", "int4").ste == "clipped"
    assert parse_for("gat", "--quant", "int8").ste == "clipped"
    assert parse("--quant", "int8").ste == "clipped"


def test_a_preset_may_set_per_channel_and_the_flag_agrees_with_it(monkeypatch):
    from qgnn.training.quant import options

    monkeypatch.setitem(options.MODEL_QUANT_PRESETS, ("gcn", 8), {"per_channel": True})
    assert parse_for("gcn", "--quant", "int8").per_channel is True
    assert parse_for("gcn", "--quant", "int8", "--per-channel").per_channel is True
    assert parse_for("gcn", "--quant", "int4").per_channel is False


def test_link_task_takes_the_link_preset_and_flags_still_win():
    from qgnn.training.quant.options import model_quant_preset

    def link(model, *argv):
        parser = add_quant_arguments(argparse.ArgumentParser())
        parser.add_argument("--model")
        parser.add_argument("--task", default="node")
        return quant_config_from_args(parser.parse_args(["--model", model, "--task", "link",
                                                         *argv]))

    assert link("gcn", "--quant", "int8").momentum == 0.5
    assert link("gcn", "--quant", "int8").ste == "plain"
    assert link("gcn", "--quant", "int8", "--quant-momentum", "0.1").momentum == 0.1
    assert parse_for("gcn", "--quant", "int8").momentum == 0.1  # node task unchanged
    assert link("sage", "--quant", "int8").momentum == 0.5
    assert link("egc", "--quant", "int4").momentum == 0.25  # no link entry: the node one
    assert model_quant_preset("gcn", 8, "link") == {"ste": "plain", "momentum": 0.5}
    with pytest.raises(ValueError, match="task"):
        model_quant_preset("gcn", 8, "graph")


def test_model_presets_name_real_options():
    from qgnn.training.cli import MODELS
    from qgnn.training.quant.options import LINK_QUANT_PRESETS, MODEL_QUANT_PRESETS

    for (model, bits), options in [*MODEL_QUANT_PRESETS.items(), *LINK_QUANT_PRESETS.items()]:
        assert model in MODELS
        for method in ("dq", "qat"):
            QuantConfig(bits=bits, method=method, **options)  # raises on a bad name or value


def test_train_command_records_the_egc_int4_preset(tmp_path):
    from qgnn.training.checkpoint import load_run

    from qgnn.cli import main

    graph = "synthetic:powerlaw?nodes=120&features=8&communities=3"
    common = ["train", "--model", "egc", "--dataset", graph, "--quant", "int4", "--epochs", "1",
              "--hidden", "8", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "preset")]) == 0
    assert load_run(tmp_path / "preset").extra["quant"]["config"]["momentum"] == 0.25
    assert main([*common, "--quant-momentum", "0.2", "--out", str(tmp_path / "flag")]) == 0
    assert load_run(tmp_path / "flag").extra["quant"]["config"]["momentum"] == 0.2
