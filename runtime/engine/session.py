"""onnxruntime session options for serving: few threads, no spinning, no needless work.

The server's gRPC threads and the model's batcher share the host with onnxruntime, so the
intra-op pool is small (``threads``, the server's ``--threads``, default 2), inter-op
parallelism is off (a serving graph is a chain) and idle pool threads sleep instead of spinning
(``session.intra_op.allow_spinning = 0``): a spinning pool burns the cores the gRPC threads need
between requests, for a wake-up saving of microseconds.

Graph optimisation defaults to ``basic`` (constant folding, redundant-node elimination): it
never changes integers. ``extended``/``all`` add fusions, among them the QDQ rewrites that
replace DequantizeLinear -> op -> QuantizeLinear by integer kernels with their own rounding,
which could move a quantised model's outputs off the contract's integers (docs/engine.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from qgnn.runtime.bundle.reader import Bundle
from qgnn.runtime.errors import BundleError

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class SessionConfig:
    """How every onnxruntime session of one engine is set up."""

    threads: int = 2
    inter_op_threads: int = 1
    allow_spinning: bool = False
    optimization: str = "basic"

    def __post_init__(self) -> None:
        for name in ("threads", "inter_op_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
                raise ValueError(f"SessionConfig.{name}: expected an int in [1, 256], got "
                                 f"{value!r}")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"SessionConfig.optimization: expected one of "
                             f"{sorted(OPTIMIZATION_LEVELS)}, got {self.optimization!r}")


def session_options(config: SessionConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = config.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = OPTIMIZATION_LEVELS[config.optimization]
    spin = "1" if config.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    return options


def make_session(model: bytes | str | Path, config: SessionConfig) -> ort.InferenceSession:
    """A CPU InferenceSession of a serialized model (bytes) or a model file."""
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, session_options(config),
                                providers=["CPUExecutionProvider"])


def decoder_logits(session: ort.InferenceSession, h_src: np.ndarray, h_dst: np.ndarray
                   ) -> np.ndarray:
    """An MLP link decoder's logits float64 (n,) of aligned float32 embeddings (n, D)."""
    out = session.run(None, {"h_src": np.ascontiguousarray(h_src, np.float32),
                             "h_dst": np.ascontiguousarray(h_dst, np.float32)})[0]
    return out.astype(np.float64).reshape(-1)


def decoder_session(bundle: Bundle, config: SessionConfig) -> ort.InferenceSession | None:
    """A link bundle's MLP decoder (``link.decoder == "mlp"``, ``link.decoder_file``) as a
    session, None for the dot product; another decoder is a BundleError."""
    link = bundle.manifest.link
    kind = link.get("decoder", "dot")
    if kind == "dot":
        return None
    if kind != "mlp" or "decoder_file" not in link:
        raise BundleError("manifest.json", f"link.decoder {kind!r} needs a decoder_file; "
                                           f"known decoders: 'dot', 'mlp'")
    return make_session(bundle.model_path(link["decoder_file"]), config)
