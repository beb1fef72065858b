"""Where one link-training step goes on ogbl-ddi: forward, pair scoring, backward, per path.

One optimiser step of ``train_link``'s model (learned embedding, the encoder, the MLP decoder)
on a batch of training positives and as many negatives, the OGB ddi recipe's unit of work:

- ``sparse``: full precision as trained now (sum/mean as one matrix product, training/nn/spmm.py:
  a dense ``A`` on ogbl-ddi, which is dense enough)
- ``csr``: the same product forced onto the CSR route (what ``sparse`` was before the dense route)
- ``per-edge``: full precision through the per-edge gather/index_add path (what every pass used
  before the matrix product)
- ``dq8`` / ``dq4``: Degree-Quant with the model's link quantisation preset, as trained now
  (the quantised messages built once per distinct (source, weight) row, training/nn/gathered.py)
- ``dq8-per-edge`` / ``dq4-per-edge``: the same with one quantised message row per edge (what
  quantised training did before; same figures, up to float summation order)

Writes ``bench/results/<name>.json`` and ``.md`` with the median wall seconds of each phase and
the step's median process CPU seconds (the host is shared; CPU time is the steadier figure).
``--epochs N`` also times N epochs of ``train_link`` with OGB's recipe per path (17 steps,
validation each epoch, the final test scoring). ``--aggregation`` times only the aggregation
(GCN's normalised sum, SAGE's mean; forward + backward), dense against CSR, interleaved.
``--profile K`` profiles one more step per path (torch.profiler) and lists its K operators of
most self CPU time, with input shapes, in the JSON and the markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from qgnn.bench.bench_recommend import OGBL_DDI, run_one
from qgnn.bench.harness import RESULTS_DIR, machine_info, markdown_table, write_result
from qgnn.graph.datasets import load_dataset
from qgnn.graph.links import LinkData
from qgnn.training.nn import propagate, spmm
from qgnn.training.nn.block import full_graph_block
from qgnn.training.nn.layers.gcn import gcn_norm
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.hooks import make_hooks
from qgnn.training.quant.options import model_quant_preset
from qgnn.training.tasks.link import (
    build_link_model,
    link_loss,
    link_model_config,
    sample_negatives,
)

PATHS = ("sparse", "csr", "per-edge", "dq8", "dq4", "dq8-per-edge", "dq4-per-edge")


def time_steps(data: LinkData, model: str, path: str, args: argparse.Namespace,
               profile: list[dict[str, Any]] | None = None) -> dict[str, float]:
    """Median seconds of each phase over ``args.repeat`` steps after one warm-up step. With
    ``profile`` (and ``args.profile`` > 0) one more step runs under torch.profiler and its
    ``args.profile`` operators of most self CPU time are appended to it."""
    graph = data.graph
    block = full_graph_block(graph)
    cfg = link_model_config(data, model, hidden=args.hidden, embedding_dim=args.hidden,
                            num_layers=2, dropout=0.5)
    net: torch.nn.Module = build_link_model(cfg, "mlp", graph.num_nodes)
    blocks_for = None
    if path.startswith("dq"):
        bits = int(path.removesuffix("-per-edge")[2:])
        qcfg = QuantConfig(bits=bits, **model_quant_preset(model, bits, "link"))
        prepare, blocks_for = make_hooks(qcfg, graph, num_layers=2,
                                         generator=torch.Generator().manual_seed(0))
        net = prepare(net)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.005)
    rng = np.random.default_rng(0)
    phases: dict[str, list[float]] = {"forward": [], "score": [], "backward": [], "step": [],
                                      "step_cpu": []}

    def step() -> tuple[float, ...]:
        pairs = data.train[rng.integers(0, len(data.train), args.batch)]
        neg = torch.from_numpy(sample_negatives(pairs, rng, graph.num_nodes))
        c0, t0 = time.process_time(), time.perf_counter()
        net.train()
        optimiser.zero_grad(set_to_none=True)
        h = net(None, block if blocks_for is None else blocks_for(block, True))
        t1 = time.perf_counter()
        loss = link_loss(net.score(h, torch.from_numpy(pairs)), net.score(h, neg), "bce")
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        optimiser.step()
        return c0, t0, t1, t2, t3, time.perf_counter(), time.process_time()

    with route(path, args.table_part_bytes):
        for rep in range(args.repeat + 1):
            c0, t0, t1, t2, t3, t4, c4 = step()
            if rep:
                phases["step_cpu"].append(c4 - c0)
                for name, (a, b) in (("forward", (t0, t1)), ("score", (t1, t2)),
                                     ("backward", (t2, t3)), ("step", (t0, t4))):
                    phases[name].append(b - a)
        if profile is not None and args.profile > 0:
            profile.extend(top_operators(step, args.profile))
    return {name: statistics.median(v) for name, v in phases.items()}


def top_operators(step: Callable[[], object], count: int) -> list[dict[str, Any]]:
    """The ``count`` operators of most self CPU time in one ``step()`` (torch.profiler, input
    shapes told apart): where a step's time goes, op by op."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                record_shapes=True) as prof:
        step()
    ops = sorted(prof.key_averages(group_by_input_shape=True),
                 key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "shapes": str(e.input_shapes), "calls": e.count,
             "self_cpu_s": e.self_cpu_time_total / 1e6} for e in ops[:count]]


