"""Cost of Degree-Quant over plain QAT: seconds per full-graph training epoch on Cora.

One epoch is what ``qgnn.training.tasks.node`` does per epoch: a training step (forward,
backward, Adam) and an evaluation forward pass. The three variants (FP32, QAT, DQ, each with its
default ``QuantConfig``) start from the same weights and are timed round-robin
(``harness.interleave``), so machine load drifts hit them alike; the figure is the ratio of
medians. The reference implementation of Degree-Quant is about 5.7x slower than its QAT
baseline; the target here is at most 2x.

``python -m qgnn.bench.bench_dq_cost [--bits 8] [--repeat 40] [--threads 1]`` prints a table and
writes ``bench/results/dq_cost.json``.
"""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from qgnn.bench.harness import interleave, markdown_table, write_result
from qgnn.graph.container import Graph
from qgnn.graph.datasets import load_dataset
from qgnn.graph.transforms import row_normalize
from qgnn.training.data import NodeData, node_data
from qgnn.training.nn.block import Block
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.hooks import make_hooks
from torch import nn
from torch.nn import functional as F

Epoch = Callable[[], None]
BlocksFor = Callable[[Block, bool], Block | Sequence[Block]]
TARGET, REFERENCE = 2.0, 5.7


def make_epoch(model: nn.Module, data: NodeData, blocks_for: BlocksFor) -> Epoch:
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)

    def epoch() -> None:
        model.train()
        optimiser.zero_grad(set_to_none=True)
        logits = model(data.x, blocks_for(data.block, True))
        F.cross_entropy(logits[data.train_mask], data.y[data.train_mask]).backward()
        optimiser.step()
        model.eval()
        with torch.no_grad():
            model(data.x, blocks_for(data.block, False))

    return epoch


def variants(data: NodeData, graph: Graph, bits: int, hidden: int) -> dict[str, Epoch]:
    """FP32, QAT and DQ epochs of one GCN, all from the same initial weights."""
    torch.manual_seed(0)
    base = build_model(ModelConfig("gcn", data.num_features, data.num_classes, hidden=hidden))
    out = {"fp32": make_epoch(copy.deepcopy(base), data, lambda block, training: block)}
    for method in ("qat", "dq"):
        prepare_model, blocks_for = make_hooks(QuantConfig(bits=bits, method=method), graph)
        out[method] = make_epoch(prepare_model(copy.deepcopy(base)), data, blocks_for)
    return out


def measure(bits: int, repeat: int, warmup: int, hidden: int, dataset: str) -> dict[str, Any]:
    loaded = load_dataset(dataset)
    if not isinstance(loaded, Graph):
        raise ValueError(f"--dataset: expected a node-classification graph, got {dataset!r}")
    graph = row_normalize(loaded)
    data = node_data(graph)
    timings = interleave(variants(data, graph, bits, hidden), repeat=repeat, warmup=warmup)
    med = {name: t.median for name, t in timings.items()}
    return {
        "dataset": dataset, "model": "gcn", "hidden": hidden, "bits": bits,
        "threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
        "epoch": {name: t.to_dict() for name, t in timings.items()},
        "dq_over_qat": med["dq"] / med["qat"], "qat_over_fp32": med["qat"] / med["fp32"],
        "target_dq_over_qat": TARGET, "reference_dq_over_qat": REFERENCE,
    }


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bits", type=int, default=8, help="quantisation width (default 8)")
    p.add_argument("--repeat", type=int, default=40, help="timed epochs per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed epochs per variant first")
    p.add_argument("--hidden", type=int, default=64, help="GCN hidden width")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--dataset", default="cora", help="a node-classification dataset spec")


def run_cli(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    res = measure(args.bits, args.repeat, args.warmup, args.hidden, args.dataset)
    rows = [(name, f"{e['median_s'] * 1e3:.1f}", f"{e['p10_s'] * 1e3:.1f}",
             f"{e['p90_s'] * 1e3:.1f}") for name, e in res["epoch"].items()]
    print(markdown_table(["variant", "median ms", "p10 ms", "p90 ms"], rows,
                         ["l", "r", "r", "r"]))
    print(f"DQ / QAT = {res['dq_over_qat']:.2f} (target <= {TARGET}, reference ~{REFERENCE}); "
          f"QAT / FP32 = {res['qat_over_fp32']:.2f}")
    print(f"wrote {write_result('dq_cost', res)}")
    return res


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``qgnn bench dq-cost`` (registered by listing this module in qgnn.bench.cli)."""
    p = sub.add_parser("dq-cost", help="Degree-Quant epoch cost against plain QAT (Cora GCN)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    p.set_defaults(func=run_cli)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    main()
