"""Recommendation and link-prediction quality: FP32 against Degree-Quant INT8 and INT4, same seeds.

Sections (``--sections``, default both):

- ``ogbl``: ogbl-ddi (data/ogbl-ddi, OGB's fixed split and negatives), test Hits@20 of each
  model selected by validation Hits@20 (OGB's protocol). Published: GCN 0.3707, SAGE 0.5390.
- ``movielens``: a MovieLens-format train file + test file (``--movielens TRAIN --movielens-test
  TEST``, e.g. ml-100k's ``u1.base``/``u1.test``; MovieLens may not be redistributed, so without
  them a log of the same format from ``qgnn.graph.synth.movielens_udata`` is generated, 943
  users x 1682 items, and the table says so). Test Recall@20 / NDCG@20 over all items with
  training interactions excluded, next to the most-popular baseline ranked the same way.

Every run uses ``qgnn train``'s link preset for the model (``training/presets.py``); the ogbl
section replaces its fields with OGB's ddi recipe (:data:`OGBL_DDI`), and flags override
either; precisions are ``fp32``, ``dq8``, ``dq4`` with the
models' quantisation presets. Per (model, precision): the per-seed test figures, mean ± std, and
for quantised rows the mean per-seed difference to FP32. Writes ``bench/results/<name>.json`` and
``<name>.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from qgnn.bench.harness import RESULTS_DIR, machine_info, markdown_table, write_result
from qgnn.graph.datasets import load_dataset
from qgnn.graph.io.interactions import load_interactions
from qgnn.graph.io.ogbl import load_ogbl_npz
from qgnn.graph.links import LinkData
from qgnn.graph.synth import movielens_udata
from qgnn.training.presets import preset
from qgnn.training.quant.config import QuantConfig
from qgnn.training.quant.hooks import make_hooks
from qgnn.training.quant.options import model_quant_preset
from qgnn.training.tasks.link import data_for_model, link_model_config, train_link

SECTIONS = ("ogbl", "movielens")
# The ogbl section's recipe, from OGB's reference example for ogbl-ddi
# (snap-stanford/ogb, examples/linkproppred/ddi/gnn.py): 2 layers of width 256 over a learned
# 256-wide node embedding, dropout 0.5, Adam at lr 0.005 with no weight decay, one optimiser
# step per 64k training edges (each a full-graph forward), gradient norms clipped to 1 per
# part, an MLP predictor on the elementwise product, BCE against one random negative per
# positive, 200 epochs, no early stopping. Flags override each field.
OGBL_DDI = {"hidden": 256, "layers": 2, "dropout": 0.5, "lr": 0.005, "weight_decay": 0.0,
            "link_batch_size": 64 * 1024, "clip_grad_norm": 1.0, "decoder": "mlp",
            "loss": "bce", "epochs": 200, "patience": 0, "negative_pairs": "uniform"}
TRAIN_FIELDS = ("epochs", "patience", "lr", "weight_decay", "link_batch_size",
                "clip_grad_norm", "decoder", "loss", "negative_pairs")
PRECISIONS = {"fp32": None, "dq8": 8, "dq4": 4}
OGB_PUBLISHED = {"gcn": 0.3707, "sage": 0.5390}


def settings_for(section: str, args: argparse.Namespace) -> dict[str, Any]:
    """The overrides of one section: its recipe (ogbl: :data:`OGBL_DDI`, unless
    ``--no-ogb-recipe``), then the flags given."""
    chosen = dict(OGBL_DDI) if section == "ogbl" and args.ogb_recipe else {}
    for name in (*TRAIN_FIELDS, "hidden", "layers", "dropout"):
        if getattr(args, name) is not None:
            chosen[name] = getattr(args, name)
    return chosen


def run_one(data: LinkData, model: str, precision: str, seed: int, args: argparse.Namespace,
            settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """One training run; its figures (test metric, extras, epochs, seconds)."""
    settings = settings_for("movielens", args) if settings is None else settings
    chosen = preset(model, "bench", "link")
    overrides: dict[str, Any] = {"seed": seed, "k": args.k}
    overrides.update({name: settings[name] for name in TRAIN_FIELDS if name in settings})
    if overrides.get("patience") == 0:
        overrides["patience"] = None
    train_cfg = dataclasses.replace(chosen.train, **overrides)
    fields = dict(chosen.model)
    for name, field in (("hidden", "hidden"), ("layers", "num_layers"), ("dropout", "dropout")):
        if name in settings:
            fields[field] = settings[name]
    data = data_for_model(data, model)
    cfg = link_model_config(data, model, embedding_dim=fields["hidden"], **fields)
    hooks: dict[str, Any] = {}
    bits = PRECISIONS[precision]
    if bits is not None:
        qcfg = QuantConfig(bits=bits, **model_quant_preset(model, bits, "link"))
        prepare, blocks_for = make_hooks(qcfg, data.graph, num_layers=cfg.num_layers,
                                         generator=torch.Generator().manual_seed(seed))
        hooks = {"prepare_model": prepare, "blocks_for": blocks_for}
    started = time.perf_counter()
    result = train_link(data, cfg, train_cfg, progress=False, **hooks)
    return {"seed": seed, "metric": result.metric, "test": result.test_metric,
            "val": result.val_metric, "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "seconds": round(time.perf_counter() - started, 1),
            "seconds_per_epoch": round((time.perf_counter() - started) / result.epochs_run, 2),
            "val_per_epoch": [round(float(h["val"]), 4) for h in result.history],
            "extra": result.extra_metrics}


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def run_section(section: str, data: LinkData, args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    settings = settings_for(section, args)
    for model in args.models:
        fp32_by_seed: dict[int, float] = {}
        for precision in args.precisions:
            runs = []
            for seed in args.seeds:
                runs.append(run_one(data, model, precision, seed, args, settings))
                print(f"{section} {model} {precision} seed {seed}: test {runs[-1]['test']:.4f} "
                      f"(val {runs[-1]['val']:.4f}, best epoch {runs[-1]['best_epoch']} of "
                      f"{runs[-1]['epochs_run']}, {runs[-1]['seconds_per_epoch']} s/epoch)",
                      flush=True)
            tests = [r["test"] for r in runs]
            entry: dict[str, Any] = {"runs": runs, "test": _stats(tests)}
            if precision == "fp32":
                fp32_by_seed = {r["seed"]: r["test"] for r in runs}
            elif fp32_by_seed:
                diffs = [r["test"] - fp32_by_seed[r["seed"]] for r in runs
                         if r["seed"] in fp32_by_seed]
                entry["minus_fp32"] = _stats(diffs)
            if section == "movielens":
                k = args.k
                entry["most_popular"] = statistics.fmean(
                    r["extra"][f"test_most_popular_recall@{k}"] for r in runs)
                entry["ndcg"] = _stats([r["extra"][f"test_ndcg@{k}"] for r in runs])
            rows[f"{model}/{precision}"] = entry
            print(f"{section} {model} {precision}: test {entry['test']['mean']:.4f} ± "
                  f"{entry['test']['std']:.4f} over seeds {args.seeds}", flush=True)
    return rows


def movielens_data(args: argparse.Namespace) -> tuple[LinkData, str]:
    if args.movielens is not None:
        data = load_interactions(args.movielens, test=args.movielens_test,
                                 min_rating=args.min_rating)
        return data, f"{args.movielens} + {args.movielens_test}"
    folder = Path(tempfile.mkdtemp(prefix="qgnn-movielens-"))
    movielens_udata(folder / "u1.base", test_path=folder / "u1.test", seed=0)
    data = load_interactions(folder / "u1.base", test=folder / "u1.test",
                             min_rating=args.min_rating)
    return data, "synthetic MovieLens-format log (qgnn.graph.synth.movielens_udata, seed 0)"


def table(section: str, rows: dict[str, Any], k: int) -> str:
    if section == "ogbl":
        headers = ["model", "precision", f"test Hits@{k}", "minus FP32 (per seed)", "OGB"]
        body = [[key.split("/")[0], key.split("/")[1],
                 f"{e['test']['mean']:.4f} ± {e['test']['std']:.4f}",
                 "" if "minus_fp32" not in e else f"{e['minus_fp32']['mean']:+.4f}",
                 OGB_PUBLISHED.get(key.split("/")[0], "")] for key, e in rows.items()]
    else:
        headers = ["model", "precision", f"test Recall@{k}", f"NDCG@{k}",
                   "minus FP32 (per seed)", f"most-popular Recall@{k}"]
        body = [[key.split("/")[0], key.split("/")[1],
                 f"{e['test']['mean']:.4f} ± {e['test']['std']:.4f}",
                 f"{e['ndcg']['mean']:.4f}",
                 "" if "minus_fp32" not in e else f"{e['minus_fp32']['mean']:+.4f}",
                 f"{e['most_popular']:.4f}"] for key, e in rows.items()]
    return markdown_table(headers, body)


def _csv(kind: type, allowed: Any = None) -> Any:
    def parse(text: str) -> list[Any]:
        values = [kind(v) for v in text.split(",") if v]
        if allowed is not None and set(values) - set(allowed):
            raise argparse.ArgumentTypeError(f"expected a subset of {sorted(allowed)}")
        return values
    return parse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", type=_csv(str, SECTIONS), default=list(SECTIONS))
    p.add_argument("--models", type=_csv(str), default=["gcn", "sage", "lightgcn"])
    p.add_argument("--precisions", type=_csv(str, PRECISIONS), default=list(PRECISIONS))
    p.add_argument("--seeds", type=_csv(int), default=list(range(10)))
    p.add_argument("--epochs", type=int, help="override the link preset's epochs")
    p.add_argument("--patience", type=int, help="override the link preset's patience (0: none)")
    p.add_argument("--lr", type=float, help="override the preset's learning rate")
    p.add_argument("--weight-decay", type=float, help="override the preset's weight decay")
    p.add_argument("--hidden", type=int, help="override the preset's width")
    p.add_argument("--layers", type=int, help="override the preset's depth")
    p.add_argument("--dropout", type=float, help="override the preset's dropout")
    p.add_argument("--decoder", choices=("dot", "mlp"), help="override the pair decoder")
    p.add_argument("--loss", choices=("bce", "bpr", "softmax"), help="override the loss")
    p.add_argument("--link-batch-size", type=int, help="positive pairs per optimiser step")
    p.add_argument("--clip-grad-norm", type=float, help="clip each part's gradient norm")
    p.add_argument("--negative-pairs", choices=("source", "uniform"),
                   help="training negatives: keep the source, or both ends uniform (OGB)")
    p.add_argument("--no-ogb-recipe", dest="ogb_recipe", action="store_false",
                   help="ogbl section: start from the link presets, not OGB's ddi recipe")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--ogbl", type=Path, help="an OGB link npz (default: data/ogbl-ddi)")
    p.add_argument("--movielens", type=Path, help="MovieLens-format training file")
    p.add_argument("--movielens-test", type=Path, help="its test file")
    p.add_argument("--min-rating", type=float, help="implicit feedback threshold")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="recommend")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    if (args.movielens is None) != (args.movielens_test is None):
        p.error("--movielens and --movielens-test go together")
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"settings": {k: (str(v) if isinstance(v, Path) else v)
                                            for k, v in vars(args).items()},
                               "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                               "load_average_before": list(os.getloadavg())}
    tables = []
    for section in args.sections:
        if section == "ogbl":
            data, source = ((load_dataset("ogbl-ddi"), "ogbl-ddi (data/ogbl-ddi)")
                            if args.ogbl is None else (load_ogbl_npz(args.ogbl), str(args.ogbl)))
        else:
            data, source = movielens_data(args)
        assert isinstance(data, LinkData)
        rows = run_section(section, data, args)
        results[section] = {"data": source, "settings": settings_for(section, args),
                            "rows": rows}
        tables.append(f"### {section}: {source}\n\n{table(section, rows, args.k)}\n")
    results["load_average_after"] = list(os.getloadavg())
    machine = machine_info()
    write_result(args.name, results, results_dir=args.results_dir, machine=machine)
    (args.results_dir / f"{args.name}.md").write_text(
        f"# {args.name}\n\n`python -m qgnn.bench.bench_recommend "
        f"{' '.join(argv if argv is not None else __import__('sys').argv[1:])}`\n\n"
        f"CPU: {machine.get('cpu')} (torch {results['torch_cpu_capability']}), "
        f"{args.threads} thread(s); load average before / after "
        f"{results['load_average_before'][0]:.1f} / {results['load_average_after'][0]:.1f}; "
        f"seeds {args.seeds}\n\n" + "\n".join(tables))
    print("\n".join(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
