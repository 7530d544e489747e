"""Oracle STFT-mask separators and the trivial ``mixture`` separator (upper and lower bounds).

All share one small interface, so ``lvbd evaluate`` uses them exactly where a model is used:

    sep.name: str, sep.n_sources: int | None (None: as many as the references),
    sep.needs_references: bool,
    sep.separate(mixture (L,), sample_rate, references=None) -> estimates (K, L) float64 numpy

Oracle masks (from the references ``s_k`` and the mixture ``x``, STFT S_k, X; Hann window of
32 ms — 256 points at 8 kHz — rounded to a multiple of 4, hop 1/4 window):

- ``oracle-irm``: ideal ratio mask on power, M_k = |S_k|² / Σ_j |S_j|² (Wiener-like; the
  open-unmix "IRM2").
- ``oracle-ibm``: ideal binary mask, M_k = 1 where |S_k| is the largest of the K sources.
- ``oracle-psm``: phase-sensitive mask, M_k = Re(S_k X*) / |X|² = |S_k|/|X|·cos(θ_k − θ_X),
  clipped to [0, 1].

The masked mixture is inverted with scipy's ``istft`` and cut to the input length.
"""
from __future__ import annotations

import numpy as np

WINDOW_SECONDS = 0.032
MASKS = ("irm", "ibm", "psm")


def stft_size(sample_rate: int, window_seconds: float = WINDOW_SECONDS) -> tuple[int, int]:
    """(n_fft, hop_length): 32 ms Hann window rounded to a multiple of 4 (256 at 8 kHz), hop n/4."""
    n_fft = max(4, 4 * int(round(window_seconds * sample_rate / 4)))
    return n_fft, n_fft // 4


def _stft(x: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """(..., L) → complex (..., F, T)."""
    from scipy.signal import stft  # imported on first use: `lvbd separate` never loads scipy

    return stft(x, window="hann", nperseg=n_fft, noverlap=n_fft - hop_length, boundary="zeros",
                padded=True, axis=-1)[2]


def _istft(spec: np.ndarray, n_fft: int, hop_length: int, length: int) -> np.ndarray:
    """complex (..., F, T) → (..., length), zero-padded if the inverse comes out short."""
    from scipy.signal import istft

    wav = istft(spec, window="hann", nperseg=n_fft, noverlap=n_fft - hop_length,
                boundary=True, time_axis=-1, freq_axis=-2)[1]
    if wav.shape[-1] < length:
        wav = np.pad(wav, [(0, 0)] * (wav.ndim - 1) + [(0, length - wav.shape[-1])])
    return wav[..., :length]


def oracle_mask(kind: str, mixture_spec: np.ndarray, reference_specs: np.ndarray) -> np.ndarray:
    """Mask (K, F, T) in [0, 1] of ``kind`` from X (F, T) and S (K, F, T)."""
    if kind == "irm":
        power = np.abs(reference_specs) ** 2  # (K, F, T)
        total = power.sum(axis=0, keepdims=True)
        K = power.shape[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, power / total, 1.0 / K)
    if kind == "ibm":
        winner = np.abs(reference_specs).argmax(axis=0)  # (F, T)
        return (np.arange(reference_specs.shape[0])[:, None, None] == winner).astype(np.float64)
    if kind == "psm":
        mix_power = np.abs(mixture_spec) ** 2  # (F, T)
        with np.errstate(invalid="ignore", divide="ignore"):
            mask = np.real(reference_specs * np.conj(mixture_spec)) / mix_power
        return np.clip(np.where(mix_power > 0, mask, 0.0), 0.0, 1.0)
    raise ValueError(f"unknown oracle mask {kind!r}; choose from {MASKS}")


def _check_mixture(mixture) -> np.ndarray:
    mix = np.asarray(mixture, dtype=np.float64)
    if mix.ndim != 1 or mix.shape[0] == 0:
        raise ValueError(f"expected a mixture of shape (L,), got {mix.shape}")
    return mix


class OracleMask:
    """Ideal STFT mask computed from the references (an upper bound, not a separator)."""

    needs_references = True
    n_sources = None  # as many as the references

    def __init__(self, kind: str = "irm", window_seconds: float = WINDOW_SECONDS):
        if kind not in MASKS:
            raise ValueError(f"unknown oracle mask {kind!r}; choose from {MASKS}")
        self.kind = kind
        self.name = f"oracle-{kind}"
        self.window_seconds = window_seconds

    def separate(self, mixture, sample_rate: int, references=None) -> np.ndarray:
        """mixture (L,), references (K, L) → masked-mixture estimates (K, L)."""
        mix = _check_mixture(mixture)
        if references is None:
            raise ValueError(f"{self.name} needs the reference sources")
        ref = np.asarray(references, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[1] != mix.shape[0]:
            raise ValueError(f"expected references (K, {mix.shape[0]}), got {ref.shape}")
        n_fft, hop_length = stft_size(sample_rate, self.window_seconds)
        mix_spec = _stft(mix, n_fft, hop_length)  # (F, T)
        ref_spec = _stft(ref, n_fft, hop_length)  # (K, F, T)
        mask = oracle_mask(self.kind, mix_spec, ref_spec)  # (K, F, T)
        return _istft(mask * mix_spec, n_fft, hop_length, mix.shape[0])  # (K, L)


class MixtureCopy:
    """The trivial separator: every output is the mixture (SI-SDRi = 0 by construction)."""

    needs_references = False
    name = "mixture"

    def __init__(self, n_sources: int = 2):
        if n_sources < 1:
            raise ValueError(f"n_sources must be >= 1, got {n_sources}")
        self.n_sources = int(n_sources)

    def separate(self, mixture, sample_rate: int, references=None) -> np.ndarray:
        """mixture (L,) → (K, L) copies."""
        mix = _check_mixture(mixture)
        return np.repeat(mix[None], self.n_sources, axis=0)  # (K, L)


BASELINES = ("oracle-irm", "oracle-ibm", "oracle-psm", "mixture")


def get_baseline(name: str, n_sources: int = 2):
    """``oracle-irm`` | ``oracle-ibm`` | ``oracle-psm`` | ``mixture`` → a separator object."""
    if name == "mixture":
        return MixtureCopy(n_sources)
    if name.startswith("oracle-") and name[len("oracle-"):] in MASKS:
        return OracleMask(name[len("oracle-"):])
    raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")
