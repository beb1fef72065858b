"""The engine at each ISA level of the compiled kernels: same answers bit for bit, the level it
runs at is reported, and a level this host cannot run is refused at load."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.runtime import kernels
from qgnn.runtime.backend import BackendOptions
from qgnn.runtime.bundle.reader import load_bundle
from qgnn.runtime.engine import Engine, EngineConfig, load_backend

pytestmark = pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")


def _levels() -> list[str]:
    if not kernels.available():
        return []
    return [lvl for lvl in kernels.levels_supported() if lvl in kernels.levels_built()]


def _engine(case, **config) -> Engine:
    return Engine(load_bundle(case.bundle), EngineConfig(fanouts=(-1, -1), **config))


def test_node_model_is_identical_at_every_level(int8_case) -> None:
    engines = {lvl: _engine(int8_case, isa=lvl) for lvl in _levels()}
    ops = {step.label.split(":")[0] for step in next(iter(engines.values())).executor.steps}
    assert "QAggregate" in ops, ops  # (fused QLinear per level: test_engine_partition.py)
    ids = np.arange(int8_case.num_nodes)
    outputs = {}
    for lvl, engine in engines.items():
        assert engine.isa == lvl and engine.mode == "partitioned"
        outputs[lvl] = engine.infer_all(chunk_size=16)
    first = outputs[_levels()[0]]
    for lvl, out in outputs.items():
        np.testing.assert_array_equal(out, first, err_msg=lvl)
        np.testing.assert_array_equal(engines[lvl].predict_nodes(ids[:9]),
                                      engines[_levels()[0]].predict_nodes(ids[:9]))


def test_link_model_and_topk_are_identical_at_every_level(link_case) -> None:
    answers = []
    for lvl in _levels():
        engine = _engine(link_case, isa=lvl)
        assert engine.index is not None and engine.index.isa == lvl
        answers.append((engine.recommend(4, 10, exclude_seen=True),
                        engine.predict_links(np.array([[0, 1], [5, 9]]))))
    for (ids, probs), links in answers[1:]:
        np.testing.assert_array_equal(ids, answers[0][0][0])
        np.testing.assert_array_equal(probs, answers[0][0][1])
        np.testing.assert_array_equal(links, answers[0][1])


def test_default_level_follows_qgnn_isa(int8_case, monkeypatch) -> None:
    monkeypatch.setenv("QGNN_ISA", "baseline")
    assert _engine(int8_case).isa == "baseline"
    monkeypatch.delenv("QGNN_ISA")
    assert _engine(int8_case).isa == _levels()[-1]
    assert _engine(int8_case, portable=True).isa == "portable"


def test_unknown_or_unsupported_level_is_refused_at_load(int8_case, monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"EngineConfig.isa: unknown ISA level 'avx3'"):
        _engine(int8_case, isa="avx3")
    monkeypatch.setenv("QGNN_ISA", "avx3")
    with pytest.raises(ValueError, match=r"QGNN_ISA: unknown ISA level 'avx3'"):
        _engine(int8_case)


def test_backend_options_carry_the_level(int8_case) -> None:
    backend = load_backend(load_bundle(int8_case.bundle), BackendOptions(isa="baseline"))
    assert backend.isa == "baseline" and backend.executor.isa == "baseline"
