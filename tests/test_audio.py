import os
import re
from fractions import Fraction

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


# ------------------------------------------------ mutation-testing triage (runs/audio_triage.md)
@pytest.mark.parametrize("fmt,input_subtype,clip_mode,expected", [
    ("wav", "PCM_24", "rescale", "PCM_24"),     # 24-bit in -> 24-bit out
    ("wav", "PCM_32", "clamp", "PCM_32"),
    ("wav", "FLOAT", "rescale", "FLOAT"),       # float WAV -> float WAV
    ("wav", "DOUBLE", "rescale", "DOUBLE"),
    ("wav", "PCM_U8", "rescale", "PCM_16"),     # 8-bit -> 16-bit
    ("wav", "VORBIS", "rescale", "PCM_16"),
    ("wav", None, "rescale", "PCM_16"),
    ("wav", "PCM_16", "none", "FLOAT"),         # clip none: samples beyond ±1 must survive
    ("wav", None, "none", "FLOAT"),
    ("flac", "PCM_16", "rescale", "PCM_16"),
    ("flac", "PCM_24", "none", "PCM_24"),
    ("flac", "PCM_32", "rescale", "PCM_24"),    # the most FLAC holds
    ("flac", "FLOAT", "none", "PCM_24"),        # float -> 24-bit FLAC
    ("flac", "DOUBLE", "clamp", "PCM_24"),
    ("flac", "PCM_S8", "rescale", "PCM_16"),
    ("flac", "VORBIS", "rescale", "PCM_16"),
    ("flac", None, "rescale", "PCM_16"),
    ("mp3", "PCM_24", "rescale", "MPEG_LAYER_III"),
    ("mp3", None, "none", "MPEG_LAYER_III"),
])
def test_output_subtype_follows_the_input_format(fmt, input_subtype, clip_mode, expected):
    """The rules of the docstring, and the result is a subtype libsndfile writes in ``fmt``."""
    got = audio.output_subtype(fmt, input_subtype, clip_mode)
    assert got == expected
    assert sf.check_format(audio.FORMATS[fmt][0], got) and got in sf.available_subtypes()


@pytest.mark.parametrize("fmt,subtype,message", [
    ("ogg", None, r"^unsupported output format 'ogg' \(use wav, flac, mp3\)$"),
    ("flac", "FLOAT", r"^FLAC cannot store FLOAT samples "
                      r"\(FLAC holds integers only: use WAV for float\)$"),
    ("wav", "VORBIS", r"^WAV cannot store VORBIS samples$"),
    ("mp3", "PCM_16", r"^MP3 output has no sample-format choice \(got PCM_16\)$"),
])
def test_output_subtype_refuses_what_the_format_cannot_hold(fmt, subtype, message):
    with pytest.raises(audio.AudioError, match=message):
        audio.output_subtype(fmt, "PCM_24", "rescale", subtype)


def test_output_subtype_explicit_choice_and_missing_encoder(monkeypatch):
    assert audio.output_subtype("wav", "PCM_16", "none", "PCM_24") == "PCM_24"
    assert audio.output_subtype("mp3", None, "rescale", "MPEG_LAYER_III") == "MPEG_LAYER_III"
    formats = {k: v for k, v in sf.available_formats().items() if k != "MP3"}
    monkeypatch.setattr(sf, "available_formats", lambda: formats)
    with pytest.raises(audio.AudioError, match=rf"^this libsndfile "
                       rf"\({re.escape(sf.__libsndfile_version__)}\) cannot write MP3$"):
        audio.output_subtype("mp3")


@pytest.mark.parametrize("suffix", ["wav", "flac"])
@pytest.mark.parametrize("clip_mode", ["rescale", "clamp", "none"])
def test_save_writes_the_subtype_the_stream_writer_writes(tmp_path, suffix, clip_mode):
    """16-bit by default, float WAV for clip "none" (FLAC: 16-bit), as ``output_subtype``."""
    wav = np.array([[0.5, -0.25, 0.125]], np.float32)
    saved = audio.save(tmp_path / f"a.{suffix}", wav, 8000, clip_mode)
    with audio.StreamWriter(tmp_path / f"b.{suffix}", 8000, 1, clip_mode) as w:
        w.write(wav)
        streamed = w.commit()
    expected = "FLOAT" if (suffix, clip_mode) == ("wav", "none") else "PCM_16"
    assert sf.info(saved).subtype == sf.info(streamed).subtype == expected
    np.testing.assert_allclose(sf.read(saved, dtype="float32")[0], wav[0], atol=1 / 2 ** 15, rtol=0)


