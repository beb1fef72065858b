import json
import math
import subprocess
import sys
from collections import Counter

import pytest
from qgnn.bench.harness import (
    Timing,
    interleave,
    machine_info,
    markdown_table,
    round_orders,
    time_repeated,
    write_result,
)


class FakeClock:
    """Each call advances by the next step, so timed durations are known exactly."""

    def __init__(self):
        self.now = 0.0
        self.step = 1.0

    def __call__(self):
        self.now += self.step
        return self.now


def test_time_repeated_warms_up_then_times_each_call():
    calls = []
    clock = FakeClock()

    def fn():
        calls.append(1)
        clock.step += 1.0  # each call is slower than the last

    t = time_repeated(fn, repeat=3, warmup=2, clock=clock)
    assert len(calls) == 5
    # clock reads: start/stop of call 3 -> steps 3 (start) then 4 (stop): duration = 4, ...
    assert t.samples == (4.0, 5.0, 6.0)
    assert t.median == 5.0 and t.min == 4.0


def test_timing_quantiles_interpolate():
    t = Timing((1.0, 2.0, 3.0, 4.0, 10.0))
    assert t.median == 3.0
    assert t.p10 == pytest.approx(1.4)
    assert t.p90 == pytest.approx(4 + 0.6 * 6)
    assert t.p99 == pytest.approx(4 + 0.96 * 6)
    d = t.to_dict()
    assert d["median_s"] == 3.0 and d["repeat"] == 5


def test_interleave_runs_each_candidate_once_per_round_after_the_warmup():
    order = []
    res = interleave({"a": lambda: order.append("a"), "b": lambda: order.append("b"),
                      "c": lambda: order.append("c")}, repeat=3, warmup=1)
    assert order[:3] == list("abc")
    assert all(sorted(order[i:i + 3]) == list("abc") for i in range(3, 12, 3))
    assert set(res) == {"a", "b", "c"} and all(len(t.samples) == 3 for t in res.values())


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6, 7])
def test_round_orders_balance_who_runs_after_whom(count):
    rows = round_orders(count)
    assert all(sorted(row) == list(range(count)) for row in rows)
    after = Counter((row[i], row[i + 1]) for row in rows for i in range(count - 1))
    pairs = [(a, b) for a in range(count) for b in range(count) if a != b]
    assert all(after[p] == after[pairs[0]] for p in pairs)
    places = Counter((row[i], i) for row in rows for i in range(count))
    assert set(places.values()) == {len(rows) // count}


def test_interleave_does_not_keep_one_candidate_after_another():
    order = []
    names = ["engine", "executor", "fp32", "torch", "pyg"]
    interleave({n: (lambda n=n: order.append(n)) for n in names}, repeat=10, warmup=0)
    followers = Counter(order[i + 1] for i in range(len(order) - 1) if order[i] == "pyg"
                        and i % 5 != 4)
    assert followers["engine"] < sum(followers.values())


def test_counts_are_validated():
    with pytest.raises(ValueError, match="repeat"):
        time_repeated(lambda: None, repeat=0)
    with pytest.raises(ValueError, match="warmup"):
        interleave({"a": lambda: None}, warmup=-1)
    with pytest.raises(ValueError, match="nothing to time"):
        interleave({})


def test_write_result_records_machine_and_command(tmp_path):
    path = write_result("demo", {"x": 1.5}, results_dir=tmp_path, command="qgnn bench demo")
    assert path == tmp_path / "demo.json"
    data = json.loads(path.read_text())
    assert data["name"] == "demo" and data["results"] == {"x": 1.5}
    assert data["command"] == "qgnn bench demo"
    assert data["machine"]["logical_cores"] >= 1
    assert [p.name for p in tmp_path.iterdir()] == ["demo.json"]  # no temporary left


def test_write_result_refuses_bad_names_and_non_json(tmp_path):
    with pytest.raises(ValueError, match="name"):
        write_result("../escape", {}, results_dir=tmp_path)
    with pytest.raises(ValueError, match="not plain JSON"):
        write_result("nan", {"x": math.nan}, results_dir=tmp_path, machine={})
    assert list(tmp_path.iterdir()) == []


def test_machine_info_reads_versions_without_importing_torch():
    code = ("import sys, json; from qgnn.bench.harness import machine_info; "
            "info = machine_info(); assert 'torch' not in sys.modules; "
            "print(json.dumps(info))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    info = json.loads(out)
    assert info["versions"]["numpy"] and info["python"] == sys.version.split()[0]
    assert {"cpu", "memory_bytes", "env", "usable_cores"} <= set(info)


def test_machine_info_records_allocator_environment(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert machine_info()["env"]["MALLOC_ARENA_MAX"] == "2"


def test_markdown_table_aligns_columns():
    text = markdown_table(["name", "value"], [["a", 1.23456], ["bb|c", None]], align=["l", "r"])
    assert text.splitlines() == [
        "| name  | value |",
        "|-------|------:|",
        "| a     | 1.235 |",
        "| bb\\|c |       |",
    ]
    with pytest.raises(ValueError, match="every row"):
        markdown_table(["a"], [[1, 2]])
