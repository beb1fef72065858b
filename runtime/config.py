"""Configuration of ``qgnn serve``: flags, ``QGNN_*`` environment variables and a config file.

Precedence is flags > environment > config file > defaults, so a container can bake a config file
into the image, override it per deployment through the environment, and a person debugging can
override both on the command line. Every setting is one :class:`Option` row, which gives its flag
(``--max-batch-size``), its variable (``QGNN_MAX_BATCH_SIZE``), its config key
(``max_batch_size`` or ``max-batch-size``), its type, default and range. The option table is the
serving contract's (see docs/serving.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from qgnn.runtime.kernels._ext import LEVELS

ENV_PREFIX = "QGNN_"
_SIZE_RE = re.compile(r"\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6,
               "gb": 10**9}
_KIND_NAMES = {int: "an integer", float: "a number", Path: "a path", str: "a string"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
PRECOMPUTE = ("auto", "on", "off")
GRPC_SERVERS = ("aio", "sync")
_SIZES = ("max_message_bytes", "max_inflight_bytes")


@dataclass(frozen=True)
class ServeConfig:
    """The effective settings of one server (see :data:`OPTIONS` for meaning and ranges)."""

    path: Path | None = None
    host: str = "0.0.0.0"
    grpc_port: int = 8500
    metrics_port: int = 9464
    max_batch_size: int = 256
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 1024
    max_ids_per_request: int = 4096
    max_message_bytes: int = 4 * 2**20
    max_inflight_bytes: int = 256 * 2**20
    max_inflight_requests: int = 32
    max_queue_ms: float = 500.0
    precompute: str = "auto"
    workers: int = 1
    grpc_server: str = "sync"
    grace_period_s: float = 20.0
    poll_interval_s: float = 0.0
    threads: int = 2
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_token_file: Path | None = None
    allow_insecure_token: bool = False
    portable: bool = False
    isa: str | None = None

    def __post_init__(self) -> None:
        check_config(self)

    def describe(self) -> dict[str, Any]:
        """Settings as plain JSON values for the start-up line. Holds no secret: the bearer token
        lives in a file whose path is shown, and its content is never printed or logged."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Option:
    """One setting: its type, allowed range and help text."""

    name: str
    kind: type
    help: str
    minimum: float | None = None
    maximum: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", str, "address to listen on"),
    Option("grpc_port", int, "gRPC port (all services; 0 picks a free port)", 0, 65535),
    Option("metrics_port", int, "Prometheus port, http://HOST:PORT/metrics (0: a free port)",
           0, 65535),
    Option("max_batch_size", int, "most ids merged into one model call", 1, 2**20),
    Option("max_queue_delay_ms", float, "longest a request waits for others to batch with", 0,
           60_000),
    Option("max_queue_size", int, "requests queued per model before RESOURCE_EXHAUSTED", 1,
           2**20),
    Option("max_ids_per_request", int, "most ids (or pairs, inductive nodes, edges) per request",
           1, 2**24),
    Option("max_message_bytes", int, "largest request or response message (e.g. 4194304, "
                                     "4MiB)", 1024, 2**31 - 1),
    Option("max_inflight_bytes", int, "admission budget: request payload plus estimated work "
                                      "bytes of all accepted requests; more is shed with "
                                      "RESOURCE_EXHAUSTED (e.g. 268435456, 256MiB)",
           2**16, 2**40),
    Option("max_inflight_requests", int, "admission: requests in flight server-wide (being "
                                         "answered, or waiting for a thread or their model); "
                                         "more are shed with RESOURCE_EXHAUSTED as they "
                                         "arrive. With --grpc-server sync each holds an RPC "
                                         "thread (docs/serving.md has the trade-off)",
           1, 4096),
    Option("max_queue_ms", float, "longest a request may queue for its model; requests that "
                                  "cannot be answered within it (or their deadline) are shed "
                                  "with RESOURCE_EXHAUSTED at once", 1, 600_000),
    Option("precompute", str, "node models: predictions materialised at load by full-graph "
                              "inference, refreshed by graph updates, answered by lookup "
                              "(inductive requests still run per request): on, off, or auto "
                              "(on when the table is at most 256 MiB)"),
    Option("workers", int, "server processes sharing the port (SO_REUSEPORT, Linux) and the "
                           "memory-mapped bundles; graph updates then reach one worker only "
                           "(docs/serving.md)", 1, 64),
    Option("grpc_server", str, "gRPC server: aio (an event loop takes every call as it "
                               "arrives and answers precomputed lookups on it; model work runs "
                               "on a thread pool) or sync (a thread pool fed by one polling "
                               "thread; docs/serving.md)"),
    Option("grace_period_s", float, "on SIGTERM, how long accepted calls may take to finish",
           0, 3600),
    Option("poll_interval_s", float, "seconds between scans of PATH for new, changed or removed "
                                     "bundles (0: no polling)", 0, 86_400),
    Option("threads", int, "intra-op threads per model (onnxruntime and kernels)", 1, 1024),
    Option("tls_cert", Path, "server certificate chain (PEM); enables TLS"),
    Option("tls_key", Path, "server private key (PEM)"),
    Option("tls_client_ca", Path, "CA bundle (PEM) client certificates must chain to; enables "
                                  "mutual TLS"),
    Option("auth_token_file", Path, "file holding the bearer token every RPC must carry (health "
                                    "and reflection exempt)"),
    Option("allow_insecure_token", bool, "allow --auth-token-file without TLS (the token then "
                                         "crosses the network in clear text)"),
    Option("portable", bool, "stock onnxruntime function bodies, no compiled kernels"),
    Option("isa", str, "ISA level of the compiled kernels, e.g. baseline, avx2, avx512, "
                       "avx512_vnni (default: the best this CPU has; docs/kernels.md)"),
)
_BY_NAME = {o.name: o for o in OPTIONS}


