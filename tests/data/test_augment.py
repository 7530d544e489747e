"""Augmentation of dynamic mixing: each effect against a closed-form expectation, the RIR bank,
and the dataset's invariants (seeded, off = unaugmented, stems add up to the mixture)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy import signal

from lvbd.config import AugmentConfig, ConfigError, apply_overrides, config_from_dict
from lvbd.data import augment as A
from lvbd.data.datasets import DynamicMixDataset
from lvbd.data.mixing import NOISE_KINDS, coloured_noise, mix_stems
from lvbd.errors import LvbdError

RATE = 8000


def _db(x) -> float:
    return 10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2))


def _band_energy(x: np.ndarray, low: float, high: float) -> float:
    power = np.abs(np.fft.rfft(np.asarray(x, np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    return float(power[(freqs >= low) & (freqs < high)].sum())


def _attenuation_db(before: np.ndarray, after: np.ndarray, low: float, high: float) -> float:
    return 10 * np.log10(_band_energy(before, low, high) / _band_energy(after, low, high))


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory) -> Path:
    bank = A.build_rir_bank(3, RATE, seed=1, rt60_range=(0.2, 0.4), sources_per_room=3)
    return A.save_rir_bank(bank, tmp_path_factory.mktemp("rirs") / "bank.npz")


def _all_on(bank_path: Path, **overrides) -> AugmentConfig:
    values = dict(speed_prob=1.0, eq_prob=1.0, reverb_prob=1.0, gain_prob=1.0, noise_prob=1.0,
                  band_prob=1.0, codec_prob=1.0, polarity_prob=1.0, phase_prob=1.0, rir_bank=str(bank_path), rir_rooms=3,
                  rir_seed=1, rt60_min=0.2, rt60_max=0.4)
    values.update(overrides)
    return AugmentConfig(**values)


# ------------------------------------------------------------------------------ effects
@pytest.mark.parametrize("factor", [Fraction(9, 10), Fraction(21, 20), Fraction(11, 10)])
def test_speed_perturb_scales_length_and_frequency(factor):
    L = 2 * RATE
    sine = np.sin(2 * np.pi * 500.0 * np.arange(L) / RATE).astype(np.float32)
    out = A.speed_perturb(sine, factor)
    assert out.dtype == np.float32
    assert abs(len(out) - L / factor) <= 1
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    peak = np.fft.rfftfreq(len(out), 1 / RATE)[np.argmax(spectrum)]
    assert peak == pytest.approx(500.0 * float(factor), abs=1.0)
    assert np.array_equal(A.speed_perturb(sine, Fraction(1)), sine)


def test_random_speed_is_a_small_ratio_in_range():
    rng = np.random.default_rng(0)
    factors = [A.random_speed(rng, 0.9, 1.1) for _ in range(200)]
    assert all(0.9 - 0.01 <= f <= 1.1 + 0.01 and f.denominator <= 20 for f in factors)
    assert min(factors) < 0.93 and max(factors) > 1.07


def test_eq_biquads_reach_their_gains():
    def gain_db(sos, f):
        _, h = signal.sosfreqz(sos, worN=[f], fs=RATE)
        return 20 * np.log10(np.abs(h[0]))
    peak = A.peaking_biquad(1000.0, -12.0, 2.0, RATE)[None]
    assert gain_db(peak, 1000.0) == pytest.approx(-12.0, abs=1e-6)
    assert abs(gain_db(peak, 100.0)) < 0.2 and abs(gain_db(peak, 3900.0)) < 0.2
    low = A.shelf_biquad("low", 500.0, -8.0, RATE)[None]
    assert gain_db(low, 1.0) == pytest.approx(-8.0, abs=0.01)
    assert abs(gain_db(low, 3990.0)) < 0.1
    high = A.shelf_biquad("high", 2000.0, 6.0, RATE)[None]
    assert gain_db(high, 3999.0) == pytest.approx(6.0, abs=0.05)
    assert abs(gain_db(high, 1.0)) < 0.01
    white = np.random.default_rng(0).standard_normal(4 * RATE)
    cut = signal.sosfilt(peak, white)
    assert _attenuation_db(white, cut, 950, 1050) > 10.0
    assert abs(_attenuation_db(white, cut, 100, 300)) < 0.5
    rng = np.random.default_rng(1)
    for _ in range(50):
        sos = A.random_eq(rng, RATE, max_db=10.0)
        assert sos.shape[1] == 6 and 1 <= sos.shape[0] <= 3
        assert np.all(np.abs(signal.sos2zpk(sos)[1]) < 1.0)  # stable
        _, h = signal.sosfreqz(sos, worN=512, fs=RATE)
        assert np.abs(20 * np.log10(np.abs(h))).max() <= 3 * 10.0 + 0.5


@pytest.mark.parametrize("corner", [40.0, 250.0, 1000.0])
def test_allpass_keeps_magnitude_and_turns_phase(corner):
    sos = A.allpass_sections([corner], RATE)
    freqs = np.array([10.0, corner / 3, corner, 3 * corner, 3990.0])
    _, h = signal.sosfreqz(sos, worN=freqs, fs=RATE)
    np.testing.assert_allclose(np.abs(h), 1.0, atol=1e-12)
    # bilinear first-order all-pass: phase = −2 arctan(tan(π f/fs) / tan(π f_c/fs))
    expected = -2 * np.arctan(np.tan(np.pi * freqs / RATE) / np.tan(np.pi * corner / RATE))
    np.testing.assert_allclose(np.angle(h), expected, atol=1e-9)
    assert np.angle(h[2], deg=True) == pytest.approx(-90.0)
    # a long signal keeps its energy, but not its waveform
    x = np.random.default_rng(0).standard_normal(8 * RATE)
    y = signal.sosfilt(sos, x)
    assert _db(y) == pytest.approx(_db(x), abs=0.05)
    assert _cosine(x, y) < 0.95
    with pytest.raises(ValueError, match="corner"):
        A.allpass_sections([RATE / 2], RATE)


def test_random_allpass_corners_in_range():
    rng = np.random.default_rng(3)
    counts, corners = set(), []
    for _ in range(200):
        sos = A.random_allpass(rng, RATE)
        counts.add(len(sos))
        t = (1 + sos[:, 0]) / (1 - sos[:, 0])  # c = (t − 1)/(t + 1) → t = tan(π f / fs)
        corners += list(np.arctan(t) * RATE / np.pi)
    assert counts == {1, 2}
    assert min(corners) >= A.PHASE_HZ[0] - 1e-6 and max(corners) <= A.PHASE_HZ[1] + 1e-6
    assert min(corners) < 60 and max(corners) > 700


def test_band_limits_attenuate_out_of_band_energy():
    white = np.random.default_rng(2).standard_normal(4 * RATE)
    tel = signal.sosfilt(A.band_filter("telephone", RATE), white)
    assert _attenuation_db(white, tel, 0, 300) > 20.0
    assert _attenuation_db(white, tel, 3600, 4001) > 30.0
    assert abs(_attenuation_db(white, tel, 400, 3200)) < 1.5
    low = signal.sosfilt(A.band_filter("lowpass", RATE, 2000.0), white)
    assert _attenuation_db(white, low, 2600, 4001) > 20.0
    assert abs(_attenuation_db(white, low, 0, 1500)) < 0.5
    high = signal.sosfilt(A.band_filter("highpass", RATE, 300.0), white)
    assert _attenuation_db(white, high, 0, 200) > 20.0
    assert abs(_attenuation_db(white, high, 600, 4001)) < 0.5
    with pytest.raises(ValueError, match="cutoff"):
        A.band_filter("lowpass", RATE, 5000.0)
    kinds = {A.random_band(np.random.default_rng(i), RATE)[0] for i in range(30)}
    assert kinds == set(A.BAND_KINDS)


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_at_the_requested_snr_split_equally(kind):
    rng = np.random.default_rng(3)
    stems = (0.05 * rng.standard_normal((3, 2 * RATE))).astype(np.float32)
    noise = coloured_noise(rng, 2 * RATE, RATE, kind)
    out, scaled = A.add_noise(stems, noise, 17.3)
    assert _db(stems.sum(0)) - _db(scaled) == pytest.approx(17.3, abs=0.1)
    assert _db(stems.sum(0)) - _db(out.sum(0) - stems.sum(0)) == pytest.approx(17.3, abs=0.1)
    for k in range(3):  # each stem carries the same third of the noise
        np.testing.assert_allclose(out[k] - stems[k], scaled / 3, atol=1e-6)
    with pytest.raises(ValueError, match="noise"):
        A.add_noise(stems, noise[:-1], 10.0)


def test_mu_law_round_trip_error_is_bounded():
    x = np.concatenate([np.linspace(-1, 1, 20001), np.geomspace(1e-5, 1e-2, 1000)])
    for bits in (8, 4):
        y = A.mu_law(x, bits).astype(np.float64)
        bound = np.log1p(A.MU) / A.MU * (1 + A.MU * np.maximum(np.abs(x), np.abs(y))) / (2 ** bits - 1)
        assert np.all(np.abs(y - x) <= bound + 1e-6)
        assert np.abs(y - x).max() > 0.1 * bound.max()  # it does quantise
        assert len(np.unique(y)) <= 2 ** bits
    speech = 0.1 * np.sin(2 * np.pi * 300 * np.arange(RATE) / RATE)  # -23 dBFS tone
    snr8 = _db(speech) - _db(A.mu_law(speech, 8) - speech)
    snr4 = _db(speech) - _db(A.mu_law(speech, 4) - speech)
    assert 30.0 < snr8 < 45.0 and snr4 < snr8 - 15.0


def test_codec_split_is_the_codec_on_the_mixture():
    stems = (0.1 * np.random.default_rng(4).standard_normal((2, RATE))).astype(np.float32)
    out = A.codec_split(stems, bits=8)
    np.testing.assert_allclose(out.sum(0), A.mu_law(stems.sum(0), 8), atol=1e-6)
    np.testing.assert_allclose(out[0] - stems[0], out[1] - stems[1], atol=1e-7)
    assert not np.allclose(out, stems, atol=1e-5)


# ------------------------------------------------------------------------------- rooms
def test_rir_bank_shapes_direct_path_and_rt60(bank_path):
    import pyroomacoustics as pra

    bank = A.load_rir_bank(bank_path)
    R, S, Lr = bank.rirs.shape
    assert (R, S) == (3, 3) and bank.rirs.dtype == np.float32 and bank.sample_rate == RATE
    assert bank.lengths.shape == bank.direct.shape == (3, 3) and bank.lengths.max() == Lr
    assert np.all((0.2 <= bank.rt60) & (bank.rt60 <= 0.4))
    for r in range(R):
        for s in range(S):
            h = bank.rirs[r, s, :bank.lengths[r, s]]
            d = int(bank.direct[r, s])
            assert np.all(bank.rirs[r, s, bank.lengths[r, s]:] == 0)
            assert abs(int(np.argmax(np.abs(h[:d + 3]))) - d) <= 1  # first arrival: direct path
            assert np.abs(h[d]) > 0.3 * np.abs(h).max()
            measured = pra.experimental.measure_rt60(h, RATE, decay_db=30)
            assert 0.5 * bank.rt60[r] < measured < 1.6 * bank.rt60[r]
    impulse = np.zeros((2, 4000), np.float32)
    impulse[:, 0] = 1.0
    out = A.reverberate(impulse, bank.rirs[0, :2, :bank.lengths[0, :2].max()])
    np.testing.assert_allclose(out[:, :100], bank.rirs[0, :2, :100], atol=1e-6)


def test_rir_bank_cache_round_trip(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "bank.npz"
    built = A.load_or_build_rir_bank(path, 2, RATE, seed=5, rt60_range=(0.15, 0.25))
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["bank.npz"]

    def no_build(*args, **kwargs):
        raise AssertionError("the cached bank must be read, not rebuilt")
    monkeypatch.setattr(A, "build_rir_bank", no_build)
    again = A.load_or_build_rir_bank(path, 2, RATE, seed=5, rt60_range=(0.15, 0.25))
    for name in ("rirs", "lengths", "direct", "rt60", "rooms"):
        assert np.array_equal(getattr(built, name), getattr(again, name))
    assert (again.sample_rate, again.seed) == (RATE, 5)
    with pytest.raises(LvbdError, match="seed"):
        A.load_or_build_rir_bank(path, 2, RATE, seed=6, rt60_range=(0.15, 0.25))
    assert A.rir_bank_path("data", 100, RATE, 0, (0.15, 0.6)) == \
        Path("data/rirs/bank-100-8000hz-rt0.15-0.6-seed0.npz")


# ----------------------------------------------------------------------------- dataset
def _raw(data: DynamicMixDataset, index: int, length: int | None = None) -> np.ndarray:
    """The plan's clips ``(K, length)`` read with soundfile, before any scaling."""
    length = data.segment if length is None else length
    stems = []
    for path, offset in zip(data.plan(index).paths, data.plan(index).offsets):
        frames = sf.info(str(data.root / path)).frames
        wav, _ = sf.read(str(data.root / path), start=min(offset, frames - length),
                         frames=length, dtype="float32")
        stems.append(wav)
    return np.stack(stems)


