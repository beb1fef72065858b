"""Training on several processes or machines with torch.distributed (gloo on CPU, nccl on GPU).

Modes, chosen with ``python -m qgnn.training.distributed --mode M`` under torchrun:

- ``ddp`` (:mod:`.ddp`): data-parallel minibatch training; every rank holds the whole graph.
- ``edge-sharded`` (:mod:`.edge_sharded`): full-graph training; every rank holds every node's
  state and 1/W of the edges (docs/distributed.md).
- ``partitioned`` (:mod:`.partitioned`): minibatch GNS training; every rank holds one partition's
  nodes, features and in-edges and fetches the rest from their owners (docs/partitioned.md).
- ``infer`` (:mod:`.infer`): distributed layer-wise INT8 inference of a link run over
  partitions into a sharded bundle, bit for bit the unsharded export's embedding rows.

:mod:`.context` holds what every mode shares: the process group, local launch, torchrun's
environment.
"""

from qgnn.training.distributed.context import (
    BACKENDS,
    DistContext,
    agree,
    default_backend,
    free_port,
    init_from_env,
    launch_local,
    shard,
    wrap_model,
)
from qgnn.training.distributed.ddp import train_and_save

__all__ = ["BACKENDS", "DistContext", "agree", "default_backend", "free_port", "init_from_env",
           "launch_local", "shard", "train_and_save", "wrap_model"]
