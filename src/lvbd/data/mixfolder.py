"""Libri2Mix/WHAM!-style mixture folders, with or without ``metadata.csv``.

A set is a folder holding the mixtures in ``mix/`` (or ``mix_clean/``, as in downloaded
Libri2Mix and WHAM! folders) and the K sources in ``s1/`` … ``sK/``:

- **without metadata.csv** every audio file in ``mix/`` is a mixture; its sources are the files
  of the same name in ``s1/`` … ``sK/`` (the same stem with another audio suffix is accepted).
  K is the number of consecutive ``s1``, ``s2``, … folders; other folders (``noise/``,
  ``mix_both/``) are ignored.
- **with metadata.csv** (columns ``mixture_ID, mixture_path, source_1_path … source_K_path``;
  further columns such as ``length`` are ignored) the rows say which files belong together.
  Paths may be absolute, relative to the set folder or to the working folder; a path that is
  none of these is looked up by its file name in ``mix/`` or ``sk/``.

A folder named ``Kspk`` must hold K sources.
"""
from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import LvbdError
from ..inputs import AUDIO_SUFFIXES
from .metadata import METADATA, read_metadata

MIX_FOLDERS = ("mix", "mix_clean")
_SET_DIR = re.compile(r"^\d+spk$")


@dataclass
class TestSet:
    """One set: ``items`` are (name, mixture path, [source paths])."""

    name: str
    root: Path
    n_sources: int
    items: list[tuple[str, Path, list[Path]]]


def _resolve(value: str, root: Path, folder: str) -> Path:
    """A metadata path: absolute, relative to the set, to the working dir, or ``folder/NAME``."""
    path = Path(value)
    for candidate in ([path] if path.is_absolute() else [root / path, path]):
        if candidate.is_file():
            return candidate
    fallback = root / folder / path.name
    if fallback.is_file():
        return fallback
    raise LvbdError(f"{root / 'metadata.csv'} lists {value}, which is neither a file nor "
                    f"{fallback}")


def _mix_folder(root: Path) -> Path | None:
    return next((root / m for m in MIX_FOLDERS if (root / m).is_dir()), None)


def is_set(root: Path) -> bool:
    """Whether ``root`` looks like a set (metadata.csv, or mix/ with s1/ beside it)."""
    return (root / "metadata.csv").is_file() or (_mix_folder(root) is not None
                                                 and (root / "s1").is_dir())


def _read_metadata(root: Path) -> tuple[int, list[tuple[str, Path, list[Path]]]]:
    meta = root / METADATA
    columns, rows = read_metadata(meta)
    source_columns = sorted((c for c in columns if re.fullmatch(r"source_\d+_path", c)),
                            key=lambda c: int(c.split("_")[1]))
    missing = {"mixture_ID", "mixture_path"} - set(columns)
    if missing or not source_columns:
        raise LvbdError(f"{meta} lacks the columns {sorted(missing) or ['source_1_path']}")
    K = len(source_columns)
    if source_columns != [f"source_{k}_path" for k in range(1, K + 1)]:
        raise LvbdError(f"{meta} has source columns {source_columns}, expected source_1_path.."
                        f"source_{K}_path")
    if not rows:
        raise LvbdError(f"{meta} lists no mixtures")
    return K, [(row["mixture_ID"], _resolve(row["mixture_path"], root, "mix"),
                [_resolve(row[c], root, f"s{k + 1}") for k, c in enumerate(source_columns)])
               for row in rows]


def _match(folder: Path, mixture: Path) -> Path:
    """The file in ``folder`` that belongs to ``mixture``: same name, or same stem."""
    same = folder / mixture.name
    if same.is_file():
        return same
    stems = [p for p in folder.glob(f"{glob.escape(mixture.stem)}.*")
             if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()]
    if len(stems) == 1:
        return stems[0]
    raise LvbdError(f"{folder} has no {mixture.name} (sources are matched to "
                    f"{mixture.parent.name}/ by file name)")


def _read_plain(root: Path) -> tuple[int, list[tuple[str, Path, list[Path]]]]:
    mix_dir = _mix_folder(root)
    if mix_dir is None:
        raise LvbdError(f"{root} has no metadata.csv and no mix/ (or mix_clean/) folder "
                        f"(expected a Libri2Mix-style set: mix/, s1/.. sK/[, metadata.csv])")
    K = 0
    while (root / f"s{K + 1}").is_dir():
        K += 1
    if K == 0:
        raise LvbdError(f"{root} has {mix_dir.name}/ but no s1/ source folder")
    mixtures = sorted(p for p in mix_dir.iterdir()
                      if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not mixtures:
        raise LvbdError(f"{mix_dir} holds no audio files")
    return K, [(m.stem, m, [_match(root / f"s{k + 1}", m) for k in range(K)]) for m in mixtures]


def read_set(set_dir: str | Path) -> TestSet:
    """Read one set folder (see the module docstring); LvbdError with one line if unusable."""
    root = Path(set_dir)
    if not root.is_dir():
        raise LvbdError(f"no such test set directory: {root}")
    if (root / "metadata.csv").is_file():
        K, items = _read_metadata(root)
        origin = "metadata.csv"
    else:
        K, items = _read_plain(root)
        origin = "s1/.. folders"
    if _SET_DIR.match(root.name) and int(root.name[:-3]) != K:
        raise LvbdError(f"{root} is named {root.name} but its {origin} hold {K} sources")
    name = f"{root.parent.name}/{root.name}" if _SET_DIR.match(root.name) else root.name
    return TestSet(name=name, root=root, n_sources=K, items=items)


def find_sets(path: str | Path) -> list[Path]:
    """``path`` if it is a set, else every ``*/Kspk`` (or ``Kspk``) set below it."""
    root = Path(path)
    if not root.is_dir():
        raise LvbdError(f"no such test set directory: {root}")
    if is_set(root):
        return [root]
    found = sorted(p for pattern in ("*", "*/*") for p in root.glob(pattern)
                   if _SET_DIR.match(p.name) and p.is_dir() and is_set(p))
    if not found:
        raise LvbdError(f"{root} holds no metadata.csv or mix/ + s1/ folders, and no */Kspk "
                        f"test sets")
    return found