def _unaugmented(data: DynamicMixDataset, index: int) -> np.ndarray:
    """Today's item, rebuilt from the plan with soundfile and mix_stems only."""
    plan = data.plan(index)
    return mix_stems(_raw(data, index), np.asarray(plan.gains_db), plan.level_db)[0]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_all_off_gives_the_unaugmented_items(fake_corpus):
    plain = DynamicMixDataset(fake_corpus, "train", 2, 1.0, RATE, seed=5, length=10)
    off = DynamicMixDataset(fake_corpus, "train", 2, 1.0, RATE, seed=5, length=10,
                            augment=AugmentConfig())
    assert off.augment is None
    for i in range(10):
        assert torch.equal(plain[i], off[i])
        assert np.array_equal(plain[i].numpy(), _unaugmented(plain, i))


def test_augmented_items_are_seeded_and_keep_the_plan(fake_corpus, bank_path):
    cfg = _all_on(bank_path)
    a = DynamicMixDataset(fake_corpus, "train", 3, 2.0, RATE, seed=2, length=8, augment=cfg)
    b = DynamicMixDataset(fake_corpus, "train", 3, 2.0, RATE, seed=2, length=8, augment=cfg)
    plain = DynamicMixDataset(fake_corpus, "train", 3, 2.0, RATE, seed=2, length=8)
    for i in range(4):
        x = a[i]
        assert x.shape == (3, 2 * RATE) and x.dtype == torch.float32 and torch.isfinite(x).all()
        assert torch.equal(x, b[i]) and torch.equal(x, a[i])
        assert not torch.equal(x, plain[i]) and not torch.equal(x, a[i + 1])
        assert a.plan(i) == plain.plan(i)
        assert x.abs().max() <= 1.0
    # one effect's draws do not depend on whether another is on
    rngs = a.augment.generators(2, 0)
    speed_only = A.Augmenter(AugmentConfig(speed_prob=1.0), RATE)
    assert speed_only.speed_factors(speed_only.generators(2, 0), 3) == \
        a.augment.speed_factors(rngs, 3)


