"""Text to speak: English sentences from ``fortunes`` and Python stdlib docstrings, and short
foreign-language sentences from the gettext catalogs under ``/usr/share/locale`` (for
``ood-lang``: :func:`foreign_sentences`; for the mbrola and festival voices of other languages:
:func:`language_sentences`, which also drops untranslated English and other-script strings and
reads caseless scripts: Arabic, Hebrew, Devanagari, Telugu).

Sentences are filtered to 6–30 plain words and split train/valid/test by a hash of the
normalised sentence, so the same sentence never lands in two splits (design/data.md).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import logging
import re
import struct
import unicodedata
import sysconfig
from pathlib import Path

logger = logging.getLogger(__name__)

FORTUNE_DIR = Path("/usr/share/games/fortunes")
LOCALE_DIR = Path("/usr/share/locale")
SKIP_FORTUNE_FILES = {"art", "ascii-art"}
MIN_WORDS, MAX_WORDS = 6, 30
SPLIT_FRACTIONS = {"train": 0.8, "valid": 0.1, "test": 0.1}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"])")
_ALLOWED_EN = re.compile(r"^[A-Za-z0-9 ,.;:'\"!?-]+$")
_FOREIGN_PUNCT = set(" ,.;:'!?¿¡-’«»")


def normalise(sentence: str) -> str:
    """Collapse whitespace; the key that the split hash and de-duplication use."""
    return " ".join(sentence.split())


def sentence_split(sentence: str) -> str:
    """``train`` / ``valid`` / ``test`` from a hash of the lower-cased, normalised sentence."""
    digest = hashlib.sha1(normalise(sentence).lower().encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    edge = 0.0
    for name, fraction in SPLIT_FRACTIONS.items():
        edge += fraction
        if bucket < edge:
            return name
    return "test"


def split_into_sentences(text: str) -> list[str]:
    """Split running text at ``. ! ?`` followed by a capital letter or a quote."""
    return [normalise(s) for s in _SENTENCE_END.split(normalise(text)) if s.strip()]


def is_speakable(sentence: str) -> bool:
    """A plain English sentence of 6–30 words with no markup, code or odd characters."""
    if not _ALLOWED_EN.match(sentence) or not sentence[0].isupper():
        return False
    if sentence[-1] not in ".!?" or "--" in sentence or ".." in sentence:
        return False
    if sentence.count('"') % 2:
        return False
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    alpha = sum(any(c.isalpha() for c in w) for w in words)
    shouting = sum(sum(c.isupper() for c in w) > 3 for w in words)
    return alpha >= 0.8 * len(words) and shouting == 0


def _fortune_texts(directory: Path) -> list[str]:
    texts = []
    for path in sorted(directory.glob("*")):
        if not path.is_file() or path.suffix or path.name in SKIP_FORTUNE_FILES:
            continue
        raw = path.read_text(encoding="utf-8", errors="replace")
        for entry in raw.split("\n%\n"):
            lines = [ln for ln in entry.splitlines() if not ln.strip().startswith("--")]
            lines = [re.sub(r"^\s*\(\d+\)\s*", "", ln) for ln in lines]
            texts.append(" ".join(lines).replace(" -- ", ", "))
    return texts


def _docstring_texts(stdlib: Path) -> list[str]:
    texts = []
    skip = {"site-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo"}
    for path in sorted(stdlib.rglob("*.py")):
        if skip.intersection(path.relative_to(stdlib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            for paragraph in re.split(r"\n\s*\n", doc):
                lines = paragraph.splitlines()
                if any(ln.startswith((" ", "\t", ">>>")) or "::" in ln for ln in lines):
                    continue
                texts.append(" ".join(lines))
    return texts


@functools.lru_cache(maxsize=None)
def english_sentences(fortune_dir: str = str(FORTUNE_DIR), stdlib: str | None = None
                      ) -> tuple[str, ...]:
    """Sorted, de-duplicated speakable sentences from fortunes + stdlib docstrings."""
    fortune_path = Path(fortune_dir)
    stdlib_path = Path(stdlib or sysconfig.get_paths()["stdlib"])
    texts = []
    if fortune_path.is_dir():
        texts += _fortune_texts(fortune_path)
    else:
        logger.warning("fortunes not found at %s (Debian package 'fortunes'); using "
                       "docstrings only", fortune_path)
    if stdlib_path.is_dir():
        texts += _docstring_texts(stdlib_path)
    seen: dict[str, str] = {}
    for text in texts:
        for sentence in split_into_sentences(text):
            if is_speakable(sentence):
                seen.setdefault(sentence.lower(), sentence)
    return tuple(sorted(seen.values()))


def read_mo(path: str | Path) -> list[str]:
    """Translated strings of a GNU gettext ``.mo`` catalog (plural forms split on NUL)."""
    data = Path(path).read_bytes()
    if len(data) < 28:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if order is None:
        return []
    _, count, _, trans_offset = struct.unpack(order + "4I", data[4:20])
    out = []
    for i in range(count):
        length, offset = struct.unpack(order + "2I", data[trans_offset + 8 * i:trans_offset + 8 * i + 8])
        for text in data[offset:offset + length].split(b"\0"):
            out.append(text.decode("utf-8", errors="replace"))
    return out


def is_speakable_foreign(sentence: str) -> bool:
    """A plain 6–20 word sentence in a Latin or Cyrillic script language (gettext text)."""
    if not sentence or not sentence[0].isupper() or sentence[-1] not in ".!?":
        return False
    if any(not (c.isalpha() or c in _FOREIGN_PUNCT) for c in sentence):
        return False
    words = sentence.split()
    return MIN_WORDS <= len(words) <= 20


def _catalog_strings(lang: str, locale_dir: str):
    """Every translated string of ``lang``'s gettext catalogs (unreadable catalogs skipped)."""
    directory = Path(locale_dir) / lang / "LC_MESSAGES"
    for path in sorted(directory.glob("*.mo")) if directory.is_dir() else []:
        try:
            strings = read_mo(path)
        except (OSError, struct.error):
            continue
        yield from strings


