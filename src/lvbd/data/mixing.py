"""The one place where stems become a mixture, plus crops, gains and noise (numpy, float32).

``mix_stems`` scales the stems (unit RMS, relative gains in dB, overall level, peak limit)
and returns them with their sum: the returned stems always add up to the mixture exactly.
"""
from __future__ import annotations

import numpy as np

NOISE_KINDS = ("white", "pink", "brown", "band", "am")


def random_gains_db(rng: np.random.Generator, n_sources: int, max_relative_db: float = 5.0
                    ) -> np.ndarray:
    """Per-source gains uniform in ±max_relative_db/2, so any two differ by ≤ max_relative_db."""
    half = max_relative_db / 2.0
    return rng.uniform(-half, half, size=n_sources)


def crop_or_pad(wav: np.ndarray, length: int, offset: int) -> np.ndarray:
    """``(L_in,)`` → ``(length,)``: take ``wav[offset:offset+length]`` if the clip is long
    enough, else place the clip at ``offset`` inside zeros (``offset`` then counts into the
    output). Callers draw ``offset`` from :func:`random_offset`."""
    out = np.zeros(length, dtype=np.float32)
    offset = max(0, min(int(offset), abs(len(wav) - length)))
    if len(wav) >= length:
        out[:] = wav[offset:offset + length]
    else:
        out[offset:offset + len(wav)] = wav
    return out


def random_offset(rng: np.random.Generator, clip_length: int, length: int) -> int:
    """Crop start (long clip) or pad offset (short clip) for :func:`crop_or_pad`."""
    return int(rng.integers(0, abs(clip_length - length) + 1))


def mix_stems(stems: np.ndarray, gains_db: np.ndarray, level_db: float | None = -25.0,
              max_peak: float = 0.9, eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Scale stems ``(K, L)`` and sum them → (scaled stems ``(K, L)``, mixture ``(L,)``).

    Each stem is normalised to unit RMS and multiplied by ``10**(gains_db[k]/20)``; then all
    stems share one factor that puts the mixture RMS at ``level_db`` dBFS (``None``: keep)
    and, if needed, lowers it until no stem or mixture sample exceeds ``max_peak``.
    The mixture is the sum of the returned stems.
    """
    stems = np.asarray(stems, dtype=np.float64)
    if stems.ndim != 2:
        raise ValueError(f"expected stems (K, L), got shape {tuple(stems.shape)}")
    gains_db = np.asarray(gains_db, dtype=np.float64)
    if gains_db.shape != (stems.shape[0],):
        raise ValueError(f"expected gains_db ({stems.shape[0]},), got {tuple(gains_db.shape)}")
    rms = np.sqrt((stems ** 2).mean(axis=1, keepdims=True))
    stems = stems / (rms + eps) * 10.0 ** (gains_db[:, None] / 20.0)  # (K, L)
    mixture = stems.sum(axis=0)
    scale = 1.0
    if level_db is not None:
        scale = 10.0 ** (level_db / 20.0) / (np.sqrt((mixture ** 2).mean()) + eps)
    peak = max(np.abs(stems).max(initial=0.0), np.abs(mixture).max(initial=0.0)) * scale
    if peak > max_peak:
        scale *= max_peak / peak
    stems = (stems * scale).astype(np.float32)
    return stems, stems.sum(axis=0)


def coloured_noise(rng: np.random.Generator, length: int, sample_rate: int,
                   kind: str = "pink") -> np.ndarray:
    """Unit-RMS noise ``(length,)``: white, pink (1/f), brown (1/f²), band-limited
    (random 1-octave band) or amplitude-modulated pink (0.5–4 Hz, babble-like)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length, d=1.0 / sample_rate)
    freqs[0] = freqs[1] if length > 1 else 1.0
    if kind in ("pink", "am"):
        spectrum /= np.sqrt(freqs)
    elif kind == "brown":
        spectrum /= freqs
    elif kind == "band":
        low = rng.uniform(100.0, sample_rate / 4.0)
        spectrum *= (freqs >= low) & (freqs <= 2.0 * low)
    noise = np.fft.irfft(spectrum, n=length)
    if kind == "am":
        t = np.arange(length) / sample_rate
        rate, phase = rng.uniform(0.5, 4.0), rng.uniform(0.0, 2.0 * np.pi)
        noise *= 0.55 + 0.45 * np.sin(2.0 * np.pi * rate * t + phase)
    noise -= noise.mean()
    return (noise / (np.sqrt((noise ** 2).mean()) + 1e-12)).astype(np.float32)


def scale_noise(mixture: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``noise`` scaled so that ``10·log10(|mixture|² / |noise|²) = snr_db``."""
    power_mix = float((np.asarray(mixture, np.float64) ** 2).mean())
    power_noise = float((np.asarray(noise, np.float64) ** 2).mean()) + 1e-20
    return (noise * np.sqrt(power_mix / power_noise / 10.0 ** (snr_db / 10.0))).astype(np.float32)
