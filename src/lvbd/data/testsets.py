"""Fixed test mixtures in Libri2Mix-style folders: ``test/<set>/<K>spk/{mix,s1..sK}/NAME.wav``
plus ``metadata.csv`` (``mixture_ID, mixture_path, source_1_path, ..., length`` and extra
columns after ``length``: speakers, manifest clips, gains; ``noisy`` adds ``noise_path``,
``snr_db``, ``noise_kind``). Paths in the CSV are relative to the ``<K>spk`` folder.

Every mixture is 4 s: a clip longer than that is cropped at a random offset, a shorter one
is zero-padded at a random offset (clips ≥ 3 s are preferred so the speakers overlap). The
K speakers are distinct (Allison's en and es prompts are one speaker), relative gains lie
within ±5 dB, the mixture sits at −25 dBFS RMS with peaks ≤ 0.9, and the stems add up to the
mixture (``mixing.mix_stems``). Mixture ``i`` of set ``s`` with K speakers is drawn from a
Generator seeded by ``(seed, s, K, i)``; ``noisy`` reuses the ``id`` draws and adds coloured /
amplitude-modulated noise at 5–15 dB SNR (the stems stay clean).

Sets: ``id`` (held-out espeak-ng tuples, test sentences), ``ood-espeak``, ``ood-mbrola``
(the English mbrola voices us1/us2/us3/en1), ``ood-mbrola-lang`` (the six held-out non-English
mbrola voices), ``ood-tts`` (flite awb/rms/slt/kal16 + festival kal/ked/slt-hts), ``ood-real``
(the held-out real speakers Allison, es-co and Armelle: real, mostly non-English),
``ood-lang`` (espeak-ng de/fr/es/it), ``noisy`` and ``shipped-heldout`` (voices of every
engine that the shipped all-engine model never hears; see ``voices.SHIPPED_HELDOUT``).
A set is built only when every voice it names is available (``needs``), so a set's name
always means the same voices; the voices added later join only the sets that name them.
"""
from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import save
from ..progress import run_jobs
from .metadata import METADATA, read_metadata, write_metadata
from .mixing import NOISE_KINDS, coloured_noise, crop_or_pad, mix_stems, random_gains_db
from .mixing import random_offset, scale_noise
from .voices import MBROLA_HELDOUT_LANG, SHIPPED_HELDOUT

logger = logging.getLogger(__name__)

TEST_SECONDS = 4.0
MIN_CLIP_SECONDS = 3.0
LEVEL_DB = -25.0
SNR_RANGE_DB = (5.0, 15.0)
MAX_PEAK = 0.9


@dataclass(frozen=True)
class TestSet:
    """Which manifest rows a set draws from, and which streams it needs (prefixes)."""

    name: str
    engines: tuple[str, ...]
    needs: tuple[str, ...]
    splits: tuple[str, ...] = ()
    heldout_only: bool = False     # only voices in SHIPPED_HELDOUT (+ espeak-ng test)
    voices: tuple[str, ...] = ()   # non-empty: only these ``engine:voice`` speakers
    group_by_engine: bool = False  # draw the engine uniformly first, then the speaker
    noisy: bool = False


_HELDOUT_STREAMS = tuple(f"{engine}/{voice}/" for engine, voices in SHIPPED_HELDOUT.items()
                         if engine != "asterisk" for voice in voices)
_REAL_HELDOUT = ("asterisk/en_US_f_Allison/", "asterisk/es_MX_f_Allison/", "asterisk/es/",
                 "asterisk/fr/")
_ENGLISH_MBROLA = ("us1", "us2", "us3", "en1")
_ORIGINAL_TTS = ("flite:awb", "flite:rms", "flite:slt", "flite:kal16", "festival:kal",
                 "festival:ked", "festival:slt-hts")

