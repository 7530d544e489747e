"""Training wiring: a 2-step run, resume after an interruption, non-finite losses, DDP."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lvbd import train as train_module
from lvbd.checkpoint import load_checkpoint
from lvbd.cli import main
from lvbd.config import load_config
from lvbd.errors import LvbdError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def _cfg(root, steps=2, **over):
    cfg = load_config(TINY, [f"train.steps={steps}", f"data.root={root}"] +
                      [f"{k}={v}" for k, v in over.items()])
    return cfg


def _rows(run_dir, timing=False):
    """metrics.jsonl rows, without the timing columns unless ``timing`` (they differ between runs)."""
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        if not timing:
            r.pop("sec_per_step", None)
            r.pop("cpu_minutes", None)
    return rows


def test_two_step_run_writes_checkpoints_and_metrics(fake_corpus, tmp_path):
    run_dir = train_module.train(_cfg(fake_corpus), tmp_path / "run")
    rows = _rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    assert "valid_si_sdri" in rows[-1] and all(k in rows[0] for k in ("sep", "kl", "loss", "lr"))
    cfg, state, info = load_checkpoint(run_dir / "last.safetensors")
    assert info["step"] == 2 and "optimizer" in info and cfg.train.steps == 2
    assert (run_dir / "best.safetensors").exists()
    with pytest.raises(LvbdError, match="already holds a run"):
        train_module.train(_cfg(fake_corpus), run_dir)


def test_resume_continues_the_same_curve(fake_corpus, tmp_path, monkeypatch):
    full = train_module.train(_cfg(fake_corpus, steps=4), tmp_path / "full")
    real_save = train_module.save_checkpoint

    def save_then_die(path, model, cfg, step, optimizer=None, extra=None):
        real_save(path, model, cfg, step, optimizer, extra)
        if optimizer is not None and step == 2:
            raise KeyboardInterrupt  # killed right after the step-2 checkpoint

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(_cfg(fake_corpus, steps=4), tmp_path / "killed")
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    # a row logged after the checkpoint would be dropped on resume
    with (tmp_path / "killed" / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps({"step": 3, "loss": 123.0}) + "\n")
    train_module.train(_cfg(fake_corpus, steps=4), tmp_path / "killed", resume=True)
    a, b = _rows(full), _rows(tmp_path / "killed")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    cpu = [r["cpu_minutes"] for r in _rows(tmp_path / "killed", timing=True)]
    assert all(0 < x < y for x, y in zip(cpu, cpu[1:]))  # carried over the resume
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for key in ra:
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-5), key
    sa = load_checkpoint(full / "last.safetensors")[1]
    sb = load_checkpoint(tmp_path / "killed" / "last.safetensors")[1]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-5)


def test_nonfinite_loss_stops_with_step_and_terms(fake_corpus, tmp_path, monkeypatch):
    real = train_module.loss_terms

    def poisoned(*args, **kwargs):
        est, terms = real(*args, **kwargs)
        terms["sep"] = terms["sep"] * float("nan")
        return est, terms

    monkeypatch.setattr(train_module, "loss_terms", poisoned)
    with pytest.raises(train_module.NonFiniteLoss, match=r"at step 0: .*'sep': nan"):
        train_module.train(_cfg(fake_corpus), tmp_path / "nan")
    run = train_module.train(_cfg(fake_corpus, **{"train.on_nonfinite": "skip"}), tmp_path / "skip")
    assert load_checkpoint(run / "last.safetensors")[2]["step"] == 2


def test_cli_train_resume_and_plot(fake_corpus, tmp_path):
    run_dir = tmp_path / "cli"
    args = ["train", "--config", str(TINY), "--set", f"data.root={fake_corpus}", "--run-dir",
            str(run_dir), "--quiet"]
    assert main(args) == 0
    assert main(["train", "--resume", str(run_dir), "--set", "train.steps=3", "--quiet"]) == 0
    assert [r["step"] for r in _rows(run_dir)] == [1, 2, 3]
    assert main(["plot", str(run_dir)]) == 0
    assert (run_dir / "plots" / "si_sdri.png").stat().st_size > 1000
    assert main(["train", "--config", str(TINY), "--set", "data.root=/nonexistent"]) == 1


@pytest.mark.slow
def test_ddp_two_cpu_processes(fake_corpus, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", "-m", "lvbd", "train", "--config", str(TINY), "--set",
           f"data.root={fake_corpus}", "--run-dir", str(tmp_path / "ddp"), "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["step"] for r in _rows(tmp_path / "ddp")] == [1, 2]


def test_plateau_schedule_halves_the_lr_after_patience_validations_without_a_best():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = train_module.PlateauSchedule(opt, patience=2, factor=0.5)
    assert [schedule.update(s) for s in (1.0, 0.5, 0.5, 2.0, 1.0)] == [True, False, False, True, False]
    assert schedule.lr == 0.5 and (schedule.best, schedule.bad) == (2.0, 1)
    resumed = train_module.PlateauSchedule(opt, 2, 0.5, best=schedule.best, bad=schedule.bad)
    resumed.update(0.0)
    assert resumed.lr == 0.25 and resumed.bad == 0


def test_training_items_follow_the_data_config(fake_corpus):
    """train._data builds the training items from data.engine_shares, data.same_speaker_prob
    and data.exclude_speakers."""
    cfg = _cfg(fake_corpus, **{"data.engines": "[espeak-ng, flite]",
                               "data.engine_shares": "{flite: 0.5}",
                               "data.same_speaker_prob": 1.0,
                               "data.exclude_speakers": "[fake:spk0]"})
    loader, _, _ = train_module._data(cfg, 0, 0, 1)
    data = loader.dataset
    assert data.same_speaker_prob == 1.0
    plans = [data.plan(i) for i in range(40)]
    assert all(p.speakers[0] == p.speakers[1] and p.speeds[1] != 1 for p in plans)
    assert sum(p.speakers[0] == "fake:spk4" for p in plans) >= 10  # flite: half the items
    assert all("fake:spk0" not in p.speakers for p in plans)
    assert next(iter(loader)).shape[1] == cfg.model.n_sources
