"""Long-form separation quality (issues 13 and 14): does source k stay on output k over a long file?

:func:`long_mixtures` builds K-speaker mixtures of ``seconds`` (≥ 30 s by default) from one test
set (:func:`mixtures_from_speakers` from any {speaker: clips}, e.g. the validation split): for
each of K speakers, that speaker's stems in the set (the ``source_k_speaker`` columns of
its ``metadata.csv``; without them, source column k counts as one speaker), in a seeded order,
each trimmed of its leading and trailing silence, concatenated (cycled when the speaker has too
little) and cut to length; mixed by :func:`lvbd.data.mixing.mix_stems` (relative gains within
±5 dB, −25 dBFS). Mixture ``n`` comes from a Generator seeded by ``(seed, n)``.

:func:`separate_modes` separates one mixture four ways with a :class:`lvbd.separate.Separator`:

- ``whole``: the whole file as one segment (offline, the reference);
- ``stream``: :meth:`Separator.stream` with ``chunk``-second segments and ``overlap`` (the model's
  memory, plus the engine's overlap-correlation reordering that also serves memory-less models);
- ``memory``: back-to-back chunks, the model's memory state carried, nothing else (the memory
  alone; for a model without memory it equals ``independent``);
- ``independent``: back-to-back chunks, each separated alone.

:func:`score_long` scores an output: per ``chunk`` window the best (Hungarian, SI-SDR) assignment
of outputs to references, **undefined** where a reference is more than ``PAUSE_DB`` below the
loudest (a pause: any order fits); the **swap rate** is the fraction of consecutive defined
windows whose assignment differs from the previous defined window's; the **SI-SDRi** is that of
the whole output under one assignment for the whole file, so a swap costs as much as a wrong
separation.
"""
from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import audio
from .data.metadata import METADATA, read_metadata
from .data.mixfolder import read_set
from .data.mixing import mix_stems, random_gains_db
from .data.voices import espeak_variant
from .errors import LvbdError
from .metrics import best_permutation, compute_metrics, pairwise_si_sdr

log = logging.getLogger(__name__)

MODES = ("whole", "stream", "memory", "independent")
PAUSE_DB = -20.0       # a reference this far below the loudest one in a window: the window is undefined
DECIDED_DB = 3.0       # a window's assignment counts as decided when it beats every other by this much
TRIM_RELATIVE = 0.01   # leading/trailing samples below 1 % of a stem's peak are cut
LEVEL_DB = -25.0


@dataclass
class LongMixture:
    name: str
    mixture: np.ndarray          # (L,) float64
    references: np.ndarray       # (K, L) float64, adding up to the mixture
    sample_rate: int
    speakers: tuple[str, ...]


def _speaker_stems(set_dir: Path) -> tuple[dict[str, list[Path]], int]:
    """{speaker: stem paths in set order}, K."""
    test_set = read_set(set_dir)
    K = test_set.n_sources
    meta = Path(set_dir) / METADATA
    columns, rows = read_metadata(meta) if meta.is_file() else ([], [])
    speaker_of = ({row["mixture_ID"]: row for row in rows}
                  if all(f"source_{k + 1}_speaker" in columns for k in range(K)) else None)
    groups: dict[str, list[Path]] = defaultdict(list)
    for name, _, sources in test_set.items:
        for k, path in enumerate(sources):
            key = speaker_of[name][f"source_{k + 1}_speaker"] if speaker_of else f"s{k + 1}"
            groups[key].append(path)
    return dict(groups), K


def _trimmed(path: Path, sample_rate: int | None) -> tuple[np.ndarray, int]:
    wav, rate = audio.load(path)
    wav = wav.mean(axis=0).astype(np.float64)
    if sample_rate is not None and rate != sample_rate:
        wav, rate = audio.resample(wav, rate, sample_rate), sample_rate
    loud = np.flatnonzero(np.abs(wav) > TRIM_RELATIVE * np.abs(wav).max(initial=0.0))
    return (wav[loud[0]:loud[-1] + 1] if loud.size else wav[:0]), rate


def long_mixtures(set_dir: str | Path, seconds: float = 30.0, n_mixtures: int = 4,
                  seed: int = 0) -> list[LongMixture]:
    """``n_mixtures`` K-speaker mixtures of ``seconds`` built from the stems of one test set."""
    groups, K = _speaker_stems(Path(set_dir))
    return mixtures_from_speakers(groups, K, seconds, n_mixtures, seed, str(set_dir))


