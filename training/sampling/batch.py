"""One minibatch from seeds to device tensors: sampled blocks, input features split between the
device-resident cache and host memory, and the task's own tensors.

``BatchBuilder.build`` runs on a sampling thread and does everything on the host: sampling, block
conversion, and the gather of the input rows that are *not* cached into one (pinned, on CUDA)
staging tensor. ``to_device_batch`` runs on the training thread: it moves the blocks, the staged
rows and the task tensors through :func:`qgnn.training.sampling.transfer.to_device` (so every
byte is counted) and fills the cached rows from the device copy of the cache.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from qgnn.training.data import as_tensor
from qgnn.training.nn.block import Block
from qgnn.training.sampling.blocks import Convention, to_blocks
from qgnn.training.sampling.cache import NodeCache
from qgnn.training.sampling.config import FEATURE_DTYPES, FeatureDtype
from qgnn.training.sampling.feature_codec import ColumnCode, encode_columns, fit_column_code
from qgnn.training.sampling.transfer import TransferCounter, pin_if_cuda, to_device


class FeatureStore:
    """The full feature matrix in host memory, as float32 (``x``, what evaluation reads) and,
    with ``dtype="uint8"``, as per-column uint8 codes that training batches gather and send
    (page-locked when the device is a GPU; see :mod:`~qgnn.training.sampling.feature_codec`)."""

    def __init__(self, x: np.ndarray | None, device: torch.device,
                 dtype: FeatureDtype = "float32") -> None:
        if dtype not in FEATURE_DTYPES:
            raise ValueError(f"FeatureStore.dtype: expected one of {FEATURE_DTYPES}, got "
                             f"{dtype!r}")
        self.device = device
        self.code: ColumnCode | None = None
        self.device_code: ColumnCode | None = None
        self.codes: torch.Tensor | None = None
        if x is None:
            self.x = None
        elif dtype == "uint8":
            self.x = as_tensor(x, np.float32)
            values = self.x.numpy()
            self.code = fit_column_code(values)
            self.codes = pin_if_cuda(torch.from_numpy(encode_columns(values, self.code)), device)
        else:
            self.x = pin_if_cuda(as_tensor(x, np.float32), device)

    @property
    def num_features(self) -> int:
        return 0 if self.x is None else int(self.x.shape[1])

    def attach(self, counter: TransferCounter) -> None:
        """Send the column code to the device once (counted as ``features``)."""
        if self.code is not None and self.device_code is None:
            self.device_code = ColumnCode(
                to_device(self.code.low, self.device, counter, "features"),
                to_device(self.code.step, self.device, counter, "features"))

    def decode(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows as :meth:`gather` staged them, once on the device -> float32."""
        if self.code is None:
            return rows
        if self.device_code is None:
            raise RuntimeError("FeatureStore.decode: attach() the column code to the device "
                               "first")
        return self.device_code.decode(rows)

    def gather(self, ids: np.ndarray) -> torch.Tensor:
        """Rows ``ids`` as a new host tensor ``(len(ids), F)`` in the staging dtype (uint8
        codes or float32), pinned when the device is CUDA so the copy to it can be
        asynchronous."""
        source = self.codes if self.codes is not None else self.x
        if source is None:
            raise ValueError("FeatureStore.gather: the graph has no features")
        index = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))
        if self.device.type != "cuda":
            return source.index_select(0, index)
        out = torch.empty((index.numel(), source.shape[1]), dtype=source.dtype, pin_memory=True)
        return torch.index_select(source, 0, index, out=out)


def attach_cache_features(cache: NodeCache, store: FeatureStore, device: torch.device,
                          counter: TransferCounter) -> NodeCache:
    """The cache with its nodes' features copied to the device (counted as ``cache``) and
    decoded there to float32."""
    if store.x is None:
        return cache
    store.attach(counter)
    features = store.decode(to_device(store.gather(cache.node_ids), device, counter, "cache"))
    return NodeCache(node_ids=cache.node_ids, slot=cache.slot, adjacency=cache.adjacency,
                     features=features)


