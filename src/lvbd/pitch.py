"""Pitch memory: which output holds which talker, remembered over seconds (issue 14).

A low-latency stream (0.1 s segments read with 2 s of past context, ``lvbd.separate``) decides
the order of every segment's outputs by correlating the re-separated context with what is
already out. Where the model's outputs each hold both talkers for a second or more (pairs of
similar voices), that correlation can favour the wrong order for the whole stretch and the
output drifts to the other talker. Each talker's pitch is steadier than the waveform over such
a stretch, so the stream also remembers, per output, a histogram of its pitch over the last
seconds (the paper's memory of each source's statistics, kept on the outputs) and adds the
match of the re-separated window's histograms to the correlation (:meth:`PitchMemory.scores`).

The histogram: frames of ``FRAME`` s every ``HOP`` s; a frame's pitch is the lag of its
autocorrelation peak between ``F0_RANGE`` (60-400 Hz); frames whose peak is below ``VOICED``
of the zero-lag value are unvoiced and left out; each voiced frame adds its energy to one of
``N_BINS`` log-spaced bins. Memories are exponential averages over frames (``time_constant``
seconds), compared as log histograms by Pearson correlation (scale-free). Output at a rate of
at least twice ``ANALYSIS_RATE`` is first averaged over groups of ``rate // ANALYSIS_RATE``
samples (a box filter, then one sample per group): the pitch range needs no more, and the cost
stays that of 8 kHz. The settings were chosen on validation mixtures (docs/streaming.md "Tenth
session").
"""
from __future__ import annotations

import numpy as np

from .assignment import correlations

F0_RANGE = (60.0, 400.0)   # Hz
N_BINS = 24                # log-spaced pitch bins over F0_RANGE
FRAME = 0.04               # s
HOP = 0.02                 # s
VOICED = 0.5               # autocorrelation peak / zero-lag value of a voiced frame
WEIGHT = 3.0               # weight of the pitch match against the context correlation
TIME_CONSTANT = 10.0       # s, of the memory's exponential average
WARM = 2.0                 # s of output before the memory is used
ANALYSIS_RATE = 8000       # Hz: higher rates are averaged down by whole factors first
_FLOOR = 1e-6              # of a histogram's total: empty bins, before the log

__all__ = ["PitchMemory", "frame_pitch", "log_histogram", "pitch_histogram"]


def _frame_lengths(sample_rate: float) -> tuple[int, int]:
    """(frame, hop) in samples at ``sample_rate`` (fractional: that of a decimated signal)."""
    return max(2, int(round(FRAME * sample_rate))), max(1, int(round(HOP * sample_rate)))


def _frames(x: np.ndarray, sample_rate: float) -> np.ndarray:
    """(..., n) -> frames (..., T, frame), a view."""
    frame, hop = _frame_lengths(sample_rate)
    if x.shape[-1] < frame:
        return np.zeros(x.shape[:-1] + (0, frame), dtype=np.float64)
    return np.lib.stride_tricks.sliding_window_view(x, frame, axis=-1)[..., ::hop, :]


