"""Input discovery for the command line: files, folders and globs → audio files (no heavy imports)."""
from __future__ import annotations

import glob
from pathlib import Path

from .errors import LvbdError

__all__ = ["AUDIO_SUFFIXES", "find_inputs", "expand_inputs"]

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".mp3", ".w64",
                  ".caf", ".opus"}


def find_inputs(items: list[str]) -> list[tuple[Path, Path]]:
    """Files, folders (recursive, audio suffixes) and globs → ``(path, relative name)`` pairs.

    The relative name is the path below the argument that found the file: the file name for a
    file argument, the path below the folder for a folder, the path below a glob's fixed leading
    folders (``in/**/*.wav`` → ``album/song.wav``). Order is kept and duplicates (the same file
    reached twice) dropped. A glob that matches nothing raises ``LvbdError``; a missing file or
    a folder without audio files is kept so that the caller reports it for that input.
    """
    found: list[tuple[Path, Path]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += _folder(path, path) or [(path, Path(path.name))]
        elif path.exists() or not glob.has_magic(item):
            found.append((path, Path(path.name)))
        else:
            parts = path.parts
            fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
            base = Path(*parts[:fixed]) if fixed else Path(".")
            matches = []
            for match in sorted(glob.glob(item, recursive=True)):
                match = Path(match)
                if match.is_dir():
                    matches += _folder(match, base)
                elif match.is_file():
                    matches.append((match, match.relative_to(base)))
            if not matches:
                raise LvbdError(f"no files match {item}")
            found += matches
    seen: set[Path] = set()
    return [(p, rel) for p, rel in found
            if not (p.resolve() in seen or seen.add(p.resolve()))]


def _folder(folder: Path, base: Path) -> list[tuple[Path, Path]]:
    return [(p, p.relative_to(base)) for p in sorted(folder.rglob("*"))
            if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()]


def expand_inputs(items: list[str]) -> list[Path]:
    """The paths of :func:`find_inputs`."""
    return [path for path, _ in find_inputs(items)]
