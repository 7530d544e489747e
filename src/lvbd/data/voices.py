"""Who speaks: the fixed speaker lists of every engine and which of them each split may use.

Allowed speech sources (nothing else is installed, referenced or used: the other Debian speech
packages are kept for independent evaluation): espeak-ng, the ``mbrola-*`` voices (driven by
espeak-ng), flite, festival and ``festvox-*`` voices, ``asterisk-core-sounds-*-wav``,
``asterisk-prompt-es-co``, ``asterisk-prompt-fr-armelle``, ``asterisk-prompt-it-menardi-wav``.

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
Other engines (heard only by the shipped model, which trains on every engine's ``train``).
Each mbrola voice and each festival diphone/HTS voice is the recording of one human speaker:
  * mbrola, English (us1 F, us2 M, us3 M, en1 M; the original set): us2, us3 →
    ``train``/``valid`` + test sentences in ``ood-mbrola``; us1, en1 → ``ood-mbrola`` only.
  * mbrola, every other voice that espeak-ng 1.51 drives (``MBROLA_VOICES``; bz1 and hn1 have
    no espeak-ng voice), speaking gettext sentences of its own language (hash split of the
    sentence as for English): ``train``/``valid`` only, except the held-out de7 (F, German),
    fr5 (M, Belgian French), es3 (F, Castilian), nl2 (M, Dutch), pl1 (F, Polish) and ro1
    (M, Romanian) → ``ood-mbrola`` test sentences only (the ``ood-mbrola-lang`` set). A voice
    whose language has fewer than ``MIN_SENTENCES`` usable sentences is skipped with a warning
    (today fa (ir1), ja (jp1–3), zh (cn1), la (la1), mi (nz1)).
  * flite: awb, rms → ``train``/``valid`` + ``ood-tts``; slt, kal16 → ``ood-tts`` only.
  * festival: kal → ``train``/``valid`` + ``ood-tts``; ked, slt-hts → ``ood-tts`` only.
    New festvox voices (``FESTIVAL_VOICES``): rab, don (British M), el (es M), lp/pc (it F/M),
    ona-hts (ca F), dita/krb/machac (cs F/child M/M), msu-ru (ru M), mv (fi M) →
    ``train``/``valid``; ph (cs M) and lj (fi F) → ``ood-tts`` test sentences only.
    Left out: festvox-us1/us2/us3/en1 (festival front end on the mbrola us1–us3/en1 diphones,
    the same speakers), festvox-*8k (the kal/ked/rab speakers at 8 kHz; they conflict with the
    16 kHz packages), festvox-hi/mr/te-nsk (broken in Debian 12: ``*_phones.scm`` missing).
  * asterisk (real voices, mostly non-English): Carlo (it, M), June (fr-CA, F), the ru voice
    (F) and Menardi (it, F; ``asterisk-prompt-it-menardi-wav``) → prompts split by a hash of
    the prompt name into ``train``/``valid``/``test`` (the ``test`` share is in no test set);
    held out (``ood-real`` only): Allison (en and es, one speaker), es-co (Colombian Spanish,
    ``asterisk-prompt-es-co``, GSM 06.10) and Armelle (French, ``asterisk-prompt-fr-armelle``,
    GSM 06.10).
Research runs train on espeak-ng ``train`` only, so every ``ood-*`` set stays unseen. The
shipped model has heard every voice above except ``SHIPPED_HELDOUT``: mbrola us1, en1, de7,
fr5, es3, nl2, pl1, ro1 (8 speakers, 4 F / 4 M, 7 languages); flite slt; festival ked,
slt-hts, ph, lj; Asterisk Allison, es-co, Armelle (3 real speakers whose recordings never
enter training or validation). ``shipped-heldout`` and ``ood-real`` draw on these only.
Caveat: flite kal16 and festival kal are the same speaker (Kal's diphones), and festival kal
trains, so kal16 stays in ``ood-tts`` (unseen by research runs) but is not in
``SHIPPED_HELDOUT``; flite slt and festival slt-hts are one speaker, held out on both.
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

# sounds folder -> (speaker, language, file pattern, Debian package). The es/ and fr/ folders
# hold the raw GSM 06.10 prompts of asterisk-prompt-es-co / -fr-armelle (libsndfile reads
# header-less .gsm); es-co and Armelle are two further speakers, not Allison or June.
ASTERISK_DIRS = {
    "en_US_f_Allison": ("allison", "en", "*.wav", "asterisk-core-sounds-en-wav"),
    "es_MX_f_Allison": ("allison", "es", "*.wav", "asterisk-core-sounds-es-wav"),
    "fr_CA_f_June": ("june", "fr", "*.wav", "asterisk-core-sounds-fr-wav"),
    "it_IT_m_Carlo": ("carlo", "it", "*.wav", "asterisk-core-sounds-it-wav"),
    "ru_RU_f_IvrvoiceRU": ("ivrvoice-ru", "ru", "*.wav", "asterisk-core-sounds-ru-wav"),
    "it_IT_f_Menardi": ("menardi", "it", "*.wav", "asterisk-prompt-it-menardi-wav"),
    "es": ("es-co", "es", "*.gsm", "asterisk-prompt-es-co"),
    "fr": ("armelle", "fr", "*.gsm", "asterisk-prompt-fr-armelle"),
}
ASTERISK_TEST_ONLY = ("allison", "es-co", "armelle")


@dataclass(frozen=True)
class FestivalVoice:
    """A festival voice: the Scheme function that selects it, the language of its text (``en``
    or a gettext locale), the 8-bit encoding festival expects, the speaker's sex, package."""

    function: str
    language: str
    encoding: str
    sex: str
    package: str


