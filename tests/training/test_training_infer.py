"""``--mode infer``: distributed layer-wise INT8 inference of a link run, launched as users do
(``python -m qgnn.exporter.link_shards``, then torchrun on 2 loopback ranks), and its refusals.
That its rows equal the unsharded export bit for bit is tests/runtime/engine/
test_engine_sharded_links.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sharded_links_testkit as sk
from qgnn.exporter.link_shards import write_link_shards
from qgnn.training.distributed import launch_local
from qgnn.training.distributed.infer import main, run_rank


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    data = sk.recommender_data()
    return sk.link_run(tmp_path_factory.mktemp("run"), data, "sage"), data


def test_torchrun_writes_the_sharded_bundles(run, tmp_path: Path) -> None:
    from qgnn.runtime.bundle.reader import load_bundle
    from qgnn.runtime.engine.sharded_links import ShardedLinkBackend

    run_dir, data = run
    write_link_shards(run_dir, tmp_path / "shards", 2, "ldg", data=data)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m",
         "qgnn.training.distributed", "--mode", "infer", "--checkpoint", str(run_dir),
         "--shards", str(tmp_path / "shards"), "--bundle-out", str(tmp_path / "bundles"),
         "--name", "recs", "--chunk", "32"],
        capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["rank"] == 0
    assert summary["halo_bytes"]["eval:halo-rows"] > 0
    assert [Path(p).parts[-3] for p in summary["bundles"]] == ["all", "shard-0", "shard-1"]
    with load_bundle(tmp_path / "bundles" / "shard-1" / "recs" / "1", verify=True) as bundle:
        backend = ShardedLinkBackend(bundle)
        assert backend.held == [1] and backend.num_nodes == data.graph.num_nodes
    assert not (tmp_path / "bundles" / ".parts").exists()


def test_one_rank_per_part(run, tmp_path: Path) -> None:
    run_dir, data = run
    write_link_shards(run_dir, tmp_path / "shards", 2, "random", data=data)
    with pytest.raises(Exception, match="2 parts for 1 ranks"):
        launch_local(run_rank, 1, str(run_dir), str(tmp_path / "shards"),
                     str(tmp_path / "bundles"), timeout_s=120)


def test_flags_are_checked_before_any_rank_starts(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--checkpoint", "r", "--shards", "s", "--bundle-out", "b", "--chunk", "0"])
    assert info.value.code == 2
    assert "--chunk" in capsys.readouterr().err


def test_an_empty_part_is_refused_on_every_rank(run, tmp_path: Path) -> None:
    import numpy as np
    from qgnn.exporter.export import load_run_model, serving_data
    from qgnn.graph.partition import Partition
    from qgnn.graph.shards import write_shards

    run_dir, data = run
    write_link_shards(run_dir, tmp_path / "shards", 2, "random", data=data)
    served = serving_data(load_run_model(run_dir), data)
    graph = served.graph.replace(x=served.features)
    write_shards(graph, Partition(np.zeros(graph.num_nodes, np.int64), 2, "random", ""),
                 tmp_path / "shards", out_edges=True)
    with pytest.raises(Exception, match=r"part\(s\) \[1\] own no nodes"):
        launch_local(run_rank, 2, str(run_dir), str(tmp_path / "shards"),
                     str(tmp_path / "bundles"), timeout_s=120)


def test_shards_of_another_run_are_refused(run, tmp_path: Path) -> None:
    run_dir, data = run
    other = sk.link_run(tmp_path, data, "gcn")
    write_link_shards(other, tmp_path / "shards", 2, "random", data=data)
    with pytest.raises(Exception, match=r"holds shards of run .*, not of"):
        launch_local(run_rank, 2, str(run_dir), str(tmp_path / "shards"),
                     str(tmp_path / "bundles"), timeout_s=120)
