"""FP32 accuracy table: every (model, dataset) preset trained over several seeds, against targets.

The targets are mean test figures (percent) over 10 seeds on the standard Planetoid split, and
ROC-AUC on Tolokers split 0; published references: GCN (Kipf & Welling, ICLR 2017: Cora 81.5,
CiteSeer 70.3), GAT (Velickovic et al., ICLR 2018: Cora 83.0), Tolokers GCN 83.64 (Platonov et
al., ICLR 2023). The module stays light at import; torch loads when a table runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from qgnn.bench.harness import markdown_table, write_result

from qgnn.argtypes import csv_list, positive_int

log = logging.getLogger(__name__)

# (model, dataset) -> (metric, target in percent)
TARGETS: dict[tuple[str, str], tuple[str, float]] = {
    ("gcn", "cora"): ("accuracy", 81.0),
    ("gcn", "citeseer"): ("accuracy", 70.3),
    ("gat", "cora"): ("accuracy", 82.0),
    ("sage", "cora"): ("accuracy", 79.0),
    ("gin", "cora"): ("accuracy", 76.5),
    ("egc", "cora"): ("accuracy", 81.0),
    ("gcn", "tolokers"): ("roc_auc", 82.0),
}



@dataclass
class AccuracyRow:
    model: str
    dataset: str
    metric: str
    scores: list[float]  # test metric per seed, percent
    seconds: list[float]  # wall time per run
    target: float | None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def std(self) -> float:
        return statistics.stdev(self.scores) if len(self.scores) > 1 else 0.0

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.mean >= self.target

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "mean": self.mean, "std": self.std,
                "passed": self.passed}


def run_accuracy(pairs: Sequence[tuple[str, str]], seeds: Sequence[int], *,
                 epochs: int | None = None, progress: bool = False,
                 on_row: Callable[[AccuracyRow], None] | None = None) -> list[AccuracyRow]:
    """Train each (model, dataset) preset once per seed; ``epochs`` caps training (smoke runs).

    Datasets are loaded once each. Node classification only (the task of every target).
    """
    from qgnn.graph.container import Graph
    from qgnn.graph.datasets import load_dataset
    from qgnn.training.presets import preset
    from qgnn.training.tasks.node import node_model_config, train_node

    if not seeds:
        raise ValueError("seeds: need at least one seed")
    graphs: dict[str, Graph] = {}
    rows = []
    for model, dataset in pairs:
        if dataset not in graphs:
            loaded = load_dataset(dataset)
            if not isinstance(loaded, Graph):
                raise ValueError(f"dataset {dataset!r}: the accuracy table needs node "
                                 f"classification data, got link-prediction pairs")
            graphs[dataset] = loaded
        graph = graphs[dataset]
        chosen = preset(model, dataset)
        cfg = node_model_config(graph, model, **chosen.model)
        scores, seconds, metric = [], [], ""
        for seed in seeds:
            changes: dict[str, Any] = {"seed": seed}
            if epochs is not None:
                changes["epochs"] = epochs
            started = time.perf_counter()
            result = train_node(graph, cfg, dataclasses.replace(chosen.train, **changes),
                                progress=progress)
            seconds.append(time.perf_counter() - started)
            scores.append(100.0 * result.test_metric)
            metric = result.metric
            log.info("run done", extra={"model": model, "dataset": dataset, "seed": seed,
                                        "test": round(scores[-1], 2),
                                        "seconds": round(seconds[-1], 1)})
        target = TARGETS.get((model, dataset.lower()))
        row = AccuracyRow(model, dataset, metric, scores, seconds,
                          target[1] if target is not None else None)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def accuracy_table(rows: Sequence[AccuracyRow]) -> str:
    """Markdown: mean ± std (percent), seeds, target, pass/fail, median seconds per run."""
    body = []
    for r in rows:
        verdict = "-" if r.passed is None else ("pass" if r.passed else "FAIL")
        body.append([r.model, r.dataset, r.metric, f"{r.mean:.2f} ± {r.std:.2f}",
                     len(r.scores), "-" if r.target is None else f"{r.target:.1f}", verdict,
                     f"{statistics.median(r.seconds):.1f}"])
    return markdown_table(["model", "dataset", "metric", "test (mean ± std)", "seeds", "target",
                           "result", "s/run"], body,
                          align=["l", "l", "l", "r", "r", "r", "l", "r"])




def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "accuracy", help="FP32 test accuracy of the presets over seeds, against targets",
        description="Train every (model, dataset) preset over seeds 0..N-1 and print a markdown "
                    "table (mean ± std, target, pass/fail); the full default table takes about "
                    "an hour on 2 CPU cores.")
    p.add_argument("--models", type=csv_list, help="comma-separated models (default: every target)")
    p.add_argument("--datasets", type=csv_list,
                   help="comma-separated dataset specs (default: every target)")
    p.add_argument("--seeds", type=positive_int, default=10, help="number of seeds (default 10)")
    p.add_argument("--epochs", type=positive_int, help="cap on epochs (smoke runs)")
    p.add_argument("--name", default="accuracy",
                   help="result name: bench/results/<name>.json (default: accuracy)")
    p.add_argument("--results-dir", help="folder for the JSON result (default: bench/results)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads")
    p.add_argument("--progress", action="store_true", help="show a progress bar per run")
    p.set_defaults(func=run_cli)


def select_pairs(models: Sequence[str] | None,
                 datasets: Sequence[str] | None) -> list[tuple[str, str]]:
    """Every target pair matching the filters; given both lists, their full cross product."""
    if models and datasets:
        return [(m, d) for d in datasets for m in models]
    pairs = [(m, d) for m, d in TARGETS
             if (not models or m in models) and (not datasets or d in datasets)]
    if not pairs:
        raise ValueError(f"--models/--datasets: no target matches models={models} "
                         f"datasets={datasets}; give both to run any combination")
    return pairs


def run_cli(args: argparse.Namespace) -> int:
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    pairs = select_pairs(args.models, args.datasets)

    def report(row: AccuracyRow) -> None:
        print(f"{row.model} {row.dataset}: {row.mean:.2f} ± {row.std:.2f} over "
              f"{len(row.scores)} seed(s)", file=sys.stderr, flush=True)

    rows = run_accuracy(pairs, list(range(args.seeds)), epochs=args.epochs,
                        progress=args.progress, on_row=report)
    print(accuracy_table(rows))
    path = write_result(args.name, {"seeds": args.seeds, "epochs_cap": args.epochs,
                                    "rows": [r.to_dict() for r in rows]},
                        results_dir=args.results_dir)
    print(f"wrote {path}")
    return 0
