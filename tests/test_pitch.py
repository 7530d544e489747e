"""lvbd.pitch: frame pitch against tones of known F0, histograms, the memory's block
independence and time constant, and the order decisions it tips (lvbd.separate.source_orders)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lvbd.pitch import (HOP, N_BINS, PitchMemory, _EDGES, frame_pitch, log_histogram,
                        pitch_histogram)
from lvbd.separate import source_orders

SR = 8000


def voice(f0: float, seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A harmonic tone (10 harmonics falling 1/h) with a random phase per harmonic."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    h = np.arange(1, 11)[:, None]
    keep = h[:, 0] * f0 < sr / 2
    phases = rng.uniform(0, 2 * np.pi, (10, 1))
    return (np.sin(2 * np.pi * f0 * h * t + phases)[keep] / h[keep]).sum(0)


def bin_of(f0: float) -> int:
    return int(np.searchsorted(_EDGES, f0, side="right") - 1)


@pytest.mark.parametrize("f0", [70.0, 110.0, 180.0, 260.0, 380.0])
@pytest.mark.parametrize("sr", [8000, 16000])
def test_frame_pitch_of_a_harmonic_tone(f0, sr):
    from lvbd.pitch import _frames

    frames = _frames(voice(f0, 1.0, sr), sr)
    pitch, energy = frame_pitch(frames, sr)
    assert np.isfinite(pitch).all()  # every frame voiced
    lag = sr / f0  # the lag is whole samples, and the frame's autocorrelation leans towards
    assert np.all(np.abs(pitch - f0) <= f0 * 2 / (lag - 2))  # shorter lags: 2 samples at most
    assert np.all(np.abs(pitch - f0) < 0.05 * f0)  # well inside a histogram bin (8 %)
    assert np.all(energy > 0)


def test_noise_and_silence_are_unvoiced():
    from lvbd.pitch import _frames

    noise = np.random.default_rng(1).standard_normal(SR)
    pitch, _ = frame_pitch(_frames(noise, SR), SR)
    assert np.isnan(pitch).mean() > 0.9
    pitch, energy = frame_pitch(_frames(np.zeros(SR), SR), SR)
    assert np.isnan(pitch).all() and not energy.any()
    assert not pitch_histogram(np.zeros((2, SR)), SR).any()


def test_histogram_puts_energy_in_the_pitch_bin_and_scales_with_energy():
    x = np.stack([voice(120.0, 1.0), voice(250.0, 1.0, seed=3)])  # (2, n)
    h = pitch_histogram(x, SR)
    assert h.shape == (2, N_BINS)
    assert h[0].argmax() == bin_of(120.0) and h[1].argmax() == bin_of(250.0)
    assert h[0, bin_of(120.0)] > 0.9 * h[0].sum()
    np.testing.assert_allclose(pitch_histogram(3.0 * x, SR), 9.0 * h, rtol=1e-9)
    assert pitch_histogram(x[:, :100], SR).shape == (2, N_BINS)  # shorter than a frame
    assert np.isfinite(log_histogram(np.zeros(N_BINS))).all()


@pytest.mark.parametrize("sr", [SR, 44100])
def test_memory_does_not_depend_on_how_the_output_is_cut(sr):
    rng = np.random.default_rng(4)
    x = np.stack([voice(110.0, 3.0, sr), voice(210.0, 3.0, sr, seed=1)])[:, None]  # (K, C, n)
    x = x * (1 + 0.5 * np.sin(np.arange(x.shape[-1]) / (0.11 * sr)))  # a varying level
    whole, pieces = PitchMemory(2, 1, sr), PitchMemory(2, 1, sr)
    whole.add(x)
    cuts = np.sort(rng.choice(x.shape[-1], 40, replace=False))
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, x.shape[-1]]):
        pieces.add(x[..., a:b])
    q = sr // 8000  # averaged down to 8820 Hz at 44.1 kHz: frames of 353 every 176 samples
    frame, hop = round(0.04 * sr / q), round(0.02 * sr / q)
    assert whole.frames == pieces.frames == (x.shape[-1] // q - frame) // hop + 1
    np.testing.assert_allclose(pieces.hist, whole.hist, rtol=1e-9)
    assert whole.hist[0, 0].argmax() == bin_of(110.0) and whole.hist[1, 0].argmax() == bin_of(210.0)


@pytest.mark.parametrize("sr", [16000, 22050, 44100, 48000])
def test_high_rates_are_analysed_at_about_8_khz(sr):
    """A 16-48 kHz output is averaged down by whole factors; the histogram's pitch bins match
    those at 8 kHz, and what lies above 4 kHz (a common high band) does not move them."""
    from lvbd.pitch import decimation

    assert 8000 <= sr / decimation(sr) < 16000
    x = np.stack([voice(120.0, 1.0, sr), voice(250.0, 1.0, sr, seed=3)])
    hiss = 0.3 * np.sin(2 * np.pi * 6100 * np.arange(sr) / sr)
    for sig in (x, x + hiss):
        h = pitch_histogram(sig, sr)
        assert h[0].argmax() == bin_of(120.0) and h[1].argmax() == bin_of(250.0)


def test_memory_forgets_with_its_time_constant():
    """After the talker's pitch changes, the memory follows within a few time constants."""
    memory = PitchMemory(1, 1, SR, time_constant=1.0)
    memory.add(voice(120.0, 4.0)[None, None])
    low, high = bin_of(120.0), bin_of(300.0)
    assert memory.hist[0, 0, low] > 100 * memory.hist[0, 0, high]
    memory.add(voice(300.0, 1.0)[None, None])  # one time constant: e^-1 of the old mass left
    ratio = memory.hist[0, 0, low] / memory.hist[0, 0, high]
    assert 0.4 < ratio < 0.8  # e^-1 / (1 - e^-1) = 0.58 for equal energies per frame
    memory.add(voice(300.0, 4.0)[None, None])
    assert memory.hist[0, 0, high] > 20 * memory.hist[0, 0, low]


