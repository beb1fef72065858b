"""Accuracy table: every (model, dataset) preset trained over several seeds, against targets.

The targets are mean test figures (percent) over 10 seeds on the standard Planetoid split, and
ROC-AUC on Tolokers split 0; published references: GCN (Kipf & Welling, ICLR 2017: Cora 81.5,
CiteSeer 70.3), GAT (Velickovic et al., ICLR 2018: Cora 83.0), Tolokers GCN 83.64 (Platonov et
al., ICLR 2023). With ``--precisions`` the same presets and seeds also train quantised (Degree-
Quant or plain QAT, INT8 / INT4) through the hooks ``qgnn train --quant`` uses, for the
Degree-Quant table of issue 3. The module stays light at import; torch loads when a table runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qgnn.bench.harness import markdown_table, write_result

from qgnn.argtypes import csv_list, positive_int

if TYPE_CHECKING:
    from qgnn.training.quant.config import QuantConfig

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


@dataclass(frozen=True)
class Target:
    """A pass mark: ``mean >= value``, or, when ``relative``, ``mean >= FP32 mean - value``.

    Relative marks compare with the FP32 mean of the same run (same seeds, same machine), so
    they bound what quantisation loses rather than restating the FP32 target; beating FP32 by
    any margin passes.
    """

    value: float
    relative: bool = False

    def threshold(self, fp32_mean: float | None) -> float | None:
        """The mean needed to pass; ``None`` for a relative mark without an FP32 run."""
        if not self.relative:
            return self.value
        return None if fp32_mean is None else fp32_mean - self.value

    @property
    def rule(self) -> str:
        return f"FP32 - {self.value:.1f}" if self.relative else f"{self.value:.1f}"


# (model, dataset) -> precision -> target (issue 3): INT8 Degree-Quant within d of FP32,
# INT4 Degree-Quant absolute; plain QAT has none (reported for comparison)
DQ_TARGETS: dict[tuple[str, str], dict[str, Target]] = {
    ("gcn", "cora"): {"dq8": Target(0.5, relative=True), "dq4": Target(78.0)},
    ("gat", "cora"): {"dq8": Target(0.7, relative=True), "dq4": Target(75.0)},
    ("gin", "cora"): {"dq8": Target(1.0, relative=True), "dq4": Target(70.0)},
    ("gcn", "citeseer"): {"dq8": Target(0.5, relative=True), "dq4": Target(66.0)},
    ("egc", "cora"): {"dq8": Target(0.5, relative=True), "dq4": Target(77.0)},
}

# precision -> (qgnn train --quant, --method); None: full precision. Table columns in this order.
PRECISIONS: dict[str, tuple[str, str] | None] = {
    "fp32": None, "dq8": ("int8", "dq"), "dq4": ("int4", "dq"),
    "qat8": ("int8", "qat"), "qat4": ("int4", "qat"),
}
PRECISION_LABELS = {"fp32": "FP32", "dq8": "DQ INT8", "dq4": "DQ INT4", "qat8": "QAT INT8",
                    "qat4": "QAT INT4"}
# float slack when a mean equals its threshold (e.g. FP32 mean minus d computed in binary)
_TIE = 1e-9


def parse_precisions(text: str) -> tuple[str, ...]:
    """``--precisions`` value: known names, deduplicated, in table order (fp32 first)."""
    names = csv_list(text)
    unknown = [n for n in names if n not in PRECISIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown precision(s) {', '.join(unknown)}; choose "
                                         f"from {', '.join(PRECISIONS)}")
    return tuple(p for p in PRECISIONS if p in names)


def target_for(model: str, dataset: str, precision: str) -> Target | None:
    """The pass mark of ``model`` on ``dataset`` at ``precision`` (``None``: no target)."""
    key = (model, dataset.lower())
    if precision == "fp32":
        fp32 = TARGETS.get(key)
        return None if fp32 is None else Target(fp32[1])
    return DQ_TARGETS.get(key, {}).get(precision)


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
        return None if self.target is None else self.mean >= self.target - _TIE

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "mean": self.mean, "std": self.std,
                "passed": self.passed}


@dataclass
class PrecisionRow:
    """One (model, dataset) trained at each precision with the same seeds.

    ``runs[precision].target`` is the resolved pass mark (a relative one already subtracted from
    this row's FP32 mean), so ``runs[precision].passed`` is the verdict. ``quant[precision]``
    holds the quantised runs' ``QuantConfig`` and how many quantisation sites were calibrated.
    """

    model: str
    dataset: str
    runs: dict[str, AccuracyRow]
    targets: dict[str, Target] = dataclasses.field(default_factory=dict)
    quant: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def verdicts(self) -> dict[str, bool | None]:
        return {p: run.passed for p, run in self.runs.items()}

    def to_dict(self) -> dict[str, Any]:
        first = next(iter(self.runs.values()))
        return {"model": self.model, "dataset": self.dataset, "metric": first.metric,
                "precisions": {p: {**run.to_dict(),
                                   "rule": self.targets[p].rule if p in self.targets else None,
                                   **({"quant": self.quant[p]} if p in self.quant else {})}
                               for p, run in self.runs.items()}}


def precision_row(model: str, dataset: str, runs: dict[str, AccuracyRow],
                  quant: dict[str, dict[str, Any]] | None = None) -> PrecisionRow:
    """Attach each precision's target to its run: absolute, or relative to ``runs["fp32"]``."""
    fp32_mean = runs["fp32"].mean if "fp32" in runs else None
    targets, resolved = {}, {}
    for precision, run in runs.items():
        target = target_for(model, dataset, precision)
        if target is not None:
            targets[precision] = target
        threshold = None if target is None else target.threshold(fp32_mean)
        resolved[precision] = dataclasses.replace(run, target=threshold)
    return PrecisionRow(model, dataset, resolved, targets, dict(quant or {}))


def quant_config(model: str, precision: str, flags: Sequence[str] = ()) -> QuantConfig | None:
    """The ``QuantConfig`` that ``qgnn train --model M --quant Q --method X [flags]`` builds
    for ``precision`` (parsed by the same options, so model presets apply and ``flags`` such as
    ``--ste clipped`` override them); ``None`` for fp32."""
    spec = PRECISIONS[precision]
    if spec is None:
        return None
    from qgnn.training.quant.cli_args import add_quant_arguments, quant_config_from_args

    quant, method = spec
    parser = add_quant_arguments(argparse.ArgumentParser(prog="--quant-flags", add_help=False,
                                                         exit_on_error=False))
    bad = f"--quant-flags: {' '.join(flags)!r} are not qgnn train quantisation options"
    try:  # parse_known_args: unknown flags come back here instead of argparse printing them
        args, unknown = parser.parse_known_args(["--quant", quant, "--method", method, *flags])
    except (argparse.ArgumentError, SystemExit) as exc:
        raise ValueError(f"{bad} ({exc})") from None
    if unknown:
        raise ValueError(f"{bad} (unrecognized: {' '.join(unknown)})")
    args.model = model
    return quant_config_from_args(args)


def run_precisions(pairs: Sequence[tuple[str, str]], seeds: Sequence[int],
                   precisions: Sequence[str] = ("fp32",), *, epochs: int | None = None,
                   progress: bool = False,
                   on_run: Callable[[str, AccuracyRow], None] | None = None,
                   quant_flags: Sequence[str] = ()) -> list[PrecisionRow]:
    """Train each (model, dataset) preset once per seed at each precision.

    ``epochs`` caps training (smoke runs). Quantised runs build their hooks with
    :func:`~qgnn.training.quant.hooks.make_hooks` from :func:`quant_config`, as ``qgnn train``
    does, and train in the same :func:`~qgnn.training.tasks.node.train_node`. Datasets are loaded
    once each. Node classification only (the task of every target). ``on_run(precision, row)``
    sees each finished (model, dataset, precision); a relative target is resolved there when
    FP32 ran first (``precisions`` in :data:`PRECISIONS` order), and always in the result.
    ``quant_flags``: extra ``qgnn train`` quantisation flags for every quantised run (ablations).
    """
    from qgnn.graph.container import Graph
    from qgnn.graph.datasets import load_dataset
    from qgnn.training.presets import preset
    from qgnn.training.quant.hooks import make_hooks
    from qgnn.training.quant.state import quant_state
    from qgnn.training.tasks.node import node_model_config, train_node

    if not seeds:
        raise ValueError("seeds: need at least one seed")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise ValueError(f"precisions: expected some of {tuple(PRECISIONS)}, got "
                         f"{tuple(precisions)}")
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
        runs: dict[str, AccuracyRow] = {}
        quant: dict[str, dict[str, Any]] = {}
        for precision in precisions:
            qcfg = quant_config(model, precision, quant_flags)
            scores, seconds, metric, sites = [], [], "", []
            for seed in seeds:
                changes: dict[str, Any] = {"seed": seed}
                if epochs is not None:
                    changes["epochs"] = epochs
                hooks: dict[str, Any] = {}
                if qcfg is not None:
                    prepare_model, blocks_for = make_hooks(
                        qcfg, graph, num_layers=chosen.model["num_layers"])
                    hooks = {"prepare_model": prepare_model, "blocks_for": blocks_for}
                started = time.perf_counter()
                result = train_node(graph, cfg, dataclasses.replace(chosen.train, **changes),
                                    progress=progress, **hooks)
                seconds.append(time.perf_counter() - started)
                scores.append(100.0 * result.test_metric)
                metric = result.metric
                if qcfg is not None:
                    sites.append(len(quant_state(result.model)))
                log.info("run done", extra={"model": model, "dataset": dataset,
                                            "precision": precision, "seed": seed,
                                            "test": round(scores[-1], 2),
                                            "seconds": round(seconds[-1], 1)})
            target = target_for(model, dataset, precision)
            fp32_mean = runs["fp32"].mean if "fp32" in runs else None
            runs[precision] = AccuracyRow(model, dataset, metric, scores, seconds,
                                          None if target is None else
                                          target.threshold(fp32_mean))
            if qcfg is not None:
                quant[precision] = {"config": qcfg.to_dict(), "sites": min(sites)}
            if on_run is not None:
                on_run(precision, runs[precision])
        rows.append(precision_row(model, dataset, runs, quant))
    return rows


def run_accuracy(pairs: Sequence[tuple[str, str]], seeds: Sequence[int], *,
                 epochs: int | None = None, progress: bool = False,
                 on_row: Callable[[AccuracyRow], None] | None = None) -> list[AccuracyRow]:
    """The FP32 table: :func:`run_precisions` at full precision only, one row per pair."""
    report = None if on_row is None else (lambda _precision, row: on_row(row))
    rows = run_precisions(pairs, seeds, ("fp32",), epochs=epochs, progress=progress,
                          on_run=report)
    return [r.runs["fp32"] for r in rows]


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


def _target_cell(row: PrecisionRow, precision: str) -> str:
    target, run = row.targets.get(precision), row.runs.get(precision)
    if target is None or run is None:
        return "-"
    verdict = "-" if run.passed is None else ("pass" if run.passed else "FAIL")
    if not target.relative:
        return f"{target.rule} {verdict}"
    needed = "?" if run.target is None else f"{run.target:.2f}"
    return f"{needed} ({target.rule}) {verdict}"


def precision_table(rows: Sequence[PrecisionRow]) -> str:
    """Markdown: one row per (model, dataset), mean ± std per precision, then each target with
    its verdict (a relative one shows the mean it needed)."""
    precisions = [p for p in PRECISIONS if any(p in r.runs for r in rows)]
    targeted = [p for p in precisions if any(p in r.targets for r in rows)]
    body = []
    for r in rows:
        first = next(iter(r.runs.values()))
        cells = [f"{r.runs[p].mean:.2f} ± {r.runs[p].std:.2f}" if p in r.runs else "-"
                 for p in precisions]
        body.append([r.model, r.dataset, first.metric, len(first.scores), *cells,
                     *(_target_cell(r, p) for p in targeted)])
    headers = ["model", "dataset", "metric", "seeds", *(PRECISION_LABELS[p] for p in precisions),
               *(f"{PRECISION_LABELS[p]} target" for p in targeted)]
    return markdown_table(headers, body, align=["l", "l", "l", "r"]
                          + ["r"] * len(precisions) + ["l"] * len(targeted))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "accuracy", help="test accuracy of the presets over seeds (FP32, DQ, QAT), against "
                         "targets",
        description="Train every (model, dataset) preset over seeds 0..N-1 and print a markdown "
                    "table (mean ± std, target, pass/fail); the full default table takes about "
                    "an hour on 2 CPU cores. --precisions adds Degree-Quant and QAT columns "
                    "(same presets and seeds, trained as qgnn train --quant does).")
    p.add_argument("--models", type=csv_list,
                   help="comma-separated models (default: every target; with a quantised "
                        "precision, every Degree-Quant target)")
    p.add_argument("--datasets", type=csv_list,
                   help="comma-separated dataset specs (default: as --models)")
    p.add_argument("--seeds", type=positive_int, default=10, help="number of seeds (default 10)")
    p.add_argument("--epochs", type=positive_int, help="cap on epochs (smoke runs)")
    p.add_argument("--precisions", type=parse_precisions, default=("fp32",),
                   help=f"comma-separated, of {','.join(PRECISIONS)}: dq = Degree-Quant, qat = "
                        f"plain QAT, 8/4 = INT8/INT4 (default: fp32)")
    p.add_argument("--name", default="accuracy",
                   help="result name: bench/results/<name>.json (default: accuracy)")
    p.add_argument("--results-dir", help="folder for the JSON result (default: bench/results)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads")
    p.add_argument("--progress", action="store_true", help="show a progress bar per run")
    p.add_argument("--quant-flags", type=shlex.split, default=[],
                   help="extra qgnn train quantisation flags for every quantised run, e.g. "
                        "\"--ste clipped --p-max 0\" (ablations; they override model presets)")
    p.set_defaults(func=run_cli)


