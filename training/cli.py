"""``qgnn train``: train one model on one dataset from its preset, save the run, report it.

Registering the parser imports nothing heavy; torch and the training code load in the handler.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from qgnn.argtypes import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)

MODELS = ("gcn", "sage", "gin", "gat", "egc", "lightgcn")
TASKS = ("node", "link")



def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a GNN (node classification or link prediction) and save the run",
        description="Train one model on one dataset. Hyper-parameters start from the preset for "
                    "(model, dataset) (see docs/training.md); any flag given overrides it. The "
                    "run is saved as model.safetensors + config.json in --out.")
    p.add_argument("--dataset", default="cora",
                   help="built-in name (cora, citeseer, tolokers, ogbl-ddi), a dataset path, "
                        "interactions:<file> or synthetic:<kind>?k=v (default: cora)")
    p.add_argument("--model", choices=MODELS, default="gcn", help="layer type (default: gcn)")
    p.add_argument("--task", choices=TASKS, default="node",
                   help="node classification or link prediction (default: node)")
    p.add_argument("--split", type=non_negative_int,
                   help="fixed split index (node task), or seed of the random edge split of a "
                        "non-bipartite graph (link task); default 0")
    p.add_argument("--epochs", type=positive_int, help="maximum epochs")
    p.add_argument("--lr", type=positive_float, help="Adam learning rate")
    p.add_argument("--weight-decay", type=non_negative_float, help="Adam weight decay")
    p.add_argument("--hidden", type=positive_int, help="hidden width")
    p.add_argument("--layers", type=positive_int, help="number of message-passing layers")
    p.add_argument("--dropout", type=probability, help="dropout probability")
    p.add_argument("--residual", action=argparse.BooleanOptionalAction,
                   help="add each layer's input to its output where widths match")
    p.add_argument("--norm", choices=("none", "layer", "batch"),
                   help="normalisation after each hidden layer")
    p.add_argument("--input-proj", action=argparse.BooleanOptionalAction,
                   help="a Linear (+ReLU) from the features to the hidden width first")
    p.add_argument("--head", action=argparse.BooleanOptionalAction,
                   help="a Linear output head after the last (then hidden-wide) layer")
    p.add_argument("--patience", type=non_negative_int,
                   help="stop after this many epochs without a better validation metric "
                        "(0: never)")
    p.add_argument("--seed", type=non_negative_int, help="random seed (default 0)")
    p.add_argument("--out", type=Path,
                   help="run directory (default: runs/<dataset>-<model>[-link])")
    p.add_argument("--summary", type=Path,
                   help="summary JSON path (default: <out>/summary.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--plot", action="store_true",
                   help="also write <out>/curves.png (needs matplotlib)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads")
    _add_link_arguments(p)
    _add_interaction_arguments(p)
    from qgnn.training.quant.cli_args import add_quant_arguments

    add_quant_arguments(p)
    from qgnn.training.sampling.cli_args import add_sampling_arguments

    add_sampling_arguments(p)
    p.set_defaults(func=run_train)


def _add_link_arguments(p: argparse.ArgumentParser) -> None:
    from qgnn.training.presets import DECODERS, LOSSES, METRICS, NEGATIVE_PAIRS

    g = p.add_argument_group("link prediction and recommendation (--task link)")
    g.add_argument("--loss", choices=LOSSES, help="bce (pairs against sampled negatives), bpr "
                   "(pairwise ranking) or softmax (sampled softmax over negatives)")
    g.add_argument("--negatives", type=positive_int,
                   help="negatives drawn per positive pair each epoch (items only on user-item "
                        "data)")
    g.add_argument("--decoder", choices=DECODERS, help="pair score: dot or mlp")
    g.add_argument("--negative-pairs", choices=NEGATIVE_PAIRS,
                   help="training negatives: keep the positive's source (default) or draw both "
                        "ends uniformly (OGB's sampling; not on user-item data)")
    g.add_argument("--link-batch-size", type=positive_int,
                   help="positive pairs per optimiser step, each step a full-graph forward "
                        "(default: one step over all pairs per epoch)")
    g.add_argument("--clip-grad-norm", type=float, help="clip the gradient norm each step")
    g.add_argument("--embedding-dim", type=positive_int,
                   help="width of the learned per-node embeddings of a featureless graph")
    g.add_argument("--metric", choices=METRICS,
                   help="validation metric for model selection (auto: Recall@k on user-item "
                        "data, else ROC-AUC; hits: OGB Hits@k)")
    g.add_argument("--k", type=positive_int, help="k of Recall/NDCG/HitRate/Hits@k (default 20)")


def _add_interaction_arguments(p: argparse.ArgumentParser) -> None:
    from qgnn.graph.io.interactions import DUPLICATES, SPLITS

    g = p.add_argument_group(
        "user-item interaction files (--dataset interactions:<file> or a file path with any of "
        "these flags; docs/recommenders.md)")
    g.add_argument("--test-file", type=Path, help="held-out test interactions (the --dataset "
                   "file is then the training file)")
    g.add_argument("--val-file", type=Path, help="held-out validation interactions (needs "
                   "--test-file)")
    g.add_argument("--split-by", choices=SPLITS,
                   help="how one file is split: time (global), user_time, leave_last, random "
                        "(default time)")
    g.add_argument("--val-fraction", type=probability, help="validation share (default 0.1)")
    g.add_argument("--test-fraction", type=probability, help="test share (default 0.1)")
    g.add_argument("--sep", help="column separator: tab, comma, space, semicolon, pipe, colons "
                   "(::) or the literal text (default: comma if the first row has one, else "
                   "whitespace)")
    g.add_argument("--columns", help="which column holds what, by 0-based index or header name: "
                   "user=0,item=1,rating=2,timestamp=3 (default: that order)")
    g.add_argument("--header", action=argparse.BooleanOptionalAction,
                   help="the first row is (not) a header (default: detected)")
    g.add_argument("--min-rating", type=float,
                   help="keep interactions rated at least this (implicit feedback)")
    g.add_argument("--weighted", action="store_true",
                   help="keep ratings as edge weights (through export)")
    g.add_argument("--duplicates", choices=DUPLICATES,
                   help="a pair logged twice in one file: keep the latest (last, default) or "
                        "refuse (error)")
    g.add_argument("--user-features", type=Path, help="user side features: id f1 f2 ...")
    g.add_argument("--item-features", type=Path, help="item side features: id f1 f2 ...")


INTERACTION_FLAGS = {"test_file": "test", "val_file": "val", "split_by": "split",
                     "val_fraction": "val_fraction", "test_fraction": "test_fraction",
                     "sep": "sep", "columns": "columns", "header": "header",
                     "min_rating": "min_rating", "duplicates": "duplicates",
                     "user_features": "user_features", "item_features": "item_features"}


def dataset_spec(args: argparse.Namespace) -> str:
    """The dataset spec a run records: ``--dataset``, with the interaction flags folded in
    and its files made absolute (so export finds them from any working directory)."""
    from qgnn.graph.datasets import interactions_spec, parse_interactions_spec

    options = {key: getattr(args, flag) for flag, key in INTERACTION_FLAGS.items()
               if getattr(args, flag, None) is not None}
    if getattr(args, "weighted", False):
        options["weighted"] = True
    spec = args.dataset
    if not options and not spec.startswith("interactions:"):
        return spec
    if spec.startswith("interactions:"):
        path, given = parse_interactions_spec(spec)
        for key in set(given) & set(options):
            if given[key] != options[key]:
                raise ValueError(f"--dataset {spec!r} sets {key} and so does its flag; give it "
                                 f"once")
        options = {**given, **options}
    else:
        path = Path(spec)
    if "seed" not in options and options.get("split") == "random":
        options["seed"] = args.split or 0
    return interactions_spec(path, **options)


def dataset_slug(spec: str) -> str:
    """A file-name-safe short name for a dataset spec (built-in name, path stem, or kind)."""
    body = spec.split(":", 1)[1] if ":" in spec and not Path(spec).exists() else spec
    body = body.split("?", 1)[0]
    name = Path(body.rstrip("/")).name
    for suffix in (".gz", ".npz", ".csv", ".tsv", ".txt", ".data"):
        name = name.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "dataset"


def _configs(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """Model fields and TrainConfig: the preset, then every flag the user gave."""
    import dataclasses

    from qgnn.training.presets import preset

    chosen = preset(args.model, args.dataset, args.task)
    model_fields = dict(chosen.model)
    for flag, name in (("hidden", "hidden"), ("layers", "num_layers"), ("dropout", "dropout"),
                       ("residual", "residual"), ("input_proj", "input_proj"), ("head", "head")):
        if getattr(args, flag) is not None:
            model_fields[name] = getattr(args, flag)
    if args.norm is not None:
        model_fields["norm"] = None if args.norm == "none" else args.norm
    overrides = {name: getattr(args, name) for name in
                 ("epochs", "lr", "weight_decay", "patience", "seed", "split", "loss",
                  "negatives", "decoder", "metric", "k", "link_batch_size", "clip_grad_norm",
                  "negative_pairs")
                 if getattr(args, name, None) is not None}
    return model_fields, dataclasses.replace(chosen.train, **overrides)


def run_train(args: argparse.Namespace) -> int:
    import torch
    from qgnn.graph.container import Graph
    from qgnn.graph.datasets import load_dataset
    from qgnn.graph.links import LinkData, split_edges
    from qgnn.training.checkpoint import save_run
    from qgnn.training.tasks.link import data_for_model, link_model_config
    from qgnn.training.tasks.node import node_model_config

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from qgnn.training.quant.cli_args import quant_config_from_args
    from qgnn.training.quant.hooks import make_hooks
    from qgnn.training.quant.state import quant_state
    from qgnn.training.sampling.cli_args import sampling_config_from_args
    from qgnn.training.tasks.minibatch import train_minibatch

    model_fields, train_cfg = _configs(args)
    qcfg = quant_config_from_args(args)
    sampling = sampling_config_from_args(args)
    spec = dataset_spec(args)
    data = load_dataset(spec)
    if isinstance(data, LinkData) and "summary" in data.meta:
        print(f"qgnn train: {spec}: {json.dumps(data.meta['summary'])}", file=sys.stderr)
    num_embeddings = None
    hooks: dict[str, Any] = {}
    if qcfg is not None:
        graph = data if isinstance(data, Graph) else data.graph
        prepare_model, blocks_for = make_hooks(qcfg, graph, num_layers=model_fields["num_layers"])
        hooks = {"prepare_model": prepare_model, "blocks_for": blocks_for}
    if args.task == "node":
        if args.model == "lightgcn":
            raise ValueError("--model lightgcn learns node embeddings for link prediction and "
                             "recommendation; use --task link")
        if not isinstance(data, Graph):
            raise ValueError(f"--dataset {args.dataset!r} holds link-prediction pairs "
                             f"(user-item interactions); use --task link")
        model_cfg = node_model_config(data, args.model, **model_fields)
        result = train_minibatch(data, model_cfg, train_cfg, sampling,
                                 progress=not args.no_progress, **hooks)
    else:
        if isinstance(data, Graph):
            data = split_edges(data, seed=train_cfg.split)
        assert isinstance(data, LinkData)
        data = data_for_model(data, args.model)
        if args.embedding_dim is not None:
            model_fields["embedding_dim"] = args.embedding_dim
        model_cfg = link_model_config(data, args.model, **model_fields)
        num_embeddings = None if data.graph.x is not None else data.graph.num_nodes
        result = train_minibatch(data, model_cfg, train_cfg, sampling,
                                 progress=not args.no_progress, **hooks)
    default_name = f"{dataset_slug(args.dataset)}-{args.model}" + (
        "-link" if args.task == "link" else "")
    out = args.out if args.out is not None else Path("runs") / default_name
    from qgnn.graph.fingerprint import fingerprint

    summary = {"dataset": spec, "model": args.model, "task": args.task,
               "sampling": sampling.to_dict(),
               **result.summary(), "checkpoint": str(out)}
    extra: dict[str, Any] = {"dataset_files": fingerprint(spec)}
    if qcfg is not None:
        extra["quant"] = {"config": qcfg.to_dict(), "state": quant_state(result.model)}
    save_run(out, result.model, task=args.task, dataset=spec, model_config=model_cfg,
             train_config=train_cfg, metrics=result.summary(), num_embeddings=num_embeddings,
             extra=extra)
    summary_path = args.summary if args.summary is not None else out / "summary.json"
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps({**summary, "model_config": model_cfg.to_dict(),
                                        "train_config": train_cfg.to_dict(),
                                        "history": result.history}, indent=2) + "\n",
                            encoding="utf-8")
    if args.plot:
        _plot(result.history, result.metric, out / "curves.png")
    extra = "".join(f", {k} {v:.4f}" for k, v in result.extra_metrics.items()
                    if k != f"test_{result.metric}")
    print(f"{args.dataset} {args.model} {args.task}: test {result.metric} "
          f"{result.test_metric:.4f} (val {result.val_metric:.4f}{extra}; best epoch "
          f"{result.best_epoch} of {result.epochs_run}, {result.seconds:.1f}s) -> {out}")
    return 0


def _plot(history: list[dict[str, float]], metric: str, path: Path) -> None:
    """Loss and metric curves per epoch; a clear note instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        print("qgnn train: --plot needs matplotlib (pip install 'qgnn[plot]'); no curves "
              "written", file=sys.stderr)
        return
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [row["loss"] for row in history], label="train loss")
    ax_loss.plot(epochs, [row["val_loss"] for row in history], label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend()
    for key in ("train", "val"):
        if key in history[0]:
            ax_metric.plot(epochs, [row[key] for row in history], label=f"{key} {metric}")
    ax_metric.set_xlabel("epoch")
    ax_metric.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
