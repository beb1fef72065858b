"""The seed summary of the partitioned bench: mean and sample std per (dataset, W, run)."""

from __future__ import annotations

import pytest
from qgnn.bench.bench_partitioned import _summarise


def _row(seed: int, world: int, run: str, test: float, gap: float | None,
         ratio: float | None) -> dict:
    return {"dataset": "powerlaw", "seed": seed, "world": world, "run": run, "test": test,
            "test_minus_w1": gap, "bytes_vs_uniform_owner": ratio}


def test_summary_is_mean_and_sample_std_over_seeds() -> None:
    rows = [_row(0, 1, "uniform/owner", 0.80, 0.0, None),
            _row(1, 1, "uniform/owner", 0.90, 0.0, None),
            _row(0, 4, "gns/affinity", 0.78, -0.02, 0.1),
            _row(1, 4, "gns/affinity", 0.86, -0.04, 0.2)]
    got = {(s["world"], s["run"]): s for s in _summarise(rows)}
    w1, w4 = got[(1, "uniform/owner")], got[(4, "gns/affinity")]
    assert w1["seeds"] == 2 and w1["test_mean"] == pytest.approx(0.85)
    assert w1["test_std"] == pytest.approx(0.0707107, rel=1e-5)  # sample std (n - 1)
    assert w1["bytes_vs_uniform_owner_mean"] is None
    assert w4["test_minus_w1_mean"] == pytest.approx(-0.03)
    assert w4["test_minus_w1_std"] == pytest.approx(0.0141421, rel=1e-5)
    assert w4["bytes_vs_uniform_owner_mean"] == pytest.approx(0.15)


def test_one_seed_has_zero_spread() -> None:
    (only,) = _summarise([_row(0, 2, "gns/affinity", 0.8, -0.01, 0.1)])
    assert only["test_std"] == 0.0 and only["test_minus_w1_std"] == 0.0
