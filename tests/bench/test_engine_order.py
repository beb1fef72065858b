"""The order probe: its fixed rotation keeps who runs after whom, and a tiny run writes its
tables (the figures themselves are in docs/benchmarks.md, "Order effects")."""

from pathlib import Path

import pytest
from qgnn.bench import engine_order
from qgnn.runtime import kernels


def test_the_fixed_rotation_never_changes_who_runs_after_whom() -> None:
    order: list[str] = []
    engine_order.cyclic({n: (lambda n=n: order.append(n)) for n in "abc"}, "abc", repeat=4)
    rounds = [order[i:i + 3] for i in range(3, len(order), 3)]  # after the warm-up
    pairs = {(r[i], r[i + 1]) for r in rounds for i in range(2)}
    assert pairs == {("a", "b"), ("b", "c"), ("c", "a")}


@pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")
def test_tiny_run_writes_every_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert engine_order.main(["--model", "sage", "--nodes", "300", "--degree", "4",
                              "--repeat", "2", "--results-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "engine_feeds" in text and "int8_engine -> int8_executor -> pyg" in text
    assert "int8_engine/no_pool" in text and "Pool at the end" in text
    assert (tmp_path / "engine-order.json").exists()
    assert "engine_feeds" in (tmp_path / "engine-order.md").read_text()


@pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")
def test_sections_pick_the_tables(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert engine_order.main(["--model", "gin", "--nodes", "300", "--degree", "4",
                              "--repeat", "2", "--sections", "pool", "--results-dir",
                              str(tmp_path), "--name", "pool-only"]) == 0
    text = capsys.readouterr().out
    assert "int8_executor/pool" in text and "engine_feeds" not in text
    with pytest.raises(SystemExit):
        engine_order.main(["--sections", "pool,nonsense"])
    with pytest.raises(SystemExit, match="buffer pool"):
        engine_order.main(["--model", "gin", "--nodes", "300", "--degree", "4", "--repeat", "1",
                           "--sections", "pool", "--buffer-pool-bytes", "0",
                           "--results-dir", str(tmp_path)])