FESTIVAL_VOICES = {
    "kal": FestivalVoice("voice_kal_diphone", "en", "latin-1", "M", "festvox-kallpc16k"),
    "ked": FestivalVoice("voice_ked_diphone", "en", "latin-1", "M", "festvox-kdlpc16k"),
    "slt-hts": FestivalVoice("voice_cmu_us_slt_arctic_hts", "en", "latin-1", "F",
                             "festvox-us-slt-hts"),
    "rab": FestivalVoice("voice_rab_diphone", "en", "latin-1", "M", "festvox-rablpc16k"),
    "don": FestivalVoice("voice_don_diphone", "en", "latin-1", "M", "festvox-don"),
    "el": FestivalVoice("voice_el_diphone", "es", "latin-1", "M", "festvox-ellpc11k"),
    "lp": FestivalVoice("voice_lp_diphone", "it", "latin-1", "F", "festvox-italp16k"),
    "pc": FestivalVoice("voice_pc_diphone", "it", "latin-1", "M", "festvox-itapc16k"),
    "ona-hts": FestivalVoice("voice_upc_ca_ona_hts", "ca", "iso-8859-15", "F",
                             "festvox-ca-ona-hts"),
    "dita": FestivalVoice("voice_czech_dita", "cs", "iso-8859-2", "F", "festvox-czech-dita"),
    "krb": FestivalVoice("voice_czech_krb", "cs", "iso-8859-2", "M", "festvox-czech-krb"),
    "machac": FestivalVoice("voice_czech_machac", "cs", "iso-8859-2", "M",
                            "festvox-czech-machac"),
    "ph": FestivalVoice("voice_czech_ph", "cs", "iso-8859-2", "M", "festvox-czech-ph"),
    "msu-ru": FestivalVoice("voice_msu_ru_nsh_clunits", "ru", "utf-8", "M", "festvox-ru"),
    "lj": FestivalVoice("voice_suo_fi_lj_diphone", "fi", "latin-1", "F", "festvox-suopuhe-lj"),
    "mv": FestivalVoice("voice_hy_fi_mv_diphone", "fi", "latin-1", "M", "festvox-suopuhe-mv"),
}