def test_stems_add_up_to_the_noisy_and_coded_mixture(fake_corpus):
    plain = DynamicMixDataset(fake_corpus, "train", 2, 1.0, RATE, seed=0, length=12)
    noisy = DynamicMixDataset(fake_corpus, "train", 2, 1.0, RATE, seed=0, length=12,
                              augment=AugmentConfig(noise_prob=1.0, snr_min_db=12.0,
                                                    snr_max_db=12.0))
    coded = DynamicMixDataset(fake_corpus, "train", 2, 1.0, RATE, seed=0, length=12,
                              augment=AugmentConfig(codec_prob=1.0))
    checked = 0
    for i in range(12):
        clean, x = plain[i].numpy(), noisy[i].numpy()
        mixture = torch.from_numpy(x)[None].sum(1)[0].numpy()  # what the training loop forms
        np.testing.assert_allclose(coded[i].numpy().sum(0), A.mu_law(clean.sum(0)), atol=1e-6)
        if max(np.abs(x).max(), np.abs(mixture).max()) >= A.MAX_PEAK - 1e-4:
            continue  # peak-limited: everything scaled down together
        checked += 1
        assert _db(clean.sum(0)) - _db(mixture - clean.sum(0)) == pytest.approx(12.0, abs=0.1)
        np.testing.assert_allclose(x[0] - clean[0], x[1] - clean[1], atol=1e-6)
    assert checked >= 6


