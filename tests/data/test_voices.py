"""Voice lists and held-out split (issue 9): the allow-list, which voices train and which are
held out, language text for non-English voices, Asterisk prompt speakers (GSM) and test-set
pools. Rendering tests need the packages that ``./setup.sh --corpus`` installs."""
from __future__ import annotations

import hashlib
import logging
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import write_text_cache
from lvbd.data import voices as V
from lvbd.data.corpus import BuildConfig, _asterisk_streams, plan_streams
from lvbd.data.synth import load_prompts
from lvbd.data.testsets import TEST_SETS, _pool
from lvbd.data.text import foreign_sentences, language_sentences, looks_english

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = re.compile(r"^(espeak-ng|sox|flite|festival|festvox-[a-z0-9-]+|mbrola|mbrola-[a-z]{2}\d|"
                     r"fortunes|asterisk-core-sounds-(en|es|fr|it|ru)-wav|asterisk-prompt-es-co|"
                     r"asterisk-prompt-fr-armelle|asterisk-prompt-it-menardi-wav)$")
# sha1 of the espeak-ng speaker lists before issue 9: research corpora must stay identical
ESPEAK_LISTS_SHA1 = "ccc7c66a69de0e77c6ec1b430926cd3d55f1dc36"

# the Asterisk speakers that train (every speaker of ASTERISK_DIRS not in ASTERISK_TEST_ONLY)
ASTERISK_TRAIN = ("june", "carlo", "ivrvoice-ru", "menardi")


def _training(engine: str) -> set[str]:
    out = set(V.OTHER_ENGINE_VOICES.get(engine, ((), ()))[0])
    out |= set(V.EXTRA_ENGINE_VOICES.get(engine, ((), ()))[0])
    return out


def test_espeak_speaker_lists_are_unchanged():
    speakers = V.espeak_speakers()
    text = "\n".join(f"{k}:" + ",".join(v.speaker for v in speakers[k]) for k in sorted(speakers))
    assert hashlib.sha1(text.encode()).hexdigest() == ESPEAK_LISTS_SHA1


def test_espeak_variant_of_every_speaker_id():
    speakers = V.espeak_speakers()
    for voice in sum(speakers.values(), []):
        assert V.espeak_variant(voice.speaker) == voice.voice.split("+")[1], voice.speaker
    assert V.espeak_variant("espeak-ng:en-us-nyc+f2:p40:s150") == "f2"
    assert V.espeak_variant("espeak-ng:en:p40:s150") is None          # no variant
    assert V.espeak_variant("mbrola:us1") is None                    # other engines
    assert V.espeak_variant("asterisk:allison") is None
    assert V.espeak_variant("s1") is None


def test_todays_split_is_kept_and_heldout_voices_never_train():
    # voices in training before issue 9 still train; those held out stay out of training
    assert {"us2", "us3"} <= _training("mbrola")
    assert {"awb", "rms"} <= _training("flite") and "kal" in _training("festival")
    assert {"june", "carlo", "ivrvoice-ru"} <= set(ASTERISK_TRAIN)
    assert {"us1", "en1"} <= set(V.SHIPPED_HELDOUT["mbrola"])
    assert {"ked", "slt-hts"} <= set(V.SHIPPED_HELDOUT["festival"])
    assert "slt" in V.SHIPPED_HELDOUT["flite"] and "allison" in V.SHIPPED_HELDOUT["asterisk"]
    assert "kal16" not in _training("flite")   # test-only, but the speaker of festival kal
    for engine, heldout in V.SHIPPED_HELDOUT.items():
        train = set(ASTERISK_TRAIN) if engine == "asterisk" else _training(engine)
        assert not train & set(heldout), engine
    # every mbrola voice has exactly one role; the English four keep their original streams
    extra_train, extra_test = V.EXTRA_ENGINE_VOICES["mbrola"]
    roles = list(extra_train) + list(extra_test) + ["us1", "us2", "us3", "en1"]
    assert sorted(roles) == sorted(V.MBROLA_VOICES)
    assert set(V.FESTIVAL_VOICES) == set(sum(V.EXTRA_ENGINE_VOICES["festival"], ())) | {
        "kal", "ked", "slt-hts"}


def test_heldout_voices_mix_languages_sexes_and_real_speakers():
    mbrola = V.SHIPPED_HELDOUT["mbrola"]
    assert len(mbrola) >= 6
    assert {V.MBROLA_VOICES[v][1] for v in mbrola} == {"F", "M"}
    assert len({V.MBROLA_VOICES[v][0] for v in mbrola}) >= 4
    real = set(V.SHIPPED_HELDOUT["asterisk"])
    assert "allison" in real and real & {"es-co", "armelle", "menardi"}
    assert len(real) >= 3   # ood-real needs 3 distinct speakers for its 3-speaker mixtures
    assert set(V.ASTERISK_TEST_ONLY) == real
    speakers = {speaker for speaker, *_ in V.ASTERISK_DIRS.values()}
    assert speakers == set(ASTERISK_TRAIN) | real