TEST_SETS = {
    "id": TestSet("id", ("espeak-ng",), ("espeak-ng/test",), ("test",)),
    "ood-espeak": TestSet("ood-espeak", ("espeak-ng",), ("espeak-ng/ood-espeak",),
                          ("ood-espeak",)),
    "ood-mbrola": TestSet("ood-mbrola", ("mbrola",),
                          tuple(f"mbrola/{v}/" for v in _ENGLISH_MBROLA), ("ood-mbrola",),
                          voices=tuple(f"mbrola:{v}" for v in _ENGLISH_MBROLA)),
    "ood-mbrola-lang": TestSet("ood-mbrola-lang", ("mbrola",),
                               tuple(f"mbrola/{v}/" for v in MBROLA_HELDOUT_LANG),
                               ("ood-mbrola",),
                               voices=tuple(f"mbrola:{v}" for v in MBROLA_HELDOUT_LANG)),
    "ood-tts": TestSet("ood-tts", ("flite", "festival"),
                       tuple(v.replace(":", "/") + "/" for v in _ORIGINAL_TTS), ("ood-tts",),
                       voices=_ORIGINAL_TTS),
    "ood-real": TestSet("ood-real", ("asterisk",), _REAL_HELDOUT, ("ood-real",),
                        heldout_only=True),
    "ood-lang": TestSet("ood-lang", ("espeak-ng",), ("espeak-ng/ood-lang",), ("ood-lang",)),
    "noisy": TestSet("noisy", ("espeak-ng",), ("espeak-ng/test",), ("test",), noisy=True),
    "shipped-heldout": TestSet(
        "shipped-heldout", ("espeak-ng", "mbrola", "flite", "festival", "asterisk"),
        ("espeak-ng/test",) + _HELDOUT_STREAMS + _REAL_HELDOUT,
        ("test", "ood-mbrola", "ood-tts", "ood-real"), heldout_only=True, group_by_engine=True),
}


@dataclass(frozen=True)
class MixtureJob:
    """Everything needed to render one mixture (picklable, for the worker pool)."""

    set_dir: str
    name: str
    clips: tuple[str, ...]          # absolute clip paths
    clip_ids: tuple[str, ...]       # manifest paths
    speakers: tuple[str, ...]
    offsets: tuple[int, ...]
    gains_db: tuple[float, ...]
    length: int
    sample_rate: int
    noise_seed: tuple[int, ...] = ()
    noise_kind: str = ""
    snr_db: float = 0.0


def _pool(rows: list[dict], spec: TestSet) -> dict[str, list[dict]]:
    by_speaker: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["engine"] not in spec.engines or row["split"] not in spec.splits:
            continue
        if spec.heldout_only and row["engine"] != "espeak-ng":
            short = row["speaker"].split(":", 1)[1]
            if short not in SHIPPED_HELDOUT.get(row["engine"], ()):
                continue
        if spec.voices and row["speaker"] not in spec.voices:
            continue
        by_speaker[row["speaker"]].append(row)
    return {s: sorted(v, key=lambda r: r["path"]) for s, v in sorted(by_speaker.items())}


def _pick_speakers(rng: np.random.Generator, speakers: list[str], n_sources: int,
                   group_by_engine: bool) -> list[str]:
    if not group_by_engine:
        return [speakers[i] for i in rng.choice(len(speakers), n_sources, replace=False)]
    groups: dict[str, list[str]] = defaultdict(list)
    for speaker in speakers:
        groups[speaker.split(":", 1)[0]].append(speaker)
    chosen: list[str] = []
    for _ in range(n_sources):
        names = sorted(g for g, members in groups.items() if set(members) - set(chosen))
        group = names[int(rng.integers(len(names)))]
        left = [s for s in groups[group] if s not in chosen]
        chosen.append(left[int(rng.integers(len(left)))])
    return chosen


def plan_mixture(rng: np.random.Generator, pool: dict[str, list[dict]], n_sources: int,
                 length: int, sample_rate: int, group_by_engine: bool = False) -> dict:
    """K distinct speakers, one clip each (≥ 3 s preferred), offsets and gains."""
    speakers = _pick_speakers(rng, list(pool), n_sources, group_by_engine)
    clips, offsets = [], []
    for speaker in speakers:
        candidates = [r for r in pool[speaker] if r["duration"] >= MIN_CLIP_SECONDS]
        candidates = candidates or pool[speaker]
        row = candidates[int(rng.integers(len(candidates)))]
        clips.append(row)
        offsets.append(random_offset(rng, round(row["duration"] * sample_rate), length))
    return {"speakers": speakers, "clips": clips, "offsets": offsets,
            "gains_db": random_gains_db(rng, n_sources)}