@dataclass(eq=False)
class HostBatch:
    """Everything one training step needs, still in host memory."""

    seeds: np.ndarray  # (B,) global ids: the last block's destinations, in order
    blocks: list[Block]  # input layer first
    input_ids: np.ndarray  # (S,) global ids of the input layer's sources
    cache: NodeCache | None  # the cache the input layer was sampled against
    miss_mask: torch.Tensor | None  # (S,) bool: row comes from the host; None = every row
    hit_slots: torch.Tensor | None  # (H,) cache slots of the other rows, in row order
    miss_x: torch.Tensor | None  # (M, F) host rows; None when the graph has no features
    store: FeatureStore | None = None  # decodes miss_x on the device (uint8 staging)
    payload: dict[str, torch.Tensor] = field(default_factory=dict)  # task tensors, host

    @property
    def num_inputs(self) -> int:
        return int(self.input_ids.size)

    @property
    def num_hits(self) -> int:
        return 0 if self.hit_slots is None else int(self.hit_slots.numel())

    @property
    def sampled_edges(self) -> int:
        return sum(b.num_edges for b in self.blocks)


class BatchBuilder:
    """Samples and stages batches; one instance is shared by all sampling threads (each thread
    gets its own scratch array)."""

    def __init__(self, sampler: object, in_degree: np.ndarray, convention: Convention,
                 store: FeatureStore, graph_edge_weight: np.ndarray | None = None) -> None:
        self.sampler = sampler
        self.in_degree = in_degree
        self.convention = convention
        self.store = store
        self.graph_edge_weight = graph_edge_weight
        self._local = threading.local()

    def _scratch(self) -> np.ndarray:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = np.empty(self.in_degree.size, np.int64)
            self._local.scratch = scratch
        return scratch

    def build(self, seeds: np.ndarray, rng: np.random.Generator,
              payload: dict[str, torch.Tensor] | None = None) -> HostBatch:
        cache = getattr(self.sampler, "cache", None)
        sampled = self.sampler.sample(seeds, rng, self._scratch())  # type: ignore[attr-defined]
        blocks = to_blocks(sampled, self.in_degree, self.convention, self.graph_edge_weight)
        input_ids = sampled[0].node_ids
        miss_mask = hit_slots = None
        miss_ids = input_ids
        if cache is not None:
            slot = cache.slot[input_ids]
            hit = slot >= 0
            miss_mask = torch.from_numpy(~hit)
            hit_slots = torch.from_numpy(slot[hit])
            miss_ids = input_ids[~hit]
        miss_x = None if self.store.x is None else self.store.gather(miss_ids)
        return HostBatch(seeds=np.asarray(seeds), blocks=blocks, input_ids=input_ids, cache=cache,
                         miss_mask=miss_mask, hit_slots=hit_slots, miss_x=miss_x,
                         store=self.store, payload=payload or {})


@dataclass(eq=False)
class DeviceBatch:
    x: torch.Tensor | None  # (S, F) input features on the device; None without features
    blocks: list[Block]
    payload: dict[str, torch.Tensor]


def block_to_device(block: Block, device: torch.device, counter: TransferCounter,
                    kind: str = "structure") -> Block:
    moved = {name: to_device(getattr(block, name), device, counter, kind)
             for name in ("src", "dst", "edge_weight", "src_ids", "in_degree", "protect")
             if getattr(block, name) is not None}
    return block.replace(**moved)


def to_device_batch(batch: HostBatch, device: torch.device, counter: TransferCounter, *,
                    kind: str | None = None) -> DeviceBatch:
    """Move a staged batch; cached input rows are read from the device copy of its cache.

    Copies are counted as ``structure`` (blocks, masks), ``features`` and ``labels`` (task
    tensors), or all under ``kind`` when given (evaluation passes use ``"eval"``).
    """
    structure, features, labels = (kind, kind, kind) if kind else ("structure", "features",
                                                                    "labels")
    blocks = [block_to_device(b, device, counter, structure) for b in batch.blocks]
    payload = {k: to_device(v, device, counter, labels) for k, v in batch.payload.items()}
    x = None
    if batch.miss_x is not None:
        rows = to_device(batch.miss_x, device, counter, features)
        if batch.store is not None:
            rows = batch.store.decode(rows)
        if batch.miss_mask is None:
            x = rows
        else:
            cache = batch.cache
            if cache is None or cache.features is None or batch.hit_slots is None:
                raise RuntimeError("to_device_batch: the batch was sampled against a cache "
                                   "whose features are not on the device")
            mask = to_device(batch.miss_mask, device, counter, structure)
            slots = to_device(batch.hit_slots, device, counter, structure)
            x = torch.empty((batch.num_inputs, rows.shape[1]), dtype=rows.dtype, device=device)
            x[mask] = rows
            x[~mask] = cache.features.index_select(0, slots)
    return DeviceBatch(x=x, blocks=blocks, payload=payload)