def _setup_packages() -> dict[str, set[str]]:
    text = (ROOT / "setup.sh").read_text()
    arrays = {}
    for name in ("corpus_packages", "voice_packages"):
        body = re.search(rf"^{name}=\((.*?)^\)", text, re.S | re.M).group(1)
        arrays[name] = set(body.split())
    voices = re.search(r'^mbrola_voices="(.*?)"', text, re.S | re.M).group(1).split()
    arrays["voice_packages"] |= {f"mbrola-{v}" for v in voices}
    return arrays


def test_setup_installs_only_allowed_packages_and_every_voice():
    packages = _setup_packages()
    every = packages["corpus_packages"] | packages["voice_packages"]
    assert sorted(p for p in every if not ALLOWED.match(p)) == []
    needed = {f"mbrola-{v}" for v in V.MBROLA_VOICES}
    needed |= {v.package for v in V.FESTIVAL_VOICES.values()}
    needed |= {package for *_, package in V.ASTERISK_DIRS.values()}
    assert sorted(needed - every) == []
    # --corpus (CI) holds what the rendering tests below need, and stays small
    assert {"mbrola-nl1", "festvox-ellpc11k", "espeak-ng", "festival"} <= packages[
        "corpus_packages"]
    assert len(packages["corpus_packages"]) <= 25


def _write_mo(path: Path, strings: list[str]) -> None:
    """A minimal GNU gettext catalog: msgid ``m<i>`` -> ``strings[i]``."""
    ids = [f"m{i}".encode() for i in range(len(strings))]
    values = [s.encode() for s in strings]
    n = len(strings)
    header = 28
    data = b""
    offsets = []
    base = header + 16 * n
    for blob in ids + values:
        offsets.append((len(blob), base + len(data)))
        data += blob + b"\0"
    table = b"".join(struct.pack("<2I", *o) for o in offsets)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<7I", 0x950412DE, 0, n, header, header + 8 * n, 0, 0)
                     + table + data)


def test_language_sentences_drop_english_and_read_caseless_scripts(tmp_path):
    german = ["Der Wert muss eine ganze Zahl sein, sonst bricht es ab.",
              "Die Datei konnte nicht geöffnet werden, bitte erneut versuchen."]
    english = "This is the value that you should enter when asked."
    _write_mo(tmp_path / "de" / "LC_MESSAGES" / "x.mo", german + [english])
    hebrew = "לא ניתן לייצר את התיקייה מכיוון שקיים קובץ בעל שם דומה."
    _write_mo(tmp_path / "he" / "LC_MESSAGES" / "x.mo", [hebrew, english])
    assert looks_english(english) and not any(looks_english(s) for s in german + [hebrew])
    assert language_sentences("de", str(tmp_path)) == tuple(sorted(german))
    assert language_sentences("he", str(tmp_path)) == (hebrew,)
    # ood-lang keeps its original filter (its sentences must not change)
    assert english in foreign_sentences("de", str(tmp_path))


def _fake_asterisk(root: Path) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(8000 * 2) / 8000
    for folder, ext in (("it_IT_f_Menardi", "wav"), ("es", "gsm")):
        for i in range(40):
            wav = (0.3 * np.sin(2 * np.pi * (150 + 5 * i) * t)
                   * (0.6 + 0.4 * rng.random(t.size))).astype(np.float32)
            path = root / folder / f"prompt-{i:02d}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            if ext == "gsm":   # header-less GSM 06.10, as asterisk-prompt-es-co ships
                sf.write(path, wav, 8000, format="RAW", subtype="GSM610")
            else:
                sf.write(path, wav, 8000, subtype="PCM_16")
    (root / "fr").symlink_to(root / "it_IT_f_Menardi")   # not the Armelle package


def test_asterisk_prompt_speakers_gsm_and_heldout_split(tmp_path, caplog):
    _fake_asterisk(tmp_path)
    with caplog.at_level(logging.WARNING):
        streams, missing = _asterisk_streams(tmp_path, seed=0)
    splits = {(s.voices[0].voice, s.split) for s in streams if s.clips}
    assert {("menardi", "train"), ("menardi", "valid"), ("menardi", "test")} <= splits
    assert {split for voice, split in splits if voice == "es-co"} == {"ood-real"}
    assert "asterisk/fr/" in missing and "asterisk-prompt-fr-armelle" in caplog.text
    assert "asterisk/en_US_f_Allison/" in missing
    es_clip = next(s.clips[0] for s in streams if s.voices[0].voice == "es-co")
    assert all(p.endswith(".gsm") for p in es_clip.prompts)
    wav = load_prompts([Path(p) for p in es_clip.prompts], 8000)
    assert wav.dtype == np.float32 and len(wav) >= 2 * 8000 and np.abs(wav).max() > 0.05
    _, without = _asterisk_streams(tmp_path, seed=0, extra_voices=False)
    assert "asterisk/es/" in without and "asterisk/it_IT_f_Menardi/" in without


