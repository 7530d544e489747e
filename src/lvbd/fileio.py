"""Atomic file writes (demucs ``write_and_rename``): the one way lvbd replaces a file.

A temp file in the target's folder (``.{name}.XXXX.tmp``) is written, flushed, fsynced, given the
permissions a plain ``open`` would give, and renamed onto the target with ``os.replace``; on any
error it is removed and the target is left as it was. A reader never sees a partial file, and a
kill leaves at most a stale ``.*.tmp`` beside an intact target.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_open", "atomic_write", "write_if_changed", "default_mode"]


def default_mode(path: str | Path) -> None:
    """Give a ``mkstemp`` file (0600) the permissions a plain ``open`` would (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """``with atomic_open(path) as handle: ...`` writes ``path`` all or nothing (``mode``: "wb"
    or "w"; ``kwargs`` go to ``open``, e.g. ``encoding``, ``newline``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write(path: str | Path, content: bytes | str) -> None:
    """Replace ``path`` with ``content`` (bytes, or text written as UTF-8 with ``\\n`` line ends)."""
    if isinstance(content, str):
        with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write(content)
    else:
        with atomic_open(path, "wb") as handle:
            handle.write(content)


def write_if_changed(path: str | Path, content: str) -> bool:
    """Atomically replace ``path`` with ``content`` unless it already holds it; whether it wrote."""
    path = Path(path)
    if path.exists() and path.read_text(encoding="utf-8") == content:
        return False
    atomic_write(path, content)
    return True


def sha256_file(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
