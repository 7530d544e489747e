"""Can the model tell a mixture of more than K talkers? Calibrate and measure the warning.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/talker_count.py --model default --items 150 \\
        --false-alarm 0.1 --test-items 100

Scores mixtures with :func:`lvbd.talkers.latent_tail` exactly as ``Separator`` does (the same
segmenting, energy-weighted over segments), then

1. on fixed K- and (K+1)-talker mixtures of 4 s from the *validation* split
   (``DynamicMixDataset`` seed 123), in groups (``--groups``: every engine, and the real voices
   alone, whose statistic runs higher): per group the medians, the AUC of telling K+1 from K
   (0.5 = chance) and the threshold that flags at most ``--false-alarm`` of its K-talker
   mixtures (:func:`lvbd.talkers.threshold_for`); the calibrated threshold is the highest of
   them, so that the bound holds in every group. Store it with
   ``lvbd export CKPT OUT --set model.talker_threshold=T``;
2. on the first ``--test-items`` mixtures of every test set's K- and (K+1)-talker folders: false
   alarms, recall and precision (as many mixtures of each) of the calibrated threshold and of the
   model's stored one. The test sets only measure; the threshold comes from validation.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def file_tail(model, wav: np.ndarray, sample_rate: int, segment: float, overlap: float) -> float:
    """The statistic ``Separator`` computes for ``wav`` (C, L) at ``sample_rate``."""
    import torch

    from lvbd.separate import StreamResult, separate_stream

    result = StreamResult(model.n_sources)
    for _ in separate_stream(model, lambda a, b: wav[:, a:b], wav.shape[-1], sample_rate,
                             wav.shape[0], segment, overlap, torch.device("cpu"), result):
        pass
    return float("nan") if result.latent_tail is None else result.latent_tail


def auc(k_scores: np.ndarray, more_scores: np.ndarray) -> float:
    from scipy.stats import mannwhitneyu

    return mannwhitneyu(more_scores, k_scores).statistic / (len(k_scores) * len(more_scores))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default' or a checkpoint path")
    parser.add_argument("--root", default="data")
    parser.add_argument("--items", type=int, default=150, help="validation mixtures per K")
    parser.add_argument("--false-alarm", type=float, default=0.1,
                        help="share of K-talker validation mixtures the threshold may flag, "
                             "in every group")
    parser.add_argument("--groups", nargs="+", default=["all", "asterisk"],
                        help="validation groups: 'all' (every engine) or an engine name")
    parser.add_argument("--test-items", type=int, default=100,
                        help="mixtures per test folder (0: no test sets)")
    parser.add_argument("--overlap", type=float, default=0.25)
    args = parser.parse_args(argv)

    import torch

    from lvbd import audio
    from lvbd.checkpoint import load_model
    from lvbd.data.datasets import DynamicMixDataset
    from lvbd.separate import pretrained_path
    from lvbd.talkers import detection_rates, threshold_for

    torch.set_num_threads(1)
    path = pretrained_path("default") if args.model == "default" else args.model
    model, cfg, _ = load_model(path)
    K, segment = cfg.model.n_sources, model.segment_seconds
    stored = cfg.model.talker_threshold
    print(f"{args.model}: latent energy beyond K={K}; segment {segment:g} s, overlap "
          f"{args.overlap:g}; stored threshold {stored:.4f}")
    per_group = {}
    with torch.inference_mode():
        for group in args.groups:
            scores = {}
            for k in (K, K + 1):
                data = DynamicMixDataset(args.root, "valid", k, 4.0, cfg.model.sample_rate,
                                         seed=123, length=args.items,
                                         engines=None if group == "all" else [group])
                scores[k] = np.array([file_tail(model, data[i].sum(0, keepdim=True).numpy(),
                                                cfg.model.sample_rate, segment, args.overlap)
                                      for i in range(len(data))])
            per_group[group] = scores
            t = threshold_for(scores[K], args.false_alarm)
            print(f"validation '{group}', {args.items} mixtures of {K} and of {K + 1} talkers "
                  f"(4 s): median {np.median(scores[K]):.4f} vs {np.median(scores[K + 1]):.4f}, "
                  f"AUC {auc(scores[K], scores[K + 1]):.3f}, threshold for <= "
                  f"{args.false_alarm:.0%} false alarms {t:.4f}")
    threshold = max(threshold_for(s[K], args.false_alarm) for s in per_group.values())
    for group, scores in per_group.items():
        r = detection_rates(scores[K], scores[K + 1], threshold)
        print(f"calibrated threshold {threshold:.4f} on '{group}': false alarms "
              f"{r['false_alarm']:.1%}, recall {r['recall']:.1%}")
    if args.test_items <= 0:
        return 0
    thresholds = {"calibrated": threshold, **({"stored": stored} if stored > 0 else {})}
    print(f"\n{'test set':<18} {'n':>4} {'AUC':>6} " + " ".join(
        f"{name + ' FA':>14} {'recall':>7} {'precision':>9}" for name in thresholds))
    pooled = {K: [], K + 1: []}
    root = Path(args.root) / "test"
    with torch.inference_mode():
        for set_dir in sorted(p for p in root.iterdir() if (p / f"{K + 1}spk").is_dir()):
            by_k = {}
            for k in (K, K + 1):
                files = sorted((set_dir / f"{k}spk" / "mix").glob("*.wav"))[:args.test_items]
                by_k[k] = np.array([file_tail(model, *audio.load(f), segment, args.overlap)
                                    for f in files])
                pooled[k].extend(by_k[k])
            _print_row(set_dir.name, by_k, K, thresholds)
    _print_row("all", {k: np.array(v) for k, v in pooled.items()}, K, thresholds)
    return 0


def _print_row(name: str, by_k: dict, K: int, thresholds: dict) -> None:
    from lvbd.talkers import detection_rates

    cells = []
    for t in thresholds.values():
        r = detection_rates(by_k[K], by_k[K + 1], t)
        cells.append(f"{r['false_alarm']:14.1%} {r['recall']:7.1%} {r['precision']:9.1%}")
    print(f"{name:<18} {len(by_k[K]):4d} {auc(by_k[K], by_k[K + 1]):6.3f} " + " ".join(cells))


if __name__ == "__main__":
    raise SystemExit(main())
