"""Validation SI-SDRi of checkpoints on fixed validation sets, side by side (issue 9).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/valid_sets.py CKPT [CKPT ...]
        [--iva-iters 1 2 3] [--pairs] [--fit] [--unheard SPEAKER]

Sets (all from the corpus' ``valid`` split: held-out utterances of training speakers, never a
test set):

- ``valid``: the checkpoint's own training validation set (``data.valid_items`` mixtures of
  ``data.engines``, seed ``train.seed + 10000``: the figure that picked ``best.safetensors``);
- ``valid-all``: 96 mixtures of any two speakers of every engine (seed 7);
- ``valid-real``: 96 mixtures of two real Asterisk speakers (seed 7);
- ``valid-all ±``, ``valid-real ±``: the same mixtures with each source's polarity flipped with
  probability 0.5 and, with probability 0.5, passed through a random all-pass (the
  ``polarity_prob``/``phase_prob`` augmentation): a recording's polarity and phase response
  are arbitrary, so a model that separates by them fails on real recordings.

``--iva-iters`` scores each checkpoint with ``model.iva_iters_test`` set to each value (LVBD
only). ``--pairs`` also prints the mean SI-SDRi per speaker pair and per kind of pair (real +
real, half of the sources real, synthetic + synthetic) on 60 mixtures of each kind. ``--fit``
adds ``fit:train-real ±`` and ``fit:train-synthetic ±``: 64 mixtures (± as above) of *training*
utterances, real + real and synthetic + synthetic, beside ``fit:valid-real ±`` and
``fit:valid-synthetic ±`` built the same way from the valid split: a pair kind that scores low on its training
utterances too is underfitted, not a generalisation gap. ``--unheard SPEAKER`` (e.g.
``asterisk:menardi``) adds ``unheard ±``: 96 ± real + real validation mixtures that include that
speaker, for checkpoints trained with ``data.exclude_speakers=[SPEAKER]``: the only validation of
a real voice the model never heard (the other sets hold heard speakers only).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = "asterisk"
SYNTHETIC = ["espeak-ng", "mbrola", "festival", "flite"]


def pair_scores(model, root: str, n_items: int = 60) -> None:
    """Print SI-SDRi by kind of pair and by speaker pair (the most frequent pairs)."""
    import numpy as np
    import torch

    from lvbd.data.datasets import DynamicMixDataset
    from lvbd.train import si_sdri

    kinds = {"real + real": ([REAL], None), "half real": (None, {REAL: 0.5}),
             "synthetic + synthetic": (SYNTHETIC, None)}
    for kind, (engines, shares) in kinds.items():
        data = DynamicMixDataset(root, "valid", 2, 4.0, model.sample_rate, 7, n_items, engines,
                                 engine_shares=shares)
        by_pair: dict[tuple[str, ...], list[float]] = defaultdict(list)
        with torch.inference_mode():
            for i in range(n_items):
                refs = data[i][None]  # (1, K, L)
                score = float(si_sdri(model(refs.sum(1)).estimates, refs)[0])
                by_pair[tuple(sorted(data.plan(i).speakers))].append(score)
        every = [v for vs in by_pair.values() for v in vs]
        print(f"  {kind:<22} {np.mean(every):6.2f} dB ({len(every)} mixtures)")
        if kind != "synthetic + synthetic":  # "half real" draws real + real pairs too
            for pair, vs in sorted(by_pair.items(), key=lambda kv: -len(kv[1]))[:6]:
                print(f"      {' + '.join(pair):<48} {np.mean(vs):6.2f} dB ({len(vs)})")


def unheard_items(root: str, speaker: str, n_sources: int, sample_rate: int,
                  n_items: int = 96) -> list:
    """``n_items`` ± real + real validation mixtures (seed 7) that include ``speaker``."""
    from lvbd.data.augment import polarity_phase
    from lvbd.data.datasets import DynamicMixDataset

    data = DynamicMixDataset(root, "valid", n_sources, 4.0, sample_rate, 7, 20 * n_items, [REAL],
                             augment=polarity_phase())
    chosen = [i for i in range(len(data)) if speaker in data.plan(i).speakers][:n_items]
    if len(chosen) < n_items:
        raise SystemExit(f"only {len(chosen)} real validation mixtures include {speaker}")
    return [data[i] for i in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--iva-iters", type=int, nargs="+", default=None)
    parser.add_argument("--pairs", action="store_true")
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--unheard", metavar="SPEAKER", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from lvbd.checkpoint import load_model
    from lvbd.data.augment import polarity_phase
    from lvbd.data.datasets import FixedValidSet
    from lvbd.train import validate

    torch.set_num_threads(args.threads)
    fixed: dict[str, list] = {}
    for path in args.checkpoints:
        model, cfg, _ = load_model(path)
        d = cfg.data
        if not fixed:
            fixed = {"valid": FixedValidSet(d.root, d.valid_items, cfg.model.n_sources,
                                            d.valid_segment_seconds, cfg.model.sample_rate,
                                            cfg.train.seed + 10_000, d.engines).items,
                     "valid-all": FixedValidSet(d.root, 96, cfg.model.n_sources, 4.0,
                                                cfg.model.sample_rate, 7, None).items,
                     "valid-real": FixedValidSet(d.root, 96, cfg.model.n_sources, 4.0,
                                                 cfg.model.sample_rate, 7, [REAL]).items}
            for name, engines in (("valid-all ±", None), ("valid-real ±", [REAL])):
                fixed[name] = FixedValidSet(d.root, 96, cfg.model.n_sources, 4.0,
                                            cfg.model.sample_rate, 7, engines,
                                            augment=polarity_phase()).items
            for split in ("train", "valid") if args.fit else ():
                for kind, engines in (("real", [REAL]), ("synthetic", SYNTHETIC)):
                    fixed[f"fit:{split}-{kind} ±"] = FixedValidSet(
                        d.root, 64, cfg.model.n_sources, 4.0, cfg.model.sample_rate, 7, engines,
                        split=split, augment=polarity_phase()).items
            if args.unheard:
                fixed["unheard ±"] = unheard_items(d.root, args.unheard, cfg.model.n_sources,
                                                   cfg.model.sample_rate)
        for iters in args.iva_iters or [None]:
            label = path if iters is None else f"{path} iva_iters_test={iters}"
            if iters is not None:
                model.cfg.iva_iters_test = iters
            scores = {name: validate(model, items, 8, torch.device("cpu"))
                      for name, items in fixed.items()}
            print(f"{label}: " + ", ".join(f"{n} {v:.2f}" for n, v in scores.items()), flush=True)
        if args.pairs:
            pair_scores(model.eval(), cfg.data.root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
