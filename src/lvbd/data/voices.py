"""Who speaks: the fixed speaker lists of every engine and which of them each split may use.

Held-out scheme (what the manifest's ``split`` and ``engine`` columns record)
-----------------------------------------------------------------------------
espeak-ng (research corpus; ``DataConfig.engines = ["espeak-ng"]``):
  * ``train`` / ``valid``: 500 fixed speaker tuples (accent, variant, pitch 25–75, speed
    130–200 wpm) from 6 accents × 34 variants; train sentences / valid sentences.
  * ``test`` (the ``id`` set): 60 tuples from (accent, variant) pairs that no training tuple
    uses (unseen speakers of the training style), on test sentences.
  * ``ood-espeak``: unseen accents (en-gb-x-gbclan, en-gb-x-gbcwmd), unseen variants
    (m7, m8, f5, klatt…klatt6) or pitch outside training (0–20, 80–99); test sentences.
  * ``ood-lang``: de/fr/es/it voices with training-style variants, gettext sentences.
Other engines (heard only by the shipped model, which trains on every engine's ``train``):
  * mbrola: us2, us3 → ``train``/``valid`` + test sentences in ``ood-mbrola``;
    us1, en1 → ``ood-mbrola`` only.
  * flite: awb, rms → ``train``/``valid`` + ``ood-tts``; slt, kal16 → ``ood-tts`` only.
  * festival: kal → ``train``/``valid`` + ``ood-tts``; ked, slt-hts → ``ood-tts`` only.
  * asterisk (real voices, mostly non-English): Carlo (it), June (fr-CA) and the ru voice
    → prompts split by a hash of the prompt name into ``train``/``valid``/``ood-real``;
    Allison (en and es, one speaker) → ``ood-real`` only.
Research runs train on espeak-ng ``train`` only, so every ``ood-*`` set stays unseen. The
shipped model has heard the *voices* us2/us3, awb/rms, kal and Carlo/June/ru (never the test
sentences or prompts); the voices it has never heard are listed in ``SHIPPED_HELDOUT``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPEAKER_LIST_SEED = 20240517  # fixed: the speaker lists never depend on the build seed

TRAIN_ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-scotland")
OOD_ACCENTS = ("en-gb-x-gbclan", "en-gb-x-gbcwmd")
# m1-m6, f1-f4 and named variants that are not klatt-based (adam, benjamin, caleb, david and
# edward render like klatt, which is held out) and not whisper/robot effects.
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4",
                  "Alex", "Alicia", "Andrea", "Andy", "Annie", "aunty", "belinda", "ed",
                  "Gene", "iven", "john", "linda", "max", "Michael", "Mike", "norbert",
                  "paul", "quincy", "rob", "robert", "shelby", "steph", "travis", "victor")
OOD_VARIANTS = ("m7", "m8", "f5", "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6")
TRAIN_PITCH = (25, 75)
TRAIN_SPEED = (130, 200)
OOD_PITCH_RANGES = ((0, 20), (80, 99))
N_TRAIN_SPEAKERS = 500
N_HELDOUT_SPEAKERS = 60
N_HELDOUT_PAIRS = 20
N_OOD_SPEAKERS = 80
LANGS = ("de", "fr", "es", "it")
N_LANG_SPEAKERS = 60

ENGINES = ("espeak-ng", "mbrola", "flite", "festival", "asterisk")

ASTERISK_DIRS = {  # sounds folder -> (speaker, language)
    "en_US_f_Allison": ("allison", "en"),
    "es_MX_f_Allison": ("allison", "es"),
    "fr_CA_f_June": ("june", "fr"),
    "it_IT_m_Carlo": ("carlo", "it"),
    "ru_RU_f_IvrvoiceRU": ("ivrvoice-ru", "ru"),
}
ASTERISK_TRAIN = ("june", "carlo", "ivrvoice-ru")
ASTERISK_TEST_ONLY = ("allison",)

FESTIVAL_VOICES = {"kal": "voice_kal_diphone", "ked": "voice_ked_diphone",
                   "slt-hts": "voice_cmu_us_slt_arctic_hts"}

# engine -> (voices with a train/valid share, test-only voices)
OTHER_ENGINE_VOICES = {
    "mbrola": (("us2", "us3"), ("us1", "en1")),
    "flite": (("awb", "rms"), ("slt", "kal16")),
    "festival": (("kal",), ("ked", "slt-hts")),
}
OTHER_ENGINE_TEST_SET = {"mbrola": "ood-mbrola", "flite": "ood-tts", "festival": "ood-tts",
                         "asterisk": "ood-real"}
# voices the shipped (all-engine) model never hears, for its own test table
SHIPPED_HELDOUT = {"mbrola": ("us1", "en1"), "flite": ("slt", "kal16"),
                   "festival": ("ked", "slt-hts"), "asterisk": ("allison",)}


@dataclass(frozen=True)
class Voice:
    """One speaker: an engine, its voice name and (espeak-ng) prosody."""

    engine: str
    voice: str
    pitch: int | None = None
    speed: int | None = None

    @property
    def speaker(self) -> str:
        """Stable speaker id used in the manifest (``engine:voice[:pNN:sNNN]``)."""
        if self.pitch is None:
            return f"{self.engine}:{self.voice}"
        return f"{self.engine}:{self.voice}:p{self.pitch}:s{self.speed}"


def _draw(rng: np.random.Generator, pairs: list[tuple[str, str]], n: int,
          pitch: tuple[int, int] | tuple[tuple[int, int], ...] = TRAIN_PITCH,
          exclude: set[str] = frozenset()) -> list[Voice]:
    voices: list[Voice] = []
    seen = set(exclude)
    while len(voices) < n:
        accent, variant = pairs[int(rng.integers(len(pairs)))]
        ranges = pitch if isinstance(pitch[0], tuple) else (pitch,)
        lo, hi = ranges[int(rng.integers(len(ranges)))]
        voice = Voice("espeak-ng", f"{accent}+{variant}", int(rng.integers(lo, hi + 1)),
                      int(rng.integers(TRAIN_SPEED[0], TRAIN_SPEED[1] + 1)))
        if voice.speaker not in seen:
            seen.add(voice.speaker)
            voices.append(voice)
    return voices


def espeak_speakers() -> dict[str, list[Voice]]:
    """The fixed espeak-ng speaker lists: ``train``, ``test`` (held-out), ``ood-espeak``,
    ``ood-lang``. Deterministic (own seed), identical for every build."""
    rng = np.random.default_rng(SPEAKER_LIST_SEED)
    pairs = [(a, v) for a in TRAIN_ACCENTS for v in TRAIN_VARIANTS]
    order = rng.permutation(len(pairs))
    heldout_pairs = [pairs[i] for i in order[:N_HELDOUT_PAIRS]]
    train_pairs = [pairs[i] for i in order[N_HELDOUT_PAIRS:]]
    train = _draw(rng, train_pairs, N_TRAIN_SPEAKERS)
    heldout = _draw(rng, heldout_pairs, N_HELDOUT_SPEAKERS)
    # OOD: a third unseen accent, a third unseen variant, a third extreme pitch
    ood_accent = [(a, v) for a in OOD_ACCENTS for v in TRAIN_VARIANTS]
    ood_variant = [(a, v) for a in TRAIN_ACCENTS for v in OOD_VARIANTS]
    third = N_OOD_SPEAKERS // 3
    ood = _draw(rng, ood_accent, third)
    ood += _draw(rng, ood_variant, third, exclude={v.speaker for v in ood})
    ood += _draw(rng, train_pairs, N_OOD_SPEAKERS - 2 * third, pitch=OOD_PITCH_RANGES,
                 exclude={v.speaker for v in ood})
    lang_pairs = [(lang, v) for lang in LANGS for v in TRAIN_VARIANTS]
    lang = _draw(rng, lang_pairs, N_LANG_SPEAKERS)
    return {"train": train, "test": heldout, "ood-espeak": ood, "ood-lang": lang}


def other_voices(engine: str) -> tuple[list[Voice], list[Voice]]:
    """(train/valid/test voices, test-only voices) of a non-espeak synthesizer."""
    train, test = OTHER_ENGINE_VOICES[engine]
    return [Voice(engine, v) for v in train], [Voice(engine, v) for v in test]
