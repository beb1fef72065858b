"""Hot reload under load: bundles replaced, added and removed while clients keep calling; no
request fails and every answer is exactly one loaded version's."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import serving_testkit as tk


class Load:
    """Client threads calling PredictNodes in a loop; each answer must equal the oracle of one
    set of weights the answering version has had (``history``: version -> oracle arrays)."""

    def __init__(self, client, history: dict[int, list[np.ndarray]], threads: int = 4) -> None:
        self.client, self.history = client, history
        self.failures: list[str] = []
        self.answered: dict[int, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not self._stop.is_set():
            ids = rng.integers(0, 20, 3)
            try:
                r = self.client.predict_nodes("m", ids)
            except grpc.RpcError as exc:
                with self._lock:
                    self.failures.append(f"{exc.code().name}: {exc.details()}")
                continue
            matches = any(np.allclose(r.probabilities, w[ids], atol=1e-5)
                          for w in self.history.get(r.version, []))
            with self._lock:
                if not matches:
                    self.failures.append(f"v{r.version} answer matches none of its weights")
                self.answered[r.version] = self.answered.get(r.version, 0) + 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


def _wait_for(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_polling_hot_reload_under_load_loses_no_request(start_server, client_for,
                                                       tmp_path: Path):
    params = {seed: tk.random_params(num_nodes=20, seed=seed) for seed in (1, 2, 3)}
    oracle = {seed: tk.oracle_probabilities(p) for seed, p in params.items()}
    tk.write_test_bundle(tmp_path / "m" / "1", params[1], name="m")
    server = start_server(tmp_path, poll_interval_s=0.05, max_queue_delay_ms=1)
    client = client_for(server)
    load = Load(client, {1: [oracle[1], oracle[2]], 2: [oracle[3]]})
    with load:
        time.sleep(0.2)
        # 1) replace v1's bundle in place (write_bundle renames a new directory over it)
        tk.write_test_bundle(tmp_path / "m" / "1", params[2], name="m", overwrite=True)
        _wait_for(lambda: np.allclose(client.predict_nodes("m", [0]).probabilities,
                                      oracle[2][[0]], atol=1e-5))
        time.sleep(0.2)
        # 2) a new version appears and takes over
        tk.write_test_bundle(tmp_path / "m" / "2", params[3], name="m", version=2)
        _wait_for(lambda: client.predict_nodes("m", [0]).version == 2)
        time.sleep(0.2)
        # 3) the old version is removed
        shutil.rmtree(tmp_path / "m" / "1")
        _wait_for(lambda: [m["version"] for m in client.list_models("m")] == ["2"])
        time.sleep(0.2)
    assert load.failures == []
    assert load.answered.get(1, 0) > 0 and load.answered.get(2, 0) > 0


def test_admin_reload_under_load_loses_no_request(start_server, client_for, tmp_path: Path):
    params = {seed: tk.random_params(num_nodes=20, seed=seed) for seed in (4, 5)}
    oracle = {seed: tk.oracle_probabilities(p) for seed, p in params.items()}
    tk.write_test_bundle(tmp_path / "m" / "1", params[4], name="m")
    server = start_server(tmp_path)
    client = client_for(server)
    load = Load(client, {1: [oracle[4], oracle[5]]})
    with load:
        for i in range(4):
            time.sleep(0.1)
            tk.write_test_bundle(tmp_path / "m" / "1", params[5 if i % 2 == 0 else 4],
                                 name="m", overwrite=True)
            client.reload_model("m")
        time.sleep(0.1)
    assert load.failures == []
    assert sum(load.answered.values()) > 20