def test_polarity_and_phase_in_the_dataset(fake_corpus):
    """Polarity: each stem is ± its unaugmented self (one common scale: the mixture's peak limit
    sees the flipped sum); phase: the stem is its source through the all-pass the item drew."""
    plain = DynamicMixDataset(fake_corpus, "train", 2, 1.0, RATE, seed=4, length=16)
    flipped = DynamicMixDataset(fake_corpus, "train", 2, 1.0, RATE, seed=4, length=16,
                                augment=AugmentConfig(polarity_prob=0.5))
    signs = []
    for i in range(16):
        x, y = plain[i].numpy(), flipped[i].numpy()
        rng = flipped.augment.generators(4, i)["polarity"]
        flip = rng.random(2) < 0.5
        expected = np.where(flip[:, None], -x, x)
        scale = float(np.sum(y * expected) / np.sum(expected * expected))
        assert 0.5 < scale < 2.0
        np.testing.assert_allclose(y, scale * expected, atol=1e-6)
        signs += list(flip)
    assert 0 < sum(signs) < len(signs)  # both outcomes occur
    turned = DynamicMixDataset(fake_corpus, "train", 2, 1.0, RATE, seed=4, length=4,
                               augment=AugmentConfig(phase_prob=1.0))
    for i in range(4):
        raw = _raw(plain, i)
        rng = turned.augment.generators(4, i)["phase"]
        for k in range(2):
            rng.random()
            expected = signal.sosfilt(A.random_allpass(rng, RATE), raw[k])
            got = turned[i][k].numpy()
            assert _cosine(got, expected) > 0.99999
            assert _cosine(got, plain[i][k].numpy()) < 0.999


