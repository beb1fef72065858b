"""Sampling flags and the SamplingConfig record: parsing, validation naming the field, JSON."""

from __future__ import annotations

import argparse
import json

import pytest
from qgnn.training.sampling.cli_args import add_sampling_arguments, sampling_config_from_args
from qgnn.training.sampling.config import SamplingConfig, parse_fanouts


def _parse(*argv: str) -> SamplingConfig:
    parser = add_sampling_arguments(argparse.ArgumentParser())
    return sampling_config_from_args(parser.parse_args(list(argv)))


def test_defaults_keep_full_graph_training():
    cfg = _parse()
    assert cfg.sampler == "full" and cfg.fanouts == (10, 10) and cfg.cache_fraction == 0.01


def test_every_flag_reaches_the_config():
    cfg = _parse("--sampler", "gns", "--fanouts", "15, 10,-1", "--batch-size", "512",
                 "--cache-fraction", "0.05", "--cache-refresh-period", "3", "--workers", "2",
                 "--prefetch", "4", "--device", "cpu", "--eval-mode", "sampled",
                 "--gns-estimator", "stratified", "--gns-uncached-fanout", "3",
                 "--gns-layers", "all")
    assert cfg == SamplingConfig(sampler="gns", fanouts=(15, 10, -1), batch_size=512,
                                 cache_fraction=0.05, cache_refresh_period=3, workers=2,
                                 prefetch=4, device="cpu", eval="sampled",
                                 gns_estimator="stratified", gns_uncached_fanout=3,
                                 gns_layers="all")


@pytest.mark.parametrize(("argv", "field"), [
    (("--fanouts", "10,x"), "fanouts"),
    (("--fanouts", "10,0"), r"fanouts\[1\]"),
    (("--batch-size", "0"), "batch_size"),
    (("--cache-fraction", "0"), "cache_fraction"),
    (("--cache-fraction", "1.5"), "cache_fraction"),
    (("--cache-refresh-period", "0"), "cache_refresh_period"),
    (("--workers", "0"), "workers"),
    (("--prefetch", "-1"), "prefetch"),
    (("--device", "tpu"), "device"),
    (("--gns-uncached-fanout", "0"), "gns_uncached_fanout"),
])
def test_bad_values_name_the_field(argv, field):
    with pytest.raises(ValueError, match=field):
        _parse(*argv)


def test_unavailable_cuda_is_refused(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        SamplingConfig(device="cuda")
    assert SamplingConfig(device="auto").torch_device.type == "cpu"


def test_config_round_trips_through_json():
    cfg = SamplingConfig(sampler="gns", fanouts=(5, 4), cache_fraction=0.2)
    again = SamplingConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        SamplingConfig.from_dict({"fanout": [3]})


def test_parse_fanouts_accepts_all_neighbours():
    assert parse_fanouts("-1") == (-1,)
    with pytest.raises(ValueError, match="fanouts"):
        parse_fanouts("")