def select_pairs(models: Sequence[str] | None, datasets: Sequence[str] | None,
                 targets: Sequence[tuple[str, str]] = tuple(TARGETS)) -> list[tuple[str, str]]:
    """Every target pair matching the filters; given both lists, their full cross product.

    ``targets``: the pairs to filter (the FP32 targets; the quantised table passes
    :data:`DQ_TARGETS`).
    """
    if models and datasets:
        return [(m, d) for d in datasets for m in models]
    pairs = [(m, d) for m, d in targets
             if (not models or m in models) and (not datasets or d in datasets)]
    if not pairs:
        raise ValueError(f"--models/--datasets: no target matches models={models} "
                         f"datasets={datasets}; give both to run any combination")
    return pairs


def run_cli(args: argparse.Namespace) -> int:
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    precisions = tuple(args.precisions)
    # a quantised table defaults to the Degree-Quant targets' pairs (issue 3), not every FP32 one
    pairs = select_pairs(args.models, args.datasets,
                         tuple(TARGETS) if precisions == ("fp32",) else tuple(DQ_TARGETS))
    seeds = list(range(args.seeds))

    def report(precision: str, row: AccuracyRow) -> None:
        label = "" if precisions == ("fp32",) else f" {precision}"
        print(f"{row.model} {row.dataset}{label}: {row.mean:.2f} ± {row.std:.2f} over "
              f"{len(row.scores)} seed(s)", file=sys.stderr, flush=True)

    flags = list(getattr(args, "quant_flags", []))
    for precision in precisions:  # a bad flag fails now, not after the FP32 runs
        quant_config(pairs[0][0], precision, flags)
    rows = run_precisions(pairs, seeds, precisions, epochs=args.epochs, progress=args.progress,
                          on_run=report, quant_flags=flags)
    result: dict[str, Any] = {"seeds": args.seeds, "epochs_cap": args.epochs,
                              "quant_flags": flags}
    if precisions == ("fp32",):  # the FP32 table and its JSON, as before --precisions existed
        print(accuracy_table([r.runs["fp32"] for r in rows]))
        result["rows"] = [r.runs["fp32"].to_dict() for r in rows]
    else:
        print(precision_table(rows))
        result["precisions"] = list(precisions)
        result["rows"] = [r.to_dict() for r in rows]
    path = write_result(args.name, result, results_dir=args.results_dir)
    print(f"wrote {path}")
    return 0
