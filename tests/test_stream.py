"""Streaming (lvbd.stream): equal to offline chunked separation, fixed latency, order kept."""
import io
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from lvbd.cli import main
from lvbd.config import Config, load_config
from lvbd.errors import LvbdError
from lvbd.models import build_model
from lvbd.models.output import SeparationOutput
from lvbd.separate import Separator

RATE = 8000


class SignModel(torch.nn.Module):
    """source 1 = mixture, source 2 = -mixture; records the states it is given."""

    def __init__(self):
        super().__init__()
        self.cfg = SimpleNamespace(sample_rate=RATE, n_sources=2)
        self.sample_rate, self.n_sources, self.seen = RATE, 2, []

    def forward(self, mixture, state=None):
        self.seen.append(state)
        return SeparationOutput(estimates=torch.stack([mixture, -mixture], 1), confidence=None,
                               state=len(self.seen))


class TwoBandModel(torch.nn.Module):
    """Oracle-like: splits at 1 kHz (FFT mask), emits the bands in a random order per call, and
    with ``memory`` puts them back in the order of its state (the previous output's spectral
    centroids), as LVBD's memory does. Without the state it cannot know the order."""

    def __init__(self, memory=True, seed=0):
        super().__init__()
        self.cfg = SimpleNamespace(sample_rate=RATE, n_sources=2)
        self.sample_rate, self.n_sources, self.memory = RATE, 2, memory
        self.rng, self.swaps = np.random.default_rng(seed), 0

    def forward(self, mixture, state=None):
        spec = torch.fft.rfft(mixture)
        freqs = torch.fft.rfftfreq(mixture.shape[-1], 1 / RATE)
        low = (freqs < 1000).to(spec.real.dtype)
        bands = [torch.fft.irfft(spec * m, n=mixture.shape[-1]) for m in (low, 1 - low)]
        centroid = torch.tensor([250.0, 2000.0])
        order = self.rng.permutation(2)
        self.swaps += int(order[0] != 0)
        est, cent = torch.stack([bands[i] for i in order], 1), centroid[order]
        if self.memory and state is not None:
            back = torch.argsort(torch.abs(cent[None] - state[:, None]).argmin(0))
            est, cent = est[:, back], cent[back]
        return SeparationOutput(estimates=est, confidence=None, state=cent)


def _separator(model, segment=0.25, overlap=0.25):
    cfg = Config()
    cfg.model.sample_rate, cfg.model.n_sources = RATE, 2
    return Separator(model, cfg, segment=segment, overlap=overlap)


def _run(stream, wav, block):
    outs = [stream.process(wav[..., i:i + block]) for i in range(0, wav.shape[-1], block)]
    return torch.cat(outs + [stream.flush()], dim=-1)


@pytest.fixture(scope="module", params=["tcn", "uconv"])
def tiny_lvbd(request):
    cfg = load_config("configs/tiny.yaml", [f"model.lifting={request.param}", "model.uconv_depth=3"])
    torch.manual_seed(0)
    return Separator(build_model(cfg.model).eval(), cfg, segment=0.25, overlap=0.25)


@pytest.mark.parametrize("block", [1, 333, 2000, 5001, 9000])
def test_stream_equals_offline_lvbd(tiny_lvbd, block):
    """Same segments, same memory chain: equal to offline separation (tolerance 1e-6; bitwise
    in practice). Block sizes that do not divide the length, 1-sample blocks, one big block."""
    wav = np.random.default_rng(0).standard_normal((1, 5001)).astype(np.float32)
    ref = tiny_lvbd.separate(wav, RATE)
    stream = tiny_lvbd.stream()
    out = _run(stream, wav, block)
    assert stream.latency == 2000 - 1  # one 0.25 s segment at 8 kHz, minus one sample
    assert out.shape == (2, 1, 5001 + stream.latency)
    assert torch.count_nonzero(out[..., :stream.latency]) == 0
    torch.testing.assert_close(out[..., stream.latency:], ref, rtol=0, atol=1e-6)


