"""``qgnn serve``, ``qgnn predict``, ``qgnn health`` (and ``qgnn inspect``): torch-free."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from qgnn.runtime.cli_inspect import add_inspect_parser
from qgnn.runtime.config import add_serve_arguments, flags_from_args, resolve_config


def add_parsers(sub: Any) -> None:
    """Registers the serving commands on the ``qgnn`` subcommand parsers."""
    serve = sub.add_parser(
        "serve", help="serve model bundles over gRPC",
        description="Serve a model bundle or a repository of bundles (<repo>/<model>/<version>/) "
                    "over gRPC: qgnn.v1, KServe v2, health and reflection on one port, "
                    "Prometheus metrics on another. Settings: flags > QGNN_* variables > "
                    "--config file. SIGTERM shuts down gracefully.")
    add_serve_arguments(serve)
    serve.set_defaults(func=serve_command)

    predict = sub.add_parser("predict", help="call a running server and print JSON",
                             description="Call a running qgnn server (qgnn.v1) and print the "
                                         "answer as JSON.")
    kinds = predict.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    nodes = _model_parser(kinds, "nodes", "class probabilities of nodes")
    nodes.add_argument("ids", nargs="+", type=int, help="node ids")
    links = _model_parser(kinds, "links", "edge probabilities of SRC:DST pairs")
    links.add_argument("pairs", nargs="+", type=_pair, help="pairs as SRC:DST")
    rec = _model_parser(kinds, "recommend", "top-k items for a user")
    who = rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, help="user node id")
    who.add_argument("--user-external", help="the dataset's own user id")
    who.add_argument("--new-user-items", type=int, nargs="+",
                     help="a cold-start user: the item node ids it interacted with")
    who.add_argument("--new-user-external-items", nargs="+",
                     help="a cold-start user: its items by the dataset's own ids")
    rec.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    rec.add_argument("--exclude-seen", action="store_true", help="leave out the user's items")
    rec.add_argument("--candidates", type=int, nargs="*", default=(),
                     help="rank only these item ids")
    rec.add_argument("--external-candidates", nargs="*", default=(),
                     help="rank only these items (the dataset's own ids)")
    embed = _model_parser(kinds, "embed", "node embeddings")
    embed.add_argument("ids", nargs="+", type=int, help="node ids")
    models = kinds.add_parser("models", help="list loaded models")
    models.add_argument("--name", default="", help="only this model name")
    _connection_arguments(models)
    _model_parser(kinds, "model", "one model's description and manifest")
    predict.set_defaults(func=predict_command)

    health = sub.add_parser("health", help="probe a server's gRPC health (exit 0 if SERVING)",
                            description="Ask grpc.health.v1 whether the server (or one model) "
                                        "is SERVING; exit 0 if so, 1 otherwise. For container "
                                        "health checks.")
    health.add_argument("--service", default="", help="a model name (default: the server)")
    _connection_arguments(health, default_timeout=5.0)
    health.set_defaults(func=health_command)

    add_inspect_parser(sub)
    _add_evaluate_parser(sub)


def _add_evaluate_parser(sub: Any) -> None:
    ev = sub.add_parser(
        "evaluate-recs", help="Recall/NDCG/HitRate@K of a bundle or a server on a test file",
        description="Ranking metrics of a recommender against a test interaction file: every "
                    "test user's top K over all items, its training items removed (the served "
                    "graph's edges of the user, or --train), as Recall@K, NDCG@K and "
                    "HitRate@K (LightGCN's convention). Give a BUNDLE to run it in-process, or "
                    "--model (and --host/--port) to ask a running server. Prints JSON.")
    ev.add_argument("bundle", nargs="?", type=Path, help="bundle directory or .qgnn archive")
    ev.add_argument("--test", type=Path, required=True,
                    help="test interactions: user and item columns, CSV/TSV/'::'/spaces")
    ev.add_argument("--train", type=Path, help="training interactions to exclude (default: "
                                               "the served graph's edges; needed with --model)")
    ev.add_argument("--ids", choices=("external", "node"), default="external",
                    help="what the files hold: the dataset's ids (default) or node ids")
    ev.add_argument("-k", "--k", default="10,20", help="cut-offs, comma separated "
                                                      "(default 10,20)")
    ev.add_argument("--sep", default=None, help="column separator (default: tab, comma, ';', "
                                                "'::' or spaces)")
    ev.add_argument("--user-col", type=int, default=0, help="user column (default 0)")
    ev.add_argument("--item-col", type=int, default=1, help="item column (default 1)")
    ev.add_argument("--skip-header", action="store_true", help="the first line is a header")
    ev.add_argument("--model", help="ask this model of a running server instead of a bundle")
    ev.add_argument("--version", type=int, default=None, help="model version (server)")
    _connection_arguments(ev)
    ev.set_defaults(func=evaluate_command)


def evaluate_command(args: argparse.Namespace) -> int:
    from qgnn.runtime.recs_eval import (
        bundle_ranker,
        evaluate,
        read_interactions,
        server_ranker,
    )

    try:
        ks = sorted({int(k) for k in str(args.k).split(",") if k.strip()})
    except ValueError:
        raise ValueError(f"--k: expected comma-separated integers, got {args.k!r}") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"--k: expected integers >= 1, got {args.k!r}")
    if (args.bundle is None) == (args.model is None):
        raise ValueError("give a BUNDLE or --model (a running server), not both or neither")
    read = {"sep": args.sep, "user_col": args.user_col, "item_col": args.item_col,
            "skip_header": args.skip_header}
    test = read_interactions(args.test, **read)
    train = None if args.train is None else {
        u: set(items) for u, items in read_interactions(args.train, **read).by_user().items()}
    if args.bundle is not None:
        from qgnn.runtime.bundle.reader import load_bundle
        from qgnn.runtime.engine import Engine

        engine = Engine(load_bundle(args.bundle))
        rank, served_train, known_user, known_item = bundle_ranker(engine, args.ids)
        result = evaluate(rank, test, ks, train if train is not None else served_train,
                          known_user, known_item)
        result["source"] = str(args.bundle)
    else:
        if train is None:
            raise ValueError("--model needs --train (the server is asked without "
                             "exclude_seen, whose held-out items are the test data)")
        with _client(args) as client:
            rank, known_user = server_ranker(client, args.model, args.ids, args.version)
            result = evaluate(rank, test, ks, train, known_user, lambda _: True)
        result["source"] = f"{args.host}:{args.port}/{args.model}"
    result.update({"test_file": str(args.test), "ids": args.ids, "ks": ks})
    print(json.dumps(result))
    return 0


def _pair(text: str) -> tuple[int, int]:
    src, sep, dst = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(src), int(dst)
    except ValueError:
        raise argparse.ArgumentTypeError(f"pairs are SRC:DST, got {text!r}") from None


def _connection_arguments(parser: argparse.ArgumentParser, default_timeout: float = 30.0
                          ) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--host", default="127.0.0.1", help="server host (default 127.0.0.1)")
    group.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    group.add_argument("--tls", action="store_true", help="use TLS (system root CAs unless "
                                                          "--tls-ca)")
    group.add_argument("--tls-ca", type=Path, help="CA (PEM) that signed the server's cert")
    group.add_argument("--tls-cert", type=Path, help="client certificate (mutual TLS)")
    group.add_argument("--tls-key", type=Path, help="client private key (mutual TLS)")
    group.add_argument("--tls-server-name", help="expected name in the server's certificate")
    group.add_argument("--token-file", type=Path, help="file with the bearer token")
    group.add_argument("--timeout", type=float, default=default_timeout,
                       help=f"deadline in seconds (default {default_timeout:g})")


def _model_parser(kinds: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = kinds.add_parser(name, help=help_text)
    parser.add_argument("--model", required=True, help="model name")
    parser.add_argument("--version", type=int, default=None, help="model version (default: "
                                                                  "the newest)")
    _connection_arguments(parser)
    return parser


def _client(args: argparse.Namespace) -> Any:
    from qgnn.runtime.client import QgnnClient, connection_kwargs

    return QgnnClient(f"{args.host}:{args.port}", **connection_kwargs(vars(args)))


def serve_command(args: argparse.Namespace) -> int:
    from qgnn.runtime.server import serve_main

    return serve_main(resolve_config(flags_from_args(args), os.environ, args.config))


def _predict(client: Any, args: argparse.Namespace) -> dict:
    v = args.version if args.kind != "models" else None
    if args.kind == "nodes":
        r = client.predict_nodes(args.model, args.ids, version=v)
        return {"model": r.model, "version": r.version, "node_ids": args.ids,
                "predicted_class": r.predicted_class.tolist(),
                "probabilities": r.probabilities.tolist()}
    if args.kind == "links":
        src, dst = zip(*args.pairs, strict=True)
        r = client.predict_links(args.model, src, dst, version=v)
        return {"model": r.model, "version": r.version, "pairs": [list(p) for p in args.pairs],
                "scores": r.scores.tolist()}
    if args.kind == "recommend":
        r = client.recommend(args.model, args.user, args.k, exclude_seen=args.exclude_seen,
                             candidate_ids=args.candidates, version=v,
                             user_external_id=args.user_external,
                             candidate_external_ids=args.external_candidates,
                             new_user_item_ids=args.new_user_items or (),
                             new_user_item_external_ids=args.new_user_external_items or ())
        out = {"model": r.model, "version": r.version, "user_id": args.user,
               "item_ids": r.item_ids.tolist(), "scores": r.scores.tolist()}
        if args.user_external is not None:
            out["user_external_id"] = args.user_external
        if r.item_external_ids:
            out["item_external_ids"] = r.item_external_ids
        return out
    if args.kind == "embed":
        r = client.embed(args.model, args.ids, version=v)
        return {"model": r.model, "version": r.version, "node_ids": args.ids,
                "embeddings": r.embeddings.tolist()}
    if args.kind == "models":
        return {"models": client.list_models(args.name)}
    info, manifest = client.get_model(args.model, version=v)
    return {"info": info, "manifest": json.loads(manifest) if manifest else None}


def predict_command(args: argparse.Namespace) -> int:
    import grpc

    with _client(args) as client:
        try:
            result = _predict(client, args)
        except grpc.RpcError as exc:
            print(f"qgnn predict: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(json.dumps(result))
    return 0


def health_command(args: argparse.Namespace) -> int:
    import grpc

    with _client(args) as client:
        try:
            status = client.health(args.service)
        except grpc.RpcError as exc:
            print(f"qgnn health: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(status)
    return 0 if status == "SERVING" else 1