def check_config(cfg: ServeConfig) -> None:
    """Raises ValueError naming the setting and value for an out-of-range or inconsistent mix."""
    for option in OPTIONS:
        value = getattr(cfg, option.name)
        if option.minimum is not None and value < option.minimum:
            raise ValueError(f"{option.flag} must be >= {option.minimum:g}, got {value!r}")
        if option.maximum is not None and value > option.maximum:
            raise ValueError(f"{option.flag} must be <= {option.maximum:g}, got {value!r}")
    if cfg.precompute not in PRECOMPUTE:
        raise ValueError(f"--precompute must be one of {', '.join(PRECOMPUTE)}, got "
                         f"{cfg.precompute!r}")
    if cfg.grpc_server not in GRPC_SERVERS:
        raise ValueError(f"--grpc-server must be one of {', '.join(GRPC_SERVERS)}, got "
                         f"{cfg.grpc_server!r}")
    if cfg.isa and cfg.isa not in LEVELS:
        raise ValueError(f"--isa: unknown ISA level {cfg.isa!r}; valid here: {', '.join(LEVELS)}")
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together (got only "
                         f"{'--tls-cert' if cfg.tls_key is None else '--tls-key'})")
    if cfg.tls_client_ca is not None and cfg.tls_cert is None:
        raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    if cfg.auth_token_file is not None and cfg.tls_cert is None and not cfg.allow_insecure_token:
        raise ValueError("--auth-token-file without TLS would send the token in clear text; add "
                         "--tls-cert/--tls-key, or --allow-insecure-token to accept that")


