import json
import os
import pickle

import pytest
import torch

from lvbd.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lvbd.config import Config


def _model_and_opt():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.PReLU())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return model, opt


def test_round_trip_restores_model_optimizer_and_rng(tmp_path):
    model, opt = _model_and_opt()
    cfg = Config()
    cfg.train.lr = 3e-4
    path = save_checkpoint(tmp_path / "last.safetensors", model, cfg, 17, opt, extra={"best": 1.5})
    rng_next = torch.rand(3)
    cfg2, state, info = load_checkpoint(path)
    assert cfg2 == cfg and info["step"] == 17 and info["extra"] == {"best": 1.5}
    for k, v in model.state_dict().items():
        torch.testing.assert_close(state[k], v)
    model2, opt2 = _model_and_opt()
    model2.load_state_dict(state)
    opt2.load_state_dict(info["optimizer"])
    state_a, state_b = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for idx in state_a:
        for key in state_a[idx]:
            torch.testing.assert_close(torch.as_tensor(state_a[idx][key]),
                                       torch.as_tensor(state_b[idx][key]))
    torch.set_rng_state(info["rng_torch"])
    torch.testing.assert_close(torch.rand(3), rng_next)


def test_pickle_files_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name in ("evil.pt", "evil.safetensors"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(Evil()))
        with pytest.raises(CheckpointError, match="pickle"):
            load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("cut", [3, 100, -10])
def test_truncated_checkpoint_is_a_clear_error(tmp_path, cut):
    model, opt = _model_and_opt()
    path = save_checkpoint(tmp_path / "c.safetensors", model, Config(), 1, opt)
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(path)


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = _model_and_opt()
    path = save_checkpoint(tmp_path / "c.safetensors", model, Config(), 1, opt)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CheckpointError, match="No space left"):
        save_checkpoint(path, model, Config(), 2, opt)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]
    assert load_checkpoint(path)[2]["step"] == 1


def test_export_then_separator_gives_identical_outputs(tiny_checkpoint, tmp_path):
    import numpy as np

    from lvbd.cli import main
    from lvbd.separate import Separator

    assert main(["export", str(tiny_checkpoint), str(tmp_path / "mine"), "--note", "x"]) == 0
    shipped = tmp_path / "mine.safetensors"
    _, _, info = load_checkpoint(shipped)
    assert "optimizer" not in info and info["extra"]["note"] == "x"
    assert (tmp_path / "mine.json").exists()
    wav = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    a = Separator.from_checkpoint(tiny_checkpoint).separate(wav, 8000)
    b = Separator.from_checkpoint(shipped).separate(wav, 8000)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_export_set_changes_settings_that_keep_the_weights(tiny_checkpoint, tmp_path, capsys):
    from lvbd.cli import main

    assert main(["export", str(tiny_checkpoint), str(tmp_path / "mine"),
                 "--set", "model.memory_warm_start=false", "--set", "model.iva_iters_test=1"]) == 0
    cfg, state, info = load_checkpoint(tmp_path / "mine.safetensors")
    source_cfg, source_state, _ = load_checkpoint(tiny_checkpoint)
    assert source_cfg.model.memory_warm_start and not cfg.model.memory_warm_start
    assert cfg.model.iva_iters_test == 1 and info["extra"]["overrides"] == [
        "model.memory_warm_start=false", "model.iva_iters_test=1"]
    assert all(torch.equal(state[k], source_state[k]) for k in source_state)
    assert json.loads((tmp_path / "mine.json").read_text())["config"]["model"]["memory_warm_start"] is False
    code = main(["export", str(tiny_checkpoint), str(tmp_path / "bad"), "--set", "model.n_filters=8"])
    assert code != 0 and not (tmp_path / "bad.safetensors").exists()
    assert "do not match its config with model.n_filters=8" in capsys.readouterr().err


def test_export_of_several_checkpoints_averages_their_weights(tiny_checkpoint, tmp_path, capsys):
    from lvbd.cli import main
    from lvbd.models import build_model

    cfg, state, _ = load_checkpoint(tiny_checkpoint)
    paths = []
    for step, seed in ((100, 1), (200, 2), (300, 3)):
        torch.manual_seed(seed)
        paths.append(save_checkpoint(tmp_path / f"s{step}.safetensors", build_model(cfg.model), cfg,
                                     step))
    assert main(["export", *map(str, paths), str(tmp_path / "avg"), "-q"]) == 0
    _, avg, info = load_checkpoint(tmp_path / "avg.safetensors")
    states = [load_checkpoint(p)[1] for p in paths]
    assert info["step"] == 300 and info["extra"]["averaged_steps"] == [100, 200, 300]
    assert json.loads((tmp_path / "avg.json").read_text())["provenance"]["source"] == [
        "s100.safetensors", "s200.safetensors", "s300.safetensors"]
    for key, value in avg.items():  # the mean, weight by weight
        torch.testing.assert_close(value, (states[0][key] + states[1][key] + states[2][key]) / 3)
    assert not all(torch.equal(avg[k], states[0][k]) for k in avg)  # the seeds gave other weights
    # one checkpoint twice is that checkpoint
    assert main(["export", str(paths[0]), str(paths[0]), str(tmp_path / "same"), "-q"]) == 0
    same = load_checkpoint(tmp_path / "same.safetensors")[1]
    assert all(torch.equal(same[k], states[0][k]) for k in same)
    # another architecture: one line, nothing written
    cfg.model.n_filters = 2 * cfg.model.n_filters
    other = save_checkpoint(tmp_path / "other.safetensors", build_model(cfg.model), cfg, 5)
    capsys.readouterr()
    assert main(["export", str(paths[0]), str(other), str(tmp_path / "bad")]) != 0
    err = capsys.readouterr().err
    assert "cannot average" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.safetensors").exists()
    assert main(["export", str(paths[0]), str(paths[1]), str(tmp_path / "g"), "--format", "onnx"]) != 0
    assert "one checkpoint" in capsys.readouterr().err


def test_read_header_gives_step_and_config_without_tensors(tiny_checkpoint, tmp_path):
    from lvbd.checkpoint import read_header

    step, config = read_header(tiny_checkpoint)
    cfg, _, info = load_checkpoint(tiny_checkpoint)
    assert step == info["step"] and config == cfg.to_dict()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"12345678 not a header")
    for path, message in [(bad, "corrupt or truncated"), (tmp_path / "none.safetensors", "cannot read")]:
        with pytest.raises(CheckpointError, match=message):
            read_header(path)
