"""Training faults: kill -9, corrupt checkpoints, a full disk, torn logs, a non-finite loss.

The many-trial campaign is benchmarks/fault_injection.py (figures in docs/robustness.md); these
tests run its kill trial twice and the other faults once each. A non-finite loss stopping the
run with the step and the loss terms is tested in tests/test_train.py
(test_nonfinite_loss_stops_with_step_and_terms); here the CLI and the checkpoint left behind are
checked too.
"""
import errno
import json
import os
import random
import sys
from pathlib import Path

import pytest
import torch

from lvbd import train as train_module
from lvbd.checkpoint import load_checkpoint
from lvbd.cli import main
from lvbd.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
sys.path.insert(0, str(ROOT / "benchmarks"))
import fault_injection as fi  # noqa: E402

STEPS, EVERY = 30, 5


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(r)["step"] for r in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _cli_args(corpus, run_dir, steps, every=2):
    return ["train", "--config", str(TINY), "--set", f"data.root={corpus}", "--set",
            f"train.steps={steps}", "--set", f"train.checkpoint_every={every}", "--set",
            f"train.valid_every={every}", "--run-dir", str(run_dir), "--quiet"]


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(fake_corpus, tmp_path):
    """Two runs killed (once; twice) at seeded random points, resumed: at most one checkpoint
    interval redone, checkpoints always loadable, the curve 1..N without gaps or duplicates, and
    each equal to an *uninterrupted* run of the same config: the same weights and, at every
    step, the same logged values (losses, lr, validation score; timings excepted)."""
    reference = tmp_path / "uninterrupted"
    proc = fi.finish(fake_corpus, reference, STEPS, EVERY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _steps(reference) == list(range(1, STEPS + 1))
    rng = random.Random(6)
    for trial, kills in enumerate((1, 2)):
        run_dir = tmp_path / f"trial{trial}"
        for _ in range(kills):
            done = max(fi.logged_steps(run_dir)[0], default=0)
            res = fi.kill_once(fake_corpus, run_dir, STEPS, EVERY,
                               at_step=rng.randint(done + 2, done + 11), timeout=120)
            assert res["killed"], "the run ended before the kill"
            assert res["corrupt"] == [] and res["ckpt_step"] % EVERY == 0
            assert res["redo"] <= EVERY, res
        proc = fi.finish(fake_corpus, run_dir, STEPS, EVERY)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert _steps(run_dir) == list(range(1, STEPS + 1))
        assert load_checkpoint(run_dir / "last.safetensors")[2]["step"] == STEPS
        assert _hidden(run_dir) == []
        assert fi.weights_equal(run_dir / "last.safetensors", reference / "last.safetensors")
        assert fi.curves_equal(run_dir, reference), (fi.logged_rows(run_dir)[-1],
                                                     fi.logged_rows(reference)[-1])


def test_curves_equal_compares_values_not_only_steps(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, loss in ((a, 1.0), (b, 1.0)):
        folder.mkdir()
        (folder / "metrics.jsonl").write_text(
            json.dumps({"step": 1, "loss": loss, "sec_per_step": 0.1}) + "\n"
            + json.dumps({"step": 2, "loss": 0.5, "sec_per_step": 0.2}) + "\n")
    assert fi.curves_equal(a, b)
    (b / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "loss": 1.0, "sec_per_step": 9.0}) + "\n"
        + json.dumps({"step": 2, "loss": 0.6, "sec_per_step": 0.2}) + "\n")
    assert not fi.curves_equal(a, b)  # same steps, another value at step 2


def test_corrupt_last_checkpoint_is_a_clear_error_and_best_survives(fake_corpus, tmp_path,
                                                                    capsys):
    run_dir = tmp_path / "run"
    assert main(_cli_args(fake_corpus, run_dir, 4)) == 0
    best = (run_dir / "best.safetensors").read_bytes()
    last = run_dir / "last.safetensors"
    last.write_bytes(last.read_bytes()[:len(last.read_bytes()) // 2])
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--set", "train.steps=6", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a valid safetensors" in err[0]
    assert "best.safetensors is kept" in err[0] and "--init" in err[0]
    assert (run_dir / "best.safetensors").read_bytes() == best
    load_checkpoint(run_dir / "best.safetensors")
    wav = tmp_path / "x.wav"
    fi.sf.write(wav, [0.1, -0.2, 0.3] * 100, 8000)
    assert main(["separate", str(wav), "-o", str(tmp_path / "out"), "--model", str(last)]) == 1
    assert "not a valid safetensors" in capsys.readouterr().err


def test_disk_full_while_checkpointing_keeps_the_previous_one(fake_corpus, tmp_path,
                                                              monkeypatch, capsys):
    """ENOSPC from fsync on the second write of last.safetensors, inside the training loop."""
    real_fsync, writes = os.fsync, []

    def fsync(fd):
        if ".last.safetensors." in os.readlink(f"/proc/self/fd/{fd}"):
            writes.append(fd)
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    run_dir = tmp_path / "run"
    assert main(_cli_args(fake_corpus, run_dir, 6)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write checkpoint" in err[0] and "No space left" in err[0]
    assert load_checkpoint(run_dir / "last.safetensors")[2]["step"] == 2
    assert _hidden(run_dir) == []
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert _steps(run_dir) == [1, 2, 3, 4, 5, 6]


def test_resume_drops_torn_rows_and_stale_temps(fake_corpus, tmp_path):
    cfg = load_config(TINY, [f"data.root={fake_corpus}", "train.steps=2"])
    run_dir = train_module.train(cfg, tmp_path / "run")
    with (run_dir / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 3, "loss": 1.2')  # killed in the middle of a log write
    (run_dir / ".last.safetensors.x1y2.tmp").write_bytes(b"half a checkpoint")
    cfg.train.steps = 3
    train_module.train(cfg, run_dir, resume=True)
    assert _steps(run_dir) == [1, 2, 3]
    assert _hidden(run_dir) == []


def test_restart_after_a_kill_before_the_first_checkpoint(fake_corpus, tmp_path):
    """No checkpoint yet, but log rows: a new run starts clean instead of duplicating steps."""
    cfg = load_config(TINY, [f"data.root={fake_corpus}", "train.steps=2"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    train_module.train(cfg, run_dir)
    assert _steps(run_dir) == [1, 2]
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["loss"] != 9.0


def test_nonfinite_loss_mid_run_through_the_cli(fake_corpus, tmp_path, monkeypatch, capsys):
    real = train_module.loss_terms

    def poisoned(model, mixture, references, loss_cfg, step, total_steps):
        est, terms = real(model, mixture, references, loss_cfg, step, total_steps)
        if step == 3:
            terms["kl"] = terms["kl"] * float("inf")
        return est, terms

    monkeypatch.setattr(train_module, "loss_terms", poisoned)
    run_dir = tmp_path / "run"
    assert main(_cli_args(fake_corpus, run_dir, 6)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite loss or gradient at step 3" in err[0]
    _, state, info = load_checkpoint(run_dir / "last.safetensors")
    assert info["step"] == 2 and all(torch.isfinite(v).all() for v in state.values())