def _parse_bool(text: str, where: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{where} must be a boolean (true/false, 1/0, yes/no), got {text!r}")


def parse_size(text: str, where: str) -> int:
    """Bytes from '4194304', '4MiB', '512 KiB' or '1GB'."""
    match = _SIZE_RE.fullmatch(text)
    if not match:
        raise ValueError(f"{where} must be a byte count such as 4194304 or 4MiB, got {text!r}")
    return int(match[1]) * _SIZE_UNITS[(match[2] or "b").lower()]


def convert(option: Option, value: Any, where: str) -> Any:
    """A raw value (a string from the environment, or a YAML/JSON/TOML value) as the option's
    type; ``where`` names its source in errors."""
    if value is None:
        return None
    if option.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return _parse_bool(value, where)
        raise ValueError(f"{where} must be a boolean, got {value!r}")
    what = _KIND_NAMES[option.kind]
    if isinstance(value, bool):
        raise ValueError(f"{where} must be {what}, got {value!r}")
    try:
        if option.name in _SIZES and isinstance(value, str):
            return parse_size(value, where)
        if option.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if option.kind is float:
            return float(value)
        if option.kind is Path:
            if not isinstance(value, str) or not value:
                raise ValueError
            return Path(value).expanduser()
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be {what}, got {value!r}") from None


def read_config_file(path: Path) -> dict[str, Any]:
    """Settings from a YAML (.yaml/.yml), JSON (.json) or TOML (.toml) file with one flat
    mapping; keys are option names with '_' or '-' (``max_batch_size``, ``max-batch-size``), plus
    ``path`` for the bundle or repository."""
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ValueError(f"config file {path}: reading YAML needs PyYAML (pip install "
                                 f"pyyaml); or use a .json or .toml file") from None
            data = yaml.safe_load(text)
        else:
            raise ValueError(f"config file {path}: unknown format {suffix or '(no suffix)'!r}; "
                             f"use .yaml, .yml, .json or .toml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"config file {path}: {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("yaml"):
            raise ValueError(f"config file {path}: {exc}") from None
        raise
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: must hold one mapping of setting -> value, got "
                         f"{type(data).__name__}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name == "path":
            out["path"] = _path_value(value, f"config file {path}: path")
        elif name in _BY_NAME:
            out[name] = convert(_BY_NAME[name], value, f"config file {path}: {key}")
        else:
            raise ValueError(f"config file {path}: unknown setting {key!r} (known: path, "
                             f"{', '.join(sorted(_BY_NAME))})")
    return out


def _path_value(value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty path, got {value!r}")
    return Path(value).expanduser()


def read_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Settings from ``QGNN_<OPTION>`` variables (and ``QGNN_PATH``), converted."""
    out: dict[str, Any] = {}
    if env.get(ENV_PREFIX + "PATH"):
        out["path"] = Path(env[ENV_PREFIX + "PATH"]).expanduser()
    for option in OPTIONS:
        if option.env in env:
            out[option.name] = convert(option, env[option.env], option.env)
    return out


def resolve_config(flags: Mapping[str, Any], env: Mapping[str, str] | None = None,
                   config_file: Path | None = None) -> ServeConfig:
    """The effective config: ``flags`` (None = not given) over ``env`` over ``config_file`` over
    the defaults. ``config_file`` defaults to ``$QGNN_CONFIG``."""
    env = os.environ if env is None else env
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(read_config_file(Path(config_file)))
    merged.update(read_env(env))
    merged.update({k: v for k, v in flags.items() if v is not None})
    known = {f.name for f in fields(ServeConfig)}
    return ServeConfig(**{k: v for k, v in merged.items() if k in known})


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds PATH, --config and one flag per option; every default is None, so that
    :func:`resolve_config` can tell 'not given' from 'given the default'."""
    parser.add_argument("path", nargs="?", type=Path, default=None,
                        help="bundle directory, .qgnn archive, or model repository "
                             "(<repo>/<model>/<version>/); also $QGNN_PATH")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML, JSON or TOML file of settings (also $QGNN_CONFIG); flags win "
                             "over QGNN_* variables, which win over the file")
    defaults = ServeConfig()
    for option in OPTIONS:
        default = getattr(defaults, option.name)
        help_text = f"{option.help} [${option.env}; default {default}]"
        if option.kind is bool:
            parser.add_argument(option.flag, action="store_true", default=None, help=help_text)
        else:
            def parse(text: str, option: Option = option) -> Any:
                try:
                    return convert(option, text, option.flag)
                except ValueError as exc:
                    raise argparse.ArgumentTypeError(str(exc)) from None
            metavar = "FILE" if option.kind is Path else option.kind.__name__.upper()
            parser.add_argument(option.flag, type=parse, default=None, metavar=metavar,
                                help=help_text)


def flags_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The option values (and path) given on the command line, None where absent."""
    out = {"path": getattr(args, "path", None)}
    out.update({o.name: getattr(args, o.name, None) for o in OPTIONS})
    return out
