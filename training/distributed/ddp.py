"""The ``ddp`` mode: data-parallel minibatch training, every rank holding the whole graph.

See :mod:`qgnn.training.distributed.context` for how seeds are sharded and stopping agreed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch.distributed as dist
from qgnn.training.distributed.context import (
    BACKENDS,
    DistContext,
    finish_together,
    init_from_env,
)


def train_and_save(ctx: DistContext, data: Any, model_cfg: Any, train_cfg: Any,
                   sampling_cfg: Any, out_dir: str) -> None:
    """A rank's whole job for :func:`launch_local`: data-parallel minibatch training, then
    ``out_dir/rank<r>.safetensors`` (the final state dict) and, on rank 0, ``result.json``."""
    from pathlib import Path

    from qgnn.training.tasks.minibatch import train_minibatch
    from safetensors.torch import save_file

    result = train_minibatch(data, model_cfg, train_cfg, sampling_cfg, progress=False,
                             distributed=ctx)
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, str(Path(out_dir) / f"rank{ctx.rank}.safetensors"))
    if ctx.is_main:
        (Path(out_dir) / "result.json").write_text(json.dumps(result.summary()))


def main(argv: list[str] | None = None) -> None:
    """``torchrun ... -m qgnn.training.distributed --dataset D --model M [sampling flags]``:
    data-parallel minibatch training; rank 0 prints the result summary as JSON."""
    from qgnn.graph.datasets import load_dataset
    from qgnn.graph.links import LinkData
    from qgnn.training.presets import TrainConfig, preset
    from qgnn.training.sampling.cli_args import add_sampling_arguments, sampling_config_from_args
    from qgnn.training.tasks.link import link_model_config
    from qgnn.training.tasks.minibatch import train_minibatch
    from qgnn.training.tasks.node import node_model_config

    parser = argparse.ArgumentParser(prog="python -m qgnn.training.distributed --mode ddp",
                                     description=main.__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=BACKENDS, default=None)
    add_sampling_arguments(parser)
    args = parser.parse_args(argv)
    sampling = sampling_config_from_args(args)
    if sampling.sampler == "full":
        parser.error("--sampler: data-parallel training needs a minibatch sampler (uniform/gns)")
    ctx = init_from_env(args.backend)
    if dist.get_backend() == "nccl":
        sampling.device = f"cuda:{ctx.local_rank}"
    try:
        data = load_dataset(args.dataset)
        name = data.graph.name if isinstance(data, LinkData) else data.name
        chosen = preset(args.model, name)
        fields = chosen.train.to_dict() | {"seed": args.seed}
        if args.epochs is not None:
            fields["epochs"] = args.epochs
        train_cfg = TrainConfig.from_dict(fields)
        if isinstance(data, LinkData):
            model_cfg = link_model_config(data, args.model, **chosen.model)
        else:
            model_cfg = node_model_config(data, args.model, **chosen.model)
        result = train_minibatch(data, model_cfg, train_cfg, sampling, progress=ctx.is_main,
                                 distributed=ctx)
        if ctx.is_main:
            json.dump(result.summary(), sys.stdout)
            sys.stdout.write("\n")
        finish_together()
    finally:
        dist.destroy_process_group()
