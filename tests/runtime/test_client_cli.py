"""``qgnn predict`` / ``qgnn health`` / ``qgnn serve --help`` through the real ``qgnn`` entry
point, against a live server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pytest
import serving_testkit as tk

from qgnn.cli import build_parser, main


def _run(capsys, *argv: str) -> tuple[int, dict | str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out), err
    except json.JSONDecodeError:
        return code, out, err


def test_predict_nodes_prints_json_matching_the_oracle(served, capsys, node_params):
    server, _ = served
    code, out, _ = _run(capsys, "predict", "nodes", "--model", "toy", "--port",
                        str(server.grpc_port), "4", "0", "4")
    assert code == 0
    assert (out["model"], out["version"], out["node_ids"]) == ("toy", 1, [4, 0, 4])
    expected = tk.oracle_probabilities(node_params)[[4, 0, 4]]
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    assert out["predicted_class"] == expected.argmax(1).tolist()


def test_predict_links_recommend_embed_and_models(served, capsys, link_params):
    server, _ = served
    port = ("--port", str(server.grpc_port))
    code, out, _ = _run(capsys, "predict", "links", "--model", "links", *port, "1:20", "12:3")
    assert code == 0
    np.testing.assert_allclose(out["scores"], tk.oracle_link_scores(
        link_params, np.array([1, 12]), np.array([20, 3])), atol=1e-5)
    code, out, _ = _run(capsys, "predict", "recommend", "--model", "links", *port, "--user",
                        "3", "-k", "4", "--exclude-seen")
    assert code == 0 and len(out["item_ids"]) == 4 and out["scores"] == sorted(
        out["scores"], reverse=True)
    code, out, _ = _run(capsys, "predict", "embed", "--model", "links", *port, "5")
    np.testing.assert_allclose(out["embeddings"], tk.oracle_embeddings(link_params)[[5]],
                               atol=1e-5)
    code, out, _ = _run(capsys, "predict", "models", *port)
    assert [m["name"] for m in out["models"]] == ["links", "toy"]
    code, out, _ = _run(capsys, "predict", "model", "--model", "toy", *port)
    assert out["manifest"]["model"]["name"] == "toy" and out["info"]["version"] == "1"


def test_predict_reports_server_errors_with_the_status_code(served, capsys):
    server, _ = served
    code, _, err = _run(capsys, "predict", "nodes", "--model", "nope", "--port",
                        str(server.grpc_port), "1")
    assert code == 1 and "NOT_FOUND" in err and "'nope'" in err
    with pytest.raises(SystemExit):
        main(["predict", "links", "--model", "links", "1-2"])
    assert "SRC:DST" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_health_exit_code_follows_serving_status(served, capsys):
    server, _ = served
    code, out, _ = _run(capsys, "health", "--port", str(server.grpc_port))
    assert code == 0 and out.strip() == "SERVING"
    code, out, _ = _run(capsys, "health", "--port", str(server.grpc_port), "--service", "toy")
    assert code == 0
    code, _, err = _run(capsys, "health", "--port", str(server.grpc_port), "--service", "nope")
    assert code == 1 and "NOT_FOUND" in err
    code, _, err = _run(capsys, "health", "--port", str(_free_port()), "--timeout", "1")
    assert code == 1 and ("UNAVAILABLE" in err or "DEADLINE_EXCEEDED" in err)


def test_serving_commands_are_registered_with_inspect():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"serve", "predict", "health", "inspect"} <= set(sub.choices)
    help_text = sub.choices["serve"].format_help()
    for flag in ("--grpc-port", "--metrics-port", "--max-batch-size", "--max-queue-delay-ms",
                 "--max-queue-size", "--max-ids-per-request", "--max-message-bytes",
                 "--grace-period-s", "--poll-interval-s", "--threads", "--tls-cert",
                 "--tls-key", "--tls-client-ca", "--auth-token-file", "--allow-insecure-token",
                 "--portable", "--config"):
        assert flag in help_text


def test_serve_refuses_bad_settings_and_paths_with_exit_code_2(capsys, tmp_path):
    assert main(["serve", "/nonexistent", "--max-batch-size", "0"]) == 2
    assert "--max-batch-size must be >= 1" in capsys.readouterr().err
    token = tmp_path / "token"
    token.write_text("t")
    assert main(["serve", str(tmp_path), "--auth-token-file", str(token)]) == 2
    err = capsys.readouterr().err
    assert "clear text" in err and "--allow-insecure-token" in err
    (tmp_path / "file.txt").write_text("x")
    assert main(["serve", str(tmp_path / "file.txt"), "--grpc-port", "0", "--metrics-port",
                 "0", "--host", "127.0.0.1"]) == 2
    assert "neither a model bundle" in capsys.readouterr().err


def test_serve_refuses_a_backend_module_it_cannot_import(capsys, monkeypatch, repo_dir):
    monkeypatch.setenv("QGNN_BACKEND_MODULES", "serving_testkit, no_such_backend_xyz")
    assert main(["serve", str(repo_dir), "--host", "127.0.0.1"]) == 2
    assert "QGNN_BACKEND_MODULES: cannot import 'no_such_backend_xyz'" in \
        capsys.readouterr().err


def test_serve_refuses_ports_in_use_with_exit_code_2(capsys, repo_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for flags in (["--grpc-port", port, "--metrics-port", "0"],
                      ["--grpc-port", "0", "--metrics-port", port]):
            assert main(["serve", str(repo_dir), "--host", "127.0.0.1", *flags]) == 2
            err = capsys.readouterr().err
            assert f"cannot listen on 127.0.0.1:{port}" in err


def test_the_serving_stack_imports_neither_torch_nor_onnx_nor_training():
    code = ("import sys, qgnn.runtime.server, qgnn.runtime.cli, qgnn.runtime.client; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', "
            "'scipy') or m.startswith(('qgnn.training', 'qgnn.exporter'))); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"