def test_speed_and_reverb_in_the_dataset(fake_corpus, bank_path):
    """Each stem is its source sped up / convolved with the RIR the item drew, up to scale."""
    fast = DynamicMixDataset(fake_corpus, "train", 2, 1.0, RATE, seed=1, length=6,
                             augment=AugmentConfig(speed_prob=1.0, speed_min=1.1, speed_max=1.1))
    wet = DynamicMixDataset(fake_corpus, "train", 2, 1.0, RATE, seed=1, length=6,
                            augment=_all_on(bank_path, speed_prob=0.0, eq_prob=0.0, gain_prob=0.0,
                                            noise_prob=0.0, band_prob=0.0, codec_prob=0.0,
                                            polarity_prob=0.0, phase_prob=0.0))
    bank = wet.augment.bank
    for i in range(3):
        raw = _raw(fast, i, int(np.ceil(fast.segment * 1.1)) + 1)
        expected = A.speed_perturb(raw, Fraction(11, 10))[:, :fast.segment]
        assert all(_cosine(fast[i][k].numpy(), expected[k]) > 0.99999 for k in range(2))
        rng = wet.augment.generators(1, i)["reverb"]
        rng.random()
        room = int(rng.integers(bank.n_rooms))
        where = rng.choice(bank.sources_per_room, 2, replace=False)
        dry = _raw(wet, i)
        images = A.reverberate(dry, bank.rirs[room, where])
        for k in range(2):
            assert _cosine(wet[i][k].numpy(), images[k]) > 0.99999
            assert _cosine(wet[i][k].numpy(), dry[k]) < 0.9


def test_augment_config_keys_and_validation(tmp_path):
    cfg = apply_overrides(config_from_dict({"data": {"augment": {"noise_prob": 0.5}}}),
                          ["data.augment.reverb_prob=0.25", "data.augment.band_kinds=[telephone]"])
    assert cfg.data.augment.noise_prob == 0.5 and cfg.data.augment.reverb_prob == 0.25
    assert cfg.data.augment.band_kinds == ["telephone"]
    assert cfg.to_dict()["data"]["augment"]["codec_bits"] == 8
    assert config_from_dict(cfg.to_dict()) == cfg  # checkpoints store the config as a dict
    with pytest.raises(ConfigError, match="data.augment.revreb_prob"):
        config_from_dict({"data": {"augment": {"revreb_prob": 0.5}}})
    defaults = AugmentConfig()
    assert all(getattr(defaults, k) == 0.0 for k in vars(defaults) if k.endswith("_prob"))
    with pytest.raises(ValueError, match="probabilities"):
        A.Augmenter(AugmentConfig(noise_prob=1.5))
    with pytest.raises(ValueError, match="noise_kinds"):
        A.Augmenter(AugmentConfig(noise_kinds=["purple"]))
    with pytest.raises(ValueError, match="speed_min"):
        A.Augmenter(AugmentConfig(speed_min=1.2, speed_max=1.1))


def test_validation_with_random_polarity_and_phase(fake_corpus):
    """data.valid_polarity_phase: the training loop's validation items are the plain ones with
    each source's polarity and phase drawn by augment.polarity_phase (seeded, so fixed)."""
    from lvbd.config import Config
    from lvbd.data.datasets import FixedValidSet
    from lvbd.train import _data

    cfg = Config()
    cfg.data.root, cfg.data.engines, cfg.data.valid_items = str(fake_corpus), ["espeak-ng"], 12
    cfg.data.valid_segment_seconds = 1.0
    plain = _data(cfg, 0, 0, 1)[1]
    cfg.data.valid_polarity_phase = True
    turned = _data(cfg, 0, 0, 1)[1]
    again = FixedValidSet(fake_corpus, 12, 2, 1.0, RATE, cfg.train.seed + 10_000, ["espeak-ng"],
                          augment=A.polarity_phase()).items
    flips = phases = 0
    for x, y, z in zip(plain, turned, again):
        assert torch.equal(y, z)
        for k in range(2):
            c = _cosine(x[k].numpy(), y[k].numpy())
            flips += c < 0
            phases += abs(c) < 0.999
    assert 0 < flips < 24 and 0 < phases < 24
