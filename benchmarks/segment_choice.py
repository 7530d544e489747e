"""Inference segment, overlap and context of a model, chosen on validation: quality against compute.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/segment_choice.py [--model default|PATH]
        [--data data] [--split valid] [--seconds 60] [--mixtures 8]
        [--settings 4:0.25 6:0.1667 8:0.125 8:0.25]     # SEGMENT:OVERLAP[:CONTEXT]

Long mixtures (``--seconds`` each, ``--mixtures`` of them) of K distinct speakers are built from
the ``--split`` clips of the corpus manifest (``lvbd.longform.mixtures_from_speakers``: each
speaker's clips trimmed and concatenated; the validation split by default, so a choice made
here is never a choice on a test set). Each is separated by ``Separator.separate`` (the
chunked engine that ``lvbd separate`` runs) once per ``SEGMENT:OVERLAP`` setting and scored
with ``lvbd.longform.score_long``: SI-SDRi of the whole file under one assignment (a swap
costs as much as a wrong separation) and the swap rate over 2 s windows (all windows where both
talk, and only those whose assignment is decided by ``DECIDED_DB``). Printed per setting: mean
SI-SDRi with its standard error, the mean difference to the first setting with a paired
standard error, both swap rates, the model time (in process, ``--threads``, settings
interleaved per mixture) and the share of input seconds the model runs on ((context +
segment) / hop). A ``CONTEXT`` (seconds of past input shown before each segment) is how the
low-latency streaming setting is chosen: short segments, no overlap, some context.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def split_speakers(data: Path, split: str) -> dict[str, list[Path]]:
    """{speaker: clip paths} of one split of ``data/manifest.csv``."""
    from lvbd.data.corpus import read_manifest

    groups: dict[str, list[Path]] = defaultdict(list)
    for row in read_manifest(data):
        if row["split"] == split:
            groups[row["speaker"]].append(data / row["path"])
    return {s: sorted(v) for s, v in sorted(groups.items())}


def parse_setting(text: str) -> tuple[float, float, float]:
    segment, _, rest = text.partition(":")
    overlap, _, context = rest.partition(":")
    return float(segment), float(overlap or 0.25), float(context or 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="default (the shipped model) or a checkpoint")
    parser.add_argument("--data", default="data")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--mixtures", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--settings", nargs="+", default=["4:0.25", "6:0.1667", "8:0.125", "8:0.25"],
                        help="SEGMENT_SECONDS:OVERLAP_FRACTION[:CONTEXT_SECONDS], the first is "
                             "the reference")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from lvbd.longform import mixtures_from_speakers, score_long
    from lvbd.separate import Separator

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    settings = [parse_setting(s) for s in args.settings]
    separator = Separator.load(args.model, device="cpu")
    groups = split_speakers(Path(args.data), args.split)
    mixtures = mixtures_from_speakers(groups, separator.n_sources, args.seconds, args.mixtures,
                                      args.seed, f"{args.data} split {args.split}")
    print(f"model {args.model}, {len(mixtures)} mixtures of {args.seconds:g} s from the "
          f"{args.split} split ({len(groups)} speakers), {args.threads} thread(s)")
    scores = np.zeros((len(settings), len(mixtures)))
    swaps = np.zeros((len(settings), 4))
    seconds = np.zeros(len(settings))
    for n, mix in enumerate(mixtures):
        for i, (segment, overlap, context) in enumerate(settings):
            separator.segment, separator.overlap, separator.context = segment, overlap, context
            start = time.perf_counter()
            est = separator.separate(mix.mixture.astype(np.float32), mix.sample_rate)[:, 0].numpy()
            seconds[i] += time.perf_counter() - start
            score = score_long(mix.mixture, mix.references, est.astype(np.float64), mix.sample_rate, 2.0)
            scores[i, n] = score["si_sdri"]
            swaps[i] += (score["swaps"], score["boundaries"], score["decided_swaps"],
                         score["decided_boundaries"])
    total = args.seconds * len(mixtures)
    print(f"{'segment:overlap:context':>24} {'SI-SDRi dB':>14} {'vs first':>14} {'swap rate':>10} "
          f"{'decided':>8} {'model RTF':>10} {'runs on':>8}")
    for i, (segment, overlap, context) in enumerate(settings):
        diff = scores[i] - scores[0]
        sem = scores[i].std(ddof=1) / np.sqrt(len(mixtures)) if len(mixtures) > 1 else float("nan")
        dsem = diff.std(ddof=1) / np.sqrt(len(mixtures)) if len(mixtures) > 1 else float("nan")
        hop = segment * (1 - overlap)
        print(f"{segment:>9g}:{overlap:<6.4g}:{context:<7g} {scores[i].mean():>7.2f} ± {sem:<4.2f} "
              f"{diff.mean():>+7.2f} ± {dsem:<4.2f} {swaps[i, 0] / max(swaps[i, 1], 1):>10.3f} "
              f"{swaps[i, 2] / max(swaps[i, 3], 1):>8.3f} "
              f"{seconds[i] / total:>10.4f} {(segment + context) / hop:>7.2f}x")


if __name__ == "__main__":
    main()