def frame_pitch(frames: np.ndarray, sample_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of ``frames`` (..., T, frame): (pitch in Hz, energy), both (..., T); pitch is
    NaN in unvoiced or silent frames."""
    frame = frames.shape[-1]
    fr = frames.astype(np.float64)
    fr = fr - fr.mean(-1, keepdims=True)
    energy = np.einsum("...i,...i->...", fr, fr)
    lo = max(1, int(sample_rate // F0_RANGE[1]))
    hi = min(int(sample_rate // F0_RANGE[0]), frame - 1)
    if hi < lo:  # a rate too low to hold a period in F0_RANGE: nothing is voiced
        return np.full(energy.shape, np.nan), energy
    n_fft = 1 << (frame + hi).bit_length()  # > frame + hi: no circular wrap up to lag hi
    spec = np.fft.rfft(fr, n_fft, axis=-1)
    ac = np.fft.irfft(spec.real ** 2 + spec.imag ** 2, n_fft, axis=-1)[..., :hi + 1]  # (..., T, hi + 1)
    lag = lo + np.argmax(ac[..., lo:hi + 1], axis=-1)
    peak = np.take_along_axis(ac, lag[..., None], axis=-1)[..., 0]
    voiced = (energy > 0) & (peak > VOICED * ac[..., 0])
    return np.where(voiced, sample_rate / lag, np.nan), energy


def decimation(sample_rate: float) -> int:
    """The whole factor by which output at ``sample_rate`` is averaged down for analysis."""
    return max(1, int(sample_rate // ANALYSIS_RATE))


def _decimate(x: np.ndarray, q: int) -> np.ndarray:
    """Means of the whole groups of ``q`` samples of ``x`` (..., n) -> (..., n // q)."""
    if q == 1:
        return x
    m = x.shape[-1] // q * q
    return x[..., :m].reshape(x.shape[:-1] + (m // q, q)).mean(-1)


def pitch_histogram(x: np.ndarray, sample_rate: float) -> np.ndarray:
    """Energy of the voiced frames of ``x`` (..., n) per pitch bin: (..., N_BINS)."""
    q = decimation(sample_rate)
    x = _decimate(np.asarray(x, dtype=np.float64), q)
    frames = _frames(x, sample_rate / q)
    return _histogram(*frame_pitch(frames, sample_rate / q))


_EDGES = np.exp(np.linspace(np.log(F0_RANGE[0]), np.log(F0_RANGE[1]), N_BINS + 1))


def _histogram(pitch: np.ndarray, energy: np.ndarray, decay: np.ndarray | None = None
               ) -> np.ndarray:
    """(..., T) pitch and energy (and per-frame weights ``decay`` (T,)) -> (..., N_BINS)."""
    bins = np.searchsorted(_EDGES, np.nan_to_num(pitch, nan=-1.0), side="right") - 1
    inside = (bins >= 0) & (bins < N_BINS)
    weight = np.where(inside, energy, 0.0) * (1.0 if decay is None else decay)
    onehot = np.clip(bins, 0, N_BINS - 1)[..., None] == np.arange(N_BINS)  # (..., T, N_BINS)
    return np.einsum("...t,...tb->...b", weight, onehot)


def log_histogram(h: np.ndarray) -> np.ndarray:
    """log of a histogram (..., N_BINS) with empty bins floored at ``_FLOOR`` of its total."""
    return np.log(h + _FLOOR * h.sum(-1, keepdims=True) + 1e-30)


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlations of the rows: a (K, B), b (J, B) -> (K, J); 0 for a constant row."""
    return correlations(a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True))


class PitchMemory:
    """Per output and channel, an exponential average (``time_constant`` s) of the pitch
    histogram of the output as it is finished (:meth:`add`, any block sizes: frames span
    blocks, so the memory does not depend on how the output is cut).

    Args:
        n_sources, channels: the outputs' shape (K, C).
        sample_rate: of the output.
    """

    def __init__(self, n_sources: int, channels: int, sample_rate: int,
                 time_constant: float = TIME_CONSTANT, weight: float = WEIGHT,
                 warm: float = WARM):
        self.sample_rate, self.weight = int(sample_rate), float(weight)
        self.q = decimation(sample_rate)
        self.rate = sample_rate / self.q  # of the analysed signal
        self.hop = _frame_lengths(self.rate)[1]
        self.alpha = float(np.exp(-HOP / time_constant))  # per frame
        self.warm_frames = int(np.ceil(warm / HOP))
        self.hist = np.zeros((n_sources, channels, N_BINS))
        self.frames = 0  # frames seen
        self._pending = np.zeros((n_sources, channels, 0))  # analysed samples of open frames
        self._group = np.zeros((n_sources, channels, 0))  # output samples of an open group of q

    def add(self, block: np.ndarray) -> None:
        """Take in the next finished output samples ``block`` (K, C, n)."""
        x = np.concatenate([self._group, block.astype(np.float64)], axis=-1)
        m = x.shape[-1] // self.q * self.q
        self._group = x[..., m:]
        x = np.concatenate([self._pending, _decimate(x[..., :m], self.q)], axis=-1)
        frames = _frames(x, self.rate)  # (K, C, T, frame)
        T = frames.shape[-2]
        if T:
            decay = self.alpha ** np.arange(T - 1, -1, -1)  # the newest frame weighs 1
            new = _histogram(*frame_pitch(frames, self.rate), decay)
            self.hist = self.alpha ** T * self.hist + (1 - self.alpha) * new
            self.frames += T
        self._pending = x[..., T * self.hop:]

    @property
    def ready(self) -> bool:
        """Whether the memory has heard ``warm`` seconds of output."""
        return self.frames >= self.warm_frames

    def scores(self, est: np.ndarray, channel: int) -> np.ndarray | None:
        """``weight`` × Pearson correlation of the log histograms of the memory's outputs
        (rows) and of ``est`` (K, n), one channel's re-separated window (columns): (K, K), or
        None before the memory is ready."""
        if not self.ready or self.weight == 0:
            return None
        ours = log_histogram(self.hist[:, channel])
        theirs = log_histogram(pitch_histogram(est, self.sample_rate))
        return self.weight * _pearson(ours, theirs)