def test_stream_other_rate_and_channels_equal_offline(tiny_lvbd):
    wav = np.random.default_rng(1).standard_normal((2, 7001)).astype(np.float32)
    ref = tiny_lvbd.separate(wav, 16000)
    stream = tiny_lvbd.stream(sample_rate=16000)
    assert stream.latency == 4000 + int(0.05 * 16000) + 64 - 1  # segment + resampling margin
    out = _run(stream, wav, 777)
    torch.testing.assert_close(out[..., stream.latency:], ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("length,block", [(1, 1), (1999, 7), (2000, 1), (4567, 100)])
def test_sign_model_round_trip_is_exact(length, block):
    wav = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    model = SignModel()
    stream = _separator(model).stream()
    out = _run(stream, wav, block)[..., stream.latency:]
    # exact up to float32 rounding (peak normalisation, overlap-add weights)
    np.testing.assert_allclose(out[0, 0].numpy(), wav, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[1, 0].numpy(), -wav, rtol=1e-6, atol=1e-7)
    # the memory state is carried: call n gets what call n-1 returned
    assert model.seen == [None] + list(range(1, len(model.seen)))


def test_process_returns_block_size_delayed_by_latency():
    stream = _separator(SignModel(), segment=0.01, overlap=0.5).stream()  # 80-sample segments
    wav = np.arange(1, 301, dtype=np.float32) / 300
    sizes = [0, 1, 5, 79, 80, 135]
    outs = []
    for n, start in zip(sizes, np.cumsum([0] + sizes[:-1])):
        y = stream.process(wav[start:start + n])
        assert y.shape == (2, 1, n) and y.dtype == torch.float32
        outs.append(y)
    out = torch.cat(outs, -1)[0, 0].numpy()
    lat = stream.latency
    assert lat == 79
    np.testing.assert_array_equal(out[:lat], 0)
    np.testing.assert_allclose(out[lat:], wav[:len(out) - lat], rtol=1e-6, atol=1e-7)


def test_flush_semantics():
    stream = _separator(SignModel()).stream()
    y = stream.process(np.ones(10, dtype=np.float32))
    assert y.abs().sum() == 0  # shorter than the latency: all delay
    tail = stream.flush()
    assert tail.shape == (2, 1, stream.latency)
    np.testing.assert_array_equal(tail[0, 0, -10:].numpy(), 1)  # the 10 samples, at the end
    np.testing.assert_array_equal(tail[0, 0, :-10].numpy(), 0)  # the rest of the delay
    with pytest.raises(LvbdError, match="flushed"):
        stream.process(np.ones(3, dtype=np.float32))
    with pytest.raises(LvbdError, match="already flushed"):
        stream.flush()
    empty = _separator(SignModel()).stream()
    assert empty.flush().abs().sum() == 0


@pytest.mark.parametrize("block", [1, 250, 1237])
def test_source_order_kept_across_blocks_by_the_memory(block):
    """Two tones; the model emits them in a random order per segment and only its memory state
    restores it. No overlap, so the separator's own correlation check cannot help: the stream
    must carry the state for output 0 to hold the low tone in every segment."""
    t = np.arange(3 * RATE) / RATE
    low, high = np.sin(2 * np.pi * 300 * t), 0.5 * np.sin(2 * np.pi * 2500 * t)
    wav = (low + high).astype(np.float32)
    model = TwoBandModel(memory=True)
    stream = _separator(model, segment=0.1, overlap=0.0).stream()
    out = _run(stream, wav, block)[..., stream.latency:][:, 0].numpy()
    assert model.swaps >= 5  # the raw order did change
    assert stream.result.reorders == 0  # the memory kept it, not the separator's check
    for a in range(0, wav.shape[-1] - 800, 800):
        seg = slice(a, a + 800)
        assert abs(np.corrcoef(out[0, seg], low[seg])[0, 1]) > 0.9
        assert abs(np.corrcoef(out[1, seg], high[seg])[0, 1]) > 0.9


def test_without_memory_the_order_is_lost():
    """The control for the test above: the same model without its state swaps outputs."""
    t = np.arange(3 * RATE) / RATE
    low = np.sin(2 * np.pi * 300 * t)
    wav = (low + 0.5 * np.sin(2 * np.pi * 2500 * t)).astype(np.float32)
    stream = _separator(TwoBandModel(memory=False), segment=0.1, overlap=0.0).stream()
    out = _run(stream, wav, 400)[..., stream.latency:][0, 0].numpy()
    corr = [np.corrcoef(out[a:a + 800], low[a:a + 800])[0, 1] for a in range(0, 23200, 800)]
    assert min(np.abs(corr)) < 0.5


def test_context_keeps_the_order_without_memory_at_segment_latency():
    """Low latency: 0.1 s segments without overlap, each run with 0.5 s of past input before
    it. The memory-less model above swaps its outputs at random; the re-separated context,
    matched to what is already out, puts them back, and the latency stays one segment."""
    t = np.arange(3 * RATE) / RATE
    low = np.sin(2 * np.pi * 300 * t)
    wav = (low + 0.5 * np.sin(2 * np.pi * 2500 * t)).astype(np.float32)
    model = TwoBandModel(memory=False)
    sep = _separator(model, segment=0.1, overlap=0.0)
    stream = sep.stream(context=0.5)
    assert stream.latency == 799  # 0.1 s - 1 sample: the context adds nothing
    out = _run(stream, wav, 160)[..., stream.latency:][0, 0].numpy()
    assert model.swaps >= 5 and stream.result.reorders >= 5  # swapped, and put back
    corr = [np.corrcoef(out[a:a + 800], low[a:a + 800])[0, 1] for a in range(0, 23200, 800)]
    assert min(np.abs(corr)) > 0.9
    assert stream.result.segments == 30


@pytest.mark.parametrize("rate,block", [(RATE, 1), (RATE, 777), (16000, 1000)])
def test_stream_with_context_equals_offline(tiny_lvbd, rate, block):
    """Context, like segment and overlap, is part of the plan: streamed = offline, and the
    context does change what the model computes (its receptive field reaches into it)."""
    wav = np.random.default_rng(3).standard_normal(rate).astype(np.float32)
    kwargs = dict(segment=0.1, overlap=0.0, context=0.3)
    offline = Separator(tiny_lvbd.model, tiny_lvbd.cfg, **kwargs).separate(wav, rate)
    stream = tiny_lvbd.stream(sample_rate=rate, **kwargs)
    out = _run(stream, wav, block)[..., stream.latency:]
    torch.testing.assert_close(out, offline, atol=1e-6, rtol=0)
    plain = Separator(tiny_lvbd.model, tiny_lvbd.cfg, segment=0.1, overlap=0.0).separate(wav, rate)
    assert (plain - offline).abs().max() > 1e-3
    # what a user hears: the outputs add up to the input, at the model's rate and at others
    assert np.abs(offline.sum(0)[0].numpy() - wav).max() < 1e-4 * np.abs(wav).max()


def test_bad_context_is_a_one_line_error():
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(LvbdError, match="context") as err:
            _separator(SignModel()).stream(context=bad)
        assert "\n" not in str(err.value)
        with pytest.raises(LvbdError, match="context"):
            Separator(SignModel(), _separator(SignModel()).cfg, segment=0.25, context=bad)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 2, 5)), "shape"),
    (np.array([np.nan, 1.0]), "NaN"),
    (np.array(["a", "b"]), "real numbers"),
])
def test_bad_blocks_raise_one_line_errors(bad, match):
    stream = _separator(SignModel()).stream()
    with pytest.raises(LvbdError, match=match) as err:
        stream.process(bad)
    assert "\n" not in str(err.value)


