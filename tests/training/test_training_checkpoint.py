import json

import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.graph.links import split_edges
from qgnn.training.checkpoint import load_run, save_run
from qgnn.training.data import node_data
from qgnn.training.nn.models import ModelConfig, build_model
from qgnn.training.presets import TrainConfig
from qgnn.training.tasks.link import link_model_config, train_link

CFG = ModelConfig(model="gcn", in_dim=3, out_dim=2, hidden=4, norm="batch")
TRAIN = TrainConfig(epochs=5, lr=0.02, row_normalize=True)


def tiny_graph():
    src, dst = np.array([0, 1, 1, 2, 2, 3]), np.array([1, 0, 2, 1, 3, 2])
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    mask = np.ones(4, bool)
    return Graph.from_edges(src, dst, 4, x=x, y=np.array([0, 1, 0, 1]), train_mask=mask,
                            val_mask=mask, test_mask=mask)


def trained_model():
    torch.manual_seed(0)
    model = build_model(CFG)
    d = node_data(tiny_graph())
    model.train()
    model(d.x, d.block)  # one pass moves the batch-norm running statistics (buffers)
    return model, d


def test_round_trip_restores_weights_buffers_and_configs(tmp_path):
    model, d = trained_model()
    out = save_run(tmp_path / "run", model, task="node", dataset="cora", model_config=CFG,
                   train_config=TRAIN, metrics={"test_metric": 0.8},
                   extra={"quant": {"bits": 8}})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    ckpt = load_run(out)
    assert ckpt.model_config == CFG and ckpt.train_config == TRAIN
    assert ckpt.metrics == {"test_metric": 0.8} and ckpt.extra == {"quant": {"bits": 8}}
    assert ckpt.dataset == "cora" and ckpt.task == "node"
    running = [k for k in ckpt.state if k.endswith("running_mean")]
    assert running and not torch.equal(ckpt.state[running[0]], torch.zeros(4))
    rebuilt = ckpt.build_model()
    model.eval()
    assert torch.equal(rebuilt(d.x, d.block), model(d.x, d.block))


def test_saving_again_replaces_the_run_and_leaves_no_temporary_files(tmp_path):
    model, _ = trained_model()
    for value in (0.1, 0.2):
        save_run(tmp_path / "run", model, task="node", dataset="cora", model_config=CFG,
                 train_config=TRAIN, metrics={"test_metric": value})
    assert load_run(tmp_path / "run").metrics == {"test_metric": 0.2}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_link_run_round_trip_with_embedding_table(tmp_path):
    rng = np.random.default_rng(0)
    n = 30
    src, dst = np.nonzero(np.triu(rng.random((n, n)) < 0.3, 1))
    g = Graph.from_edges(np.concatenate([src, dst]), np.concatenate([dst, src]), n)
    data = split_edges(g, val_fraction=0.1, test_fraction=0.1)
    cfg = link_model_config(data, "gcn", hidden=4, embedding_dim=5)
    train_cfg = TrainConfig(epochs=2, decoder="mlp", patience=None)
    res = train_link(data, cfg, train_cfg, progress=False)
    save_run(tmp_path / "link", res.model, task="link", dataset="x", model_config=cfg,
             train_config=train_cfg, metrics=res.summary(), num_embeddings=n)
    rebuilt = load_run(tmp_path / "link").build_model()
    assert rebuilt.embedding.weight.shape == (n, 5)
    for key, value in res.model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)


def saved(tmp_path):
    model, _ = trained_model()
    return save_run(tmp_path / "run", model, task="node", dataset="cora", model_config=CFG,
                    train_config=TRAIN, metrics={})


def rewrite(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_load_names_the_missing_file(tmp_path):
    run = saved(tmp_path)
    (run / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors: missing"):
        load_run(run)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "nowhere")


def test_load_rejects_bad_json_and_fields(tmp_path):
    run = saved(tmp_path)
    (run / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        load_run(run)
    run = saved(tmp_path)
    rewrite(run, format_version=99)
    with pytest.raises(ValueError, match="'format_version' is 99"):
        load_run(run)
    run = saved(tmp_path)
    rewrite(run, task="graph")
    with pytest.raises(ValueError, match="field 'task' is 'graph'"):
        load_run(run)
    run = saved(tmp_path)
    config = json.loads((run / "config.json").read_text())
    del config["model"]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="missing field 'model'"):
        load_run(run)
    run = saved(tmp_path)
    rewrite(run, training={"epochs": 0})
    with pytest.raises(ValueError, match=r"TrainConfig\.epochs"):
        load_run(run)


def test_load_rejects_a_pickle_in_place_of_safetensors(tmp_path):
    run = saved(tmp_path)
    torch.save({"w": torch.zeros(1)}, run / "model.safetensors")  # a pickle-based file
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_run(run)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    run = saved(tmp_path)
    rewrite(run, model={**CFG.to_dict(), "hidden": 5})
    with pytest.raises(ValueError, match="weights do not fit the model"):
        load_run(run).build_model()


def test_save_refuses_non_json_metrics(tmp_path):
    model, _ = trained_model()
    with pytest.raises(ValueError, match="plain JSON"):
        save_run(tmp_path / "run", model, task="node", dataset="cora", model_config=CFG,
                 train_config=TRAIN, metrics={"nan": float("nan")})
    assert not (tmp_path / "run").exists()
