"""Cost of Degree-Quant over plain QAT: seconds per full-graph training epoch on Cora.

One epoch is what ``qgnn.training.tasks.node`` does per epoch: a training step (forward,
backward, Adam) and an evaluation forward pass. The three variants (FP32, QAT, DQ) start from the
same weights and run interleaved, repeat after repeat in rotating order, so machine load drifts
hit them alike; the figure is the ratio of medians. The reference implementation of Degree-Quant
is about 5.7x slower than its QAT baseline; the target here is at most 2x.

``python -m qgnn.bench.bench_dq_cost [--bits 8] [--repeats 30] [--threads 1]`` writes
``bench/results/dq_cost.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from qgnn.graph.datasets import load_dataset
from qgnn.graph.transforms import row_normalize
from qgnn.training.data import NodeData, node_data
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.hooks import make_hooks
from torch import nn
from torch.nn import functional as F

RESULTS = Path(__file__).resolve().parent / "results" / "dq_cost.json"
Epoch = Callable[[], None]


def make_epoch(model: nn.Module, data: NodeData,
               blocks_for: Callable[[object, bool], object]) -> Epoch:
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


def variants(data: NodeData, graph_in_degree: object, bits: int,
             hidden: int) -> dict[str, Epoch]:
    torch.manual_seed(0)
    base = build_model(ModelConfig("gcn", data.num_features, data.num_classes, hidden=hidden))
    out = {"fp32": make_epoch(copy.deepcopy(base), data, lambda b, training: b)}
    for method in ("qat", "dq"):
        prepare_model, blocks_for = make_hooks(QuantConfig(bits=bits, method=method),
                                               graph_in_degree)  # type: ignore[arg-type]
        out[method] = make_epoch(prepare_model(copy.deepcopy(base)), data, blocks_for)
    return out


def run(bits: int, repeats: int, warmup: int, hidden: int, dataset: str) -> dict[str, object]:
    graph = row_normalize(load_dataset(dataset))  # type: ignore[arg-type]
    data = node_data(graph)
    epochs = variants(data, graph, bits, hidden)
    names = list(epochs)
    for _ in range(warmup):
        for name in names:
            epochs[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            epochs[name]()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    return {
        "benchmark": "dq_cost", "dataset": dataset, "model": "gcn", "hidden": hidden,
        "bits": bits, "repeats": repeats, "warmup": warmup,
        "epoch_median_ms": {k: round(v * 1e3, 3) for k, v in med.items()},
        "epoch_p10_p90_ms": {k: [round(statistics.quantiles(t, n=10)[0] * 1e3, 3),
                                 round(statistics.quantiles(t, n=10)[-1] * 1e3, 3)]
                             for k, t in times.items()},
        "dq_over_qat": round(med["dq"] / med["qat"], 3),
        "qat_over_fp32": round(med["qat"] / med["fp32"], 3),
        "target_dq_over_qat": 2.0,
        "reference_dq_over_qat": 5.7,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "machine": platform.machine(),
        "load_average": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--dataset", default="cora")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error(f"--repeats: need at least 3 for a median and deciles, got {args.repeats}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run(args.bits, args.repeats, args.warmup, args.hidden, args.dataset)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