def test_channel_change_and_bad_settings():
    stream = _separator(SignModel()).stream()
    stream.process(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(LvbdError, match="block has 1 channels, the stream has 2"):
        stream.process(np.zeros(5, dtype=np.float32))
    with pytest.raises(LvbdError, match="sample_rate"):
        _separator(SignModel()).stream(sample_rate=0)
    with pytest.raises(LvbdError, match="segment"):
        _separator(SignModel()).stream(segment=-1.0)
    with pytest.raises(LvbdError, match="overlap"):
        _separator(SignModel()).stream(overlap=1.0)


# ------------------------------------------------------------------ lvbd separate --stream
@pytest.fixture
def mix_wav(tmp_path):
    wav = 0.3 * np.random.default_rng(3).standard_normal(12345).astype(np.float32)
    path = tmp_path / "mix.wav"
    sf.write(path, wav, RATE, subtype="PCM_16")
    return path


def test_cli_stream_file_equals_offline_and_stdin(tmp_path, mix_wav, monkeypatch):
    args = ["separate", "-q", "--segment", "0.5", "-o"]
    assert main(args + [str(tmp_path / "off"), str(mix_wav)]) == 0
    assert main(args + [str(tmp_path / "on"), "--stream", str(mix_wav)]) == 0
    monkeypatch.setattr("sys.stdin", SimpleNamespace(buffer=io.BytesIO(mix_wav.read_bytes())))
    assert main(args + [str(tmp_path / "pipe"), "--stream", "-"]) == 0
    for k in (1, 2):
        off, _ = sf.read(tmp_path / "off" / "default" / "mix" / f"source{k}.wav")
        on, _ = sf.read(tmp_path / "on" / "default" / "mix" / f"source{k}.wav")
        pipe, _ = sf.read(tmp_path / "pipe" / "default" / "stdin" / f"source{k}.wav")
        assert off.shape == on.shape == pipe.shape == (12345,)
        np.testing.assert_array_equal(on, off)
        np.testing.assert_array_equal(pipe, off)


def test_cli_stream_errors_are_one_line(tmp_path, mix_wav, monkeypatch, capsys):
    out = str(tmp_path / "o")
    assert main(["separate", "-q", "-o", out, "-"]) == 1
    assert "'-' (stdin) needs --stream" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", SimpleNamespace(buffer=io.BytesIO(b"not a wav")))
    assert main(["separate", "-q", "-o", out, "--stream", "-"]) == 1
    err = capsys.readouterr().err
    assert "not a PCM WAV stream" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "default" / "stdin").exists()  # nothing left behind