@contextlib.contextmanager
def route(path: str, table_part_bytes: int | None = None) -> Iterator[None]:
    """Force the aggregation route a path names (``per-edge``, ``csr``, ``dq*-per-edge``);
    others as trained. ``table_part_bytes``: the quantised paths' table ranges
    (:data:`~qgnn.training.nn.spmm.TABLE_PART_BYTES`) meanwhile."""
    saved = propagate._sparse_ok, spmm.dense_ok, propagate.gathered_propagate
    saved_part = spmm.TABLE_PART_BYTES
    if table_part_bytes is not None:
        spmm.TABLE_PART_BYTES = table_part_bytes
    if path == "per-edge":
        propagate._sparse_ok = lambda *_: False  # type: ignore[assignment]
    if path.endswith("-per-edge"):
        propagate.gathered_propagate = lambda *_: None  # type: ignore[assignment]
    if path == "csr":
        spmm.dense_ok = lambda *_: False  # type: ignore[assignment]
    try:
        yield
    finally:
        propagate._sparse_ok, spmm.dense_ok, propagate.gathered_propagate = saved
        spmm.TABLE_PART_BYTES = saved_part


def time_aggregation(data: LinkData, repeat: int, width: int) -> dict[str, dict[str, float]]:
    """Median CPU seconds of one aggregation forward + backward on ogbl-ddi at ``width``: GCN's
    normalised sum over the looped graph and SAGE's mean, dense and CSR routes interleaved."""
    block = full_graph_block(data.graph)
    looped = block.with_self_loops()
    cases = {"gcn": (looped, "sum", gcn_norm(looped, block.src_in_degree())),
             "sage": (block, "mean", None)}
    x = torch.randn(data.graph.num_nodes, width, requires_grad=True)
    seconds: dict[str, list[float]] = {f"{m}/{r}": [] for m in cases for r in ("dense", "csr")}
    for rep in range(repeat + 1):
        for key in seconds:
            graph, reduce, weight = cases[key.split("/")[0]]
            c0 = time.process_time()
            spmm.sparse_aggregate(x, graph, reduce, weight,
                                  dense=key.endswith("dense")).sum().backward()
            if rep:
                seconds[key].append(time.process_time() - c0)
    return {key: {"aggregate_cpu": statistics.median(v)} for key, v in seconds.items()}


def time_epochs(data: LinkData, model: str, path: str, epochs: int) -> dict[str, float]:
    """Wall and CPU seconds per epoch of ``train_link`` with OGB's ddi recipe (one seed)."""
    precision = path.removesuffix("-per-edge") if path.startswith("dq") else "fp32"
    args = argparse.Namespace(k=20)
    settings = {**OGBL_DDI, "epochs": epochs}
    with route(path, args.table_part_bytes):
        c0, t0 = time.process_time(), time.perf_counter()
        run = run_one(data, model, precision, 0, args, settings)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"epoch": wall / epochs, "epoch_cpu": cpu / epochs, "val": run["val"]}


