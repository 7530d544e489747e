"""``lvbd data pack``: a size-capped training corpus (FLAC files + ``manifest.csv``) cut from a
full corpus, small enough to travel to a GPU machine with the repository (docs/gpu.md).

The pack is itself a corpus root: a subset of the source manifest's rows (``train`` and
``valid`` by default) with their audio files copied byte for byte under the same relative
paths, so ``DynamicMixDataset`` and ``FixedValidSet`` read it unchanged.

Clips are chosen per speaker, round-robin, so that every speaker of the source keeps clips
before any speaker gets many: round ``r`` offers the ``r``-th clip of every speaker (speakers
in a seeded order per round, each speaker's clips in a seeded order), and a clip is taken
when it still fits the split's byte budget. ``valid`` gets ``valid_share`` of the budget,
``train`` the rest (and whatever ``valid`` leaves unused). The same source, settings and seed
give the same pack. The pack is built in a temporary sibling folder and renamed into place;
an existing pack is replaced only with ``force``.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .corpus import MANIFEST, MANIFEST_COLUMNS, CorpusError, read_manifest

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
PACK_INFO = "pack.json"
RESERVED_BYTES = 8192        # manifest header and pack.json


@dataclass
class PackConfig:
    """What ``lvbd data pack`` keeps: rows of ``splits`` (and ``engines``; ``None``: every
    engine) up to ``max_mib`` MiB in total, ``valid_share`` of it for the ``valid`` split."""

    max_mib: float = 45.0
    splits: tuple[str, ...] = ("train", "valid")
    engines: tuple[str, ...] | None = None
    valid_share: float = 0.08
    seed: int = 0


def _key(text: str) -> int:
    return zlib.crc32(text.encode())


def _row_bytes(row: dict) -> int:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([row[c] for c in MANIFEST_COLUMNS])
    return len(buffer.getvalue().encode("utf-8"))


def _offer_order(rows: list[dict], split: str, seed: int) -> list[dict]:
    """The split's rows in round-robin offer order (see module docstring)."""
    by_speaker: dict[str, list[dict]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["path"]):
        by_speaker[row["speaker"]].append(row)
    queues = {}
    for speaker, clips in by_speaker.items():
        order = np.random.default_rng([seed, _key(split), _key(speaker)]).permutation(len(clips))
        queues[speaker] = [clips[i] for i in order]
    speakers = sorted(queues)
    offers = []
    for round_ in range(max((len(q) for q in queues.values()), default=0)):
        turn = np.random.default_rng([seed, _key(split), round_]).permutation(len(speakers))
        offers += [queues[speakers[i]][round_] for i in turn if round_ < len(queues[speakers[i]])]
    return offers


def select_rows(root: str | Path, config: PackConfig) -> list[dict]:
    """The manifest rows of ``root`` that the pack keeps (sizes read from the files)."""
    root = Path(root)
    if config.max_mib <= 0 or not 0.0 <= config.valid_share < 1.0:
        raise CorpusError(f"need max_mib > 0 and 0 <= valid_share < 1; got {config.max_mib}, "
                          f"{config.valid_share}")
    rows = [r for r in read_manifest(root) if r["split"] in config.splits and
            (config.engines is None or r["engine"] in config.engines)]
    if not rows:
        raise CorpusError(f"{root / MANIFEST} has no rows of splits {list(config.splits)} and "
                          f"engines {config.engines or 'any'}")
    budget = int(config.max_mib * MIB) - RESERVED_BYTES
    chosen: list[dict] = []
    spent = 0
    order = sorted(config.splits, key=lambda s: s != "valid")   # valid first: train takes
    for n, split in enumerate(order):                           # what valid leaves unused
        allowance = (int(budget * config.valid_share) if split == "valid"
                     else (budget - spent) // (len(order) - n))
        used = 0
        for row in _offer_order([r for r in rows if r["split"] == split], split, config.seed):
            try:
                size = (root / row["path"]).stat().st_size
            except FileNotFoundError:
                raise CorpusError(f"{root / MANIFEST} lists {row['path']}, which is missing") \
                    from None
            cost = size + _row_bytes(row)
            if used + cost <= allowance:
                chosen.append(dict(row, _bytes=cost))
                used += cost
        spent += used
    assert spent == sum(r["_bytes"] for r in chosen) <= budget
    return chosen


def _summary(rows: list[dict]) -> dict[str, dict]:
    table: dict[str, dict] = {}
    for row in rows:
        entry = table.setdefault(row["split"], {"clips": 0, "speakers": set(), "minutes": 0.0,
                                                "bytes": 0})
        entry["clips"] += 1
        entry["speakers"].add(row["speaker"])
        entry["minutes"] += row["duration"] / 60.0
        entry["bytes"] += row["_bytes"]
    return {split: dict(v, speakers=len(v["speakers"]), minutes=round(v["minutes"], 2))
            for split, v in sorted(table.items())}


def build_pack(root: str | Path, out: str | Path, config: PackConfig | None = None,
               force: bool = False) -> Path:
    """Write the pack of ``root`` to ``out`` (atomically); return ``out``."""
    config = config or PackConfig()
    root, out = Path(root), Path(out)
    if out.resolve() == root.resolve() or out.resolve() in root.resolve().parents:
        raise CorpusError(f"--out {out} would replace the source corpus {root}")
    if out.exists() and not force:
        raise CorpusError(f"{out} already exists; use --force to replace it")
    if out.exists() and not (out / PACK_INFO).exists():
        raise CorpusError(f"{out} exists and is not a pack (no {PACK_INFO}); not replacing it")
    rows = select_rows(root, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for row in rows:
            target = tmp / row["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / row["path"], target)
        with open(tmp / MANIFEST, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore",
                                    lineterminator="\n")
            writer.writeheader()
            writer.writerows(sorted(rows, key=lambda r: r["path"]))
        info = {"source": str(root), "config": asdict(config), "splits": _summary(rows)}
        (tmp / PACK_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            old = out.with_name(f".{out.name}.old{os.getpid()}")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    for split, v in info["splits"].items():
        logger.info("%s: %d clips, %d speakers, %.1f min, %.1f MiB", split, v["clips"],
                    v["speakers"], v["minutes"], v["bytes"] / MIB)
    logger.info("wrote %s: %.2f MiB (limit %.2f MiB)", out, total / MIB, config.max_mib)
    return out
