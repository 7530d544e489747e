"""Torch datasets over the corpus: dynamic mixing for training, fixed validation mixtures, and
the Libri2Mix-style test folders.

``DynamicMixDataset`` and ``FixedValidSet`` return stems ``(K, L)`` already scaled by
``mixing.mix_stems``; the mixture is ``stems.sum(0)``. Item ``i`` is drawn from a numpy
Generator seeded by ``(seed, i)``: the same seed and index give the same stems in any worker.
``DynamicMixDataset(augment=AugmentConfig(...))`` augments the training items
(``lvbd.data.augment``): the stems are then the augmented source images (reverberant, noisy…)
and still add up to the mixture.
"""
from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from ..audio import AudioError, load, resample
from ..config import AugmentConfig
from ..errors import LvbdError
from .augment import Augmenter, random_speed, speed_perturb
from .corpus import read_manifest
from .mixing import crop_or_pad, mix_stems, random_gains_db, random_offset

LEVEL_RANGE_DB = (-35.0, -15.0)
SPEAKER_SUBSET_SEED = 0
SAME_SPEAKER_STREAM = 2000          # seeds (seed, index, stream) of the same-speaker draws
SAME_SPEAKER_SPEED = (1.1, 1.25)    # the other copies of a same-speaker item: this much faster or slower


def speaker_subset(speakers, fraction: float) -> list[str]:
    """The training speakers kept by ``data.speaker_fraction`` → sorted list.

    The first ``round(fraction · n)`` speakers of one fixed shuffle (seeded by
    ``SPEAKER_SUBSET_SEED``, not by ``train.seed``) of the sorted names: deterministic, the same
    for every model and seed at a fraction, and nested (a smaller fraction keeps a subset of a
    larger one's speakers).
    """
    if not 0.0 < fraction <= 1.0:
        raise LvbdError(f"data.speaker_fraction must be in (0, 1], got {fraction}")
    speakers = sorted(speakers)
    if fraction == 1.0:
        return speakers
    order = np.random.default_rng(SPEAKER_SUBSET_SEED).permutation(len(speakers))
    return sorted(speakers[i] for i in order[:max(1, round(fraction * len(speakers)))])


def speaker_weights(counts: np.ndarray, engines: list[str], shares: dict[str, float] | None
                    ) -> np.ndarray:
    """Probability of drawing each speaker: ``counts`` (utterances per speaker) normalised, or
    with ``shares`` (engine -> share of the sources, ``data.engine_shares``) the speakers of a named
    engine split its share by utterance count and the other speakers split the rest likewise."""
    if not shares:
        return counts / counts.sum()
    engines_arr = np.asarray(engines)
    present = set(engines)
    for engine, share in shares.items():
        if engine not in present:
            raise LvbdError(f"data.engine_shares names '{engine}', which has no speaker here "
                            f"(engines: {', '.join(sorted(present))})")
        if not 0.0 <= share <= 1.0:
            raise LvbdError(f"data.engine_shares['{engine}'] must be in [0, 1], got {share}")
    rest = 1.0 - sum(shares.values())
    if rest < -1e-9:
        raise LvbdError(f"data.engine_shares add up to {1 - rest:g} > 1")
    weights = np.zeros_like(counts)
    unnamed = ~np.isin(engines_arr, list(shares))
    for engine, share in shares.items():
        mask = engines_arr == engine
        weights[mask] = share * counts[mask] / counts[mask].sum()
    if unnamed.any():
        weights[unnamed] = max(rest, 0.0) * counts[unnamed] / counts[unnamed].sum()
    if weights.sum() <= 0:
        raise LvbdError("data.engine_shares leave no speaker to draw")
    return weights / weights.sum()


@dataclass(frozen=True)
class MixPlan:
    """What item ``index`` of a :class:`DynamicMixDataset` is made of."""

    speakers: tuple[str, ...]
    paths: tuple[str, ...]
    offsets: tuple[int, ...]
    gains_db: tuple[float, ...]
    level_db: float
    speeds: tuple[Fraction, ...] = ()  # per source, before any augmentation; () = all 1