def test_scores_wait_for_warm_up_and_match_talkers():
    memory = PitchMemory(2, 1, SR)
    x = np.stack([voice(120.0, 1.0), voice(250.0, 1.0, seed=1)])[:, None]
    memory.add(x)
    assert not memory.ready and memory.scores(x[:, 0], 0) is None
    memory.add(np.stack([voice(120.0, 1.5, seed=2), voice(250.0, 1.5, seed=5)])[:, None])
    assert memory.ready
    swapped = np.stack([voice(250.0, 2.1, seed=7), voice(120.0, 2.1, seed=8)])
    s = memory.scores(swapped, 0)  # rows: memory outputs, columns: est rows
    assert s[0, 1] > s[0, 0] and s[1, 0] > s[1, 1]
    assert s.max() <= memory.weight + 1e-9 and s.min() >= -memory.weight - 1e-9
    assert PitchMemory(2, 1, SR, weight=0.0).scores(swapped, 0) is None


def test_source_orders_follow_the_pitch_where_the_correlation_cannot_tell():
    """Two outputs that each hold both talkers equally correlate alike with either order; the
    memory of which output held which pitch decides. A decisive correlation against a memory of
    silent outputs (no pitch: rows of a constant log histogram) is left alone."""
    low, high = voice(120.0, 2.1, seed=1), voice(250.0, 2.1, seed=2)
    memory = PitchMemory(2, 1, SR)
    memory.add(np.stack([voice(120.0, 3.0, seed=3), voice(250.0, 3.0, seed=4)])[:, None])
    # est rows in the other order, each mostly one talker; previous = a symmetric blend
    est = np.stack([high + 0.3 * low, low + 0.3 * high])[:, None]  # (K, C, n)
    blend = (low + high)[None, None].repeat(2, 0)[..., :SR]         # (K, C, ov): no preference
    assert (source_orders(est, blend, est[:, 0], False)[0] == [0, 1]).all()  # a tie: identity
    assert (source_orders(est, blend, est[:, 0], False, memory)[0] == [1, 0]).all()
    silent = PitchMemory(2, 1, SR)
    silent.add(np.zeros((2, 1, 3 * SR)))
    previous = est[::-1, :, :SR]  # the correlation says: swap
    assert (source_orders(est, previous, est[:, 0], False, silent)[0] == [1, 0]).all()


def test_each_channel_has_its_own_memory():
    memory = PitchMemory(2, 2, SR)
    a, b = voice(120.0, 3.0, seed=1), voice(250.0, 3.0, seed=2)
    memory.add(np.stack([np.stack([a, b]), np.stack([b, a])]))  # (K, C, n): channel 1 swapped
    est = np.stack([voice(120.0, 2.1, seed=5), voice(250.0, 2.1, seed=6)])
    s0, s1 = memory.scores(est, 0), memory.scores(est, 1)
    assert s0[0, 0] > s0[0, 1] and s1[0, 1] > s1[0, 0]
    assert HOP * memory.frames == pytest.approx(3.0 - 0.02, abs=0.021)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("sr", [1, 10, 50, 100, 1000])