def test_save_takes_mono_1d_and_half_precision(tmp_path):
    """(L,) is one channel; float16 (a half-precision model's output) is written at its level."""
    x = np.sin(np.linspace(0, 30, 800)) * 0.7
    back, _ = audio.load(audio.save(tmp_path / "m.wav", x.astype(np.float32), 8000))
    assert back.shape == (1, 800)
    np.testing.assert_allclose(back[0], x, atol=1 / 2 ** 15, rtol=0)
    half = np.stack([x, -x]).astype(np.float16)
    back, _ = audio.load(audio.save(tmp_path / "h.wav", half, 8000))
    np.testing.assert_allclose(back, half.astype(np.float32), atol=1 / 2 ** 15, rtol=0)


def test_save_errors_are_one_clear_line(tmp_path):
    with pytest.raises(audio.AudioError, match=r"^unsupported output format '\.ogg' "
                                               r"\(use \.wav, \.flac, \.mp3\)$"):
        audio.save(tmp_path / "x.ogg", np.zeros((1, 4), np.float32), 8000)
    with pytest.raises(audio.AudioError, match=r"^refusing to write non-finite samples to "
                                               r".*x\.wav$"):
        audio.save(tmp_path / "x.wav", np.array([0.0, np.inf], np.float32), 8000)
    target = tmp_path / "missing" / "x.wav"
    with pytest.raises(audio.AudioError) as err:
        audio.save(target, np.zeros((1, 4), np.float32), 8000)
    assert str(err.value) == f"cannot write {target}: No such file or directory"
    assert list(tmp_path.iterdir()) == []


def test_load_reads_the_window_asked_for(tmp_path):
    wav = np.stack([np.arange(300), -np.arange(300)]).astype(np.float32) / 512
    path = tmp_path / "ramp.wav"
    sf.write(path, wav.T, 8000, subtype="FLOAT")
    part, rate = audio.load(path, start=100, frames=50)
    assert rate == 8000
    np.testing.assert_array_equal(part, wav[:, 100:150])
    np.testing.assert_array_equal(audio.load(path, start=250)[0], wav[:, 250:])


def test_read_errors_name_the_reason_once(tmp_path, monkeypatch):
    """libsndfile's "Error opening '<path>': ..." loses the repeated path; an apostrophe in the
    name (libsndfile then quotes it with ") still gives an AudioError; OSError -> strerror."""
    for name in ("text.wav", "don't stop.wav"):
        path = tmp_path / name
        path.write_text("not audio")
        with pytest.raises(audio.AudioError, match="^cannot read audio ") as err:
            audio.load(path)
        assert "\n" not in str(err.value)
        if "'" not in name:
            assert str(err.value).count(str(path)) == 1 and "Error opening" not in str(err.value)

    def refused(*args, **kwargs):  # root ignores permission bits: refuse like the kernel would
        raise PermissionError(13, "Permission denied", str(args[0]))

    monkeypatch.setattr(audio, "open", refused, raising=False)
    with pytest.raises(audio.AudioError) as err:
        audio.load(tmp_path / "text.wav")
    assert str(err.value) == f"cannot read audio {tmp_path / 'text.wav'}: Permission denied"


def test_reason_is_one_line_and_never_empty():
    assert audio._reason(OSError(28, "No space left on device", "/x/y.wav")) == \
        "No space left on device"
    assert audio._reason(RuntimeError("Error opening '/a/b.wav': Format not\n  recognised.")) == \
        "Format not recognised."
    assert audio._reason(AssertionError()) == "AssertionError"