def _row(engine: str, voice: str, split: str) -> dict:
    return {"path": f"audio/{engine}/{voice}/{split}/0.flac", "speaker": f"{engine}:{voice}",
            "engine": engine, "voice": voice, "text": "", "duration": 4.0, "split": split}


def test_test_set_pools_hold_only_their_voices():
    rows = [_row("espeak-ng", "en-us+m1:p50:s170", "test")]
    for engine, (train, test) in list(V.OTHER_ENGINE_VOICES.items()) + list(
            V.EXTRA_ENGINE_VOICES.items()):
        for voice in train + test:
            rows.append(_row(engine, voice, V.OTHER_ENGINE_TEST_SET[engine]))
    for speaker in set(ASTERISK_TRAIN) | set(V.ASTERISK_TEST_ONLY):
        rows.append(_row("asterisk", speaker, "ood-real"))
    real = _pool(rows, TEST_SETS["ood-real"])
    assert set(real) == {f"asterisk:{s}" for s in V.ASTERISK_TEST_ONLY}
    heldout = set(_pool(rows, TEST_SETS["shipped-heldout"]))
    expected = {f"{e}:{v}" for e, vs in V.SHIPPED_HELDOUT.items() for v in vs}
    assert heldout == expected | {"espeak-ng:en-us+m1:p50:s170"}
    assert set(_pool(rows, TEST_SETS["ood-mbrola"])) == {
        f"mbrola:{v}" for v in ("us1", "us2", "us3", "en1")}
    assert set(_pool(rows, TEST_SETS["ood-mbrola-lang"])) == {
        f"mbrola:{v}" for v in V.MBROLA_HELDOUT_LANG}
    assert set(_pool(rows, TEST_SETS["ood-tts"])) == {
        "flite:awb", "flite:rms", "flite:slt", "flite:kal16", "festival:kal", "festival:ked",
        "festival:slt-hts"}


def test_missing_voices_are_skipped_with_their_package(tmp_path, caplog):
    out = tmp_path / "data"
    write_text_cache(out)
    for lang in {V.voice_language("mbrola", v) for v in V.MBROLA_VOICES} - {"en"}:
        (out / "text" / f"voice-{lang}.txt").write_text(
            "".join(f"Zin nummer {i} van de lijst hier.\n" for i in range(60)))
    config = BuildConfig(engines=("mbrola",), executables={"mbrola": "no-such-espeak-ng"})
    with caplog.at_level(logging.WARNING):
        streams, missing = plan_streams(out, config)
    assert streams == []
    assert {"mbrola/us2/train", "mbrola/de7/ood-mbrola", "mbrola/nl1/train"} <= set(missing)
    assert "mbrola-de7" in caplog.text and "no-such-espeak-ng" in caplog.text


@pytest.mark.skipif(shutil.which("espeak-ng") is None or not Path("/usr/share/mbrola/nl1").exists(),
                    reason="espeak-ng / mbrola-nl1 not installed (./setup.sh --corpus installs them)")
def test_mbrola_voice_speaks_its_language():
    from lvbd.data.synth import synthesize

    wav = synthesize(V.Voice("mbrola", "nl1"), "Dit is een korte zin in het Nederlands.", 8000)
    assert wav.dtype == np.float32 and 1.0 <= len(wav) / 8000 <= 6.0
    assert np.sqrt(np.mean(wav ** 2)) > 0.01


@pytest.mark.skipif(shutil.which("festival") is None
                    or not Path("/usr/share/festival/voices/spanish/el_diphone").exists(),
                    reason="festvox-ellpc11k not installed (./setup.sh --corpus installs it)")
def test_festival_voice_in_its_encoding_and_batch_recovers_from_a_bad_text():
    from lvbd.data.synth import SynthesisError, synthesize, synthesize_many

    voice = V.Voice("festival", "el")
    # the middle text (Cyrillic, not Latin-1) makes festival's Spanish front end crash
    texts = ["Buenos días, señor, ésta es una frase corta.", "Привет.", "La segunda frase es otra."]
    batch = synthesize_many(voice, texts, 8000)
    assert isinstance(batch[0], np.ndarray) and isinstance(batch[2], np.ndarray)
    assert 1.0 <= len(batch[0]) / 8000 <= 8.0
    assert isinstance(batch[1], SynthesisError)
    assert np.array_equal(batch[2], synthesize(voice, texts[2], 8000))