def mixtures_from_speakers(groups: dict[str, list[Path]], n_sources: int, seconds: float = 30.0,
                           n_mixtures: int = 4, seed: int = 0, where: str = "speakers",
                           similar: bool = False) -> list[LongMixture]:
    """``n_mixtures`` mixtures of ``n_sources`` distinct speakers of ``groups`` ({speaker: audio
    paths}), each speaker's clips trimmed and concatenated in a seeded order to ``seconds``.

    ``similar``: the speakers of each mixture share one espeak-ng voice variant
    (:func:`lvbd.data.voices.espeak_variant`; a variant drawn uniformly among those with enough
    speakers): near-identical voices, the pairs this model separates worst."""
    if seconds <= 0 or n_mixtures < 1:
        raise LvbdError(f"need seconds > 0 and n_mixtures >= 1, got {seconds} and {n_mixtures}")
    K, speakers = n_sources, sorted(groups)
    if len(speakers) < K:
        raise LvbdError(f"{where}: {len(speakers)} speaker(s), a {K}-speaker mixture needs {K}")
    pools = _variant_pools(speakers, K, where) if similar else []
    mixtures, sample_rate = [], None
    for n in range(n_mixtures):
        rng = np.random.default_rng([seed, n])
        pool = pools[int(rng.integers(len(pools)))] if similar else speakers
        chosen = [pool[i] for i in rng.choice(len(pool), K, replace=False)]
        stems, length = [], None
        for speaker in chosen:
            order = [groups[speaker][i] for i in rng.permutation(len(groups[speaker]))]
            parts, total, cycles = [], 0, 0
            while length is None or total < length:
                for path in order:
                    wav, sample_rate = _trimmed(path, sample_rate)
                    length = length or int(round(seconds * sample_rate))
                    parts.append(wav)
                    total += wav.size
                    if total >= length:
                        break
                cycles += 1
                if total == 0:
                    raise LvbdError(f"{where}: speaker {speaker} has only silent stems")
            if cycles > 1:
                log.debug("%s: speaker %s repeated (%d passes over its stems)", where, speaker,
                          cycles)
            stems.append(np.concatenate(parts)[:length])
        stems, mixture = mix_stems(np.stack(stems), random_gains_db(rng, K), LEVEL_DB)
        mixtures.append(LongMixture(f"long{n:03d}", mixture.astype(np.float64),
                                    stems.astype(np.float64), sample_rate, tuple(chosen)))
    return mixtures


def _variant_pools(speakers: list[str], K: int, where: str) -> list[list[str]]:
    """The speakers of each espeak-ng voice variant that has at least ``K``, by variant name."""
    by_variant: dict[str, list[str]] = defaultdict(list)
    for speaker in speakers:
        variant = espeak_variant(speaker)
        if variant is not None:
            by_variant[variant].append(speaker)
    pools = [v for _, v in sorted(by_variant.items()) if len(v) >= K]
    if not pools:
        raise LvbdError(f"{where}: no espeak-ng voice variant has {K} speakers")
    return pools


def _chunked(separator, mixture: np.ndarray, sample_rate: int, size: int,
             carry: bool) -> np.ndarray:
    """Back-to-back segments of ``size`` samples, with or without the memory state carried."""
    from .separate import Segment, apply_model

    x = mixture[None].astype(np.float32)  # (1, L)
    outputs, state = [], None
    for a in range(0, x.shape[-1], size):
        b = min(x.shape[-1], a + size)
        out = apply_model(separator.model, x[:, a:b], sample_rate, state, separator.device,
                          Segment(0, b - a, 0, b - a, b - a))
        outputs.append(out.estimates[:, 0])  # (K, b - a)
        state = out.state if carry else None
    return np.concatenate(outputs, axis=-1).astype(np.float64)


