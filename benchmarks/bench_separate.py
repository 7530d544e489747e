"""Real-time factor and peak RSS of ``lvbd separate`` on a 1-minute and a 10-minute file.

    .venv/bin/python benchmarks/bench_separate.py [--model default|PATH] [--minutes 1 10]
        [--repeats 3]

Each run is a fresh ``lvbd separate`` process (so peak RSS is its own: ``timed_python``); the peer
is a Conv-TasNet built from the model's own config (``arch = convtasnet``, same encoder/TCN
sizes, random weights: speed and memory only) through the same chunker. Both models' parameter
counts are printed. The two models run interleaved, ``--repeats`` times per length, the order
alternating (A B, B A, ...), so that drift of a shared machine hits both alike; the table gives
the median (and min–max) of the time and the median peak RSS, then the RTF (median time /
audio time) and the RSS ratio longest / shortest file (≈1: memory does not grow with length).
"""
from __future__ import annotations

import argparse
import os
import statistics
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


# Runs first in every measured process: at exit it writes the process's own peak RSS (VmHWM,
# KiB) to the file named by its first argument, then runs the Python command line that follows
# (``-m MODULE ARGS`` or ``-c CODE ARGS``). wait4's ru_maxrss cannot be used alone: Linux keeps
# the pre-exec high-water mark of the forked child, i.e. the parent's RSS (≈230 MiB for a
# benchmark that has imported torch), so every small process read as the parent's size.
PEAK_PRELUDE = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def _peak():
    try:
        with open('/proc/self/status') as f:
            kib = next(line.split()[1] for line in f if line.startswith('VmHWM'))
        with open(out, 'w') as f:
            f.write(kib)
    except (OSError, StopIteration):
        pass
atexit.register(_peak)
mode, target = sys.argv[1], sys.argv[2]
sys.argv = ['-c', *sys.argv[3:]] if mode == '-c' else [target, *sys.argv[3:]]
if mode == '-m':
    runpy.run_module(target, run_name='__main__', alter_sys=True)
else:
    exec(compile(target, '<string>', 'exec'), {'__name__': '__main__'})
"""


def timed_python(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one fresh Python process running ``args`` (``-m lvbd ...`` or
    ``-c CODE ...``) with this checkout's ``src`` on the path; SystemExit if it fails."""
    with tempfile.NamedTemporaryFile(suffix=".peak") as peak:
        cmd = [sys.executable, "-c", PEAK_PRELUDE, peak.name, *args]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
                                stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        took = time.perf_counter() - start
        if status != 0:
            raise SystemExit(f"failed: python {' '.join(args)}")
        text = Path(peak.name).read_text().strip()
    return took, (int(text) if text else usage.ru_maxrss) / 1024.0  # MiB (Linux: KiB)


def run_separate(model: str, path: Path, out: Path,
                 launcher: tuple[str, ...] = ("-m", "lvbd"),
                 flags: tuple[str, ...] = ()) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one ``lvbd separate`` process; ``launcher``: the Python
    arguments that start the command line (``-m lvbd``, or ``-c CODE`` that calls
    ``lvbd.cli.main`` after changing something); ``flags``: more options (``--engine torch``)."""
    return timed_python([*launcher, "separate", str(path), "-o", str(out), "--model", model,
                         "--quiet", "--force", *flags])


def n_parameters(checkpoint: Path) -> int:
    from lvbd.checkpoint import load_checkpoint

    return sum(t.numel() for t in load_checkpoint(checkpoint)[1].values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per model and length")
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
        models = {"lvbd": str(src), "convtasnet": str(peer)}
        for name, path in models.items():
            print(f"{name}: {n_parameters(Path(path)):,} parameters ({path})")
        print(f"{args.repeats} interleaved runs per model and length (order alternating)")
        print(f"{'model':<12} {'minutes':>7} {'median s':>9} {'min-max s':>13} {'RTF':>7} "
              f"{'peak RSS MiB':>13}")
        rss: dict[str, list[float]] = {}
        for minutes in args.minutes:
            path = tmp / f"long_{minutes:g}min.wav"
            write_long_file(path, minutes)
            times: dict[str, list[float]] = {name: [] for name in models}
            peaks: dict[str, list[float]] = {name: [] for name in models}
            for r in range(args.repeats):
                order = list(models) if r % 2 == 0 else list(models)[::-1]
                for name in order:
                    took, peak = run_separate(models[name], path, tmp / "out")
                    times[name].append(took)
                    peaks[name].append(peak)
            for name in models:
                med = statistics.median(times[name])
                peak = statistics.median(peaks[name])
                rss.setdefault(name, []).append(peak)
                print(f"{name:<12} {minutes:>7g} {med:>9.1f} "
                      f"{min(times[name]):>6.1f}-{max(times[name]):<6.1f} "
                      f"{med / (60 * minutes):>7.3f} {peak:>13.0f}")
            path.unlink()
        for name, values in rss.items():
            print(f"{name}: median peak RSS {args.minutes[-1]:g} min / {args.minutes[0]:g} min = "
                  f"{values[-1] / values[0]:.2f}")


if __name__ == "__main__":
    main()
