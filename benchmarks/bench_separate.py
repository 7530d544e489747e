"""Real-time factor and peak RSS of ``lvbd separate`` on a 1-minute and a 10-minute file.

    .venv/bin/python benchmarks/bench_separate.py [--model default|PATH] [--minutes 1 10]

Each run is a fresh ``lvbd separate`` process (so peak RSS is its own, from ``wait4``); the peer
is a Conv-TasNet of similar size (configs/convtasnet.yaml scaled like the model, random weights:
speed and memory only) through the same chunker in the same run. Prints RTF (processing time /
audio time), peak RSS, and the RSS ratio 10 min / 1 min (≈1 means memory does not grow with length).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def write_long_file(path: Path, minutes: float, sample_rate: int = 8000) -> None:
    """Speech-like example audio looped to ``minutes``, written blockwise."""
    wav, rate = sf.read(ROOT / "examples" / "mix.wav", dtype="float32")
    assert rate == sample_rate
    total = int(minutes * 60 * sample_rate)
    with sf.SoundFile(path, "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as f:
        for start in range(0, total, len(wav)):
            f.write(wav[: min(len(wav), total - start)])


def run_separate(model: str, path: Path, out: Path) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "lvbd", "separate", str(path), "-o", str(out), "--model", model,
           "--quiet", "--force"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"lvbd separate failed on {path}")
    return took, usage.ru_maxrss / 1024.0  # MiB (Linux reports KiB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    args = parser.parse_args()
    import torch

    from lvbd.checkpoint import load_checkpoint, save_checkpoint
    from lvbd.models import build_model
    from lvbd.separate import pretrained_path

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = pretrained_path() if args.model == "default" else Path(args.model)
        cfg, _, _ = load_checkpoint(src)
        cfg.model.arch = "convtasnet"
        torch.manual_seed(0)
        peer = save_checkpoint(tmp / "convtasnet.safetensors", build_model(cfg.model), cfg, 0)
        print(f"{'model':<12} {'minutes':>7} {'time s':>8} {'RTF':>7} {'peak RSS MiB':>13}")
        rss: dict[str, list[float]] = {}
        for minutes in args.minutes:
            path = tmp / f"long_{minutes:g}min.wav"
            write_long_file(path, minutes)
            for name, model in (("lvbd", str(src)), ("convtasnet", str(peer))):
                took, peak = run_separate(model, path, tmp / "out")
                rss.setdefault(name, []).append(peak)
                print(f"{name:<12} {minutes:>7g} {took:>8.1f} {took / (60 * minutes):>7.3f} "
                      f"{peak:>13.0f}")
            path.unlink()
        for name, values in rss.items():
            print(f"{name}: peak RSS {args.minutes[-1]:g} min / {args.minutes[0]:g} min = "
                  f"{values[-1] / values[0]:.2f}")


if __name__ == "__main__":
    main()
