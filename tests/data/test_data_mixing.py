"""Mixing functions and the datasets built on them (fake noise-burst corpus, no engine)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from lvbd.data.datasets import DynamicMixDataset, FixedValidSet, speaker_weights
from lvbd.data.mixing import (coloured_noise, crop_or_pad, mix_stems, random_gains_db,
                              scale_noise, NOISE_KINDS)
from lvbd.data.synth import trim_silence
from lvbd.errors import LvbdError


def _rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2))


def test_mix_stems_sums_and_applies_gains_and_level():
    rng = np.random.default_rng(1)
    stems = rng.standard_normal((3, 4000)) * np.array([[0.1], [2.0], [0.5]])
    gains = np.array([-2.0, 0.5, 2.5])
    out, mixture = mix_stems(stems, gains, level_db=-30.0, max_peak=1.0)
    assert out.dtype == np.float32 and out.shape == (3, 4000)
    assert np.array_equal(out.sum(axis=0), mixture)
    rel = [_rms_db(out[k]) - _rms_db(out[0]) for k in range(3)]
    assert np.allclose(rel, gains - gains[0], atol=1e-3)
    assert _rms_db(mixture) == pytest.approx(-30.0, abs=1e-3)
    loud, loud_mix = mix_stems(stems, gains, level_db=0.0, max_peak=0.5)
    assert max(np.abs(loud).max(), np.abs(loud_mix).max()) <= 0.5 + 1e-6
    with pytest.raises(ValueError, match="gains_db"):
        mix_stems(stems, gains[:2])


def test_gains_crop_pad_and_noise():
    rng = np.random.default_rng(2)
    gains = random_gains_db(rng, 4)
    assert gains.max() - gains.min() <= 5.0
    wav = np.arange(10, dtype=np.float32)
    assert np.array_equal(crop_or_pad(wav, 4, 3), [3, 4, 5, 6])
    assert np.array_equal(crop_or_pad(wav, 4, 99), [6, 7, 8, 9])  # offset clamped
    assert np.array_equal(crop_or_pad(wav[:2], 5, 2), [0, 0, 0, 1, 0])
    mixture = rng.standard_normal(8000).astype(np.float32)
    for kind in NOISE_KINDS:
        noise = coloured_noise(np.random.default_rng(3), 8000, 8000, kind)
        assert np.isfinite(noise).all() and _rms_db(noise) == pytest.approx(0.0, abs=1e-3)
        scaled = scale_noise(mixture, noise, 7.5)
        assert _rms_db(mixture) - _rms_db(scaled) == pytest.approx(7.5, abs=1e-3)
    pink = np.abs(np.fft.rfft(coloured_noise(np.random.default_rng(4), 8000, 8000, "pink")))
    assert pink[10:100].mean() > 3 * pink[2000:3000].mean()


def test_trim_silence_keeps_speech_with_margin():
    rate = 8000
    tone = 0.5 * np.sin(2 * np.pi * 200 * np.arange(rate) / rate)
    wav = np.concatenate([np.zeros(rate), tone, np.zeros(2 * rate)]).astype(np.float32)
    trimmed = trim_silence(wav, rate)
    assert rate <= len(trimmed) <= rate + int(0.15 * rate)
    assert trim_silence(np.zeros(rate, np.float32), rate).size == 0


def test_dynamic_mix_is_seeded_by_seed_and_index(fake_corpus):
    data = DynamicMixDataset(fake_corpus, "train", 2, 1.0, 8000, seed=5, length=20)
    again = DynamicMixDataset(fake_corpus, "train", 2, 1.0, 8000, seed=5, length=20)
    other = DynamicMixDataset(fake_corpus, "train", 2, 1.0, 8000, seed=6, length=20)
    assert len(data) == 20
    x = data[7]
    assert x.shape == (2, 8000) and x.dtype == torch.float32
    assert torch.equal(x, again[7]) and torch.equal(x, data[7])
    assert not torch.equal(x, data[8]) and not torch.equal(x, other[7])
    with pytest.raises(IndexError):
        data[20]


def test_dynamic_mix_speakers_gains_and_engines(fake_corpus):
    data = DynamicMixDataset(fake_corpus, "train", 3, 2.0, 8000, seed=0, length=50,
                             engines=["espeak-ng"])
    for i in range(50):
        plan = data.plan(i)
        assert len(set(plan.speakers)) == 3
        assert "fake:spk4" not in plan.speakers  # the flite speaker is filtered out
        assert max(plan.gains_db) - min(plan.gains_db) <= 5.0
    stems = data[3].numpy()
    plan = data.plan(3)
    rel = [_rms_db(stems[k]) - _rms_db(stems[0]) for k in range(3)]
    assert np.allclose(rel, np.array(plan.gains_db) - plan.gains_db[0], atol=0.05)
    assert _rms_db(stems.sum(0)) == pytest.approx(plan.level_db, abs=0.05) or \
        np.abs(stems.sum(0)).max() == pytest.approx(0.9, abs=1e-3)
    every = DynamicMixDataset(fake_corpus, "train", 2, 1.0, 8000, seed=0, length=200,
                              engines=None)
    assert any("fake:spk4" in every.plan(i).speakers for i in range(200))
    with pytest.raises(LvbdError, match="speaker"):
        DynamicMixDataset(fake_corpus, "train", 5, 1.0, 8000, engines=["espeak-ng"])


def test_engine_shares_set_how_often_an_engine_is_drawn(fake_corpus):
    """fake_corpus: 4 espeak-ng speakers and 1 flite speaker, 3 training clips each. By utterance
    count flite is 1/5 of the sources; engine_shares={flite: 0.6} makes it 0.6 (one source per
    item, 4000 items: binomial SD 0.008), the espeak-ng speakers sharing the rest alike."""
    def flite_rate(**kwargs):
        data = DynamicMixDataset(fake_corpus, "train", 1, 1.0, 8000, seed=1, length=4000,
                                 engines=None, **kwargs)
        return np.mean([data.plan(i).speakers[0] == "fake:spk4" for i in range(len(data))])

    assert flite_rate() == pytest.approx(0.2, abs=0.03)
    assert flite_rate(engine_shares={}) == flite_rate()
    assert flite_rate(engine_shares={"flite": 0.6}) == pytest.approx(0.6, abs=0.03)
    assert flite_rate(engine_shares={"flite": 0.0}) == 0.0
    only_espeak = DynamicMixDataset(fake_corpus, "train", 1, 1.0, engines=["espeak-ng"],
                                    engine_shares={"flite": 0.5})  # left out by engines: ignored
    np.testing.assert_allclose(only_espeak.weights, 0.25)
    weights = speaker_weights(np.array([3.0, 3, 6, 2]), ["a", "a", "b", "c"], {"a": 0.5})
    np.testing.assert_allclose(weights, [0.25, 0.25, 0.5 * 6 / 8, 0.5 * 2 / 8])
    for shares, message in [({"mbrola": 0.5}, "no speaker"), ({"flite": 1.5}, "in \\[0, 1\\]"),
                            ({"flite": 0.7, "espeak-ng": 0.7}, "add up to")]:
        with pytest.raises(LvbdError, match=message):
            DynamicMixDataset(fake_corpus, "train", 2, 1.0, engines=None, engine_shares=shares)


def test_engine_shares_config_key(tmp_path):
    from lvbd.config import ConfigError, load_config

    cfg = load_config(None, ["data.engine_shares={asterisk: 0.25, flite: 1}"])
    assert cfg.data.engine_shares == {"asterisk": 0.25, "flite": 1.0}
    with pytest.raises(ConfigError, match="mapping of names to numbers"):
        load_config(None, ["data.engine_shares=[asterisk]"])


def test_same_speaker_items(fake_corpus):
    """same_speaker_prob=0.5: about half the items (2000 plans, binomial SD 0.011) are two
    different clips of one speaker, the second at a speed 1.1–1.25 (or its inverse); the
    others are exactly the items without the option, and the audio is the clip resampled."""
    from scipy import signal

    plain = DynamicMixDataset(fake_corpus, "train", 2, 1.0, 8000, seed=3, length=2000,
                              engines=None)
    same = DynamicMixDataset(fake_corpus, "train", 2, 1.0, 8000, seed=3, length=2000,
                             engines=None, same_speaker_prob=0.5)
    plans = [same.plan(i) for i in range(2000)]
    doubled = [i for i, p in enumerate(plans) if p.speeds]
    assert len(doubled) / 2000 == pytest.approx(0.5, abs=0.04)
    faster = 0
    for i, p in enumerate(plans):
        if not p.speeds:
            assert p == plain.plan(i)
            continue
        assert p.speakers[0] == p.speakers[1] and p.paths[0] != p.paths[1]
        assert p.speeds[0] == 1
        f = float(p.speeds[1])
        assert 1.1 - 0.03 <= f <= 1.25 + 0.03 or 1 / 1.25 - 0.03 <= f <= 1 / 1.1 + 0.03
        faster += f > 1
    assert faster / len(doubled) == pytest.approx(0.5, abs=0.06)
    assert all(torch.equal(same[i], plain[i]) for i in range(40) if not plans[i].speeds)

    i = doubled[0]
    p, stems = plans[i], same[i].numpy().astype(np.float64)
    for k in range(2):  # independent reference: soundfile + resample_poly
        wav, _ = sf.read(fake_corpus / p.paths[k], dtype="float64")
        part = wav[p.offsets[k]:p.offsets[k] + int(np.ceil(8000 * p.speeds[k])) + 1]
        ref = signal.resample_poly(part, p.speeds[k].denominator, p.speeds[k].numerator)
        ref = np.pad(ref, (0, max(0, 8000 - len(ref))))[:8000]
        cos = stems[k] @ ref / np.linalg.norm(stems[k]) / np.linalg.norm(ref)
        assert cos > 0.999
    wav, _ = sf.read(fake_corpus / p.paths[1], dtype="float64")  # the unsped clip is not it
    unsped = wav[p.offsets[1]:p.offsets[1] + 8000]
    assert abs(stems[1][:len(unsped)] @ unsped) / np.linalg.norm(stems[1]) \
        / np.linalg.norm(unsped) < 0.9
    for bad in (-0.1, 1.5):
        with pytest.raises(LvbdError, match="same_speaker_prob"):
            DynamicMixDataset(fake_corpus, "train", 2, 1.0, engines=None, same_speaker_prob=bad)


def test_exclude_speakers_leaves_them_out(fake_corpus):
    """An excluded speaker is never drawn, in training items and fixed items alike; the others
    still are; an unknown name is an error (a typo must not silently keep the speaker in)."""
    data = DynamicMixDataset(fake_corpus, "train", 2, 1.0, 8000, seed=2, length=300,
                             engines=None, exclude_speakers=["fake:spk1"])
    drawn = {s for i in range(300) for s in data.plan(i).speakers}
    assert drawn == {"fake:spk0", "fake:spk2", "fake:spk3", "fake:spk4"}
    fixed = FixedValidSet(fake_corpus, n_items=3, n_sources=2, segment_seconds=1.0, seed=1,
                          engines=None, exclude_speakers=["fake:spk1"])
    assert len(fixed) == 3
    with pytest.raises(LvbdError, match="exclude_speakers names 'fake:nobody'"):
        DynamicMixDataset(fake_corpus, "train", 2, 1.0, engines=None,
                          exclude_speakers=["fake:nobody"])
    with pytest.raises(LvbdError, match="speaker"):  # too few left for K sources
        DynamicMixDataset(fake_corpus, "train", 2, 1.0, engines=["espeak-ng"],
                          exclude_speakers=["fake:spk0", "fake:spk1", "fake:spk2"])


def test_same_speaker_prob_config_key():
    from lvbd.config import load_config

    assert load_config(None, []).data.same_speaker_prob == 0.0
    assert load_config(None, ["data.same_speaker_prob=0.2"]).data.same_speaker_prob == 0.2
    assert load_config(None, []).data.exclude_speakers == []
    assert load_config(None, ["data.exclude_speakers=[asterisk:menardi]"]
                       ).data.exclude_speakers == ["asterisk:menardi"]


def test_fixed_valid_set_is_deterministic_and_cached(fake_corpus):
    a = FixedValidSet(fake_corpus, n_items=4, n_sources=2, segment_seconds=1.0, seed=1)
    b = FixedValidSet(fake_corpus, n_items=4, n_sources=2, segment_seconds=1.0, seed=1)
    assert len(a) == 4
    assert all(torch.equal(a[i], b[i]) for i in range(4))
    assert a[0] is a[0]
