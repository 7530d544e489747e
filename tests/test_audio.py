import numpy as np
import pytest
import soundfile as sf

from lvbd import audio


@pytest.mark.parametrize("suffix", ["wav", "flac"])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_round_trip(tmp_path, suffix, channels, rate):
    rng = np.random.default_rng(0)
    wav = (0.5 * rng.uniform(-1, 1, (channels, rate // 10))).astype(np.float32)
    path = audio.save(tmp_path / f"x.{suffix}", wav, rate)
    back, back_rate = audio.load(path)
    assert back_rate == rate and back.shape == wav.shape and back.dtype == np.float32
    np.testing.assert_allclose(back, wav, atol=1 / 2 ** 15 + 1e-7)


def test_float_wav_exact_with_clip_none(tmp_path):
    wav = np.array([[0.1, -2.5, 3.0]], dtype=np.float32)
    back, _ = audio.load(audio.save(tmp_path / "f.wav", wav, 8000, clip_mode="none"))
    np.testing.assert_array_equal(back, wav)


@pytest.mark.parametrize("orig,target", [(44100, 8000), (8000, 16000), (16000, 8000), (22050, 8000)])
def test_resample_keeps_sine_frequency_and_level(orig, target):
    freq, seconds = 440.0, 1.0
    t = np.arange(int(orig * seconds)) / orig
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[None]
    y = audio.resample(x, orig, target)[0]
    assert y.shape[-1] == audio.resampled_length(x.shape[-1], orig, target)
    core = y[len(y) // 4: 3 * len(y) // 4]
    spectrum = np.abs(np.fft.rfft(core * np.hanning(len(core))))
    peak = np.argmax(spectrum) * target / len(core)
    assert abs(peak - freq) < 2 * target / len(core)
    assert abs(np.sqrt(2) * core.std() - 0.5) < 0.01


def test_channel_conversion():
    stereo = np.stack([np.ones(4), -np.ones(4) * 0.5]).astype(np.float32)
    np.testing.assert_allclose(audio.convert_channels(stereo, 1), 0.25 * np.ones((1, 4)))
    assert audio.convert_channels(stereo[:1], 2).shape == (2, 4)
    with pytest.raises(ValueError):
        audio.convert_channels(np.zeros(4), 1)


def test_clip_modes():
    wav = np.array([[0.5, -2.0]], dtype=np.float32)
    np.testing.assert_allclose(audio.apply_clip(wav, "rescale"), [[0.25, -1.0]])
    np.testing.assert_allclose(audio.apply_clip(wav, "clamp"), [[0.5, -1.0]])
    np.testing.assert_allclose(audio.apply_clip(wav, "none"), wav)


def test_load_errors(tmp_path):
    with pytest.raises(audio.AudioError, match="no such file"):
        audio.load(tmp_path / "missing.wav")
    text = tmp_path / "text.wav"
    text.write_text("not audio")
    with pytest.raises(audio.AudioError, match="cannot read"):
        audio.load(text)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.0, np.nan, 0.1], dtype=np.float32), 8000, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match="NaN"):
        audio.load(nan)


def test_failed_save_leaves_existing_file_intact(tmp_path):
    path = audio.save(tmp_path / "keep.wav", np.zeros((1, 100), np.float32), 8000)
    before = path.read_bytes()
    with pytest.raises(audio.AudioError):
        audio.save(path, np.full((1, 10), np.nan, np.float32), 8000)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.wav"]


@pytest.mark.parametrize("clip_mode", ["rescale", "clamp", "none"])
def test_stream_writer_matches_save(tmp_path, clip_mode):
    rng = np.random.default_rng(1)
    wav = (1.5 * rng.standard_normal((2, 5000))).astype(np.float32)
    with audio.StreamWriter(tmp_path / "s.wav", 8000, 2, clip_mode, block_frames=777) as w:
        for i in range(0, 5000, 1234):
            w.write(wav[:, i:i + 1234])
        w.commit()
    audio.save(tmp_path / "ref.wav", wav, 8000, clip_mode)
    a, _ = audio.load(tmp_path / "s.wav")
    b, _ = audio.load(tmp_path / "ref.wav")
    np.testing.assert_allclose(a, b, atol=1 / 2 ** 15 + 1e-6)  # one LSB of int16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.wav", "s.wav"]


def test_stream_writer_abort_leaves_nothing(tmp_path):
    w = audio.StreamWriter(tmp_path / "s.flac", 8000, 1)
    w.write(np.zeros((1, 10), np.float32))
    w.abort()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------ the level a user gets (issue 12, item 2)
@pytest.mark.parametrize("suffix", ["wav", "flac"])
@pytest.mark.parametrize("clip_mode", ["rescale", "clamp", "none"])
@pytest.mark.parametrize("peak", [0.05, 0.5, 0.999])
def test_stream_writer_keeps_the_level_below_full_scale(tmp_path, suffix, clip_mode, peak):
    """Peak < 1: nothing to clip, so every mode writes the samples as they are (one 16-bit
    step at most; a float WAV exactly) — no normalisation to full scale."""
    rng = np.random.default_rng(2)
    wav = rng.standard_normal((2, 3001)).astype(np.float32)
    wav *= np.float32(peak / np.abs(wav).max())
    with audio.StreamWriter(tmp_path / f"s.{suffix}", 8000, 2, clip_mode, block_frames=500) as w:
        for i in range(0, wav.shape[1], 700):
            w.write(wav[:, i:i + 700])
        w.commit()
    back, rate = sf.read(tmp_path / f"s.{suffix}", dtype="float32", always_2d=True)
    assert rate == 8000 and back.T.shape == wav.shape
    if clip_mode == "none" and suffix == "wav":
        np.testing.assert_array_equal(back.T, wav)
    else:
        np.testing.assert_allclose(back.T, wav, atol=1 / 2 ** 15, rtol=0)
    assert abs(np.abs(back).max() - peak) <= 1 / 2 ** 15


def test_stream_writer_rescales_by_the_global_peak_only(tmp_path):
    """One loud sample in the last block: 'rescale' divides the whole file by that peak,
    'clamp' clips that sample alone (16-bit: within one step of the numpy result)."""
    rng = np.random.default_rng(3)
    wav = (0.4 * rng.uniform(-1, 1, (1, 4000))).astype(np.float32)
    wav[0, 3900] = 2.5
    for clip_mode, expected in (("rescale", wav / 2.5), ("clamp", np.clip(wav, -1, 1))):
        path = tmp_path / f"{clip_mode}.wav"
        with audio.StreamWriter(path, 8000, 1, clip_mode, block_frames=512) as w:
            w.write(wav[:, :1000])
            w.write(wav[:, 1000:])
            w.commit()
        back, _ = sf.read(path, dtype="float32", always_2d=True)
        np.testing.assert_allclose(back.T, expected, atol=1 / 2 ** 15, rtol=0, err_msg=clip_mode)


@pytest.mark.parametrize("peak", [0.3, 0.999])
def test_save_keeps_the_level_below_full_scale(tmp_path, peak):
    wav = (peak * np.sin(np.linspace(0, 60, 2000))[None]).astype(np.float32)
    back, _ = audio.load(audio.save(tmp_path / "x.wav", wav, 8000, clip_mode="rescale"))
    np.testing.assert_allclose(back, wav, atol=1 / 2 ** 15, rtol=0)
