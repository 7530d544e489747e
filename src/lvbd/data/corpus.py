"""Build the single-speaker corpus (``data/audio``, ``data/manifest.csv``) and the fixed test
sets (``data/test``) from Debian packages only; see design/data.md and ``voices`` for who
speaks in which split.

The build is a list of *streams* (engine, voice(s), split, sentences). Item ``i`` of a stream
is fully determined by ``(seed, stream, i)``: a numpy Generator seeded with that triple picks
the speaker, a seeded permutation of the split's sentences picks the text, and the item's
path holds ``i``. So a killed run resumes to the same files, a finished run is a no-op, and
a larger ``--hours`` extends the training stream by appending items. Each clip is written
atomically (``lvbd.audio.save``); existing clips are never rewritten. A missing engine,
voice or package logs a warning and skips its streams (and the test sets that need them).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import save
from ..errors import LvbdError
from ..fileio import atomic_write, write_if_changed
from ..progress import run_jobs
from . import text as textlib
from .metadata import read_metadata
from .synth import (ASTERISK_ROOT, SynthesisError, load_prompts, probe, synthesize,
                    synthesize_many)
from .voices import (ASTERISK_DIRS, ASTERISK_TEST_ONLY, ENGINES, EXTRA_ENGINE_VOICES,
                     FESTIVAL_VOICES, LANGS, MIN_SENTENCES, OTHER_ENGINE_TEST_SET,
                     OTHER_ENGINE_VOICES, Voice, espeak_speakers, voice_language)

logger = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
SETTINGS = "build.json"
MANIFEST_COLUMNS = ("path", "speaker", "engine", "voice", "text", "duration", "split")
# prompts of a training speaker; its ``test`` share is in no test set (ood-real is held-out
# speakers only)
ASTERISK_SPLITS = (("train", 0.6), ("valid", 0.1), ("test", 0.3))
ASTERISK_CLIP_SECONDS = 4.5      # join prompts until this much raw audio
ASTERISK_MAX_PROMPTS = 6
MAX_ROUNDS = 6                   # extension rounds of an hours-targeted stream
# trimmed speech per word at default speed, for planning only (measured; extended if short)
SECONDS_PER_WORD = {"espeak-ng": 0.295, "mbrola": 0.26, "flite": 0.32, "festival": 0.34}


class CorpusError(LvbdError):
    """The output folder or manifest cannot be used."""


@dataclass
class BuildConfig:
    """What ``lvbd data build`` makes. Counts are clips per stream unless noted."""

    hours: float = 10.0                  # espeak-ng train speech (the research corpus)
    sample_rate: int = 8000
    jobs: int = 2
    seed: int = 0
    engines: tuple[str, ...] = ENGINES
    other_hours: float = 0.5             # train speech per original training voice of mbrola/flite/festival
    extra_voices: bool = True            # also the voices added in issue 9 (voices.EXTRA_ENGINE_VOICES)
    voice_hours: float = 0.1             # train speech per added training voice
    valid_clips: int = 400               # espeak-ng valid clips
    test_clips: int = 400                # espeak-ng clips of test, ood-espeak, ood-lang each
    other_valid_clips: int = 20          # per training voice of mbrola/flite/festival
    other_test_clips: int = 80           # per voice of mbrola/flite/festival in its ood-* set
    test_mixtures: tuple[int, ...] = (300, 200)  # per K in test_speakers
    test_speakers: tuple[int, ...] = (2, 3)
    test_sets: tuple[str, ...] | None = None      # None: every set
    executables: dict[str, str] | None = None     # engine -> executable (tests use bogus ones)
    asterisk_root: str = str(ASTERISK_ROOT)
    progress: bool = False


@dataclass(frozen=True)
class Clip:
    """One utterance to render: ``path`` relative to the corpus root."""

    path: str
    voice: Voice
    text: str
    split: str
    prompts: tuple[str, ...] = ()        # asterisk: prompt wav files to join
    asterisk_voice: str = ""             # asterisk: sounds folder name


@dataclass
class Stream:
    """Items ``i = 0, 1, ...`` of one engine/split; ``target_seconds`` or a fixed ``count``."""

    name: str
    engine: str
    split: str
    voices: list[Voice]
    sentences: tuple[str, ...] = ()
    count: int = 0
    target_seconds: float = 0.0
    seconds_per_word: float = SECONDS_PER_WORD["espeak-ng"]
    clips: list[Clip] = field(default_factory=list)   # asterisk: pre-grouped prompts

    def key(self) -> int:
        return zlib.crc32(self.name.encode())

    def estimate_seconds(self, clip: Clip) -> float:
        words = len(clip.text.split())
        speed = clip.voice.speed or 175
        return words * self.seconds_per_word * 175.0 / speed

    def make(self, seed: int, start: int, stop: int) -> list[Clip]:
        if self.clips:
            return self.clips[start:stop]
        if not self.sentences or not self.voices:
            return []
        order = np.random.default_rng([seed, self.key()]).permutation(len(self.sentences))
        out = []
        for i in range(start, stop):
            rng = np.random.default_rng([seed, self.key(), i])
            voice = self.voices[int(rng.integers(len(self.voices)))]
            text = self.sentences[order[i % len(order)]]
            out.append(Clip(f"audio/{self.name}/{i:06d}.flac", voice, text, self.split))
        return out

    def initial(self, seed: int) -> list[Clip]:
        if self.clips or self.count:
            return self.make(seed, 0, len(self.clips) or self.count)
        clips: list[Clip] = []
        total = 0.0
        while total < self.target_seconds:
            batch = self.make(seed, len(clips), len(clips) + 256)
            if not batch:
                break
            for clip in batch:
                if total >= self.target_seconds:
                    break
                total += self.estimate_seconds(clip)
                clips.append(clip)
        return clips


def _bucket(name: str) -> float:
    return zlib.crc32(name.encode()) / 2.0 ** 32


def _asterisk_streams(root: Path, seed: int, extra_voices: bool = True
                      ) -> tuple[list[Stream], list[str]]:
    streams, missing = [], []
    for folder, (speaker, _, pattern, package) in sorted(ASTERISK_DIRS.items()):
        if not extra_voices and package.startswith("asterisk-prompt-"):
            missing.append(f"asterisk/{folder}/")
            continue
        directory = root / folder
        # a symlinked folder (es -> es_MX_f_Allison on some installs) is not the prompt package
        usable = directory.is_dir() and not directory.is_symlink()
        prompts = sorted(p for p in directory.rglob(pattern) if p.parent.name != "silence"
                         ) if usable else []
        if not prompts:
            missing.append(f"asterisk/{folder}/")
            logger.warning("asterisk voice %s not found under %s (Debian package %s); "
                           "skipping it", folder, root, package)
            continue
        voice = Voice("asterisk", speaker)
        by_split: dict[str, list[Path]] = defaultdict(list)
        for path in prompts:
            name = path.relative_to(directory).with_suffix("").as_posix()
            split = "ood-real"
            if speaker not in ASTERISK_TEST_ONLY:
                edge, bucket = 0.0, _bucket(name)
                for split, fraction in ASTERISK_SPLITS:
                    edge += fraction
                    if bucket < edge:
                        break
            by_split[split].append(path)
        for split, paths in sorted(by_split.items()):
            name = f"asterisk/{folder}/{split}"
            order = np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(len(paths))
            clips, group, seconds = [], [], 0.0
            for j in order:
                group.append(paths[j])
                try:
                    seconds += sf.info(str(paths[j])).duration
                except (sf.LibsndfileError, RuntimeError):
                    group.pop()
                    continue
                if seconds >= ASTERISK_CLIP_SECONDS or len(group) >= ASTERISK_MAX_PROMPTS:
                    text = "+".join(p.relative_to(directory).with_suffix("").as_posix()
                                    for p in group)
                    clips.append(Clip(f"audio/{name}/{len(clips):06d}.flac", voice, text, split,
                                      tuple(str(p) for p in group), folder))
                    group, seconds = [], 0.0
            streams.append(Stream(name, "asterisk", split, [voice], clips=clips))
    return streams, missing


def _sentences(out: Path, lang: str, voice_text: bool = False) -> tuple[str, ...]:
    """Sentence list cached in ``out/text/<lang>.txt`` (``voice-<lang>.txt`` for the
    mbrola/festival voices of other languages) so a build never changes under it."""
    cache = out / "text" / f"{'voice-' if voice_text else ''}{lang}.txt"
    if cache.exists():
        return tuple(line for line in cache.read_text(encoding="utf-8").splitlines() if line)
    if lang == "en":
        sentences = textlib.english_sentences()
    elif voice_text:
        sentences = textlib.language_sentences(lang)
    else:
        sentences = textlib.foreign_sentences(lang)
    if sentences:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, "".join(s + "\n" for s in sentences))
    return tuple(sentences)


def plan_streams(out: Path, config: BuildConfig) -> tuple[list[Stream], list[str]]:
    """Every stream the config asks for whose engine and voices work, and the names of the
    streams skipped because something is missing (each logged as a warning)."""
    unknown = set(config.engines) - set(ENGINES)
    if unknown:
        raise CorpusError(f"unknown engine(s) {sorted(unknown)}; known: {', '.join(ENGINES)}")
    streams: list[Stream] = []
    missing: list[str] = []
    exe = config.executables

    def usable(voice: Voice, what: str) -> bool:
        reason = probe(voice, exe)
        if reason:
            logger.warning("skipping %s: %s (Debian package %s)", what, reason,
                           _package(voice))
        return reason is None

    english = _sentences(out, "en")
    by_split = defaultdict(list)
    for sentence in english:
        by_split[textlib.sentence_split(sentence)].append(sentence)

    if "espeak-ng" in config.engines:
        speakers = espeak_speakers()
        accents = sorted({v.voice.split("+")[0] for group in ("train", "test", "ood-espeak")
                          for v in speakers[group]})
        ok = {a for a in accents if usable(Voice("espeak-ng", a, 50, 175), f"espeak-ng {a}")}
        specs = [("espeak-ng/train", "train", "train", "train", 0, config.hours * 3600.0),
                 ("espeak-ng/valid", "valid", "train", "valid", config.valid_clips, 0.0),
                 ("espeak-ng/test", "test", "test", "test", config.test_clips, 0.0),
                 ("espeak-ng/ood-espeak", "ood-espeak", "ood-espeak", "test",
                  config.test_clips, 0.0)]
        for name, split, group, sentence_split, count, target in specs:
            voices = [v for v in speakers[group] if v.voice.split("+")[0] in ok]
            if len(voices) < len(speakers[group]):
                missing.append(name)
                continue
            streams.append(Stream(name, "espeak-ng", split, voices,
                                  tuple(by_split[sentence_split]), count, target))
        per_lang = config.test_clips // len(LANGS)
        for lang in LANGS if per_lang else ():
            name = f"espeak-ng/ood-lang/{lang}"
            sentences = _sentences(out, lang)
            if not sentences:
                logger.warning("skipping %s: no %s sentences in gettext catalogs", name, lang)
                missing.append(name)
                continue
            if not usable(Voice("espeak-ng", lang, 50, 175), f"espeak-ng {lang}"):
                missing.append(name)
                continue
            voices = [v for v in speakers["ood-lang"] if v.voice.startswith(lang + "+")]
            streams.append(Stream(name, "espeak-ng", "ood-lang", voices, sentences, per_lang))

    for engine, (train_voices, test_voices) in OTHER_ENGINE_VOICES.items():
        if engine not in config.engines:
            continue
        test_split = OTHER_ENGINE_TEST_SET[engine]
        for name in train_voices + test_voices:
            voice = Voice(engine, name)
            roles = [("test", test_split, config.other_test_clips, 0.0)]
            if name in train_voices:
                roles = [("train", "train", 0, config.other_hours * 3600.0),
                         ("valid", "valid", config.other_valid_clips, 0.0)] + roles
            if not usable(voice, f"{engine} voice {name}"):
                missing += [f"{engine}/{name}/{split}" for _, split, _, _ in roles]
                continue
            for sentence_split, split, count, target in roles:
                streams.append(Stream(f"{engine}/{name}/{split}", engine, split, [voice],
                                      tuple(by_split[sentence_split]), count, target,
                                      seconds_per_word=SECONDS_PER_WORD[engine]))

    for engine, (train_voices, test_voices) in EXTRA_ENGINE_VOICES.items():
        if engine not in config.engines:
            continue
        test_split = OTHER_ENGINE_TEST_SET[engine]
        for name in train_voices + test_voices:
            voice = Voice(engine, name)
            roles = ([("train", "train", 0, config.voice_hours * 3600.0),
                      ("valid", "valid", config.other_valid_clips, 0.0)]
                     if name in train_voices else
                     [("test", test_split, config.other_test_clips, 0.0)])
            names = [f"{engine}/{name}/{split}" for _, split, _, _ in roles]
            if not config.extra_voices:   # not asked for: the sets naming it are not built
                missing += names
                continue
            lang = voice_language(engine, name)
            sentences = english if lang == "en" else _sentences(out, lang, voice_text=True)
            by_role = defaultdict(list)
            for sentence in sentences:
                by_role[textlib.sentence_split(sentence)].append(sentence)
            short = [role for role, *_ in roles if not by_role[role]]
            if len(sentences) < MIN_SENTENCES or short:
                logger.warning("skipping %s voice %s: %d usable %s sentences in the gettext "
                               "catalogs (need %d, and some in each of %s)", engine, name,
                               len(sentences), lang, MIN_SENTENCES,
                               "/".join(role for role, *_ in roles))
                missing += names
                continue
            if not usable(voice, f"{engine} voice {name}"):
                missing += names
                continue
            for (sentence_split, split, count, target), stream in zip(roles, names):
                streams.append(Stream(stream, engine, split, [voice],
                                      tuple(by_role[sentence_split]), count, target,
                                      seconds_per_word=SECONDS_PER_WORD[engine]))

    if "asterisk" in config.engines:
        found, lost = _asterisk_streams(Path(config.asterisk_root), config.seed,
                                        config.extra_voices)
        streams += found
        missing += lost
    return streams, missing


def _package(voice: Voice) -> str:
    """The Debian package that provides ``voice``."""
    if voice.engine == "mbrola":
        return f"mbrola-{voice.voice}"
    if voice.engine == "festival" and voice.voice in FESTIVAL_VOICES:
        return FESTIVAL_VOICES[voice.voice].package
    return "flite" if voice.engine == "flite" else "espeak-ng"


def _render(args: tuple[tuple[Clip, ...], str, int, dict | None]
            ) -> list[tuple[str, int, str | None]]:
    """Worker: synthesize a batch of clips (one voice for festival) and save each atomically
    → [(path, frames, error)]."""
    clips, root, sample_rate, executables = args
    out = []
    if clips[0].voice.engine == "festival":
        wavs = synthesize_many(clips[0].voice, [c.text for c in clips], sample_rate, executables)
    else:
        wavs = [None] * len(clips)
    for clip, wav in zip(clips, wavs):
        try:
            if isinstance(wav, SynthesisError):
                raise wav
            if clip.prompts:
                wav = load_prompts([Path(p) for p in clip.prompts], sample_rate)
            elif wav is None:
                wav = synthesize(clip.voice, clip.text, sample_rate, executables)
            target = Path(root) / clip.path
            target.parent.mkdir(parents=True, exist_ok=True)
            save(target, wav, sample_rate)
            out.append((clip.path, len(wav), None))
        except (SynthesisError, LvbdError, OSError) as err:
            out.append((clip.path, 0, str(err)))
    return out


def _batches(clips: list[Clip], size: int = 8, festival_size: int = 25) -> list[tuple[Clip, ...]]:
    """Festival clips grouped per voice (one process each batch) first, then the rest."""
    festival: dict[Voice, list[Clip]] = defaultdict(list)
    rest = []
    for clip in clips:
        (festival[clip.voice] if clip.voice.engine == "festival" else rest).append(clip)
    out = [tuple(group[i:i + festival_size]) for _, group in sorted(festival.items(),
           key=lambda item: item[0].voice) for i in range(0, len(group), festival_size)]
    return out + [tuple(rest[i:i + size]) for i in range(0, len(rest), size)]


def _check_settings(out: Path, config: BuildConfig) -> None:
    """Clip ``i`` of a stream depends on the seed and rate: never mix two builds in one folder."""
    settings = json.dumps({"sample_rate": config.sample_rate, "seed": config.seed},
                          sort_keys=True) + "\n"
    path = out / SETTINGS
    if path.exists() and path.read_text(encoding="utf-8") != settings:
        old = json.loads(path.read_text(encoding="utf-8"))
        raise CorpusError(f"{out} was built with --seed {old.get('seed')} --sample-rate "
                          f"{old.get('sample_rate')}; use those or another --out")
    write_if_changed(path, settings)


def _frames(path: Path) -> int:
    try:
        return sf.info(str(path)).frames
    except (sf.LibsndfileError, RuntimeError):
        return 0


def _clean_temporaries(out: Path) -> None:
    for folder in (out / "audio", out / "test"):
        if folder.is_dir():
            for tmp in folder.rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def read_manifest(root: str | Path) -> list[dict]:
    """Rows of ``root/manifest.csv`` as dicts (``duration`` as float)."""
    path = Path(root) / MANIFEST
    if not path.exists():
        raise CorpusError(f"no manifest at {path}; run `lvbd data build --out {root}` first")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise CorpusError(f"{path} has columns {reader.fieldnames}, expected "
                              f"{list(MANIFEST_COLUMNS)}")
        rows = list(reader)
    for row in rows:
        row["duration"] = float(row["duration"])
    return rows


def _manifest_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["path"]))
    return buffer.getvalue()


def build_corpus(out: str | Path, config: BuildConfig | None = None) -> Path:
    """Synthesize the corpus into ``out`` and write the manifest and fixed test sets.

    Idempotent and resumable (see module docstring). Returns the manifest path.
    """
    from .testsets import write_test_sets

    config = config or BuildConfig()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CorpusError(f"--out {out} exists and is not a folder")
    if config.hours < 0 or config.sample_rate <= 0 or config.jobs < 1:
        raise CorpusError("--hours must be >= 0, --sample-rate > 0 and --jobs >= 1")
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, config)
    _clean_temporaries(out)
    streams, missing = plan_streams(out, config)

    known: dict[str, float] = {}
    if (out / MANIFEST).exists():
        try:
            known = {r["path"]: r["duration"] for r in read_manifest(out)}
        except (CorpusError, KeyError, ValueError):
            known = {}
    frames: dict[str, int] = {}
    planned: dict[str, list[Clip]] = {s.name: s.initial(config.seed) for s in streams}
    pending = list(streams)
    for round_ in range(MAX_ROUNDS):
        todo = []
        for stream in pending:
            for clip in planned[stream.name]:
                if clip.path in frames:
                    continue
                target = out / clip.path
                if target.exists():
                    seconds = known.get(clip.path)
                    frames[clip.path] = (round(seconds * config.sample_rate) if seconds
                                         is not None else _frames(target))
                else:
                    todo.append(clip)
        batches = _batches(sorted(todo, key=lambda c: c.path))
        args = [(batch, str(out), config.sample_rate, config.executables) for batch in batches]
        failed = 0
        for results in run_jobs(_render, args, config.jobs, config.progress,
                                 f"synthesizing (round {round_ + 1})",
                                 sizes=[len(b) for b in batches]):
            for path, n, error in results:
                frames[path] = n
                if error:
                    failed += 1
                    logger.warning("skipped %s: %s", path, error)
        if failed:
            logger.warning("%d of %d clips failed", failed, len(todo))
        pending = []
        for stream in streams:
            if not stream.target_seconds:
                continue
            clips = planned[stream.name]
            have = sum(frames.get(c.path, 0) for c in clips) / config.sample_rate
            if have >= stream.target_seconds or not clips:
                continue
            ok = sum(frames.get(c.path, 0) > 0 for c in clips)
            logger.info("%s: %.2f of %.2f h after round %d; extending", stream.name,
                        have / 3600.0, stream.target_seconds / 3600.0, round_ + 1)
            mean = have / ok if ok else 4.0
            extra = math.ceil((stream.target_seconds - have) / mean * 1.02) + 1
            planned[stream.name] = clips + stream.make(config.seed, len(clips),
                                                       len(clips) + extra)
            pending.append(stream)
        if not pending:
            break
    rows = []
    for stream in streams:
        for clip in planned[stream.name]:
            n = frames.get(clip.path, 0)
            if n <= 0:
                continue
            rows.append({"path": clip.path, "speaker": clip.voice.speaker,
                         "engine": clip.voice.engine,
                         "voice": clip.asterisk_voice or clip.voice.voice,
                         "text": clip.text, "duration": f"{n / config.sample_rate:.6f}",
                         "split": clip.split})
    manifest = out / MANIFEST
    if write_if_changed(manifest, _manifest_text(rows)):
        logger.info("wrote %s (%d clips)", manifest, len(rows))
    if not rows:
        logger.warning("the corpus is empty: no engine could speak")
    write_test_sets(out, read_manifest(out), config, missing)
    return manifest


def corpus_stats(root: str | Path) -> dict:
    """Hours / speakers / utterances per (split, engine) and mixtures per test set."""
    root = Path(root)
    table: dict[tuple[str, str], dict] = {}
    for row in read_manifest(root):
        entry = table.setdefault((row["split"], row["engine"]),
                                 {"hours": 0.0, "speakers": set(), "utterances": 0})
        entry["hours"] += row["duration"] / 3600.0
        entry["speakers"].add(row["speaker"])
        entry["utterances"] += 1
    corpus = {key: {"hours": v["hours"], "speakers": len(v["speakers"]),
                    "utterances": v["utterances"]} for key, v in sorted(table.items())}
    mixtures = {}
    for meta in sorted((root / "test").glob("*/*spk/metadata.csv")):
        mixtures[f"{meta.parent.parent.name}/{meta.parent.name}"] = len(read_metadata(meta)[1])
    return {"corpus": corpus, "test_sets": mixtures}


def format_stats(stats: dict) -> str:
    """Plain-text tables of :func:`corpus_stats`."""
    lines = [f"{'split':<12} {'engine':<10} {'hours':>8} {'speakers':>9} {'utterances':>11}"]
    totals = {"hours": 0.0, "utterances": 0}
    for (split, engine), v in stats["corpus"].items():
        lines.append(f"{split:<12} {engine:<10} {v['hours']:>8.2f} {v['speakers']:>9d} "
                     f"{v['utterances']:>11d}")
        totals["hours"] += v["hours"]
        totals["utterances"] += v["utterances"]
    lines.append(f"{'total':<12} {'':<10} {totals['hours']:>8.2f} {'':>9} "
                 f"{totals['utterances']:>11d}")
    lines.append("")
    lines.append(f"{'test set':<24} {'mixtures':>8}")
    for name, count in stats["test_sets"].items():
        lines.append(f"{name:<24} {count:>8d}")
    return "\n".join(lines)