@pytest.mark.parametrize("orig,target", [(44100, 16000), (16000, 48000), (3, 1), (1, 3)])
def test_resample_equals_resample_poly(orig, target):
    """scipy's polyphase filter at the exact ratio, computed in float64, rounded once to float32."""
    from scipy.signal import resample_poly

    x = np.random.default_rng(4).uniform(-1, 1, (2, 999)).astype(np.float32)
    y = audio.resample(x, orig, target)
    ratio = Fraction(target, orig)
    ref = resample_poly(x.astype(np.float64), ratio.numerator, ratio.denominator, axis=-1)
    assert y.dtype == np.float32 and y.shape == (2, audio.resampled_length(999, orig, target))
    np.testing.assert_array_equal(y, ref.astype(np.float32))
    same = audio.resample(x.astype(np.float64), orig, orig)
    assert same.dtype == np.float32
    np.testing.assert_array_equal(same, x)


@pytest.mark.parametrize("orig,target", [(0, 8000), (8000, 0), (-8000, 16000)])
def test_resample_rejects_non_positive_rates(orig, target):
    with pytest.raises(audio.AudioError,
                       match=rf"^sample rates must be positive, got {orig} -> {target}$"):
        audio.resample(np.zeros((1, 10), np.float32), orig, target)


def test_resample_ratio_short_filter_within_1e4_else_exact():
    """Docstring of ``_ratio``: denominators <= 1000 when that is within 1e-4 of the exact ratio
    (44100 -> 44101 Hz would otherwise need a 44100-phase filter), exact when it is not."""
    for orig, target in [(44100, 44101), (1001, 1000), (48000, 44100), (44100, 16000)]:
        ratio, exact = audio._ratio(orig, target), Fraction(target, orig)
        assert ratio.denominator <= 1000 and abs(ratio - exact) <= 1e-4 * exact
    assert audio._ratio(8000, 7) == Fraction(7, 8000)  # 1/1000 would be 14 % off
    assert audio.resampled_length(8000, 8000, 7) == 7  # one second stays one second
    assert audio.resampled_length(44100, 44100, 16000) == 16000


def test_channel_conversion_errors_are_one_line():
    with pytest.raises(ValueError, match=r"^expected \(C, L\) audio, got shape \(4,\)$"):
        audio.convert_channels(np.zeros(4), 2)
    with pytest.raises(audio.AudioError, match="^cannot convert 2 channels to 3$"):
        audio.convert_channels(np.zeros((2, 4)), 3)
    np.testing.assert_array_equal(audio.convert_channels(np.arange(12.0).reshape(3, 4), 2),
                                  np.arange(8.0).reshape(2, 4))


def test_clip_modes_both_signs_and_empty():
    wav = np.array([[3.0, 1.5, -2.5, 0.5, -1.0]], dtype=np.float32)
    np.testing.assert_array_equal(audio.apply_clip(wav, "clamp"), [[1.0, 1.0, -1.0, 0.5, -1.0]])
    np.testing.assert_array_equal(audio.apply_clip(wav, "rescale"), wav / 3)
    assert audio.apply_clip(np.zeros((2, 0), np.float32), "rescale").shape == (2, 0)
    with pytest.raises(ValueError, match=r"^clip_mode must be one of \('rescale', 'clamp', "
                                         r"'none'\), got 'loud'$"):
        audio.apply_clip(wav, "loud")


def test_stream_writer_clamps_a_float_wav_to_full_scale(tmp_path):
    """libsndfile clips PCM itself, so only a float output shows that "clamp" clips both signs
    at exactly ±1 (and leaves the rest bit-exact)."""
    wav = np.array([[2.5, -2.5, 1.5, -1.5, 0.25, -1.0, 1.0]], np.float32)
    path = tmp_path / "c.wav"
    with audio.StreamWriter(path, 8000, 1, "clamp", block_frames=3, subtype="FLOAT") as w:
        w.write(wav[:, :4])
        w.write(wav[:, 4:])
        w.commit()
    back, _ = sf.read(path, dtype="float32", always_2d=True)
    assert sf.info(path).subtype == "FLOAT"
    np.testing.assert_array_equal(back.T, np.clip(wav, -1, 1))


