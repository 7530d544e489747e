"""Property-based fuzzing of the audio loader and of ``Separator.separate`` (hypothesis).

Derandomized (a fixed sequence of examples in CI), no example database, no deadline. The only
exceptions allowed are the documented ones, ``LvbdError`` subclasses (``AudioError`` ...);
whatever else comes back must be finite and of the right shape.
"""
import io
import warnings

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lvbd import audio
from lvbd.errors import LvbdError
from lvbd.separate import Separator

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _valid_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    t = np.arange(800) / 8000
    sf.write(buf, np.stack([np.sin(2 * np.pi * 300 * t), np.cos(2 * np.pi * 200 * t)], 1) * 0.5,
             8000, format=fmt, subtype="PCM_16")
    return buf.getvalue()


SEEDS = {"wav": _valid_bytes("WAV"), "flac": _valid_bytes("FLAC")}


def _check_loaded(path):
    try:
        wav, rate = audio.load(path)
    except audio.AudioError:
        event("AudioError")
        return None
    event("loaded")
    assert wav.dtype == np.float32 and wav.ndim == 2 and rate > 0
    assert np.isfinite(wav).all()
    return wav, rate


@FUZZ
@given(suffix=st.sampled_from(["wav", "flac", "ogg"]), data=st.binary(max_size=4096))
def test_loader_on_random_bytes(tmp_path, suffix, data):
    path = tmp_path / f"random.{suffix}"
    path.write_bytes(data)
    _check_loaded(path)


@FUZZ
@given(fmt=st.sampled_from(["wav", "flac"]), cut=st.integers(0, 2000),
       flips=st.lists(st.tuples(st.integers(0, 1999), st.integers(1, 255)), max_size=8))
def test_loader_on_mutated_files(tmp_path, fmt, cut, flips):
    """A valid file, truncated and with random bytes flipped (headers included)."""
    data = bytearray(SEEDS[fmt][:max(cut, 1)] if cut else SEEDS[fmt])
    for pos, mask in flips:
        if pos < len(data):
            data[pos] ^= mask
    path = tmp_path / f"mutated.{fmt}"
    path.write_bytes(bytes(data))
    _check_loaded(path)


SUBTYPES = {"wav": ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW"],
            "flac": ["PCM_S8", "PCM_16", "PCM_24"]}


@st.composite
def audio_files(draw):
    fmt = draw(st.sampled_from(["wav", "flac"]))
    subtype = draw(st.sampled_from(SUBTYPES[fmt]))
    channels = draw(st.integers(1, 8))
    length = draw(st.integers(0, 3000))
    rate = draw(st.integers(1, 200_000) if fmt == "wav" else st.integers(1, 192_000))
    kind = draw(st.sampled_from(["normal", "huge", "tiny", "nonfinite", "zeros"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    x = rng.standard_normal((length, channels))
    x = {"normal": 0.5 * x, "huge": 1e30 * x, "tiny": 1e-40 * x, "zeros": 0 * x,
         "nonfinite": np.where(rng.random(x.shape) < 0.01, np.nan, x) * 1.0}[kind]
    if kind == "nonfinite" and x.size:
        x.flat[rng.integers(x.size)] = rng.choice([np.nan, np.inf, -np.inf])
    return fmt, subtype, rate, x


@FUZZ
@given(spec=audio_files())
def test_loader_on_valid_headers(tmp_path, spec):
    fmt, subtype, rate, x = spec
    path = tmp_path / f"valid.{fmt}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sf.write(path, x, rate, format=fmt.upper(), subtype=subtype)
        except (sf.LibsndfileError, RuntimeError, ValueError, AssertionError):
            return  # libsndfile refuses this combination (e.g. a FLAC rate): nothing to read
    loaded = _check_loaded(path)
    float_file = subtype in ("FLOAT", "DOUBLE")
    if loaded is None:
        assert float_file and not np.isfinite(x.astype(np.float32)).all() or x.size == 0 or \
            path.stat().st_size < 64, "a valid file was refused"
        return
    wav, back_rate = loaded
    assert back_rate == rate and wav.shape == (x.shape[1], x.shape[0])


@FUZZ
@given(orig=st.integers(1, 200_000), target=st.integers(1, 200_000))
def test_resampling_ratio_is_accurate_at_any_rates(orig, target):
    """One second stays one second (±0.01 %), also for ratios like 8000 -> 3 Hz."""
    length = audio.resampled_length(orig, orig, target)
    assert abs(length - target) <= 1e-4 * target + 1


@pytest.fixture(scope="module")
def separator(tiny_checkpoint):
    return Separator.from_checkpoint(tiny_checkpoint)


DTYPES = [np.float16, np.float32, np.float64, np.int16, np.int32]


@st.composite
def waveforms(draw):
    rate = draw(st.one_of(st.integers(1, 200_000), st.sampled_from([8000, 16000, 44100])))
    # at most ~2 s of audio keeps every example fast (a 1 Hz file is upsampled 8000 times)
    length = draw(st.integers(1, max(1, min(3000, 2 * rate))))
    channels = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["normal", "huge", "denormal", "nonfinite", "zeros", "dc"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    x = rng.standard_normal((channels, length))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        scale = {"huge": info.max, "denormal": 1, "zeros": 0}.get(kind, info.max / 4)
        x = np.clip(np.round(x * scale), info.min, info.max).astype(dtype)
    else:
        finfo = np.finfo(dtype)
        with np.errstate(over="ignore"):  # "huge" may round to Inf: then an error is expected
            x = {"normal": 0.3 * x, "huge": x * (float(finfo.max) / 8),
                 "denormal": x * float(finfo.smallest_subnormal) * 4, "zeros": 0 * x,
                 "dc": np.full_like(x, 0.7),
                 "nonfinite": np.where(rng.random(x.shape) < 0.05, np.inf, x)}[kind].astype(dtype)
    if draw(st.booleans()) and channels == 1:
        x = x[0]  # (L,) as well as (C, L)
    return x, rate


@FUZZ
@given(case=waveforms())
def test_separate_on_random_inputs(separator, case):
    wav, rate = case
    channels, length = (1, wav.shape[0]) if wav.ndim == 1 else wav.shape
    try:
        est, conf = separator.separate(wav, rate, return_confidence=True)
    except LvbdError as err:
        assert not np.isfinite(wav.astype(np.float64)).all() or "float32" in str(err), err
        event(f"LvbdError: {str(err)[:40]}")
        return
    event("separated")
    assert tuple(est.shape) == (separator.n_sources, channels, length)
    assert np.isfinite(est.numpy()).all()
    assert conf is None or (np.isfinite(conf).all() and ((conf >= 0) & (conf <= 1)).all())
    if not np.any(wav):
        assert not est.numpy().any()  # silence in, silence out