def separate_modes(separator, mixture: np.ndarray, sample_rate: int, chunk: float = 2.0,
                   overlap: float = 0.25, modes=MODES, context: float = 0.0
                   ) -> dict[str, np.ndarray]:
    """{mode: estimates (K, L)} of ``separator`` (a :class:`lvbd.separate.Separator`) on
    ``mixture`` (L,); see the module docstring for the modes (``context``: seconds of past input
    the stream shows the model before each segment)."""
    unknown = set(modes) - set(MODES)
    if unknown:
        raise LvbdError(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    size = max(1, int(round(chunk * sample_rate)))
    out = {}
    for mode in modes:
        if mode == "whole":
            out[mode] = _chunked(separator, mixture, sample_rate, mixture.shape[-1], carry=False)
        elif mode == "stream":
            stream = separator.stream(sample_rate=sample_rate, channels=1, segment=chunk,
                                      overlap=overlap, context=context)
            head = stream.process(mixture[None].astype(np.float32)).numpy()
            est = np.concatenate([head, stream.flush().numpy()], axis=-1)  # (K, 1, L + latency)
            out[mode] = est[:, 0, stream.latency:].astype(np.float64)
        else:
            out[mode] = _chunked(separator, mixture, sample_rate, size, carry=mode == "memory")
    return out


def chunk_permutations(estimates: np.ndarray, references: np.ndarray,
                       size: int, margin_db: float = 0.0) -> list[tuple[int, ...] | None]:
    """Per window of ``size`` samples: the assignment (``perm[i]`` = output of reference i), or
    None where a reference pauses (more than ``PAUSE_DB`` below the loudest) or where the best
    assignment's mean SI-SDR is less than ``margin_db`` above every other assignment's (the
    window does not say which output holds which source)."""
    return _decided(_window_assignments(estimates, references, size), margin_db)


def _decided(windows: list, margin_db: float) -> list[tuple[int, ...] | None]:
    """The assignments of :func:`_window_assignments` that lead by at least ``margin_db``."""
    return [None if w is None or (margin_db > 0 and w[1] < margin_db) else w[0] for w in windows]


def _window_assignments(estimates: np.ndarray, references: np.ndarray, size: int
                        ) -> list[tuple[tuple[int, ...], float] | None]:
    """Per window: (best assignment, its mean-SI-SDR lead over the runner-up), None in pauses."""
    estimates, references = np.asarray(estimates), np.asarray(references)
    if estimates.shape != references.shape or estimates.ndim != 2:
        raise ValueError(f"expected estimates and references (K, L) of one shape, got "
                         f"{estimates.shape} and {references.shape}")
    perms: list[tuple[int, ...] | None] = []
    for a in range(0, references.shape[-1], size):
        ref, est = references[:, a:a + size], estimates[:, a:a + size]
        energy = np.sum((ref - ref.mean(-1, keepdims=True)) ** 2, axis=-1)
        if energy.max() <= 0 or energy.min() < 10 ** (PAUSE_DB / 10) * energy.max():
            perms.append(None)
            continue
        score = pairwise_si_sdr(est, ref)  # (K, K): [i, j] = SI-SDR of output j for reference i
        best = tuple(int(p) for p in best_permutation(score))
        rows = np.arange(len(best))
        values = {p: score[rows, list(p)].mean() for p in itertools.permutations(rows)}
        runner_up = max((v for p, v in values.items() if p != best), default=np.inf)
        perms.append((best, values[best] - runner_up))
    return perms


def swap_rate(perms: list[tuple[int, ...] | None]) -> tuple[int, int]:
    """(swaps, boundaries): consecutive defined windows compared, None windows skipped."""
    defined = [p for p in perms if p is not None]
    swaps = sum(a != b for a, b in zip(defined, defined[1:]))
    return swaps, max(len(defined) - 1, 0)


def score_long(mixture: np.ndarray, references: np.ndarray, estimates: np.ndarray,
               sample_rate: int, chunk: float, margin_db: float = DECIDED_DB) -> dict:
    """Swap rate over ``chunk``-second windows and whole-file SI-SDRi (one assignment); the
    ``decided_*`` figures count only windows whose assignment wins by ``margin_db``."""
    windows = _window_assignments(estimates, references, max(1, int(round(chunk * sample_rate))))
    perms = _decided(windows, 0.0)
    swaps, boundaries = swap_rate(perms)
    d_swaps, d_boundaries = swap_rate(_decided(windows, margin_db))
    metrics = compute_metrics(mixture, references, estimates, sample_rate, ("si_sdr",))
    return {"swaps": swaps, "boundaries": boundaries,
            "swap_rate": swaps / boundaries if boundaries else float("nan"),
            "undefined_windows": sum(p is None for p in perms),
            "decided_swaps": d_swaps, "decided_boundaries": d_boundaries,
            "decided_swap_rate": d_swaps / d_boundaries if d_boundaries else float("nan"),
            "si_sdri": float(metrics["mean"]["si_sdri"])}


def added_swaps(estimates: np.ndarray, offline: np.ndarray, references: np.ndarray,
                sample_rate: int, window: float, margin_db: float = DECIDED_DB
                ) -> tuple[int, int]:
    """(swaps, boundaries): the swaps that chunking or streaming adds to the same model's
    offline output. Over the ``window``-second windows where the assignments of both
    ``estimates`` (K, L) and ``offline`` (K, L) to the ``references`` (K, L) are decided (lead
    >= ``margin_db``), a boundary between consecutive such windows counts when the assignment of
    ``estimates`` changes and its order relative to ``offline`` (output ``r[k]`` of
    ``estimates`` holds what output k of ``offline`` holds) changes too. A swap of the model's
    own that the offline output has as well leaves the relative order alone; a swap of the
    offline output that ``estimates`` does not make is not one that chunking added.

    Anchored in the references, this also counts windows where the two outputs are not a
    reordering of each other (the stream's separation differs from the offline one there), which
    a comparison of ``estimates`` against ``offline`` itself leaves undecided."""
    size = max(1, int(round(window * sample_rate)))
    ours = _decided(_window_assignments(estimates, references, size), margin_db)
    theirs = _decided(_window_assignments(offline, references, size), margin_db)
    both = []  # (our assignment, relative order) per window that both decide
    for p, q in zip(ours, theirs):
        if p is None or q is None:
            continue
        r = [0] * len(p)
        for i, k in enumerate(q):  # reference i is on output q[i] offline and p[i] here
            r[k] = p[i]
        both.append((p, tuple(r)))
    swaps = sum(a[0] != b[0] and a[1] != b[1] for a, b in zip(both, both[1:]))
    return swaps, max(len(both) - 1, 0)


def evaluate_long_form(separator, set_dir: str | Path, seconds: float = 30.0, chunk: float = 2.0,
                       overlap: float = 0.25, n_mixtures: int = 4, seed: int = 0,
                       modes=MODES, context: float = 0.0, window: float | None = None,
                       mixtures: list[LongMixture] | None = None) -> dict:
    """Every mode on every long mixture of ``set_dir`` (or on ``mixtures`` when given, e.g. from
    :func:`mixtures_from_speakers`; ``set_dir`` then only names them) → summary: per mode the pooled swap rate
    (swaps / boundaries over all mixtures), the mean SI-SDRi and the per-mixture values; with
    ``whole`` among the modes, also the swaps the other modes add to it (:func:`added_swaps`).
    Swaps are counted over ``window``-second windows (default: ``chunk``)."""
    if mixtures is None:
        mixtures = long_mixtures(set_dir, seconds, n_mixtures, seed)
    per_mode: dict[str, list[dict]] = {mode: [] for mode in modes}
    for mix in mixtures:
        outputs = separate_modes(separator, mix.mixture, mix.sample_rate, chunk, overlap, modes,
                                 context)
        for mode, est in outputs.items():
            score = score_long(mix.mixture, mix.references, est, mix.sample_rate, window or chunk)
            if "whole" in outputs and mode != "whole":
                score["added_swaps"], score["added_boundaries"] = added_swaps(
                    est, outputs["whole"], mix.references, mix.sample_rate, window or chunk)
            per_mode[mode].append(score)
    summary = {"set_dir": str(set_dir), "seconds": seconds, "chunk": chunk, "overlap": overlap,
               "context": context, "window": window or chunk,
               "n_mixtures": n_mixtures, "seed": seed,
               "speakers": [list(m.speakers) for m in mixtures], "modes": {}}
    for mode, scores in per_mode.items():
        swaps = sum(s["swaps"] for s in scores)
        boundaries = sum(s["boundaries"] for s in scores)
        d_swaps = sum(s["decided_swaps"] for s in scores)
        d_boundaries = sum(s["decided_boundaries"] for s in scores)
        summary["modes"][mode] = {
            "swaps": swaps, "boundaries": boundaries,
            "swap_rate": swaps / boundaries if boundaries else None,
            "decided_swaps": d_swaps, "decided_boundaries": d_boundaries,
            "decided_swap_rate": d_swaps / d_boundaries if d_boundaries else None,
            "si_sdri": float(np.mean([s["si_sdri"] for s in scores])),
            "si_sdri_per_mixture": [s["si_sdri"] for s in scores]}
        if mode != "whole" and "whole" in per_mode:
            a_swaps = sum(s["added_swaps"] for s in scores)
            a_boundaries = sum(s["added_boundaries"] for s in scores)
            summary["modes"][mode].update(
                added_swaps=a_swaps, added_boundaries=a_boundaries,
                added_swap_rate=a_swaps / a_boundaries if a_boundaries else None)
    return summary
