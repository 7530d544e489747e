"""Pitch (F0) of the corpus' voices: which training pairs are alike (issue 9).

    .venv/bin/python benchmarks/voice_pitch.py [--split train] [--clips 8] [--root data]

Per real speaker (engine ``asterisk``) and per synthetic engine: the median, 10th and 90th
percentile of F0 over voiced 40 ms frames (10 ms hop) of ``--clips`` random clips of the split.
F0 is the shortest lag (60–400 Hz) whose normalised autocorrelation peak is within 0.05 of the
highest, so that 2 or 3 periods do not win; a frame counts as voiced when that peak is ≥ 0.75
and its RMS ≥ 0.01. A plain estimator, good enough to tell voices in the 100 Hz range from
those near 200 Hz. Reads only the ``train``/``valid`` splits: never a test set.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

ROOT = Path(__file__).resolve().parents[1]
FRAME_S, HOP_S = 0.04, 0.01
F0_RANGE = (60.0, 400.0)
VOICED_CORR, VOICED_RMS = 0.75, 0.01
OCTAVE_TOL = 0.05


def frame_f0(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """F0 in Hz of the voiced frames of mono ``x`` → (n_voiced,)."""
    n, hop = int(FRAME_S * sample_rate), int(HOP_S * sample_rate)
    lo, hi = int(sample_rate / F0_RANGE[1]), int(sample_rate / F0_RANGE[0])
    starts = np.arange(0, len(x) - n - hi, hop)
    if len(starts) == 0:
        return np.zeros(0)
    frames = sliding_window_view(x, n + hi)[starts]      # (F, n + hi)
    head = frames[:, :n]
    lags = np.arange(lo, hi)
    shifted = sliding_window_view(frames, n, axis=1)[:, lo:hi]  # (F, lags, n), a view
    energy = np.cumsum(np.pad(frames ** 2, ((0, 0), (1, 0))), axis=1)  # running Σ x²
    norms = np.sqrt(np.maximum(energy[:, lo + n:hi + n] - energy[:, lo:hi], 0))  # ‖shifted‖
    corr = np.einsum("fn,fln->fl", head, shifted) / (
        np.linalg.norm(head, axis=1)[:, None] * norms + 1e-9)
    # the shortest lag whose peak is within OCTAVE_TOL of the highest: a periodic frame is as
    # correlated at 2, 3… periods, and those sub-octaves must not win
    first = (corr >= corr.max(axis=1, keepdims=True) - OCTAVE_TOL).argmax(axis=1)
    window = np.clip(first[:, None] + np.arange(lo)[None], 0, len(lags) - 1)
    best = window[np.arange(len(first)), np.take_along_axis(corr, window, 1).argmax(axis=1)]
    voiced = (corr[np.arange(len(best)), best] >= VOICED_CORR) & \
        (np.sqrt(np.mean(head ** 2, axis=1)) >= VOICED_RMS)
    return sample_rate / lags[best[voiced]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data")
    parser.add_argument("--split", choices=["train", "valid"], default="train")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from lvbd.audio import load
    from lvbd.data.corpus import read_manifest

    groups: dict[str, list[str]] = defaultdict(list)
    for row in read_manifest(Path(args.root)):
        if row["split"] == args.split:
            groups[row["speaker"] if row["engine"] == "asterisk" else row["engine"]].append(
                row["path"])
    rng = np.random.default_rng(args.seed)
    print(f"{'voices':<28} {'median F0':>9} {'p10':>6} {'p90':>6}  voiced frames  "
          f"({args.clips} {args.split} clips each)")
    for name, paths in sorted(groups.items()):
        f0 = []
        for path in rng.choice(paths, min(args.clips, len(paths)), replace=False):
            wav, rate = load(Path(args.root) / path)
            f0.append(frame_f0(wav.mean(axis=0).astype(np.float64), rate))
        f0 = np.concatenate(f0)
        if len(f0) == 0:
            print(f"{name:<28} {'—':>9}")
            continue
        p10, p50, p90 = np.percentile(f0, [10, 50, 90])
        print(f"{name:<28} {p50:7.1f} Hz {p10:6.1f} {p90:6.1f}  {len(f0):13d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