def render_mixture(job: MixtureJob) -> tuple[str, str | None]:
    """Worker: read, crop/pad, mix, add noise and save one mixture → (set_dir/name, error)."""
    try:
        stems = []
        for path, offset in zip(job.clips, job.offsets):
            wav, rate = sf.read(path, dtype="float32", always_2d=True)
            if rate != job.sample_rate:
                raise ValueError(f"{path} is at {rate} Hz, expected {job.sample_rate}")
            stems.append(crop_or_pad(wav.mean(axis=1), job.length, offset))
        stems, mixture = mix_stems(np.stack(stems), np.asarray(job.gains_db), LEVEL_DB,
                                   MAX_PEAK)  # (K, L), (L,)
        set_dir = Path(job.set_dir)
        noise = None
        if job.noise_kind:
            rng = np.random.default_rng(list(job.noise_seed))
            noise = scale_noise(mixture, coloured_noise(rng, job.length, job.sample_rate,
                                                        job.noise_kind), job.snr_db)
            mixture = mixture + noise
            peak = float(np.abs(mixture).max())
            if peak > MAX_PEAK:
                stems, noise, mixture = (a * (MAX_PEAK / peak) for a in (stems, noise, mixture))
            save(set_dir / "noise" / f"{job.name}.wav", noise, job.sample_rate, clip_mode="clamp")
        for k, stem in enumerate(stems):
            save(set_dir / f"s{k + 1}" / f"{job.name}.wav", stem, job.sample_rate,
                 clip_mode="clamp")
        save(set_dir / "mix" / f"{job.name}.wav", mixture, job.sample_rate, clip_mode="clamp")
        return str(set_dir / job.name), None
    except (OSError, ValueError, sf.LibsndfileError, RuntimeError) as err:
        return str(Path(job.set_dir) / job.name), str(err)


def _folders(job: MixtureJob) -> list[str]:
    names = ["mix"] + [f"s{k + 1}" for k in range(len(job.clips))]
    return names + (["noise"] if job.noise_kind else [])


def _complete(job: MixtureJob) -> bool:
    return all((Path(job.set_dir) / n / f"{job.name}.wav").exists() for n in _folders(job))


def _metadata(jobs: list[MixtureJob]) -> tuple[list[str], list[dict[str, str]]]:
    """Columns and rows of the set's metadata.csv."""
    n_sources = len(jobs[0].clips)
    noisy = bool(jobs[0].noise_kind)
    columns = ["mixture_ID", "mixture_path"]
    columns += [f"source_{k + 1}_path" for k in range(n_sources)] + ["length"]
    columns += ["noise_path"] if noisy else []
    columns += [f"source_{k + 1}_speaker" for k in range(n_sources)]
    columns += [f"source_{k + 1}_clip" for k in range(n_sources)]
    columns += [f"source_{k + 1}_gain_db" for k in range(n_sources)]
    columns += ["snr_db", "noise_kind"] if noisy else []
    rows = []
    for job in jobs:
        row = {"mixture_ID": job.name, "mixture_path": f"mix/{job.name}.wav",
               "length": job.length}
        for k in range(n_sources):
            row[f"source_{k + 1}_path"] = f"s{k + 1}/{job.name}.wav"
            row[f"source_{k + 1}_speaker"] = job.speakers[k]
            row[f"source_{k + 1}_clip"] = job.clip_ids[k]
            row[f"source_{k + 1}_gain_db"] = f"{job.gains_db[k]:.3f}"
        if noisy:
            row.update(noise_path=f"noise/{job.name}.wav", snr_db=f"{job.snr_db:.3f}",
                       noise_kind=job.noise_kind)
        rows.append({c: str(row.get(c, "")) for c in columns})
    return columns, rows