def test_cli_low_latency_stream_equals_offline_and_states_its_latency(tmp_path, mix_wav, capsys,
                                                                       caplog):
    """``--low-latency``: 0.1 s segments seen with past context; streamed = offline with the
    same flags, the summary states 99.9 ms, explicit flags win over the preset."""
    args = ["separate", "--low-latency", "-o"]
    assert main(args + [str(tmp_path / "off"), "-q", str(mix_wav)]) == 0
    with caplog.at_level(logging.INFO, logger="lvbd"):
        assert main(args + [str(tmp_path / "on"), "--stream", str(mix_wav)]) == 0
    assert "latency 99.9 ms" in caplog.text
    plain = ["separate", "-q", "--segment", "0.1", "--overlap", "0", "-o", str(tmp_path / "p")]
    assert main(plain + [str(mix_wav)]) == 0
    capsys.readouterr()
    for k in (1, 2):
        off, _ = sf.read(tmp_path / "off" / "default" / "mix" / f"source{k}.wav")
        on, _ = sf.read(tmp_path / "on" / "default" / "mix" / f"source{k}.wav")
        no_context, _ = sf.read(tmp_path / "p" / "default" / "mix" / f"source{k}.wav")
        np.testing.assert_array_equal(on, off)
        assert np.abs(no_context - off).max() > 1e-3  # the context is used
    assert main(["separate", "-q", "--context", "-1", "-o", str(tmp_path / "bad"),
                 str(mix_wav)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lvbd: error: --context: context must be") and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()