def test_very_low_rates_have_no_pitch_and_no_warnings(sr):
    """Any positive rate is a valid input rate; below ~400 Hz no period of 60-400 Hz fits."""
    x = np.random.default_rng(0).standard_normal((2, 1, 5 * sr + 7))
    memory = PitchMemory(2, 1, sr)
    memory.add(x)
    assert np.isfinite(memory.hist).all()
    s = memory.scores(x[:, 0], 0) if memory.ready else np.zeros((2, 2))
    assert np.isfinite(s).all()
    if sr < 400:
        assert not memory.hist.any()


class BlurredContextModel(torch.nn.Module):
    """A memory-less fake model on two harmonic voices (120 and 250 Hz, 3 harmonics each): it
    separates them with FFT masks and emits them in a random order per call; on full-length
    windows (2 s of context + 0.1 s) it blurs the context part into the same blend on both
    outputs, so the context correlation cannot tell the order and only the pitch memory can."""

    def __init__(self, seed=0):
        super().__init__()
        self.cfg = SimpleNamespace(sample_rate=SR, n_sources=2)
        self.sample_rate, self.n_sources = SR, 2
        self.rng, self.calls = np.random.default_rng(seed), 0

    def forward(self, mixture, state=None):
        from lvbd.models.output import SeparationOutput

        x = mixture.double()
        L = x.shape[-1]
        spec = torch.fft.rfft(x)
        freqs = torch.fft.rfftfreq(L, 1 / SR).double()
        near = [sum((torch.abs(freqs - h * f0) < 30).double() for h in (1, 2, 3))
                for f0 in (120.0, 250.0)]
        voices = [torch.fft.irfft(spec * m, n=L) for m in near]
        order = self.rng.permutation(2)
        est = torch.stack([voices[i] for i in order], 1)  # (B, K, L)
        if L >= int(2.1 * SR) - 1:
            blend = est[..., :L - 800].mean(1, keepdim=True)
            est = torch.cat([blend.expand(-1, 2, -1), est[..., L - 800:]], -1)
        self.calls += 1
        return SeparationOutput(estimates=est.float(), confidence=None, state=None)


@pytest.mark.parametrize("weight", [0.0, 3.0])
def test_the_memory_keeps_the_order_where_the_context_is_blind(monkeypatch, weight):
    """A low-latency stream with 2 s of context of a fake model whose context re-separation is
    the same blend on both outputs after 2 s: with the pitch memory every 0.1 s segment of
    4-6 s stays with its talker; without it (weight 0) the order is the model's random one."""
    import functools

    import lvbd.separate as separate
    from lvbd.config import Config

    monkeypatch.setattr(separate, "PitchMemory", functools.partial(PitchMemory, weight=weight))
    t = np.arange(6 * SR) / SR
    voices = [sum(np.sin(2 * np.pi * h * f0 * t) / h for h in (1, 2, 3)) for f0 in (120.0, 250.0)]
    wav = (voices[0] + voices[1]).astype(np.float32)
    model = BlurredContextModel()
    cfg = Config()
    cfg.model.sample_rate, cfg.model.n_sources = SR, 2
    sep = separate.Separator(model, cfg, segment=0.1, overlap=0.0, context=2.0)
    out = sep.separate(wav, SR)[:, 0].numpy()  # (K, L)
    segs = range(4 * SR, 6 * SR, 800)
    # which voice output 0 holds in each segment of 4-6 s
    holds = [int(np.dot(out[0, a:a + 800], voices[1][a:a + 800])
                 > np.dot(out[0, a:a + 800], voices[0][a:a + 800])) for a in segs]
    first = [int(np.dot(out[0, a:a + 800], voices[1][a:a + 800])
                 > np.dot(out[0, a:a + 800], voices[0][a:a + 800])) for a in range(0, 2 * SR, 800)]
    assert len(set(first)) == 1  # the first 2 s: the clean context keeps the order anyway
    if weight:
        assert holds == [first[0]] * len(holds)
    else:
        assert 5 <= sum(holds) <= len(holds) - 5  # the model's coin flips