class DynamicMixDataset(Dataset):
    """K utterances of K distinct speakers, cropped/padded to ``segment_seconds``, relative
    gains within ±5 dB and a random overall level (−35…−15 dBFS) → stems ``(K, L)`` float32.

    Rows come from ``root/manifest.csv`` with ``split`` and ``engine`` in ``engines``
    (``None``: every engine). Speakers are drawn in proportion to their utterance counts
    (uniform over utterances, without repeating a speaker), or by ``engine_shares``
    (:func:`speaker_weights`). ``speaker_fraction`` < 1 keeps only the speakers of
    :func:`speaker_subset`.

    ``exclude_speakers``: speakers left out (e.g. a real voice kept out of training to validate
    on a voice the model never heard, ``benchmarks/valid_sets.py --unheard``); each must have
    utterances here.

    ``same_speaker_prob``: the share of items whose K sources are K different utterances of
    one speaker (drawn as above; one with fewer than K clips falls back to K speakers), every
    source after the first played 1.1–1.25 times faster or slower (pitch and formants move
    with it, :func:`~lvbd.data.augment.speed_perturb`): two voices of one sex, one accent and
    one recording chain, as real pairs of the same sex are, which the few real training
    speakers rarely give. Drawn from a generator of its own, so 0 gives the items of a dataset
    without it.

    ``augment``: an :class:`AugmentConfig` (``None`` or all probabilities 0: no augmentation,
    items identical to the unaugmented ones). Its draws come from generators seeded by
    ``(seed, index, stream)``, apart from :meth:`plan`'s, so augmented items keep the same
    speakers, clips and offsets. A RIR bank (``reverb_prob > 0``) is read from, or built and
    cached under, ``root/rirs/`` unless ``augment.rir_bank`` names a file.
    """

    def __init__(self, root: str | Path, split: str = "train", n_sources: int = 2,
                 segment_seconds: float = 4.0, sample_rate: int = 8000, seed: int = 0,
                 length: int = 10000, engines: list[str] | tuple[str, ...] | None = ("espeak-ng",),
                 augment: AugmentConfig | None = None, speaker_fraction: float = 1.0,
                 engine_shares: dict[str, float] | None = None, same_speaker_prob: float = 0.0,
                 exclude_speakers: list[str] | tuple[str, ...] = ()):
        if not 0 <= same_speaker_prob <= 1:
            raise LvbdError(f"data.same_speaker_prob must be in [0, 1], got {same_speaker_prob}")
        if n_sources < 1 or segment_seconds <= 0 or length < 0 or sample_rate <= 0:
            raise ValueError(f"need n_sources >= 1, segment_seconds > 0, length >= 0 and "
                             f"sample_rate > 0; got {n_sources}, {segment_seconds}, {length}, "
                             f"{sample_rate}")
        self.root = Path(root)
        self.split, self.n_sources, self.sample_rate = split, n_sources, sample_rate
        self.segment = round(segment_seconds * sample_rate)
        self.seed, self.length = seed, length
        self.same_speaker_prob = same_speaker_prob
        self.engines = None if engines is None else tuple(engines)
        by_speaker: dict[str, list[tuple[str, int]]] = defaultdict(list)
        engine_of: dict[str, str] = {}
        for row in read_manifest(self.root):
            if row["split"] != split or (self.engines is not None
                                         and row["engine"] not in self.engines):
                continue
            by_speaker[row["speaker"]].append((row["path"],
                                               round(row["duration"] * sample_rate)))
            engine_of[row["speaker"]] = row["engine"]
        for speaker in exclude_speakers:
            if by_speaker.pop(speaker, None) is None:
                raise LvbdError(f"data.exclude_speakers names '{speaker}', which has no "
                                f"utterance in split '{split}' with engines {self.engines}")
        self.speakers = speaker_subset(by_speaker, speaker_fraction)
        if len(self.speakers) < n_sources:
            kept = f" (speaker_fraction {speaker_fraction} keeps {len(self.speakers)})" \
                if speaker_fraction < 1 else ""
            raise LvbdError(f"{self.root}: split '{split}' with engines {self.engines} has "
                            f"{len(by_speaker)} speaker(s){kept}; {n_sources} sources need more")
        self.clips = [sorted(by_speaker[s]) for s in self.speakers]
        counts = np.array([len(c) for c in self.clips], dtype=np.float64)
        shares = {e: v for e, v in (engine_shares or {}).items()  # engines left out: no share
                  if self.engines is None or e in self.engines}
        self.weights = speaker_weights(counts, [engine_of[s] for s in self.speakers], shares)
        self.augment = None
        if augment is not None:
            augmenter = Augmenter(augment, sample_rate, self.root)
            self.augment = augmenter if augmenter.active else None

    def __len__(self) -> int:
        return self.length

    def plan(self, index: int) -> MixPlan:
        """The speakers, clips, offsets, gains and speeds of item ``index`` (no audio read)."""
        K = self.n_sources
        rng = np.random.default_rng([self.seed, index])
        chosen = rng.choice(len(self.speakers), K, replace=False, p=self.weights)
        picks = []  # (clip, offset) per source
        for s in chosen:
            c = int(rng.integers(len(self.clips[s])))
            picks.append((c, random_offset(rng, self.clips[s][c][1], self.segment)))
        gains = random_gains_db(rng, K)
        level = float(rng.uniform(*LEVEL_RANGE_DB))
        speeds = ()
        if self.same_speaker_prob > 0:  # its own generator: the draws above stay as they were
            same = np.random.default_rng([self.seed, index, SAME_SPEAKER_STREAM])
            s = chosen[0]
            if same.random() < self.same_speaker_prob and len(self.clips[s]) >= K:
                chosen = np.full(K, s)
                picks = [(int(c), random_offset(same, self.clips[s][c][1], self.segment))
                         for c in same.choice(len(self.clips[s]), K, replace=False)]
                faster = (random_speed(same, *SAME_SPEAKER_SPEED) for _ in range(K - 1))
                speeds = (Fraction(1),) + tuple(f if same.random() < 0.5 else 1 / f
                                                for f in faster)
        return MixPlan(tuple(self.speakers[s] for s in chosen),
                       tuple(self.clips[s][c][0] for s, (c, _) in zip(chosen, picks)),
                       tuple(o for _, o in picks), tuple(float(g) for g in gains), level, speeds)

    def _read(self, path: str, offset: int, length: int | None = None) -> np.ndarray:
        """``length`` (default: the segment) samples of ``path`` from ``offset``, mono."""
        length = self.segment if length is None else length
        full = self.root / path
        try:
            info = sf.info(str(full))
        except (sf.LibsndfileError, RuntimeError):
            raise AudioError(f"cannot read audio {full}") from None
        if info.samplerate == self.sample_rate and info.frames >= length:
            offset = min(offset, info.frames - length)
            wav, _ = load(full, start=offset, frames=length)
            return wav.mean(axis=0)
        wav, rate = load(full)
        wav = resample(wav.mean(axis=0), rate, self.sample_rate)
        return crop_or_pad(wav, length, offset)

    def _source(self, path: str, offset: int, factor: Fraction) -> np.ndarray:
        """One source: the segment of ``path`` from ``offset`` played ``factor`` times faster
        (read long enough that a sped-up clip still fills the segment)."""
        length = self.segment if factor == 1 else math.ceil(self.segment * factor) + 1
        return speed_perturb(self._read(path, offset, length), factor)[:self.segment]

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        plan, aug, ones = self.plan(index), self.augment, (Fraction(1),) * self.n_sources
        rngs = None if aug is None else aug.generators(self.seed, index)
        factors = ones if aug is None else aug.speed_factors(rngs, self.n_sources)
        stems = np.stack([self._source(p, o, f * g) for p, o, f, g
                          in zip(plan.paths, plan.offsets, plan.speeds or ones, factors)])
        if aug is None:
            stems, _ = mix_stems(stems, np.asarray(plan.gains_db), plan.level_db)  # (K, L)
            return torch.from_numpy(stems)
        stems = aug.sources(rngs, stems)  # (K, L)
        gains_db, level_db = aug.levels(rngs, np.asarray(plan.gains_db), plan.level_db)
        stems, _ = mix_stems(stems, gains_db, level_db)
        return torch.from_numpy(aug.channel(rngs, stems))  # (K, L)


