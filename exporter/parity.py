"""Parity of an exported model with the PyTorch model it came from: run both, report figures.

- :func:`compare_outputs`: argmax agreement, largest absolute error (also in output steps for
  INT8 models), accuracy of both on a labelled split.
- :func:`fake_quant_integers` / :func:`compare_integers`: the integers a Degree-Quant model's
  fake quantisation implies at every activation site, ``rint(x / scale) + zp``, against the
  integers a debug export exposes (edge tensors reordered by :func:`torch_edge_order`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnxruntime as ort
import torch
from onnx import ModelProto
from qgnn.exporter.emit.common import DebugTensor
from qgnn.training.nn.block import Block
from qgnn.training.quant.sites import SiteQuantizer, quantized_sites
from torch import nn


def ort_session(model: ModelProto | bytes, threads: int = 1) -> ort.InferenceSession:
    """A CPU onnxruntime session with ``threads`` intra-op threads (sequential execution)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, ModelProto) else model
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run_onnx(session: ort.InferenceSession,
             feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output by name, for the inputs the model declares (extra feeds are ignored)."""
    wanted = {i.name for i in session.get_inputs()}
    missing = sorted(wanted - set(feeds))
    if missing:
        raise ValueError(f"model inputs {missing} were not given")
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, values, strict=True))


@dataclass(frozen=True)
class ParityReport:
    """How close the ONNX outputs are to PyTorch's on the same nodes."""

    num_rows: int
    argmax_agreement: float  # fraction of rows whose argmax agrees
    max_abs_error: float
    mean_abs_error: float
    max_error_steps: float | None  # max_abs_error / output step (INT8 models)
    exact_fraction: float  # fraction of output values equal bit for bit
    torch_accuracy: float | None = None  # on the labelled split, when given
    onnx_accuracy: float | None = None

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def compare_outputs(torch_out: np.ndarray, onnx_out: np.ndarray, *, step: float | None = None,
                    labels: np.ndarray | None = None,
                    mask: np.ndarray | None = None) -> ParityReport:
    """Parity figures of two ``(R, C)`` outputs; accuracies over ``mask`` when ``labels``."""
    if torch_out.shape != onnx_out.shape:
        raise ValueError(f"outputs differ in shape: torch {torch_out.shape}, onnx "
                         f"{onnx_out.shape}")
    err = np.abs(torch_out.astype(np.float64) - onnx_out.astype(np.float64))
    max_err = float(err.max(initial=0.0))
    torch_acc = onnx_acc = None
    if labels is not None:
        rows = np.ones(len(labels), bool) if mask is None else np.asarray(mask, bool)
        rows &= labels >= 0
        truth = labels[rows]
        torch_acc = float((torch_out[rows].argmax(1) == truth).mean()) if truth.size else None
        onnx_acc = float((onnx_out[rows].argmax(1) == truth).mean()) if truth.size else None
    return ParityReport(
        num_rows=int(torch_out.shape[0]),
        argmax_agreement=float((torch_out.argmax(1) == onnx_out.argmax(1)).mean())
        if torch_out.size else 1.0,
        max_abs_error=max_err, mean_abs_error=float(err.mean()) if err.size else 0.0,
        max_error_steps=None if step is None else max_err / step,
        exact_fraction=float((torch_out == onnx_out).mean()) if torch_out.size else 1.0,
        torch_accuracy=torch_acc, onnx_accuracy=onnx_acc)


def fake_quant_integers(model: nn.Module, x: torch.Tensor | None,
                        blocks: Block | Sequence[Block],
                        prefix: str = "") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run a quantised model in eval mode; return its output and, per activation site
    ``layers.<i>.q.<name>`` (``prefix`` stripped), the integers ``rint(x / scale) + zp``."""
    found: dict[str, np.ndarray] = {}

    def hook(path: str) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def record(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            quantizer = module.quantizers[args[0]]  # type: ignore[index]
            assert isinstance(quantizer, SiteQuantizer)
            if quantizer.signed:
                return
            q = torch.round(out / quantizer.scale) + quantizer.zero_point
            found[f"{path.removeprefix(prefix)}.{args[0]}"] = q.to(torch.int64).numpy()
        return record

    handles = [seam.register_forward_hook(hook(path))
               for path, seam in quantized_sites(model).items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x, blocks)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return out.numpy(), found


def torch_edge_order(layout: str, indptr: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Row of the ONNX edge tensor holding each of the training layer's edges, in the
    training layer's edge order (``onnx_rows[order] == torch_rows``).

    Training appends self-loops after all edges (``Block.with_self_loops``), the exported
    graph as the last in-edge of each destination (CSR stays sorted); GAT first drops
    existing loops on both sides.
    """
    num_dst = indptr.size - 1
    if layout == "edge":
        return np.arange(src.size)
    dst = np.repeat(np.arange(num_dst), np.diff(indptr))
    if layout == "fresh_looped_edge":
        keep = src != dst
        dst = dst[keep]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(dst, minlength=num_dst))])
    elif layout != "looped_edge":
        raise ValueError(f"layout: expected edge, looped_edge or fresh_looped_edge, got "
                         f"{layout!r}")
    edges = np.arange(dst.size) + dst
    loops = indptr[1:] + np.arange(num_dst)
    return np.concatenate([edges, loops]).astype(np.int64)


@dataclass(frozen=True)
class SiteAgreement:
    """Integers of one site: how many differ between the export and the fake-quant model."""

    key: str
    size: int
    mismatches: int
    max_abs_diff: int


def compare_integers(debug: Sequence[DebugTensor], onnx_outputs: Mapping[str, np.ndarray],
                     torch_ints: Mapping[str, np.ndarray], structures: Sequence[tuple[np.ndarray,
                                                                                      np.ndarray]]
                     ) -> list[SiteAgreement]:
    """Compare every debug tensor with the fake-quant integers of the same site.

    ``structures[i] = (indptr_i, src_i)`` of layer ``i`` (for edge tensors). Node tensors of a
    layer's source list are compared on the rows both sides have.
    """
    report = []
    for tensor in debug:
        ours = np.asarray(onnx_outputs[tensor.output], np.int64)
        theirs = np.asarray(torch_ints[tensor.key], np.int64)
        if tensor.layout != "node":  # edge tensors exist only inside layers.<i>
            indptr, src = structures[int(tensor.key.split(".")[1])]
            ours = ours[torch_edge_order(tensor.layout, indptr, src)]
        ours, theirs = ours.reshape(ours.shape[0], -1), theirs.reshape(theirs.shape[0], -1)
        if ours.shape[1] != theirs.shape[1] or ours.shape[0] > theirs.shape[0]:
            raise ValueError(f"{tensor.key}: export shape {ours.shape} does not match the "
                             f"model's {theirs.shape}")
        diff = np.abs(ours - theirs[: ours.shape[0]])
        report.append(SiteAgreement(tensor.key, int(diff.size), int((diff > 0).sum()),
                                    int(diff.max(initial=0))))
    return report