def plan_test_set(root: Path, rows: list[dict], spec: TestSet, n_sources: int,
                  n_mixtures: int, sample_rate: int, seed: int) -> list[MixtureJob] | None:
    """The mixtures of one ``<set>/<K>spk`` folder, or ``None`` if too few speakers."""
    pool = _pool(rows, spec)
    if len(pool) < n_sources:
        logger.warning("skipping test set %s/%dspk: %d speaker(s) available, need %d",
                       spec.name, n_sources, len(pool), n_sources)
        return None
    length = round(TEST_SECONDS * sample_rate)
    set_dir = root / "test" / spec.name / f"{n_sources}spk"
    draw_key = zlib.crc32(("id" if spec.noisy else spec.name).encode())
    jobs = []
    for i in range(n_mixtures):
        rng = np.random.default_rng([seed, draw_key, n_sources, i])
        plan = plan_mixture(rng, pool, n_sources, length, sample_rate, spec.group_by_engine)
        noise = {}
        if spec.noisy:
            noise_key = (seed, zlib.crc32(spec.name.encode()), n_sources, i)
            noise_rng = np.random.default_rng(list(noise_key))
            noise = {"noise_kind": NOISE_KINDS[int(noise_rng.integers(len(NOISE_KINDS)))],
                     "snr_db": float(noise_rng.uniform(*SNR_RANGE_DB)),
                     "noise_seed": noise_key + (1,)}  # the waveform's own stream
        jobs.append(MixtureJob(
            str(set_dir), f"{i:04d}", tuple(str(root / r["path"]) for r in plan["clips"]),
            tuple(r["path"] for r in plan["clips"]), tuple(plan["speakers"]),
            tuple(plan["offsets"]), tuple(float(g) for g in plan["gains_db"]), length,
            sample_rate, **noise))
    return jobs


def _stale(jobs: list[MixtureJob]) -> list[MixtureJob]:
    """Mixtures whose files an earlier build wrote from another plan (its ``metadata.csv`` row
    differs, e.g. ``ood-real`` before the held-out voices changed): they are rendered again."""
    path = Path(jobs[0].set_dir) / METADATA
    if not path.exists():
        return []
    old_columns, old_rows = read_metadata(path)
    columns, rows = _metadata(jobs)
    if old_columns != columns:
        return list(jobs)
    old = {row["mixture_ID"]: row for row in old_rows}
    new = {row["mixture_ID"]: row for row in rows}
    return [job for job in jobs if job.name in old and old[job.name] != new[job.name]]


def write_test_sets(root: str | Path, rows: list[dict], config, missing: list[str]) -> dict:
    """Write every requested test set that its engines allow → {``set/Kspk``: mixtures}."""

    root = Path(root)
    names = config.test_sets if config.test_sets is not None else tuple(TEST_SETS)
    counts = list(config.test_mixtures)
    if len(counts) == 1:
        counts *= len(config.test_speakers)
    if len(counts) != len(config.test_speakers):
        raise ValueError(f"--test-mixtures needs 1 or {len(config.test_speakers)} values, "
                         f"got {len(counts)}")
    written: dict[str, int] = {}
    plans: list[tuple[str, list[MixtureJob]]] = []
    for name in names:
        spec = TEST_SETS[name]
        if not set(spec.engines) <= set(config.engines):
            logger.info("test set %s not built: needs engines %s", name, ", ".join(spec.engines))
            continue
        lost = sorted(m for m in missing if m.startswith(spec.needs))
        if lost:
            logger.warning("skipping test set %s: missing %s", name, ", ".join(lost))
            continue
        for n_sources, n_mixtures in zip(config.test_speakers, counts):
            if n_mixtures <= 0:
                continue
            jobs = plan_test_set(root, rows, spec, n_sources, n_mixtures, config.sample_rate,
                                 config.seed)
            if jobs:
                plans.append((f"{name}/{n_sources}spk", jobs))
    stale = {job for _, jobs in plans for job in _stale(jobs)}
    todo = [job for _, jobs in plans for job in jobs if job in stale or not _complete(job)]
    for job in todo:
        for sub in _folders(job):
            (Path(job.set_dir) / sub).mkdir(parents=True, exist_ok=True)
    failed = {}
    for key, error in run_jobs(render_mixture, todo, config.jobs, config.progress,
                                "test mixtures"):
        if error:
            failed[key] = error
    for key, jobs in plans:
        for job in jobs:
            if not _complete(job):
                logger.warning("test mixture %s/%s failed: %s", key, job.name,
                               failed.get(str(Path(job.set_dir) / job.name), "missing files"))
        good = [job for job in jobs if _complete(job)]
        if good:
            write_metadata(Path(good[0].set_dir) / METADATA, *_metadata(good))
            written[key] = len(good)
    return written
