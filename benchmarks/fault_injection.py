"""Fault-injection campaign: kill -9 during training, corrupt checkpoints, a disk that fills up.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fault_injection.py [--trials 10] [--steps 60]
        [--every 5] [--seed 0] [--work /tmp/lvbd_faults]

1. kill -9: ``lvbd train`` (configs/tiny.yaml on a seeded synthetic corpus) is killed after a
   random delay (startup, a training step or a checkpoint write alike), 1–3 times per trial, each
   time restarted with ``--resume`` (or afresh when no checkpoint exists yet). After every kill:
   are last/best checkpoints loadable, how many logged steps are redone (must be <= --every); at
   the end: metrics steps exactly 1..N (``steps_exactly_1_to_N``), every logged value (losses,
   lr, validation score; not the timings) equal to the uninterrupted run's at the same step
   (``curves_equal_reference``), no temp files, final weights equal to the uninterrupted run's.
2. corrupt: ``last.safetensors`` truncated or bit-flipped → ``--resume`` must fail with one clear
   line (exit 1) and leave ``best.safetensors`` byte-identical and loadable.
3. disk full in training: RLIMIT_FSIZE of the running trainer is lowered (``prlimit``) after a
   random delay, so the next checkpoint write fails in the kernel (EFBIG, like ENOSPC) → exit 1,
   one line, the previous checkpoint intact; a resume then finishes the run.
4. disk full in ``lvbd separate``: random file-size limits while separating three files → each
   track has all of its outputs or none, every output complete, no temp files.

Prints one summary table; docs/robustness.md records a run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")


def make_corpus(root: Path) -> Path:
    """5 speakers x 4 clips of seeded harmonic 'voices' (8 kHz flac) + manifest (no TTS engine)."""
    from lvbd.data.corpus import MANIFEST_COLUMNS

    rng, rows = np.random.default_rng(0), []
    for s in range(5):
        for c in range(4):
            seconds = float(rng.uniform(1.5, 4.0))
            t = np.arange(int(seconds * 8000)) / 8000
            f0 = rng.uniform(90, 260)
            wav = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 6))
            wav = 0.3 * wav * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
            path = f"audio/spk{s}/{c}.flac"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / path, wav / np.abs(wav).max() * 0.3, 8000, subtype="PCM_16")
            rows.append({"path": path, "speaker": f"fake:spk{s}", "engine": "espeak-ng",
                         "voice": f"v{s}", "text": f"clip {c}", "duration": f"{seconds:.6f}",
                         "split": "train" if c < 3 else "valid"})
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return root


def train_cmd(corpus: Path, run_dir: Path, steps: int, every: int) -> list[str]:
    """A fresh run, or ``--resume`` when the run has a checkpoint."""
    if (run_dir / "last.safetensors").exists():
        return [sys.executable, "-m", "lvbd", "train", "--resume", str(run_dir), "--quiet"]
    return [sys.executable, "-m", "lvbd", "train", "--config", str(TINY), "--set",
            f"data.root={corpus}", "--set", f"train.steps={steps}", "--set",
            f"train.checkpoint_every={every}", "--set", f"train.valid_every={2 * every}",
            "--set", "train.log_every=1", "--run-dir", str(run_dir), "--quiet"]


def logged_steps(run_dir: Path) -> tuple[list[int], int]:
    """Steps of the parseable metrics rows, and the number of unparseable (torn) rows."""
    path, steps, torn = run_dir / "metrics.jsonl", [], 0
    if path.exists():
        for row in path.read_text(errors="replace").splitlines():
            try:
                steps.append(int(json.loads(row)["step"]))
            except (ValueError, KeyError, TypeError):
                torn += 1
    return steps, torn


TIMING_KEYS = frozenset({"sec_per_step", "cpu_minutes"})  # wall-clock figures: never equal


def logged_rows(run_dir: Path) -> list[dict]:
    """The parseable rows of ``metrics.jsonl`` (torn rows left out)."""
    path, rows = run_dir / "metrics.jsonl", []
    if path.exists():
        for row in path.read_text(errors="replace").splitlines():
            try:
                rows.append(json.loads(row))
            except ValueError:
                pass
    return rows


def curves_equal(a: Path, b: Path, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """Same logged steps, and at each step the same keys and values (timings excepted)."""
    rows_a, rows_b = logged_rows(a), logged_rows(b)
    if [r.get("step") for r in rows_a] != [r.get("step") for r in rows_b]:
        return False
    for ra, rb in zip(rows_a, rows_b):
        if ra.keys() - TIMING_KEYS != rb.keys() - TIMING_KEYS:
            return False
        for key in ra.keys() - TIMING_KEYS:
            x, y = ra[key], rb[key]
            if not (x == y or (isinstance(x, (int, float)) and isinstance(y, (int, float))
                               and abs(x - y) <= atol + rtol * abs(y))):
                return False
    return True


def checkpoint_step(path: Path) -> int | None:
    """Step of a loadable checkpoint; None when absent; raises CheckpointError when corrupt."""
    from lvbd.checkpoint import load_checkpoint

    return load_checkpoint(path)[2]["step"] if path.exists() else None


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp*")) if folder.exists() else []


def kill_once(corpus: Path, run_dir: Path, steps: int, every: int, delay: float | None = None,
              at_step: int | None = None, timeout: float = 300) -> dict:
    """Start (or resume) training and kill -9 it after ``delay`` s, or once ``at_step`` is logged.

    Returns what the kill left: whether it hit a live process, the checkpoint step, the last
    logged step, steps to redo, corrupt files, temp files.
    """
    from lvbd.checkpoint import CheckpointError

    proc = subprocess.Popen(train_cmd(corpus, run_dir, steps, every), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < timeout:
        if delay is not None and time.monotonic() - start >= delay:
            break
        if at_step is not None and (logged_steps(run_dir)[0] or [0])[-1] >= at_step:
            break
        time.sleep(0.005)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if not killed and proc.returncode != 0:
        raise RuntimeError(f"training failed on its own: {err[-2000:]}")
    corrupt = []
    ckpt = None
    for name in ("last.safetensors", "best.safetensors"):
        try:
            step = checkpoint_step(run_dir / name)
        except CheckpointError:
            corrupt.append(name)
            continue
        if name == "last.safetensors":
            ckpt = step
    logged, torn = logged_steps(run_dir)
    last_logged = max(logged, default=0)
    return {"killed": killed, "ckpt_step": ckpt or 0, "logged_step": last_logged,
            "redo": max(0, last_logged - (ckpt or 0)), "corrupt": corrupt, "torn_rows": torn,
            "temps": temp_files(run_dir)}


def finish(corpus: Path, run_dir: Path, steps: int, every: int) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(corpus, run_dir, steps, every), env=ENV, capture_output=True,
                          text=True, timeout=600)


def weights_equal(a: Path, b: Path, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    from lvbd.checkpoint import load_checkpoint

    sa, sb = load_checkpoint(a)[1], load_checkpoint(b)[1]
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], rtol=rtol, atol=atol)
                                          for k in sa)


def kill_campaign(corpus: Path, work: Path, trials: int, steps: int, every: int,
                  rng: random.Random) -> dict:
    reference = work / "reference"
    t0 = time.monotonic()
    proc = finish(corpus, reference, steps, every)
    assert proc.returncode == 0, proc.stderr[-2000:]
    full_time = time.monotonic() - t0
    stats = {"trials": trials, "kills": 0, "kills_before_first_checkpoint": 0,
             "finished_before_kill": 0, "resumes_ok": 0, "max_steps_redone": 0,
             "steps_redone": 0, "corrupt_checkpoints": 0, "torn_rows_dropped": 0,
             "temps_after_kill": 0, "temps_after_resume": 0, "steps_exactly_1_to_N": 0,
             "curves_equal_reference": 0, "weights_equal_reference": 0, "seconds_uninterrupted_run": round(full_time, 1)}
    for trial in range(trials):
        run_dir = work / f"trial{trial}"
        for _ in range(rng.randint(1, 3)):
            res = kill_once(corpus, run_dir, steps, every, delay=rng.uniform(0.3, full_time))
            if not res["killed"]:
                stats["finished_before_kill"] += 1
                break
            stats["kills"] += 1
            stats["kills_before_first_checkpoint"] += res["ckpt_step"] == 0
            stats["steps_redone"] += res["redo"]
            stats["max_steps_redone"] = max(stats["max_steps_redone"], res["redo"])
            stats["corrupt_checkpoints"] += len(res["corrupt"])
            stats["torn_rows_dropped"] += res["torn_rows"]
            stats["temps_after_kill"] += len(res["temps"])
        proc = finish(corpus, run_dir, steps, every)
        logged, torn = logged_steps(run_dir)
        ok = proc.returncode == 0 and checkpoint_step(run_dir / "last.safetensors") == steps
        stats["resumes_ok"] += ok
        stats["steps_exactly_1_to_N"] += logged == list(range(1, steps + 1)) and torn == 0
        stats["curves_equal_reference"] += curves_equal(run_dir, reference)
        stats["temps_after_resume"] += len(temp_files(run_dir))
        stats["weights_equal_reference"] += ok and weights_equal(run_dir / "last.safetensors",
                                                                 reference / "last.safetensors")
    return stats


def corrupt_campaign(work: Path, rng: random.Random, n: int = 4) -> dict:
    """Truncate or bit-flip last.safetensors of a finished run; resume must refuse cleanly."""
    from lvbd.checkpoint import load_checkpoint

    stats = {"corruptions": 0, "clear_errors": 0, "best_intact": 0, "tracebacks": 0}
    source = work / "reference"
    for i in range(n):
        run_dir = work / f"corrupt{i}"
        shutil.copytree(source, run_dir)
        last = run_dir / "last.safetensors"
        data = bytearray(last.read_bytes())
        if i % 2 == 0:
            data = data[:rng.randrange(0, len(data))]
        else:  # flip bytes in the JSON header, where a flip cannot go unnoticed
            size = int.from_bytes(data[:8], "little")
            for pos in rng.sample(range(8, 8 + size), 3):
                data[pos] ^= 0xFF
        last.write_bytes(bytes(data))
        best = (run_dir / "best.safetensors").read_bytes()
        proc = subprocess.run([sys.executable, "-m", "lvbd", "train", "--resume", str(run_dir),
                               "--set", "train.steps=1000", "--quiet"], env=ENV,
                              capture_output=True, text=True, timeout=300)
        lines = proc.stderr.strip().splitlines()
        stats["corruptions"] += 1
        stats["tracebacks"] += "Traceback" in proc.stderr
        stats["clear_errors"] += (proc.returncode == 1 and len(lines) == 1
                                  and lines[0].startswith("lvbd: error: --resume:"))
        stats["best_intact"] += ((run_dir / "best.safetensors").read_bytes() == best
                                 and load_checkpoint(run_dir / "best.safetensors") is not None)
    return stats


def disk_full_train_campaign(corpus: Path, work: Path, steps: int, every: int,
                             rng: random.Random, n: int = 3) -> dict:
    """The file-size limit of a running trainer drops below a checkpoint's size at a random time."""
    stats = {"runs": 0, "write_failures": 0, "clear_errors": 0, "previous_checkpoint_intact": 0,
             "temps_left": 0, "resumes_ok": 0}
    ckpt_size = (work / "reference" / "last.safetensors").stat().st_size
    for i in range(n):
        run_dir = work / f"diskfull{i}"
        proc = subprocess.Popen(train_cmd(corpus, run_dir, steps, every), env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN))
        target = rng.randint(every + 1, steps - every)  # after the first checkpoint
        while proc.poll() is None and (logged_steps(run_dir)[0] or [0])[-1] < target:
            time.sleep(0.005)
        before = checkpoint_step(run_dir / "last.safetensors")
        limit = ckpt_size // 2
        if proc.poll() is None:
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
        proc.wait()
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()
        proc.stderr.close()
        stats["runs"] += 1
        failed = proc.returncode != 0
        stats["write_failures"] += failed
        if failed:
            errors = [line for line in err if line.startswith("lvbd: error:")]
            stats["clear_errors"] += (proc.returncode == 1 and len(errors) == 1
                                      and "cannot write checkpoint" in errors[0]
                                      and not any("Traceback" in line for line in err))
            after = checkpoint_step(run_dir / "last.safetensors")
            stats["previous_checkpoint_intact"] += after is not None and after >= before
            stats["temps_left"] += len(temp_files(run_dir))
        res = finish(corpus, run_dir, steps, every)
        stats["resumes_ok"] += (res.returncode == 0
                                and logged_steps(run_dir)[0] == list(range(1, steps + 1)))
    return stats