class FixedValidSet(Dataset):
    """``n_items`` fixed mixtures (stems ``(K, L)``) from the ``valid`` split (or another one,
    e.g. fixed training mixtures), rendered once and cached in memory; deterministic given
    ``seed`` (and ``augment``, seeded the same way)."""

    def __init__(self, root: str | Path, n_items: int = 64, n_sources: int = 2,
                 segment_seconds: float = 4.0, sample_rate: int = 8000, seed: int = 0,
                 engines: list[str] | tuple[str, ...] | None = ("espeak-ng",),
                 split: str = "valid", speaker_fraction: float = 1.0,
                 augment: AugmentConfig | None = None,
                 exclude_speakers: list[str] | tuple[str, ...] = ()):
        source = DynamicMixDataset(root, split, n_sources, segment_seconds, sample_rate,
                                   seed, n_items, engines, augment=augment,
                                   speaker_fraction=speaker_fraction,
                                   exclude_speakers=exclude_speakers)
        self.items = [source[i] for i in range(n_items)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.items[index]


class MixtureFolderDataset(Dataset):
    """A Libri2Mix/WHAM!-style folder (``mix/``, ``s1/``… matched by file name, ``metadata.csv``
    optional; :mod:`lvbd.data.mixfolder`) → items ``(mixture (L,), stems (K, L), name)``."""

    def __init__(self, root: str | Path, sample_rate: int | None = None):
        from .mixfolder import read_set

        test_set = read_set(root)
        self.root, self.n_sources, self.items = test_set.root, test_set.n_sources, test_set.items
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, path: Path) -> np.ndarray:
        wav, rate = load(path)
        wav = wav.mean(axis=0)
        if self.sample_rate is not None and rate != self.sample_rate:
            wav = resample(wav, rate, self.sample_rate)
        return wav

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        name, mixture_path, source_paths = self.items[index]
        mixture = self._load(mixture_path)
        stems = np.stack([self._load(p) for p in source_paths])  # (K, L)
        if stems.shape[1] != mixture.shape[0]:
            raise LvbdError(f"{name}: sources and mixture differ in length")
        return torch.from_numpy(mixture), torch.from_numpy(stems), name
