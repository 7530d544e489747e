"""The one reader and writer of Libri2Mix-style ``metadata.csv`` files.

Columns ``mixture_ID, mixture_path, source_1_path .. source_K_path`` (paths relative to the set's
folder), optionally more (``length``, speakers, gains, noise). Written by the test-set builder
(``lvbd.data.testsets``), read by the evaluator's set reader (``lvbd.data.mixfolder``), the
builder's staleness check and ``lvbd data stats`` (``lvbd.data.corpus``).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from ..fileio import write_if_changed

__all__ = ["METADATA", "read_metadata", "metadata_text", "write_metadata"]

METADATA = "metadata.csv"


def read_metadata(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, rows as {column: text}) of a metadata file."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def metadata_text(columns: list[str], rows: list[dict]) -> str:
    """CSV text (``\\n`` line ends) of ``rows`` under ``columns``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_metadata(path: str | Path, columns: list[str], rows: list[dict]) -> bool:
    """Atomically write the file unless it already holds exactly this; whether it wrote."""
    return write_if_changed(Path(path), metadata_text(columns, rows))