# mbrola voice -> (language of its text: "en" or a gettext locale, sex per Debian's package
# description). Every Debian mbrola-* voice that espeak-ng 1.51 drives as ``mb-<voice>``.
MBROLA_VOICES = {
    "af1": ("af", "M"), "ar1": ("ar", "M"), "ar2": ("ar", "M"),
    "br1": ("pt_BR", "M"), "br2": ("pt_BR", "F"), "br3": ("pt_BR", "M"), "br4": ("pt_BR", "F"),
    "ca1": ("fr", "M"), "ca2": ("fr", "M"), "cn1": ("zh_CN", "F"), "cr1": ("hr", "M"),
    "cz1": ("cs", "F"), "cz2": ("cs", "M"),
    "de1": ("de", "F"), "de2": ("de", "M"), "de3": ("de", "F"), "de4": ("de", "M"),
    "de5": ("de", "F"), "de6": ("de", "M"), "de7": ("de", "F"), "de8": ("de", "M"),
    "ee1": ("et", "M"), "en1": ("en", "M"),
    "es1": ("es", "M"), "es2": ("es", "M"), "es3": ("es", "F"), "es4": ("es", "M"),
    "fr1": ("fr", "M"), "fr2": ("fr", "F"), "fr3": ("fr", "M"), "fr4": ("fr", "F"),
    "fr5": ("fr", "M"), "fr6": ("fr", "M"), "fr7": ("fr", "M"),
    "gr1": ("el", "M"), "gr2": ("el", "M"), "hb1": ("he", "M"), "hb2": ("he", "F"),
    "hu1": ("hu", "M"), "ic1": ("is", "M"), "id1": ("id", "M"), "in1": ("hi", "M"),
    "in2": ("hi", "F"), "ir1": ("fa", "M"),
    "it1": ("it", "M"), "it2": ("it", "F"), "it3": ("it", "M"), "it4": ("it", "F"),
    "jp1": ("ja", "M"), "jp2": ("ja", "F"), "jp3": ("ja", "F"), "la1": ("la", "M"),
    "lt1": ("lt", "M"), "lt2": ("lt", "M"), "ma1": ("ms", "F"),
    "mx1": ("es", "M"), "mx2": ("es", "M"),
    "nl1": ("nl", "M"), "nl2": ("nl", "M"), "nl3": ("nl", "F"), "nz1": ("mi", "M"),
    "pl1": ("pl", "F"), "pt1": ("pt", "F"), "ro1": ("ro", "M"),
    "sw1": ("sv", "M"), "sw2": ("sv", "F"), "tl1": ("te", "F"), "tr1": ("tr", "M"),
    "tr2": ("tr", "F"), "us1": ("en", "F"), "us2": ("en", "M"), "us3": ("en", "M"),
    "vz1": ("es", "M"),
}
MBROLA_HELDOUT_LANG = ("de7", "fr5", "es3", "nl2", "pl1", "ro1")
MIN_SENTENCES = 30   # a voice whose language has fewer usable sentences is skipped

# The original English voices: engine -> (voices with a train/valid share, test-only voices);
# their streams, and the ood-mbrola / ood-tts sets drawn from them, are unchanged.
OTHER_ENGINE_VOICES = {
    "mbrola": (("us2", "us3"), ("us1", "en1")),
    "flite": (("awb", "rms"), ("slt", "kal16")),
    "festival": (("kal",), ("ked", "slt-hts")),
}
# Voices added since (issue 9): engine -> (train/valid voices, test-only voices)
EXTRA_ENGINE_VOICES = {
    "mbrola": (tuple(v for v in MBROLA_VOICES if v not in ("us1", "us2", "us3", "en1")
                     and v not in MBROLA_HELDOUT_LANG), MBROLA_HELDOUT_LANG),
    "festival": (("rab", "don", "el", "lp", "pc", "ona-hts", "dita", "krb", "machac", "msu-ru",
                  "mv"), ("ph", "lj")),
}
OTHER_ENGINE_TEST_SET = {"mbrola": "ood-mbrola", "flite": "ood-tts", "festival": "ood-tts",
                         "asterisk": "ood-real"}
# voices the shipped (all-engine) model never hears, for its own test table
SHIPPED_HELDOUT = {"mbrola": ("us1", "en1") + MBROLA_HELDOUT_LANG, "flite": ("slt",),
                   "festival": ("ked", "slt-hts", "ph", "lj"),
                   "asterisk": ASTERISK_TEST_ONLY}


def voice_language(engine: str, voice: str) -> str:
    """Language of the text a non-espeak voice speaks: ``en`` or a gettext locale."""
    if engine == "mbrola":
        return MBROLA_VOICES[voice][0]
    if engine == "festival":
        return FESTIVAL_VOICES[voice].language
    return "en"


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


def espeak_variant(speaker: str) -> str | None:
    """The espeak-ng voice variant of a manifest speaker id (``espeak-ng:en-us-nyc+f2:p40:s150``
    → ``f2``): speakers of one variant share its formants and differ in accent, pitch and speed.
    None for other engines and for a voice without a variant."""
    engine, _, rest = speaker.partition(":")
    voice = rest.split(":", 1)[0]
    if engine != "espeak-ng" or "+" not in voice:
        return None
    return voice.rsplit("+", 1)[1]


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