def profile_tables(profiles: dict[str, list[dict[str, Any]]]) -> str:
    """One markdown table per profiled path (empty without ``--profile``)."""
    parts = []
    for key, ops in profiles.items():
        if ops:
            body = [[o["op"], o["shapes"], o["calls"], f"{o['self_cpu_s']:.3f}"] for o in ops]
            parts.append(f"\n## {key}: one profiled step, operators by self CPU time\n\n"
                         + markdown_table(["operator", "input shapes", "calls", "self CPU s"],
                                          body) + "\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="gcn,sage")
    p.add_argument("--paths", default="sparse,per-edge")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=64 * 1024, help="positives per step")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--aggregation", action="store_true",
                   help="time only the aggregation (forward + backward), dense against CSR")
    p.add_argument("--epochs", type=int, default=0,
                   help="also time this many train_link epochs per path (0: steps only)")
    p.add_argument("--profile", type=int, default=0, metavar="K",
                   help="also profile one more step per path and list its K operators of most "
                        "self CPU time")
    p.add_argument("--table-part-bytes", type=int, default=spmm.TABLE_PART_BYTES,
                   help="bytes of each row range in which quantised paths sum their message "
                        "table (a huge value: the whole table in one product)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="link-step")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    paths = [x for x in args.paths.split(",") if x]
    if set(paths) - set(PATHS):
        p.error(f"--paths: expected a subset of {PATHS}")
    if args.table_part_bytes < 1:
        p.error("--table-part-bytes: expected >= 1")
    torch.set_num_threads(args.threads)
    data = load_dataset("ogbl-ddi")
    assert isinstance(data, LinkData)
    before = list(os.getloadavg())
    rows: dict[str, Any] = {}
    profiles: dict[str, list[dict[str, Any]]] = {}
    if args.aggregation:
        rows = time_aggregation(data, args.repeat, args.hidden)
        print(rows, flush=True)
    for model in [m for m in args.models.split(",") if m and not args.aggregation]:
        for path in paths:
            profiles[f"{model}/{path}"] = []
            rows[f"{model}/{path}"] = time_steps(data, model, path, args,
                                                 profiles[f"{model}/{path}"])
            if args.epochs > 0:
                rows[f"{model}/{path}"].update(time_epochs(data, model, path, args.epochs))
            print(model, path, {k: round(v, 2) for k, v in rows[f"{model}/{path}"].items()},
                  flush=True)
    results = {"settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
               "profiles": {k: v for k, v in profiles.items() if v},
               "load_average_before": before, "load_average_after": list(os.getloadavg()),
               "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    machine = machine_info()
    write_result(args.name, results, results_dir=args.results_dir, machine=machine)
    body = [[*key.split("/"), *(f"{v:.2f}" for v in r.values())] for key, r in rows.items()]
    names = {"forward": "forward s", "score": "score s", "backward": "backward s",
             "step": "step s", "step_cpu": "step CPU s", "epoch": "epoch s",
             "epoch_cpu": "epoch CPU s", "val": "val Hits@20",
             "aggregate_cpu": "aggregation fwd+bwd CPU s"}
    table = markdown_table(["model", "path", *(names[k] for k in next(iter(rows.values())))],
                           body)
    (args.results_dir / f"{args.name}.md").write_text(
        f"# {args.name}\n\nogbl-ddi, width {args.hidden}, {args.batch} positives + as many "
        f"negatives per step, {args.threads} thread(s), CPU {machine.get('cpu')} (torch "
        f"{results['torch_cpu_capability']}), load average {before[0]:.1f} / "
        f"{results['load_average_after'][0]:.1f}\n\n{table}\n{profile_tables(profiles)}")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