def disk_full_separate_campaign(work: Path, checkpoint: Path, rng: random.Random,
                                n: int = 6) -> dict:
    """``lvbd separate`` of 3 files under random file-size limits: all outputs or none."""
    stats = {"runs": 0, "files": 0, "separated": 0, "failed_cleanly": 0, "files_lost": 0,
             "files_corrupt": 0, "temps_left": 0, "tracebacks": 0}
    inputs = []
    for i, seconds in enumerate((0.5, 2.0, 6.0)):
        path = work / "sep_in" / f"in{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(seconds * 16000)) / 16000
        sf.write(path, 0.3 * np.sin(2 * np.pi * 200 * t), 16000)
        inputs.append(path)
    for i in range(n):
        out = work / f"sep_out{i}"
        limit = rng.randint(10_000, 500_000)

        def limit_size(limit=limit):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        proc = subprocess.run([sys.executable, "-m", "lvbd", "separate", "--quiet",
                               *map(str, inputs), "-o", str(out), "--model", str(checkpoint)],
                              env=ENV, capture_output=True, text=True, timeout=300,
                              preexec_fn=limit_size)
        stats["runs"] += 1
        stats["tracebacks"] += "Traceback" in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("lvbd: error:")]
        for src in inputs:
            stats["files"] += 1
            # out/{track}/ or out/{model}/{track}/, whichever layout this lvbd writes
            outputs = sorted(out.rglob(f"{src.stem}/source*.wav")) if out.exists() else []
            failed = any(src.name in line for line in errors)
            if len(outputs) == 2 and not failed:
                stats["separated"] += 1
            elif not outputs and failed:
                stats["failed_cleanly"] += 1
            else:
                stats["files_lost"] += 1  # partial set of outputs, or a silent failure
            for o in outputs:
                try:
                    if sf.info(str(o)).frames != sf.info(str(src)).frames:
                        stats["files_corrupt"] += 1
                except RuntimeError:
                    stats["files_corrupt"] += 1
        stats["temps_left"] += len(temp_files(out))
    return stats


def tiny_checkpoint(path: Path) -> Path:
    from lvbd.checkpoint import save_checkpoint
    from lvbd.config import load_config
    from lvbd.models import build_model

    torch.manual_seed(0)
    cfg = load_config(TINY)
    return save_checkpoint(path, build_model(cfg.model), cfg, step=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=5, help="checkpoint interval (steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/lvbd_faults")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = random.Random(args.seed)
    corpus = make_corpus(work / "corpus")
    t0 = time.monotonic()
    results = {
        "kill -9 during training": kill_campaign(corpus, work, args.trials, args.steps,
                                                 args.every, rng),
        "corrupt last checkpoint": corrupt_campaign(work, rng),
        "disk full while training": disk_full_train_campaign(corpus, work, args.steps,
                                                             args.every, rng),
        "disk full while separating": disk_full_separate_campaign(
            work, tiny_checkpoint(work / "tiny.safetensors"), rng),
    }
    for name, stats in results.items():
        print(f"{name}:")
        for key, value in stats.items():
            print(f"  {key:<32} {value}")
    print(f"total {time.monotonic() - t0:.0f} s (steps={args.steps}, checkpoint every "
          f"{args.every}, seed {args.seed})")


if __name__ == "__main__":
    main()
