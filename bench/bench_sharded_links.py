"""Sharded link bundles against the unsharded bundle of the same model: bytes, load, Recommend.

A MovieLens-1M-sized bipartite graph from ``qgnn.graph.synth.bipartite_recommender`` (6,040
users, 3,706 items by default), an untrained but calibrated INT8 link model (serving cost does
not depend on the weights) saved as a run, then both pipelines a user runs:

- unsharded: ``qgnn export`` (``export_run``);
- sharded: ``python -m qgnn.exporter.link_shards`` (LDG parts) and ``--mode infer`` on ``W``
  spawned gloo ranks of this machine (``launch_local``), which writes ``all/`` and
  ``shard-<p>/`` repositories.

Checked before timing: every shard's INT8 rows equal the unsharded table's (``bit_exact``).
Then, in one process, interleaved round by round (``harness.interleave``):

- load: ``Engine`` on the unsharded bundle, ``ShardedLinkBackend`` on ``all/`` and on
  ``shard-0/`` (bundle opened with hash verification, as ``qgnn serve`` does, then closed);
- Recommend (top ``--k``, exclude-seen) of a random user per call: the unsharded engine and the
  all-shard replica (the same users, answers compared every call), and the shard-0 replica for
  its own users over its own items (``candidate_ids``; with ``--replicate-items`` over every
  item), with the unsharded engine asked the same next to it.

    python -m qgnn.bench.bench_sharded_links [--users 6040] [--num-items 3706] [--parts 2]
        [--model gcn] [--decoder dot] [--replicate-items] [--repeat 50] [--name sharded-links]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.bench.harness import RESULTS_DIR, interleave, markdown_table, write_result


def link_run(data: Any, kind: str, decoder: str, hidden: int, out: Path) -> Path:
    """A calibrated, untrained INT8 Degree-Quant link run (LightGCN: an embedding table)."""
    import torch
    from qgnn.bench.untrained import calibrate, save_untrained_run
    from qgnn.contract.layers import layer_spec
    from qgnn.training.nn.models import ModelConfig
    from qgnn.training.presets import TrainConfig
    from qgnn.training.quant import QuantConfig, quantize_model
    from qgnn.training.tasks.link import build_link_model

    graph = data.graph
    table = layer_spec(kind).layer_mean
    cfg = ModelConfig(model=kind, in_dim=hidden if table else graph.num_features,
                      out_dim=hidden, hidden=hidden, num_layers=2)
    quant = QuantConfig(bits=8)
    torch.manual_seed(0)
    model = calibrate(quantize_model(build_link_model(
        cfg, decoder, graph.num_nodes if table else None), quant), graph,
        features=np.zeros((graph.num_nodes, 1), np.float32) if table else None)
    return save_untrained_run(out, model, task="link", graph=graph, model_config=cfg,
                              quant=quant, train=TrainConfig(decoder=decoder))


def _bytes(path: Path, shared_only: bool = False) -> int:
    """A bundle's bytes on disk; ``shared_only``: only what every shard bundle carries whole
    (model, partition book, recommender arrays, replicated items, manifest), not ``shards/``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()
               and not (shared_only and f.relative_to(path).parts[0] == "shards"))