@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_stream_writer_writes_the_subtype_asked_for(tmp_path, suffix):
    rng = np.random.default_rng(5)
    wav = (0.9 * rng.uniform(-1, 1, (2, 2000))).astype(np.float32)
    path = tmp_path / f"s.{suffix}"
    with audio.StreamWriter(path, 16000, 2, subtype="PCM_24") as w:
        w.write(wav.astype(np.float16))  # half-precision blocks are taken at their level
        w.write(wav)
        w.commit()
    back, _ = sf.read(path, dtype="float32", always_2d=True)
    assert sf.info(path).subtype == "PCM_24" and back.shape == (4000, 2)
    np.testing.assert_allclose(back.T[:, :2000], wav.astype(np.float16), atol=1 / 2 ** 23, rtol=0)
    np.testing.assert_allclose(back.T[:, 2000:], wav, atol=1 / 2 ** 23, rtol=0)


def _enospc(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("channels,rate,ok", [
    (2, 44100, True), (1, 8000, True), (3, 44100, False), (1, 7000, False)])
def test_stream_writer_mp3_channels_and_rates(tmp_path, channels, rate, ok):
    path = tmp_path / "s.mp3"
    if not ok:
        with pytest.raises(audio.AudioError, match=rf"^cannot write {re.escape(str(path))}: MP3 "
                           rf"holds 1 or 2 channels at 8-48 kHz, not {channels} at {rate} Hz "
                           r"\(use wav or flac\)$"):
            audio.StreamWriter(path, rate, channels)
        assert list(tmp_path.iterdir()) == []
        return
    with audio.StreamWriter(path, rate, channels) as w:
        w.write(np.zeros((channels, rate // 10), np.float32))
        w.commit()
    info = sf.info(path)
    assert (info.format, info.channels, info.samplerate) == ("MP3", channels, rate)


def test_stream_writer_argument_errors(tmp_path, monkeypatch):
    with pytest.raises(audio.AudioError, match=r"^unsupported output format '\.ogg' "
                                               r"\(use \.wav, \.flac, \.mp3\)$"):
        audio.StreamWriter(tmp_path / "s.ogg", 8000, 1)
    with pytest.raises(ValueError, match=r"^clip_mode must be one of \('rescale', 'clamp', "
                                         r"'none'\), got 'loud'$"):
        audio.StreamWriter(tmp_path / "s.wav", 8000, 1, "loud")
    target = tmp_path / "missing" / "s.wav"
    with pytest.raises(audio.AudioError) as err:
        audio.StreamWriter(target, 8000, 1)
    assert str(err.value) == f"cannot write {target}: No such file or directory"
    with pytest.raises(audio.AudioError, match=r"^cannot write .*s\.wav: ") as err:
        audio.StreamWriter(tmp_path / "s.wav", 8000, 0)  # libsndfile refuses 0 channels
    assert "Error opening" not in str(err.value) and ".tmp" not in str(err.value)
    monkeypatch.setattr(sf, "SoundFile", _enospc)  # disk full as the temp header is written
    with pytest.raises(audio.AudioError) as err:
        audio.StreamWriter(tmp_path / "s.wav", 8000, 1)
    assert str(err.value) == f"cannot write {tmp_path / 's.wav'}: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_stream_writer_temp_files_are_hidden_beside_the_target(tmp_path):
    """The float temp while writing, the final temp after ``finish``: ``.s.wav.*.tmp`` in the
    target's folder (same file system: the rename is atomic; a stale one is easy to find)."""
    w = audio.StreamWriter(tmp_path / "s.wav", 8000, 1)
    w.write(np.zeros((1, 10), np.float32))
    assert [re.fullmatch(r"\.s\.wav\..+\.raw\.tmp", p.name) is not None
            for p in tmp_path.iterdir()] == [True]
    w.finish()
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and re.fullmatch(r"\.s\.wav\..+\.tmp", names[0])
    assert not names[0].endswith(".raw.tmp")
    assert w.commit() == tmp_path / "s.wav"
    assert [p.name for p in tmp_path.iterdir()] == ["s.wav"]


def test_stream_writer_write_errors_are_one_line(tmp_path, monkeypatch):
    path = tmp_path / "s.wav"
    w = audio.StreamWriter(path, 8000, 1)
    with pytest.raises(audio.AudioError, match=r"^refusing to write non-finite samples to "
                                               r".*s\.wav$"):
        w.write(np.array([[0.0, np.nan]], np.float32))
    for error, reason in ((AssertionError(), "short write (disk full?)"),
                          (RuntimeError("Internal  error"), "Internal error")):
        def failing(self, data, error=error):  # soundfile asserts on a short write
            raise error

        monkeypatch.setattr(sf.SoundFile, "write", failing)
        with pytest.raises(audio.AudioError) as err:
            w.write(np.zeros((1, 10), np.float32))
        assert str(err.value) == f"cannot write {path}: {reason}"
    w.abort()
    assert w._file.closed  # an aborted writer holds no file handle
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fail_at", ["close", "final"])
def test_stream_writer_disk_full_at_the_end_keeps_the_old_file(tmp_path, monkeypatch, fail_at):
    """The float temp failing to close, or the final file failing to write: one line, no temp
    left, the existing output untouched."""
    path = tmp_path / "s.flac"
    audio.save(path, np.zeros((1, 50), np.float32), 8000)
    before = path.read_bytes()
    w = audio.StreamWriter(path, 8000, 1)
    w.write(np.full((1, 100), 0.5, np.float32))
    if fail_at == "close":
        real_close = sf.SoundFile.close

        def close_then_fail(self):
            real_close(self)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(sf.SoundFile, "close", close_then_fail)
    else:
        monkeypatch.setattr(sf.SoundFile, "write", _enospc)
    with pytest.raises(audio.AudioError) as err:
        w.commit()
    monkeypatch.undo()
    assert str(err.value) == f"cannot write {path}: No space left on device"
    assert [p.name for p in tmp_path.iterdir()] == ["s.flac"] and path.read_bytes() == before


def test_stream_writer_commit_after_a_clean_with_block(tmp_path):
    """Only an exception inside ``with`` aborts: writers can be committed together later."""
    path = tmp_path / "s.wav"
    with audio.StreamWriter(path, 8000, 1) as w:
        w.write(np.full((1, 20), 0.25, np.float32))
    assert audio.commit_all([w]) == [path]
    np.testing.assert_array_equal(sf.read(path, dtype="float32")[0], np.full(20, 0.25))


def _two_writers(tmp_path):
    paths = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for p in paths:
        audio.save(p, np.zeros((1, 30), np.float32), 8000)
    writers = []
    for p in paths:
        writers.append(audio.StreamWriter(p, 8000, 1))
        writers[-1].write(np.full((1, 40), 0.5, np.float32))
    return paths, writers


@pytest.mark.parametrize("hard_links", [True, False])
def test_commit_all_failing_rename_restores_or_cleans_up(tmp_path, monkeypatch, hard_links):
    """The second rename fails: the first output is put back from its hard-linked backup (or,
    where hard links fail, at least no temp or backup is left), the second is untouched."""
    paths, writers = _two_writers(tmp_path)
    before = [p.read_bytes() for p in paths]
    real_replace = os.replace

    def failing_second(src, dst, *args, **kwargs):
        if str(dst) == str(paths[1]) and not str(src).endswith(".bak"):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_second)
    if not hard_links:
        monkeypatch.setattr(os, "link", _enospc)
    with pytest.raises(audio.AudioError, match=rf"^cannot write {re.escape(str(paths[1]))}: "
                                               r"Input/output error$"):
        audio.commit_all(writers)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav"]
    assert paths[1].read_bytes() == before[1]
    if hard_links:
        assert paths[0].read_bytes() == before[0]


@pytest.mark.parametrize("name,subtype", [("x.flac", "FLOAT"), ("x.wav", "PCM_99"), ("x.wav", "VORBIS")])
def test_save_refuses_a_subtype_the_format_cannot_hold(tmp_path, name, subtype):
    """One AudioError line (soundfile alone raises a ValueError with a traceback), no file."""
    with pytest.raises(audio.AudioError, match=rf"^cannot write {subtype} samples to a "
                                              rf"{name[2:]} file .*{name}$"):
        audio.save(tmp_path / name, np.zeros(100, np.float32), 8000, subtype=subtype)
    assert list(tmp_path.iterdir()) == []


def test_unsupported_suffix_names_every_format(tmp_path):
    for call in (lambda p: audio.save(p, np.zeros(10, np.float32), 8000),
                 lambda p: audio.StreamWriter(p, 8000, 1)):
        with pytest.raises(audio.AudioError, match=r"use \.wav, \.flac, \.mp3\)$"):
            call(tmp_path / "x.ogg")
