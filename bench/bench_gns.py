"""GNS vs uniform neighbour sampling, side by side in one run (same fanouts, seeds and epochs).

Sections (``--sections``, default ``transfer,throughput,variance,accuracy``):

- ``coverage``: what a degree-proportional cache of each fraction holds, per graph: the
  expected share of edge endpoints (in-edges whose source is cached) and of nodes with at least
  one cached in-neighbour. It bounds what GNS can read from the cache. ``--coverage-powers``
  adds the ``--nodes`` graph at other degree-tail exponents.
- ``transfer``: host-to-device feature bytes per training epoch (GNS counts the cache load too),
  cache hit rate and input nodes, on the power-law generator (``--nodes``, default 1M) and on
  Tolokers. Only the sampling + staging + copy pipeline runs (the model step is a no-op): bytes
  do not depend on the model. ``+uint8`` rows stage the input rows as uint8 codes.
- ``throughput``: sampled edges/s of our uniform sampler, the GNS sampler and a plain vectorised
  PyTorch uniform sampler written here for reference, on the same batches (interleaved, median).
- ``variance``: mean squared error of the input layer's mean aggregation against the exact
  mean (random features), uniform vs GNS (both estimators).
- ``accuracy``: test metric of GNS (each estimator and layer mode), uniform and full-graph
  training at equal epochs on Cora, Tolokers and a synthetic planted-community graph
  (``--accuracy-datasets``), with the best epoch and GraphSAGE's neighbour/self weight ratio;
  ``--accuracy-feature-dtype uint8`` trains on uint8-staged rows.
- ``scale`` (alone, one process: peak RSS is per process): one GNS training epoch on a
  10M-node / 100M-edge / 128-feature synthetic graph, peak RSS and throughput.

Results merge into ``bench/results/gns.json`` (section by section) and ``bench/results/gns.md``;
``scale`` writes ``gns-scale.json``. Every figure is quoted with this command line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from qgnn.bench.harness import (
    RESULTS_DIR,
    interleave,
    machine_info,
    markdown_table,
    write_result,
)
from qgnn.graph.container import Graph
from qgnn.graph.neighbourhood import khop_blocks
from qgnn.graph.synth import powerlaw_communities
from qgnn.training.nn.models import ModelConfig
from qgnn.training.presets import TrainConfig
from qgnn.training.sampling.config import ESTIMATORS, FEATURE_DTYPES, SamplingConfig
from qgnn.training.sampling.gns import GNSSampler
from qgnn.training.tasks.minibatch import STREAM_BATCH, Pipeline, run_epoch, train_minibatch
from qgnn.training.tasks.node import node_model_config

SECTIONS = ("coverage", "transfer", "throughput", "variance", "accuracy", "scale")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


# ------------------------------------------------------------------------------ transfer


def epoch_traffic(graph: Graph, sampling: SamplingConfig, *, epochs: int,
                  seed: int) -> list[dict[str, float]]:
    """Per epoch: what the sampling pipeline moves for one pass over the training seeds."""
    cfg = ModelConfig(model="sage", in_dim=max(graph.num_features, 1), out_dim=2,
                      num_layers=len(sampling.fanouts))
    pipe = Pipeline(graph, cfg, sampling)
    train = np.flatnonzero(graph.train_mask if graph.train_mask.ndim == 1
                           else graph.train_mask[0])
    rows = []
    for epoch in range(epochs):
        before_cache = pipe.counter.bytes("cache")
        pipe.begin_epoch(epoch, seed)
        cache_bytes = pipe.counter.bytes("cache") - before_cache
        order = np.random.default_rng([seed, 1, epoch]).permutation(train)
        batches = [order[s:s + sampling.batch_size]
                   for s in range(0, order.size, sampling.batch_size)]

        def stage(b: int, batches: list[np.ndarray] = batches, epoch: int = epoch) -> Any:
            rng = np.random.default_rng([seed, STREAM_BATCH, epoch, 0, b])
            return pipe.builder.build(batches[b], rng)

        stats = run_epoch(pipe, batches, stage, lambda _batch: 0.0)
        rows.append({"feature_bytes": stats.bytes["features"] + cache_bytes,
                     "miss_feature_bytes": stats.bytes["features"],
                     "cache_load_bytes": cache_bytes,
                     "all_bytes": stats.bytes["features"] + cache_bytes
                     + stats.bytes["structure"] + stats.bytes["labels"],
                     "cache_hit_rate": stats.hit_rate, "input_nodes": stats.input_nodes,
                     "seconds": stats.seconds, "seeds": stats.seeds,
                     "sampled_edges": stats.sampled_edges})
    return rows


def transfer_section(graphs: dict[str, Graph], args: argparse.Namespace) -> dict[str, Any]:
    """Per graph and batch size (``--transfer-batch-sizes``): uniform, uniform at the smaller
    ``--budget-fanouts`` (what the same byte budget buys without a cache), GNS on the input
    layer and GNS on every layer at each cache fraction, and the stratified estimator (its
    non-cached draws cost bytes) at ``--cache-fraction``; uniform and the GNS rows at
    ``--cache-fraction`` again with uint8 feature staging (``+uint8``). The batch size matters
    on small graphs: a batch's seeds always travel, and uniform sampling's volume per seed
    shrinks as batches overlap more (a batch of 1024 reaches ~40% of Tolokers within two
    hops)."""
    out = {}
    f = f"{args.cache_fraction:g}"
    uint8_keys = {"uniform", f"gns@{f}", f"gns-all-layers@{f}"}
    uint8_keys |= {f"gns-stratified-u{k}@{f}" for k in args.uncached_fanouts}
    for name, graph in graphs.items():
        for batch_size in args.transfer_batch_sizes:
            per: dict[str, Any] = {}
            runs = [("uniform", dict(sampler="uniform")),
                    (budget_key(args.budget_fanouts),
                     dict(sampler="uniform", fanouts=args.budget_fanouts))]
            for layers in ("input", "all"):
                tag = "gns" if layers == "input" else "gns-all-layers"
                runs += [(f"{tag}@{f:g}", dict(sampler="gns", cache_fraction=f,
                                               gns_layers=layers))
                         for f in args.transfer_cache_fractions]
                runs += [(f"{tag}-stratified-u{k}@{args.cache_fraction:g}",
                          dict(sampler="gns", cache_fraction=args.cache_fraction,
                               gns_layers=layers, gns_estimator="stratified",
                               gns_uncached_fanout=k))
                         for k in args.uncached_fanouts]
            runs += [(f"{key}+uint8", options | {"feature_dtype": "uint8"})
                     for key, options in list(runs) if key in uint8_keys]
            for key, options in runs:
                sampling = SamplingConfig(**{"fanouts": args.fanouts, "batch_size": batch_size,
                                             "cache_fraction": args.cache_fraction,
                                             "device": "cpu", "workers": args.workers,
                                             "prefetch": args.prefetch} | options)
                rows = epoch_traffic(graph, sampling, epochs=args.epochs_transfer,
                                     seed=args.seed)
                per[key] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
                per[key]["over_uniform_feature_bytes"] = (per[key]["feature_bytes"]
                                                          / per["uniform"]["feature_bytes"])
                print(f"transfer {name} batch {batch_size} {key}: {per[key]}", file=sys.stderr)
            out[f"{name} (batch {batch_size})"] = {
                "graph": {"nodes": graph.num_nodes, "edges": graph.num_edges,
                          "features": graph.num_features},
                "batch_size": batch_size, "runs": per}
    return out


def budget_key(fanouts: tuple[int, ...]) -> str:
    return "uniform-fanouts-" + "-".join(map(str, fanouts))


# ------------------------------------------------------------------------------ coverage


def coverage_section(graphs: dict[str, Graph], fractions: list[float]) -> dict[str, Any]:
    """Per graph and cache fraction, exact expectations over the cache draw: the share of
    in-edges whose source is cached (``sum pi_u out_deg_u / E``) and the share of nodes with an
    in-edge that have at least one cached in-neighbour (``1 - q_v``)."""
    from qgnn.training.sampling.cache import inclusion_probabilities, miss_probability

    out: dict[str, Any] = {}
    for name, graph in graphs.items():
        deg = graph.out_degree().astype(np.float64)
        has_in = graph.csc.degree() > 0
        rows = {}
        for f in fractions:
            pi = inclusion_probabilities(deg, max(1, round(f * graph.num_nodes)))
            q = miss_probability(graph.csc, pi)
            rows[f"{f:g}"] = {"edge_share": float((pi * deg).sum() / deg.sum()),
                              "nodes_with_cached_neighbour": float(1.0 - q[has_in].mean()),
                              "always_cached": int((pi >= 1.0).sum())}
            print(f"coverage {name} {f:g}: {rows[f'{f:g}']}", file=sys.stderr)
        out[name] = {"nodes": graph.num_nodes, "edges": graph.num_edges, "fractions": rows}
    return out


# ------------------------------------------------------------------------------ throughput


def torch_uniform_sample(indptr: torch.Tensor, indices: torch.Tensor, seeds: torch.Tensor,
                         fanouts: list[int]) -> int:
    """Reference: plain vectorised PyTorch node-wise sampling (with replacement, ``k`` draws per
    node of positive degree), relabelled into blocks with destinations first. Returns the
    number of sampled edges."""
    nodes = seeds
    edges = 0
    for k in fanouts:
        start = indptr[nodes]
        deg = indptr[nodes + 1] - start
        has = deg > 0
        rows = torch.nonzero(has).squeeze(1)
        offs = (torch.rand(rows.numel(), k) * deg[rows, None]).long()
        nbr = indices[(start[rows, None] + offs).reshape(-1)]
        dst = rows.repeat_interleave(k)
        new = torch.unique(nbr[~torch.isin(nbr, nodes)])
        nxt = torch.cat([nodes, new])
        order = torch.argsort(nxt)
        src = order[torch.searchsorted(nxt[order], nbr)]
        assert src.numel() == dst.numel()
        edges += int(dst.numel())
        nodes = nxt
    return edges


def throughput_section(graph: Graph, args: argparse.Namespace) -> dict[str, Any]:
    csc = graph.csc
    rng = np.random.default_rng(args.seed)
    train = rng.permutation(np.flatnonzero(graph.train_mask))
    batches = [train[i * args.batch_size:(i + 1) * args.batch_size]
               for i in range(args.throughput_batches)]
    scratch = np.empty(graph.num_nodes, np.int64)
    gns = GNSSampler(csc, args.fanouts, args.cache_fraction, graph.out_degree())
    gns.refresh(np.random.default_rng(args.seed))
    indptr_t, indices_t = torch.from_numpy(csc.indptr), torch.from_numpy(csc.indices)
    edges: dict[str, int] = {}

    def ours_uniform() -> None:
        edges["uniform"] = sum(sum(b.num_edges for b in khop_blocks(
            csc, s, args.fanouts, seed=rng, scratch=scratch)) for s in batches)

    def ours_gns() -> None:
        edges["gns"] = sum(sum(b.num_edges for b in gns.sample(s, rng, scratch))
                           for s in batches)

    def reference() -> None:
        edges["torch_reference"] = sum(torch_uniform_sample(
            indptr_t, indices_t, torch.from_numpy(s), list(args.fanouts)) for s in batches)

    timings = interleave({"uniform": ours_uniform, "gns": ours_gns,
                          "torch_reference": reference}, repeat=args.repeat, warmup=1)
    out: dict[str, Any] = {}
    for name, t in timings.items():
        out[name] = {"sampled_edges_per_batch": edges[name] / len(batches),
                     "sampled_edges_per_s": edges[name] / t.median,
                     "ms_per_batch": 1e3 * t.median / len(batches), "timing": t.to_dict()}
        print(f"throughput {name}: {out[name]['sampled_edges_per_s']:.3g} edges/s",
              file=sys.stderr)
    out["uniform_over_reference"] = (out["uniform"]["sampled_edges_per_s"]
                                     / out["torch_reference"]["sampled_edges_per_s"])
    out["gns_over_reference"] = (out["gns"]["sampled_edges_per_s"]
                                 / out["torch_reference"]["sampled_edges_per_s"])
    out["graph"] = {"nodes": graph.num_nodes, "edges": graph.num_edges}
    out["batches"] = len(batches)
    return out


# ------------------------------------------------------------------------------ variance


def variance_section(args: argparse.Namespace) -> dict[str, Any]:
    """Mean squared error of the input layer's mean aggregation against the exact mean, for
    random unit-variance features (what each sampler's estimate costs in noise)."""
    from qgnn.training.nn.propagate import aggregate
    from qgnn.training.sampling.blocks import to_block
    from qgnn.training.sampling.uniform import UniformSampler

    graph = powerlaw_communities(args.variance_nodes, avg_degree=10, num_features=1,
                                 seed=args.seed)
    csc, n = graph.csc, graph.num_nodes
    deg = csc.degree()
    x = np.random.default_rng(args.seed).standard_normal((n, 4))
    exact = np.zeros_like(x)
    np.add.at(exact, np.repeat(np.arange(n), deg), x[csc.indices])
    exact /= np.maximum(deg, 1)[:, None]
    rng = np.random.default_rng(args.seed + 1)
    seeds = rng.choice(n, min(n, 20_000), replace=False)
    scratch = np.empty(n, np.int64)
    k = args.fanouts[-1]
    samplers = {"uniform": UniformSampler(csc, [k])}
    for est in ("unbiased", "normalized"):
        samplers[f"gns-{est}@{args.cache_fraction:g}"] = GNSSampler(
            csc, [k], args.cache_fraction, graph.out_degree(), est)
    for ku in args.uncached_fanouts:
        samplers[f"gns-stratified-u{ku}@{args.cache_fraction:g}"] = GNSSampler(
            csc, [k], args.cache_fraction, graph.out_degree(), "stratified",
            uncached_fanout=ku)
    out: dict[str, Any] = {"nodes": n, "destinations": int(seeds.size), "fanout": k,
                           "draws": args.variance_draws}
    xt = torch.from_numpy(x)
    for name, sampler in samplers.items():
        errors = []
        for _ in range(args.variance_draws):
            if isinstance(sampler, GNSSampler):
                sampler.refresh(rng)
            block = to_block(sampler.sample(seeds, rng, scratch)[0], deg, "mean")
            msg = xt[block.src_ids[block.src]] * block.edge_weight.double()[:, None]
            est = aggregate(msg, block.dst, block.num_dst, "mean").numpy()
            errors.append(float(((est - exact[seeds]) ** 2).mean()))
        out[name] = {"mse": float(np.mean(errors)), "per_draw": errors}
        print(f"variance {name}: mse {out[name]['mse']:.4g}", file=sys.stderr)
    return out


# ------------------------------------------------------------------------------ accuracy


def accuracy_runs(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(row key, SamplingConfig options) for every training compared: full-graph, uniform,
    uniform at ``--budget-fanouts``, and GNS per layer mode (``--accuracy-gns-layers``), cache
    fraction and estimator (``--accuracy-estimators``; stratified once per
    ``--uncached-fanouts``)."""
    runs: list[tuple[str, dict[str, Any]]] = [
        ("full", dict(sampler="full")), ("uniform", dict(sampler="uniform")),
        (budget_key(args.budget_fanouts), dict(sampler="uniform", fanouts=args.budget_fanouts))]
    for where in args.accuracy_gns_layers:
        tag = "gns" if where == "input" else "gns-all-layers"
        for f in args.accuracy_cache_fractions:
            for est in args.accuracy_estimators:
                base = dict(sampler="gns", cache_fraction=f, gns_estimator=est,
                            gns_layers=where)
                if est != "stratified":
                    runs.append((f"{tag}-{est}@{f:g}", base))
                    continue
                runs += [(f"{tag}-stratified-u{k}@{f:g}", base | {"gns_uncached_fanout": k})
                         for k in args.uncached_fanouts]
    return runs


ACCURACY_DATASETS = ("cora", "tolokers", "synthetic")


def accuracy_datasets(args: argparse.Namespace) -> dict[str, tuple[Graph, TrainConfig]]:
    """The graphs named by ``--accuracy-datasets``, each with the training settings it is
    compared under (built lazily: the synthetic graph alone is a quick sensitivity run)."""
    from qgnn.graph.datasets import load_dataset

    configs = {
        "cora": TrainConfig(epochs=args.epochs_cora, lr=0.01, weight_decay=5e-4,
                            row_normalize=True, patience=None),
        "tolokers": TrainConfig(epochs=args.epochs_tolokers, lr=0.01, weight_decay=0.0,
                                patience=None),
        "synthetic": TrainConfig(epochs=args.epochs_synthetic, lr=0.01, weight_decay=0.0,
                                 patience=None)}
    out: dict[str, tuple[Graph, TrainConfig]] = {}
    for name in args.accuracy_datasets:
        graph = (powerlaw_communities(args.synthetic_nodes, avg_degree=10, num_features=32,
                                      feature_noise=args.synthetic_noise,
                                      power=args.synthetic_power, seed=args.seed)
                 if name == "synthetic" else load_dataset(name))
        assert isinstance(graph, Graph)
        out[name] = (graph, configs[name])
    return out


def neighbour_weight_ratios(model: torch.nn.Module) -> list[float]:
    """``||W_neigh|| / ||W_self||`` per GraphSAGE layer (empty for other models): how much the
    trained model leans on the neighbour mean. Training on noisier estimates of that mean
    shrinks it (errors-in-variables attenuation), which the accuracy section records beside
    the test metric."""
    from qgnn.training.nn.layers.sage import SAGEConv

    return [float(m.lin_l.weight.detach().norm() / m.lin_r.weight.detach().norm())
            for m in model.modules() if isinstance(m, SAGEConv)]


def accuracy_section(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (graph, train_cfg) in accuracy_datasets(args).items():
        rows: dict[str, Any] = {}
        for key, options in accuracy_runs(args):
            scores, metric, best, ratios = [], "", [], []
            for s in range(args.accuracy_seeds):
                model_cfg = node_model_config(graph, args.model, hidden=64, dropout=0.5,
                                              num_layers=len(args.fanouts))
                cfg = TrainConfig.from_dict(train_cfg.to_dict() | {"seed": args.seed + s})
                sampling = SamplingConfig(**{"fanouts": args.fanouts,
                                             "batch_size": args.batch_size, "device": "cpu",
                                             "feature_dtype": args.accuracy_feature_dtype,
                                             "workers": args.workers,
                                             "prefetch": args.prefetch} | options)
                started = time.perf_counter()
                result = train_minibatch(graph, model_cfg, cfg, sampling, progress=False)
                scores.append(result.test_metric)
                metric = result.metric
                best.append(result.best_epoch)
                if result.model is not None:
                    ratios.append(neighbour_weight_ratios(result.model))
                print(f"accuracy {name} {key} seed {cfg.seed}: {result.test_metric:.4f} "
                      f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
            rows[key] = {"metric": metric, "test": scores, "mean": float(np.mean(scores)),
                         "std": float(np.std(scores)), "best_epoch": best,
                         "neighbour_weight_ratio": (np.mean(ratios, axis=0).tolist()
                                                    if ratios and ratios[0] else [])}
        out[name] = {"epochs": train_cfg.epochs, "runs": rows}
    return out


# ------------------------------------------------------------------------------ scale


def scale_section(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    graph = powerlaw_communities(args.scale_nodes, avg_degree=args.scale_avg_degree,
                                 num_features=128, seed=args.seed)
    gen_s = time.perf_counter() - t0
    rss_after_gen = peak_rss_gib()
    t0 = time.perf_counter()
    graph.csc  # noqa: B018 - build the in-neighbour view once, timed
    csc_s = time.perf_counter() - t0
    model_cfg = node_model_config(graph, args.model, hidden=64, dropout=0.5,
                                  num_layers=len(args.fanouts))
    sampling = SamplingConfig(sampler="gns", fanouts=args.fanouts, batch_size=args.batch_size,
                              cache_fraction=args.cache_fraction, device="cpu",
                              gns_estimator=args.scale_estimator,
                              feature_dtype=args.scale_feature_dtype,
                              workers=args.workers, prefetch=args.prefetch)
    from qgnn.training.nn.models import build_model
    from qgnn.training.sampling.transfer import module_to_device

    t0 = time.perf_counter()
    pipe = Pipeline(graph, model_cfg, sampling)
    pipeline_s = time.perf_counter() - t0
    y = torch.from_numpy(graph.y)
    net = module_to_device(build_model(model_cfg), pipe.device, pipe.counter)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    t0 = time.perf_counter()
    pipe.begin_epoch(0, args.seed)
    refresh_s = time.perf_counter() - t0
    train = np.random.default_rng(args.seed).permutation(np.flatnonzero(graph.train_mask))
    if args.scale_batches:
        train = train[:args.scale_batches * args.batch_size]
    batches = [train[s:s + args.batch_size] for s in range(0, train.size, args.batch_size)]

    def stage(b: int) -> Any:
        seeds = batches[b]
        return pipe.builder.build(seeds, np.random.default_rng([args.seed, b]),
                                  {"y": y[torch.from_numpy(seeds)]})

    def step(batch: Any) -> float:
        net.train()
        loss = torch.nn.functional.cross_entropy(net(batch.x, batch.blocks),
                                                 batch.payload["y"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())

    stats = run_epoch(pipe, batches, stage, step)
    return {"graph": {"nodes": graph.num_nodes, "edges": graph.num_edges, "features": 128},
            "generate_s": gen_s, "csc_s": csc_s, "pipeline_s": pipeline_s,
            "cache_refresh_s": refresh_s, "estimator": args.scale_estimator,
            "feature_dtype": args.scale_feature_dtype,
            "epoch_s": stats.seconds, "batches": stats.steps, "seeds": stats.seeds,
            "seeds_per_s": stats.seeds / stats.seconds,
            "sampled_edges_per_s": stats.sampled_edges / stats.seconds,
            "cache_hit_rate": stats.hit_rate, "loss": stats.loss,
            "h2d_feature_bytes": stats.bytes["features"] + pipe.counter.bytes("cache"),
            "peak_rss_gib_after_generation": rss_after_gen, "peak_rss_gib": peak_rss_gib()}


# ------------------------------------------------------------------------------ report


def markdown(results: dict[str, Any]) -> str:
    """Tables for docs; each section names the command that measured it."""
    commands = {k: v.get("command", "") for k, v in results.get("settings", {}).items()}
    parts = ["# GNS vs uniform sampling (bench/bench_gns.py)"]
    if "coverage" in results:
        rows = [[name, f, r["edge_share"], r["nodes_with_cached_neighbour"], r["always_cached"]]
                for name, g in results["coverage"].items() for f, r in g["fractions"].items()]
        parts.append(f"## What the cache holds (expected over the draw)\n\n"
                     f"`{commands.get('coverage', '')}`\n\n" + markdown_table(
            ["graph", "cache fraction", "in-edges from cached sources",
             "nodes with a cached in-neighbour", "nodes always cached"], rows,
            ["l", "r", "r", "r", "r"]))
    if "transfer" in results:
        rows = []
        for name, r in results["transfer"].items():
            for key, run in r["runs"].items():
                rows.append([name, key, run["feature_bytes"] / 2**20, run["cache_hit_rate"],
                             run["input_nodes"], run["over_uniform_feature_bytes"]])
        parts.append(f"## Host-to-device feature bytes per epoch (median)\n\n"
                     f"`{commands.get('transfer', '')}`\n\n" + markdown_table(
            ["graph", "sampler", "feature MiB/epoch", "cache hit rate", "input nodes/epoch",
             "feature bytes / uniform"], rows, ["l", "l", "r", "r", "r", "r"]))
    if "throughput" in results:
        t = results["throughput"]
        rows = [[name, t[name]["sampled_edges_per_s"], t[name]["ms_per_batch"]]
                for name in ("uniform", "gns", "torch_reference")]
        parts.append(f"## Sampling throughput (median, one thread)\n\n"
                     f"`{commands.get('throughput', '')}`\n\n" + markdown_table(
            ["sampler", "sampled edges/s", "ms/batch"], rows, ["l", "r", "r"])
            + f"\n\nuniform / reference = {t['uniform_over_reference']:.2f}x, "
              f"gns / reference = {t['gns_over_reference']:.2f}x")
    if "variance" in results:
        v = results["variance"]
        rows = [[name, r["mse"]] for name, r in v.items() if isinstance(r, dict)]
        parts.append(f"## Input-layer mean aggregation: mean squared error vs exact\n\n"
                     f"`{commands.get('variance', '')}` ({v['nodes']} nodes, "
                     f"{v['destinations']} destinations, fanout {v['fanout']}, "
                     f"{v['draws']} draws, unit-variance features)\n\n"
                     + markdown_table(["sampler", "MSE"], rows, ["l", "r"]))
    if "accuracy" in results:
        rows = []
        for name, r in results["accuracy"].items():
            for key, run in r["runs"].items():
                ratio = run.get("neighbour_weight_ratio") or []
                best = run.get("best_epoch") or []
                rows.append([name, key, run["metric"], run["mean"], run["std"],
                             len(run["test"]), r["epochs"],
                             f"{statistics.median(best):g}" if best else "",
                             " / ".join(f"{x:.2f}" for x in ratio)])
        parts.append(f"## Test metric at equal epochs (mean over seeds)\n\n"
                     f"`{commands.get('accuracy', '')}`\n\n"
                     "best epoch: median over seeds of the epoch whose validation metric was "
                     "kept (0-based); W ratio: ||W_neigh|| / ||W_self|| per GraphSAGE layer, "
                     "mean over seeds\n\n" + markdown_table(
            ["dataset", "training", "metric", "mean", "std", "seeds", "epochs", "best epoch",
             "W ratio"], rows, ["l", "l", "l", "r", "r", "r", "r", "r", "r"]))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="transfer,throughput,variance,accuracy")
    p.add_argument("--nodes", type=int, default=1_000_000)
    p.add_argument("--features", type=int, default=128)
    p.add_argument("--fanouts", type=lambda s: tuple(int(x) for x in s.split(",")),
                   default=(10, 10))
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--cache-fraction", type=float, default=0.01)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--prefetch", type=int, default=2)
    p.add_argument("--torch-threads", type=int, default=1,
                   help="intra-op threads (1: the sampling threads need the other cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs-transfer", type=int, default=2)
    p.add_argument("--transfer-batch-sizes", default=[256, 1024],
                   type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--transfer-cache-fractions", default=[0.01, 0.02, 0.05],
                   type=lambda s: [float(x) for x in s.split(",")])
    p.add_argument("--throughput-batches", type=int, default=20)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--variance-nodes", type=int, default=100_000)
    p.add_argument("--variance-draws", type=int, default=5)
    p.add_argument("--model", default="sage")
    p.add_argument("--accuracy-seeds", type=int, default=3)
    p.add_argument("--accuracy-cache-fractions", default=[0.01],
                   type=lambda s: [float(x) for x in s.split(",")])
    p.add_argument("--accuracy-estimators", default=["unbiased", "normalized", "stratified"],
                   type=lambda s: [x.strip() for x in s.split(",")])
    p.add_argument("--uncached-fanouts", default=[1, 2, 4],
                   type=lambda s: [int(x) for x in s.split(",")],
                   help="stratified GNS rows: non-cached draws per destination")
    p.add_argument("--budget-fanouts", default=(3, 3),
                   type=lambda s: tuple(int(x) for x in s.split(",")),
                   help="a second uniform row with fanouts reading about GNS's bytes")
    p.add_argument("--accuracy-gns-layers", default=["input", "all"],
                   type=lambda s: [x.strip() for x in s.split(",")])
    p.add_argument("--coverage-powers", default=[2.1, 3.0],
                   type=lambda s: [float(x) for x in s.split(",") if x.strip()],
                   help="coverage: also the --nodes graph with these degree-tail exponents "
                        "(the default graph has 2.5)")
    p.add_argument("--epochs-cora", type=int, default=100)
    p.add_argument("--epochs-tolokers", type=int, default=30)
    p.add_argument("--epochs-synthetic", type=int, default=10)
    p.add_argument("--synthetic-nodes", type=int, default=50_000)
    p.add_argument("--synthetic-noise", type=float, default=1.0)
    p.add_argument("--synthetic-power", type=float, default=2.5,
                   help="degree-tail exponent of the accuracy section's synthetic graph")
    p.add_argument("--power", type=float, default=2.5,
                   help="degree-tail exponent of the --nodes graph (transfer, throughput)")
    p.add_argument("--accuracy-feature-dtype", choices=FEATURE_DTYPES, default="float32",
                   help="accuracy: input features staged as float32 or uint8 codes")
    p.add_argument("--accuracy-datasets", default=list(ACCURACY_DATASETS),
                   type=lambda s: [x.strip() for x in s.split(",") if x.strip()])
    p.add_argument("--scale-nodes", type=int, default=10_000_000)
    p.add_argument("--scale-avg-degree", type=float, default=10.0)
    p.add_argument("--scale-batches", type=int, default=0, help="0: the whole epoch")
    p.add_argument("--scale-estimator", choices=ESTIMATORS, default="unbiased")
    p.add_argument("--scale-feature-dtype", choices=FEATURE_DTYPES, default="float32")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = p.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"--sections: unknown {sorted(unknown)}; choose from {SECTIONS}")
    unknown = set(args.accuracy_datasets) - set(ACCURACY_DATASETS)
    if unknown:
        p.error(f"--accuracy-datasets: unknown {sorted(unknown)}; "
                f"choose from {list(ACCURACY_DATASETS)}")
    if "scale" in sections and len(sections) > 1:
        p.error("--sections: run scale alone (peak RSS is per process)")
    torch.set_num_threads(args.torch_threads)
    command = "python -m qgnn.bench.bench_gns " + " ".join(argv if argv is not None
                                                           else sys.argv[1:])
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
    settings["command"] = command
    machine = machine_info() | {"torch_threads": args.torch_threads}
    if sections == ["scale"]:
        result = scale_section(args)
        print(json.dumps(result, indent=2))
        write_result("gns-scale", {"settings": settings, "scale": result},
                     results_dir=args.results_dir, command=command, machine=machine)
        return
    folder = Path(args.results_dir)
    previous = folder / "gns.json"
    results: dict[str, Any] = {}
    if previous.exists():
        results = json.loads(previous.read_text()).get("results", {})
    results.setdefault("settings", {})
    if "transfer" in sections or "throughput" in sections:
        synth = powerlaw_communities(args.nodes, avg_degree=10, num_features=args.features,
                                     power=args.power, seed=args.seed)
        if "transfer" in sections:
            from qgnn.graph.datasets import load_dataset

            tolokers = load_dataset("tolokers")
            assert isinstance(tolokers, Graph)
            results["transfer"] = transfer_section(
                {f"powerlaw-{args.nodes}": synth, "tolokers": tolokers.with_split(0)}, args)
            results["settings"]["transfer"] = settings
        if "throughput" in sections:
            results["throughput"] = throughput_section(synth, args)
            results["settings"]["throughput"] = settings
    if "coverage" in sections:
        from qgnn.graph.datasets import load_dataset

        graphs = {f"powerlaw-{args.nodes}": powerlaw_communities(
            args.nodes, avg_degree=10, num_features=1, seed=args.seed),
            f"synthetic-{args.synthetic_nodes}": powerlaw_communities(
                args.synthetic_nodes, avg_degree=10, num_features=1, seed=args.seed)}
        for power in args.coverage_powers:
            graphs[f"powerlaw-{args.nodes}-power{power:g}"] = powerlaw_communities(
                args.nodes, avg_degree=10, num_features=1, power=power, seed=args.seed)
        for name in ("cora", "tolokers"):
            g = load_dataset(name)
            assert isinstance(g, Graph)
            graphs[name] = g
        results["coverage"] = coverage_section(graphs, args.transfer_cache_fractions)
        results["settings"]["coverage"] = settings
    if "variance" in sections:
        results["variance"] = variance_section(args)
        results["settings"]["variance"] = settings
    if "accuracy" in sections:
        results["accuracy"] = accuracy_section(args)
        results["settings"]["accuracy"] = settings
    write_result("gns", results, results_dir=folder, command=command, machine=machine)
    (folder / "gns.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