@functools.lru_cache(maxsize=None)
def foreign_sentences(lang: str, locale_dir: str = str(LOCALE_DIR)) -> tuple[str, ...]:
    """Sorted speakable sentences of ``lang`` from gettext catalogs (empty when none)."""
    seen: dict[str, str] = {}
    for text in _catalog_strings(lang, locale_dir):
            for sentence in split_into_sentences(text.replace("&", "").replace("_", "")):
                if is_speakable_foreign(sentence):
                    seen.setdefault(sentence.lower(), sentence)
    return tuple(sorted(seen.values()))


# script of each language's letters (default LATIN); caseless scripts skip the capital check
LANGUAGE_SCRIPTS = {"el": "GREEK", "ru": "CYRILLIC", "ar": "ARABIC", "fa": "ARABIC",
                    "he": "HEBREW", "hi": "DEVANAGARI", "te": "TELUGU", "ja": "CJK",
                    "zh_CN": "CJK"}
CASELESS_SCRIPTS = {"ARABIC", "HEBREW", "DEVANAGARI", "TELUGU", "CJK"}
# frequent English words that are not words of the Latin-script languages we speak
ENGLISH_MARKERS = frozenset(
    "the of and you your this that with should will are not when which from can could "
    "would been has have does cannot file files please there their these those what".split())
_SENTENCE_END_ANY = re.compile(r"(?<=[.!?\u061f\u0964])\s+")
_END_MARKS = ".!?\u061f\u0964"          # . ! ? and Arabic ? and Devanagari danda
_CASELESS_PUNCT = set(" ,.;:!?-\u060c\u061f\u0964")


def looks_english(sentence: str) -> bool:
    """True when a catalog string is (mostly) English: untranslated or quoted text."""
    words = [w.strip(",.;:!?'\"").lower() for w in sentence.split()]
    hits = sum(w in ENGLISH_MARKERS for w in words)
    return hits >= 2 or hits / max(len(words), 1) >= 0.2


def _in_script(sentence: str, script: str, share: float = 0.95) -> bool:
    letters = [c for c in sentence if unicodedata.category(c)[0] in "LM"]
    if not letters:
        return False
    inside = sum(unicodedata.name(c, "").startswith(script) for c in letters)
    return inside >= share * len(letters)


def _caseless_sentences(lang: str, locale_dir: str) -> list[str]:
    script = LANGUAGE_SCRIPTS[lang]
    out = []
    for text in _catalog_strings(lang, locale_dir):
        for sentence in _SENTENCE_END_ANY.split(normalise(text.replace("&", "").replace("_", ""))):
            if (not sentence or sentence[-1] not in _END_MARKS
                    or not MIN_WORDS <= len(sentence.split()) <= 20):
                continue
            if all(unicodedata.category(c)[0] in "LM" or c in _CASELESS_PUNCT
                   for c in sentence) and _in_script(sentence, script):
                out.append(sentence)
    return out


@functools.lru_cache(maxsize=None)
def language_sentences(lang: str, locale_dir: str = str(LOCALE_DIR)) -> tuple[str, ...]:
    """Sorted speakable sentences of gettext locale ``lang`` (``de``, ``pt_BR``, ``he``…) for a
    voice of that language: :func:`foreign_sentences` without English-looking strings and with
    ≥ 95 % of the letters in the language's script; Arabic, Hebrew, Devanagari and Telugu
    catalogs are read without the capital-letter rule. Empty when the locale has no catalogs
    (CJK text has no spaces to count words by, so ``ja`` and ``zh_CN`` give none)."""
    script = LANGUAGE_SCRIPTS.get(lang, "LATIN")
    if script in CASELESS_SCRIPTS:
        candidates = _caseless_sentences(lang, locale_dir)
    else:
        candidates = list(foreign_sentences(lang, locale_dir))
    seen: dict[str, str] = {}
    for sentence in candidates:
        if not looks_english(sentence) and _in_script(sentence, script):
            seen.setdefault(sentence.lower(), sentence)
    return tuple(sorted(seen.values()))