def build(data: Any, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Both bundles of one run, with the time each step took."""
    from qgnn.exporter.export import export_run
    from qgnn.exporter.link_shards import write_link_shards
    from qgnn.training.distributed import launch_local
    from qgnn.training.distributed.infer import run_rank

    run = link_run(data, args.model, args.decoder, args.hidden, root / "run")
    start = time.perf_counter()
    bundle = export_run(run, root / "unsharded", name="partitioned", graph=data,
                        parity=False).bundle
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    report = write_link_shards(run, root / "shards", args.parts, "ldg", data=data)
    shards_s = time.perf_counter() - start
    start = time.perf_counter()
    launch_local(run_rank, args.parts, str(run), str(root / "shards"), str(root / "bundles"),
                 "partitioned", 1, 4096, 1, args.replicate_items, timeout_s=1800)
    infer_s = time.perf_counter() - start
    return {"bundle": bundle, "repos": root / "bundles", "export_s": export_s,
            "link_shards_s": shards_s, "infer_s": infer_s, "edge_cut": report["edge_cut"],
            "sizes": report["sizes"]}


def measure(data: Any, built: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from qgnn.runtime.backend import BackendOptions
    from qgnn.runtime.bundle.reader import load_bundle
    from qgnn.runtime.engine import Engine, EngineConfig
    from qgnn.runtime.engine.shard_book import shard_file
    from qgnn.runtime.engine.sharded_links import ShardedLinkBackend

    config, options = EngineConfig(threads=args.threads), BackendOptions(threads=args.threads)
    unsharded, repos = built["bundle"], built["repos"]
    paths = {"unsharded": unsharded, "all": repos / "all" / "partitioned" / "1",
             "shard-0": repos / "shard-0" / "partitioned" / "1"}
    table = np.asarray(load_bundle(unsharded).array("embeddings/values"))
    with load_bundle(paths["all"], verify=True) as b:
        exact = all(np.array_equal(b.array(shard_file(p, "embeddings")),
                                   table[np.asarray(b.array(shard_file(p, "nodes")))])
                    for p in range(args.parts))

    def load(name: str) -> Any:
        def run() -> None:
            bundle = load_bundle(paths[name], verify=True)
            backend = (Engine(bundle, config) if name == "unsharded"
                       else ShardedLinkBackend(bundle, options))
            backend.close()
        return run

    loads = interleave({name: load(name) for name in paths}, repeat=args.load_repeat,
                       warmup=1)
    engine = Engine(load_bundle(unsharded), config)
    everything = ShardedLinkBackend(load_bundle(paths["all"]), options)
    one = ShardedLinkBackend(load_bundle(paths["shard-0"]), options)
    owner = everything.book.owner
    users, n = data.num_users, int(owner.size)
    own_users = np.flatnonzero(owner[:users] == 0)
    own_items = np.flatnonzero(owner == 0)
    own_items = own_items[own_items >= users]
    rng = np.random.default_rng(1)
    draws = rng.integers(0, users, 4 * (args.repeat + 4))
    own_draws = rng.choice(own_users, 4 * (args.repeat + 4))
    state = {"i": 0, "j": 0}
    answers: dict[str, dict[int, Any]] = {"unsharded": {}, "all": {}}

    def recommend(name: str, backend: Any) -> Any:
        def run() -> None:
            u = int(draws[state["i"] // 2])  # the two compared candidates share each user
            state["i"] += 1
            answers[name][u] = backend.recommend(u, args.k, exclude_seen=True)
        return run

    def own(backend: Any) -> Any:
        def run() -> None:
            u = int(own_draws[state["j"] // 2])
            state["j"] += 1
            backend.recommend(u, args.k, exclude_seen=True,
                              candidates=None if args.replicate_items else own_items)
        return run

    recs = interleave({"unsharded": recommend("unsharded", engine),
                       "all": recommend("all", everything),
                       "unsharded, shard-0 candidates": own(engine), "shard-0": own(one)},
                      repeat=args.repeat, warmup=2)
    mismatches = sum(not (np.array_equal(got[0], answers["unsharded"][u][0])
                          and np.array_equal(got[1], answers["unsharded"][u][1]))
                     for u, got in answers["all"].items() if u in answers["unsharded"])
    bytes_by = {name: _bytes(path) for name, path in paths.items()}
    bytes_by.update({f"shard-{p}": _bytes(repos / f"shard-{p}" / "partitioned" / "1")
                     for p in range(1, args.parts)})
    return {"bit_exact": exact,
            "shared_bytes_per_shard_bundle": _bytes(paths["shard-0"], True),
            "recommend_mismatches": int(mismatches),
            "recommend_compared": len(answers["all"]),
            "isa": engine.isa, "num_nodes": n, "bytes": bytes_by,
            "load": {k: t.to_dict() for k, t in loads.items()},
            "recommend": {k: t.to_dict() for k, t in recs.items()},
            "own_items": int(own_items.size), "own_users": int(own_users.size)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=6040)
    p.add_argument("--num-items", type=int, default=3706)
    p.add_argument("--interactions", type=int, default=40, help="per user, before the split")
    p.add_argument("--parts", type=int, default=2)
    p.add_argument("--model", default="gcn")
    p.add_argument("--decoder", choices=("dot", "mlp"), default="dot")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--load-repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--replicate-items", action="store_true",
                   help="every item's row in each shard bundle: shard-0 then recommends to "
                        "its users over every item")
    p.add_argument("--name", default="sharded-links")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    from qgnn.graph.synth import bipartite_recommender

    data = bipartite_recommender(args.users, args.num_items,
                                 interactions_per_user=args.interactions, num_features=32,
                                 seed=0)
    results: dict[str, Any] = {"load_average_before": os.getloadavg(), "users": args.users,
                               "items": args.num_items, "parts": args.parts,
                               "model": args.model, "decoder": args.decoder,
                               "hidden": args.hidden, "k": args.k, "threads": args.threads,
                               "replicate_items": args.replicate_items,
                               "train_interactions": int(data.train.shape[0])}
    with tempfile.TemporaryDirectory() as tmp:
        built = build(data, args, Path(tmp))
        results.update({k: v for k, v in built.items() if k not in ("bundle", "repos")})
        results.update(measure(data, built, args))
    results["load_average_after"] = os.getloadavg()
    out = write_result(args.name, results, results_dir=args.results_dir)
    def ms(section: str, name: str, stat: str) -> float | None:
        timing = results[section].get(name)
        return None if timing is None else timing[stat] * 1e3

    rows = [[name if name != "unsharded, shard-0 candidates" or not args.replicate_items
             else "unsharded, shard-0 users", results["bytes"].get(name),
             ms("load", name, "median_s"), ms("recommend", name, "median_s"),
             ms("recommend", name, "p99_s")]
            for name in ["unsharded", "all", *[f"shard-{q}" for q in range(args.parts)],
                         "unsharded, shard-0 candidates"]]
    table = markdown_table(["bundle / replica", "bytes", "load p50 ms", "Recommend p50 ms",
                            "Recommend p99 ms"], rows, ["l", "r", "r", "r", "r"])
    note = (f"{args.model}/{args.decoder}, hidden {args.hidden}, W = {args.parts} (LDG, edge cut "
            f"{results['edge_cut']:.3f}), {results['train_interactions']} train interactions, "
            f"k = {args.k}, ISA {results['isa']}; of each shard bundle "
            f"{results['shared_bytes_per_shard_bundle']} bytes are shared (model, partition "
            f"book, recommender arrays{', item table' if args.replicate_items else ''}); "
            f"bit-exact rows: {results['bit_exact']}, "
            f"Recommend mismatches: {results['recommend_mismatches']}; export "
            f"{results['export_s']:.1f} s, link shards {results['link_shards_s']:.1f} s, "
            f"distributed inference {results['infer_s']:.1f} s; 1-minute load average "
            f"{results['load_average_before'][0]:.1f} before, "
            f"{results['load_average_after'][0]:.1f} after")
    (args.results_dir / f"{args.name}.md").write_text(table + "\n\n" + note + "\n")
    print(table)
    print(note)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
