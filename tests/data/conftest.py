"""Fixtures for the data tests: a tiny espeak-ng corpus and a fake (noise-burst) corpus."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lvbd.data.corpus import BuildConfig, build_corpus
from lvbd.data.text import sentence_split

ADJECTIVES = ["quiet", "yellow", "ancient", "clever", "heavy", "gentle", "rapid", "silver"]
NOUNS = ["river", "teacher", "window", "garden", "engine", "market", "letter", "mountain"]
VERBS = ["watches", "follows", "carries", "answers", "paints", "remembers"]


def small_sentences() -> list[str]:
    """Deterministic short sentences covering all three hash splits."""
    out = [f"The {a} {n} {v} every small {m} today."
           for a in ADJECTIVES for n in NOUNS for v in VERBS[:2] for m in NOUNS[:2]]
    assert {sentence_split(s) for s in out} == {"train", "valid", "test"}
    return out


def tiny_config(**overrides) -> BuildConfig:
    values = dict(hours=40 / 3600, jobs=2, seed=3, engines=("espeak-ng",), valid_clips=3,
                  test_clips=5, test_mixtures=(4, 2), test_sets=("id", "noisy"))
    values.update(overrides)
    return BuildConfig(**values)


def write_text_cache(out: Path) -> None:
    """The build reads out/text/en.txt when present: no stdlib parsing in tests."""
    cache = out / "text" / "en.txt"
    content = "".join(s + "\n" for s in small_sentences())
    if not cache.exists() or cache.read_text() != content:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(content)


def build_tiny(out: Path, **overrides) -> Path:
    write_text_cache(out)
    return build_corpus(out, tiny_config(**overrides))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A one-shot espeak-ng build (≈10 train clips, id + noisy test sets); read-only."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    out = tmp_path_factory.mktemp("tiny") / "data"
    build_tiny(out)
    return out
