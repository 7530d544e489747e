"""Peak memory of ``lvbd separate`` on a 1-minute and a 3-hour file: flat in file length.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_memory.py [--model default|tiny|PATH]
        [--hours 3] [--segment S] [--engine auto|torch|onnxruntime] [--work /tmp/lvbd_memory]

Both files are 8 kHz mono int16 wav written blockwise (the 3-hour one is 173 MB); each is
separated by a fresh ``python -m lvbd`` process, whose own peak RSS (``bench_separate.timed_python``)
is printed beside one float32 copy of the long input, the memory a load-everything
implementation would need at the very least. ``--model default`` (the default) is the shipped
model at its own default segment, on the engine ``lvbd separate`` picks (``--engine``);
``--model tiny`` an untrained
configs/tiny.yaml checkpoint (fast; the figure docs/robustness.md once recorded, with
``--segment 10``). The model, its parameter count and the segment are printed with the table.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))
RATE = 8000

from bench_separate import run_separate  # noqa: E402


def write_long(path: Path, seconds: int) -> None:
    """Two modulated tones plus noise, written 10 s at a time (constant memory)."""
    t = np.arange(10 * RATE) / RATE
    block = (0.3 * np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
             + 0.2 * np.sin(2 * np.pi * 220 * t + 1)).astype(np.float32)
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as handle:
        for start in range(0, seconds * RATE, len(block)):
            n = min(len(block), seconds * RATE - start)
            handle.write(block[:n] + 0.01 * rng.standard_normal(n).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default",
                        help="default (the shipped model), tiny (untrained tiny config) or PATH")
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--segment", type=float, default=None,
                        help="seconds per chunk (default: the model's own default)")
    parser.add_argument("--engine", default="auto", choices=["auto", "torch", "onnxruntime"])
    parser.add_argument("--work", default="/tmp/lvbd_memory")
    args = parser.parse_args()
    from fault_injection import tiny_checkpoint

    from lvbd.checkpoint import load_checkpoint
    from lvbd.separate import pretrained_path

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if args.model == "tiny":
        checkpoint = str(tiny_checkpoint(work / "tiny.safetensors"))
    else:
        checkpoint = args.model  # "default": the engine is lvbd separate's choice
    n_params = sum(t.numel() for t in load_checkpoint(
        pretrained_path() if checkpoint == "default" else Path(checkpoint))[1].values())
    print(f"model {args.model} ({checkpoint}), {n_params:,} parameters, segment "
          f"{args.segment if args.segment is not None else 'default'}, --engine {args.engine}")
    flags = ("--engine", args.engine) + (() if args.segment is None
                                         else ("--segment", str(args.segment)))
    rows = []
    for seconds in (60, int(args.hours * 3600)):
        path = work / f"in_{seconds}s.wav"
        write_long(path, seconds)
        wall, rss = run_separate(checkpoint, path, work / "out", flags=flags)
        # out/{track}/ or out/{model}/{track}/, whichever layout this lvbd writes
        outputs = sorted((work / "out").rglob(f"{path.stem}/source*.wav"))
        assert [o.name for o in outputs] == ["source1.wav", "source2.wav"], outputs
        assert all(sf.info(str(o)).frames == seconds * RATE for o in outputs)
        rows.append((seconds, path.stat().st_size / 1e6, rss, wall))
        shutil.rmtree(work / "out")
        path.unlink()
    print(f"{'input':>10} {'file MB':>8} {'peak RSS MiB':>13} {'wall s':>7} {'RTF':>7}")
    for seconds, size, rss, wall in rows:
        print(f"{seconds / 60:>8.0f} m {size:>8.1f} {rss:>13.1f} {wall:>7.1f} "
              f"{wall / seconds:>7.4f}")
    copy = rows[-1][0] * RATE * 4 / 2 ** 20
    print(f"growth {rows[-1][2] - rows[0][2]:+.1f} MiB for {rows[-1][0] / rows[0][0]:.0f}x the "
          f"length; one float32 copy of the long input: {copy:.0f} MiB (model {args.model}, "
          f"--segment {args.segment if args.segment is not None else 'default'})")


if __name__ == "__main__":
    main()
